"""What this host can compute: device, memory, and a measured throughput."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass

from aitbc_p2p.compute.workloads import available_workloads, get_workload, torch_available
from aitbc_p2p.exceptions import ComputeError

ACCEL_MODES = ("auto", "gpu", "cpu")


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    mode: str  # "gpu" | "cpu", the seed's MinerCapabilities.mode
    device: str  # torch device string: "cpu" or "cuda:0"
    name: str
    gpu: bool
    vram_mb: int
    ram_mb: int
    gflops: int  # measured fp32 matmul GFLOP/s (0 when torch is absent)
    torch_version: str
    workloads: tuple[str, ...]


def _ram_mb() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1 << 20)
    except (ValueError, OSError):
        return 0


def detect(accel_mode: str = "auto", *, benchmark: bool = True) -> DeviceInfo:
    """Detect the compute device as the seed's ``ACCEL_MODE`` asks (auto | gpu | cpu).

    ``gpu`` falls back to CPU when no CUDA device is usable, as the seed's miner does.
    Blocking (imports torch, runs a short benchmark): call from a worker thread.
    """
    if accel_mode not in ACCEL_MODES:
        raise ComputeError(f"ACCEL_MODE must be one of {ACCEL_MODES}, not {accel_mode!r}")
    ram = _ram_mb()
    workloads = tuple(available_workloads())
    if not torch_available():
        return DeviceInfo("cpu", "cpu", _cpu_name(), False, 0, ram, 0, "", workloads)
    import torch

    use_gpu = accel_mode != "cpu" and torch.cuda.is_available() and shutil.which("nvidia-smi") is not None
    if use_gpu:
        props = torch.cuda.get_device_properties(0)
        device, name, vram = "cuda:0", str(props.name), int(props.total_memory // (1 << 20))
    else:
        device, name, vram = "cpu", _cpu_name(), 0
    gflops = 0
    if benchmark:
        n = 1024 if use_gpu else 256
        out = get_workload("torch_bench").run({"n": n, "iters": 5, "seed": 0, "dtype": "float32"}, device)
        gflops = int(out["gflops"])
    return DeviceInfo(
        "gpu" if use_gpu else "cpu", device, name, use_gpu, vram, ram, gflops, str(torch.__version__), workloads
    )


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "cpu"
