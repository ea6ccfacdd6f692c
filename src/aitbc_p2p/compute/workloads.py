"""Workloads by name, with validated parameters (specs/market.md, "Workloads").

A workload is a synchronous function from validated parameters to a result map of
CBOR-safe values (no floats: rates are integers such as GFLOP/s). torch is imported
lazily, only inside the torch workloads; without torch only ``echo`` is offered.
"""

from __future__ import annotations

import hashlib
import importlib.util
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aitbc_p2p.exceptions import ComputeError


def torch_available() -> bool:
    return importlib.util.find_spec("torch") is not None


def _int(params: Mapping[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = params.get(name, default)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ComputeError(f"parameter {name!r} must be an integer in [{low}, {high}]")
    return value


def _no_extra(params: Mapping[str, Any], allowed: set[str]) -> None:
    extra = set(params) - allowed
    if extra:
        raise ComputeError(f"unknown parameters: {sorted(extra)}")


@dataclass(frozen=True, slots=True)
class Workload:
    name: str
    validate: Callable[[Mapping[str, Any]], dict[str, Any]]
    run: Callable[[dict[str, Any], str], dict[str, Any]]
    needs_torch: bool = False


def _echo_validate(params: Mapping[str, Any]) -> dict[str, Any]:
    _no_extra(params, {"message"})
    message = params.get("message", "")
    if not isinstance(message, str) or len(message) > 4096:
        raise ComputeError("parameter 'message' must be a string of at most 4096 characters")
    return {"message": message}


def _echo_run(params: dict[str, Any], device: str) -> dict[str, Any]:
    return {"message": params["message"], "length": len(params["message"])}


_DTYPES = ("float32", "float64", "bfloat16", "float16")


def _bench_validate(params: Mapping[str, Any]) -> dict[str, Any]:
    _no_extra(params, {"n", "iters", "seed", "dtype"})
    dtype = params.get("dtype", "float32")
    if dtype not in _DTYPES:
        raise ComputeError(f"parameter 'dtype' must be one of {_DTYPES}")
    return {
        "n": _int(params, "n", 256, 16, 8192),
        "iters": _int(params, "iters", 10, 1, 1000),
        "seed": _int(params, "seed", 0, 0, 2**32 - 1),
        "dtype": dtype,
    }


def _bench_run(params: dict[str, Any], device: str) -> dict[str, Any]:
    """Seeded matmul: ``iters`` products of two n x n matrices; TFLOP/s and a result digest."""
    import torch

    n, iters = params["n"], params["iters"]
    dtype = getattr(torch, params["dtype"])
    gen = torch.Generator(device="cpu").manual_seed(params["seed"])
    a = torch.randn(n, n, generator=gen, dtype=torch.float32).to(device=device, dtype=dtype)
    b = torch.randn(n, n, generator=gen, dtype=torch.float32).to(device=device, dtype=dtype)
    c = a @ b  # warm-up, and the product whose digest the result carries
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(iters):
        c = a @ b
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    elapsed = max(time.perf_counter() - start, 1e-9)
    flops = 2 * n**3 * iters
    digest = hashlib.sha256(bytes(c.float().cpu().contiguous().untyped_storage())).hexdigest()
    return {
        "n": n,
        "iters": iters,
        "dtype": params["dtype"],
        "device": device,
        "elapsed_us": int(elapsed * 1e6),
        "gflops": int(flops / elapsed / 1e9),
        "digest": digest,
    }


WORKLOADS: dict[str, Workload] = {
    "echo": Workload("echo", _echo_validate, _echo_run),
    "torch_bench": Workload("torch_bench", _bench_validate, _bench_run, needs_torch=True),
}


def available_workloads() -> list[str]:
    have_torch = torch_available()
    return sorted(name for name, w in WORKLOADS.items() if have_torch or not w.needs_torch)


def get_workload(name: str) -> Workload:
    """The workload named ``name``; raises ComputeError if unknown or torch is missing."""
    workload = WORKLOADS.get(name)
    if workload is None:
        raise ComputeError(f"unknown workload {name!r}; known: {sorted(WORKLOADS)}")
    if workload.needs_torch and not torch_available():
        raise ComputeError(f"workload {name!r} needs torch (pip install 'aitbc-p2p[torch]')")
    return workload
