"""What this host can compute: devices, memory, versions, and measured throughput.

Detection runs inside a worker process (it may import torch and touch the GPU); the
peer gets plain data back. Throughput is measured by a short seeded matmul per dtype
and cached per device and torch version, so restarts do not re-measure.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from aitbc_p2p.compute.context import RunContext, torch_available
from aitbc_p2p.compute.workloads import available_workloads, get_workload
from aitbc_p2p.exceptions import ComputeError

ACCEL_MODES = ("auto", "gpu", "cpu")

# Dense peak TFLOP/s per dtype from the vendors' data sheets (SXM parts where both exist;
# float32 is the non-tensor-core rate). Used for "achieved against peak"; no entry -> None.
PEAK_TFLOPS: dict[str, dict[str, float]] = {
    "H200": {"bfloat16": 989.0, "float16": 989.0, "float32": 67.0, "float64": 34.0},
    "H100": {"bfloat16": 989.0, "float16": 989.0, "float32": 67.0, "float64": 34.0},
    "A100": {"bfloat16": 312.0, "float16": 312.0, "float32": 19.5, "float64": 9.7},
    "L40S": {"bfloat16": 362.0, "float16": 362.0, "float32": 91.6},
    "RTX 4090": {"bfloat16": 165.2, "float16": 165.2, "float32": 82.6},
    "L4": {"bfloat16": 121.0, "float16": 121.0, "float32": 30.3},
    "A10G": {"bfloat16": 70.0, "float16": 70.0, "float32": 31.2},
}


def peak_tflops(device_name: str, dtype: str) -> float | None:
    """The data-sheet peak for a device name such as 'NVIDIA H100 80GB HBM3', or None."""
    upper = device_name.upper()
    for key in sorted(PEAK_TFLOPS, key=len, reverse=True):  # "RTX 4090" before "L4"
        if key.upper() in upper:
            return PEAK_TFLOPS[key].get(dtype)
    return None


@dataclass(frozen=True)
class DeviceInfo:
    mode: str  # "gpu" | "cpu", the seed's MinerCapabilities.mode
    device: str  # torch device string of the first device: "cpu" or "cuda:0"
    name: str
    gpu: bool
    count: int  # devices of this kind
    devices: tuple[str, ...]
    vram_mb: int
    ram_mb: int
    driver_version: str
    cuda_version: str
    torch_version: str
    gflops: int  # measured float32 matmul GFLOP/s on the first device (0 without torch)
    gflops_by_dtype: dict[str, int] = field(default_factory=dict)
    workloads: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["devices"], d["workloads"] = list(self.devices), list(self.workloads)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DeviceInfo:
        return cls(**{**d, "devices": tuple(d["devices"]), "workloads": tuple(d["workloads"])})


def ram_mb() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1 << 20)
    except (ValueError, OSError):
        return 0


def proc_status_mb(field: str, pid: int | str = "self") -> int:
    """A memory field of ``/proc/<pid>/status`` (e.g. ``VmRSS``, ``VmHWM``) in MiB; 0 if unreadable."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) // 1024
    except (OSError, ValueError):
        pass
    return 0


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "cpu"


def nvidia_smi() -> list[dict[str, str]]:
    """GPUs as nvidia-smi reports them (name, memory.total MiB, driver); [] without it."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        out = subprocess.run(
            [exe, "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    gpus = []
    for line in out.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 3:
            gpus.append({"name": parts[0], "memory_mb": parts[1], "driver": parts[2]})
    return gpus


def choose_device(accel_mode: str) -> str:
    """The seed's ACCEL_MODE: gpu and auto use CUDA when usable, else fall back to the CPU."""
    if accel_mode not in ACCEL_MODES:
        raise ComputeError(f"ACCEL_MODE must be one of {ACCEL_MODES}, not {accel_mode!r}")
    if accel_mode == "cpu" or not torch_available():
        return "cpu"
    import torch

    return "cuda:0" if torch.cuda.is_available() else "cpu"


def supported_dtypes(device: str) -> list[str]:
    if not torch_available():
        return []
    if device.startswith("cuda"):
        import torch

        return ["float32", "bfloat16", "float16"] if torch.cuda.is_bf16_supported() else ["float32", "float16"]
    return ["float32", "bfloat16"]


def measure(device: str, dtypes: list[str] | None = None, *, n: int | None = None, iters: int = 5) -> dict[str, int]:
    """Seeded matmul GFLOP/s per dtype on ``device`` (blocking; seconds on a CPU)."""
    bench = get_workload("torch_bench")
    size = n or (4096 if device.startswith("cuda") else 256)
    out = {}
    for dtype in dtypes if dtypes is not None else supported_dtypes(device):
        params = bench.validate({"n": size, "iters": iters, "seed": 0, "dtype": dtype})
        out[dtype] = int(bench.run(params, RunContext(device=device))["gflops"])
    return out


def probe(device: str, *, models: dict[str, str] | None = None, ollama_url: str | None = None) -> dict[str, Any]:
    """Everything but throughput about ``device`` and its siblings (blocking, no benchmark)."""
    info: dict[str, Any] = {
        "mode": "cpu",
        "device": device,
        "name": cpu_name(),
        "gpu": False,
        "count": 1,
        "devices": [device],
        "vram_mb": 0,
        "ram_mb": ram_mb(),
        "driver_version": "",
        "cuda_version": "",
        "torch_version": "",
        "gflops": 0,
        "gflops_by_dtype": {},
        "workloads": available_workloads(models=models, ollama_url=ollama_url),
    }
    if not torch_available():
        return info
    import torch

    info["torch_version"] = str(torch.__version__)
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(torch.device(device))
        count = torch.cuda.device_count()
        smi = nvidia_smi()
        info.update(
            mode="gpu",
            gpu=True,
            name=str(props.name),
            count=count,
            devices=[f"cuda:{i}" for i in range(count)],
            vram_mb=int(props.total_memory // (1 << 20)),
            driver_version=smi[0]["driver"] if smi else "",
            cuda_version=str(torch.version.cuda or ""),
        )
    return info


def _cache_key(info: dict[str, Any]) -> str:
    return f"{info['name']}|{info['device']}|{info['torch_version']}"


def read_measure_cache(cache: Path | None, info: dict[str, Any]) -> dict[str, int] | None:
    """Measured GFLOP/s per dtype remembered for this device and torch version, if any."""
    if cache is None or not cache.exists():
        return None
    try:
        entry = json.loads(cache.read_text()).get(_cache_key(info))
    except (OSError, ValueError, AttributeError):
        return None
    return None if not isinstance(entry, dict) else {str(k): int(v) for k, v in entry.items()}


def write_measure_cache(cache: Path | None, info: dict[str, Any], measured: dict[str, int]) -> None:
    if cache is None:
        return
    try:
        entries = json.loads(cache.read_text()) if cache.exists() else {}
    except (OSError, ValueError):
        entries = {}
    entries[_cache_key(info)] = measured
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(entries, indent=2) + "\n")


def detect(accel_mode: str = "auto", *, benchmark: bool = True, cache: Path | None = None) -> DeviceInfo:
    """Detect and (optionally) measure in this process. Blocking; the node uses the executor."""
    device = choose_device(accel_mode)
    info = probe(device)
    if benchmark and info["torch_version"]:
        measured = read_measure_cache(cache, info)
        if measured is None:
            measured = measure(device)
            write_measure_cache(cache, info, measured)
        info["gflops_by_dtype"] = measured
        info["gflops"] = measured.get("float32", 0)
    return DeviceInfo.from_dict(info)
