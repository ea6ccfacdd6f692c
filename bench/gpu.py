"""GPU (or CPU) throughput: matmul TFLOP/s against the device's peak, the executor's
overhead against plain torch in the same run, and llm_gen latency and tokens/s.

Prints progress and a table to stderr and, as its last line, JSON:
{"bench": "gpu", "device": ..., "executor_overhead": ..., "matmul_tflops": {...}, "peak_fraction": ..., ...}
Run: .venv/bin/python bench/gpu.py [--accel auto] [--quick] [--plot gpu.png]
Needs the compute extras (pip install '.[compute]'); llm_gen is skipped without transformers.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

from aitbc_p2p.compute import RunContext, detect, get_workload, open_executor, peak_tflops
from aitbc_p2p.compute.capability import supported_dtypes
from aitbc_p2p.compute.context import module_available
from aitbc_p2p.compute.workloads import bench_inputs


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def matmul_tflops(device: str, n: int, dtype: str, min_seconds: float) -> float:
    import torch

    a, b = bench_inputs({"n": n, "seed": 0, "dtype": dtype}, device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    a @ b  # warm-up
    sync()
    iters, elapsed = 1, 0.0
    while True:
        start = time.perf_counter()
        for _ in range(iters):
            a @ b
        sync()
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            break
        iters = max(iters * 2, int(iters * min_seconds / max(elapsed, 1e-6)))
    return 2 * n**3 * iters / elapsed / 1e12


async def executor_overhead(device: str, accel: str, n: int, repeats: int) -> dict[str, Any]:
    """The same torch_bench job in-process (plain torch) and through the executor, interleaved."""
    bench = get_workload("torch_bench")
    probe = bench.validate({"n": n, "iters": 2, "seed": 1})
    rate = bench.run(probe, RunContext(device=device))["gflops"] or 1
    # About one second of matmuls per job, within the workload's own bound on iters (a
    # fast device at a small n would ask for more than it takes).
    iters = min(1000, max(2, int(1.0 * rate * 1e9 / (2 * n**3))))
    params = bench.validate({"n": n, "iters": iters, "seed": 1})
    plain: list[float] = []
    through: list[float] = []
    async with open_executor(accel_mode=accel, slots=1) as ex:
        await ex.run("torch_bench", probe, max_runtime_s=300)  # warm the worker
        for i in range(repeats):
            for order in (0, 1) if i % 2 == 0 else (1, 0):
                start = time.perf_counter()
                if order == 0:
                    bench.run(params, RunContext(device=device))
                    plain.append(time.perf_counter() - start)
                else:
                    run = await ex.run("torch_bench", params, max_runtime_s=600)
                    assert run.ok, run.error
                    through.append(time.perf_counter() - start)
            log(f"  overhead run {i + 1}/{repeats}: plain {plain[-1]:.3f} s, executor {through[-1]:.3f} s")
    p, e = statistics.median(plain), statistics.median(through)
    return {"n": n, "iters": iters, "plain_s": round(p, 4), "executor_s": round(e, 4), "overhead": round(e / p - 1, 4)}


async def llm_latency(accel: str, tokens: int, layers: int, hidden: int) -> dict[str, Any] | None:
    if not module_available("transformers"):
        log("llm_gen: transformers not installed, skipped")
        return None
    from aitbc_p2p.codec import decode
    from aitbc_p2p.testing.models import build_tiny_causal_lm

    with tempfile.TemporaryDirectory() as tmp:
        path = build_tiny_causal_lm(Path(tmp) / "lm", layers=layers, hidden=hidden, heads=max(2, hidden // 64))
        async with open_executor(accel_mode=accel, models={"bench": str(path)}) as ex:
            params = {"prompt": "A provider advertises its device", "max_tokens": tokens, "model": "bench"}
            await ex.run("llm_gen", {**params, "max_tokens": 2}, max_runtime_s=300)  # load the model
            runs = []
            for _ in range(3):
                run = await ex.run("llm_gen", params, max_runtime_s=300)
                assert run.ok, run.error
                runs.append(decode(run.output))
    best = max(runs, key=lambda r: r["tokens_per_s"])
    return {
        "model": f"gpt2-shaped {layers}x{hidden} (random weights)",
        "tokens": best["tokens"],
        "ttft_ms": statistics.median(r["ttft_ms"] for r in runs),
        "tokens_per_s": best["tokens_per_s"],
    }


def plot(path: Path, device: str, results: dict[str, dict[int, float]], peaks: dict[str, float | None]) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib not installed: no plot")
        return
    fig, ax = plt.subplots(figsize=(7, 4))
    for dtype, series in results.items():
        sizes = sorted(series)
        ax.plot(sizes, [series[s] for s in sizes], marker="o", label=dtype)
        if peaks.get(dtype):
            ax.axhline(peaks[dtype], linestyle="--", linewidth=0.8)
    ax.set_xscale("log", base=2)
    ax.set(xlabel="matrix size n", ylabel="TFLOP/s", title=f"matmul throughput on {device}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    log(f"plot written to {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accel", default="auto", help="auto | gpu | cpu")
    parser.add_argument("--quick", action="store_true", help="fewer sizes and repeats")
    parser.add_argument("--plot", type=Path, help="write a PNG plot of TFLOP/s against size")
    args = parser.parse_args()
    if not module_available("torch"):
        why = "torch is not installed"
        log(
            f"bench/gpu.py needs torch: {why}. Install it with 'make install EXTRAS=dev,compute' (the CPU "
            "wheel, torch==2.13.0) or, for a GPU, pip install 'aitbc-p2p[compute]' with your CUDA wheel."
        )
        print(json.dumps({"bench": "gpu", "skipped": why}))
        return

    info = detect(args.accel, benchmark=False)
    device = info.device
    gpu = device.startswith("cuda")
    log(f"device: {info.name} ({device}), torch {info.torch_version}, CUDA {info.cuda_version or '-'}")
    sizes = [1024, 2048, 4096, 8192] if gpu else [128, 256, 512, 1024]
    if args.quick:
        sizes = sizes[1:3]
    min_seconds = 0.3 if args.quick else 1.0
    results: dict[str, dict[int, float]] = {}
    for dtype in supported_dtypes(device):
        results[dtype] = {}
        for n in sizes:
            results[dtype][n] = tflops = matmul_tflops(device, n, dtype, min_seconds)
            log(f"  matmul {dtype:9} n={n:5}: {tflops:8.3f} TFLOP/s")

    peaks = {dtype: peak_tflops(info.name, dtype) for dtype in results}
    log(f"\n{'dtype':9} {'best TFLOP/s':>12} {'peak':>8} {'of peak':>8}")
    for dtype, series in results.items():
        best = max(series.values())
        peak = peaks[dtype]
        frac = f"{best / peak:8.1%}" if peak else f"{'-':>8}"
        log(f"{dtype:9} {best:12.3f} {peak or '-':>8} {frac}")
    headline = "bfloat16" if "bfloat16" in results and peaks.get("bfloat16") else "float32"
    peak = peaks.get(headline)
    peak_fraction = round(max(results[headline].values()) / peak, 4) if peak else None

    log("\nexecutor overhead (same torch_bench job, worker process vs in-process):")
    overhead = trio.run(executor_overhead, device, args.accel, 2048 if gpu else 512, 3 if args.quick else 5)
    log(f"  median plain {overhead['plain_s']} s, executor {overhead['executor_s']} s: {overhead['overhead']:+.2%}")

    log("\nllm_gen, built-in torch backend:")
    llm = trio.run(llm_latency, args.accel, 64, 8 if gpu else 4, 512 if gpu else 256)
    if llm:
        log(f"  {llm['model']}: first token {llm['ttft_ms']} ms, {llm['tokens_per_s']} tokens/s")

    if args.plot:
        plot(args.plot, info.name, results, peaks)
    print(
        json.dumps(
            {
                "bench": "gpu",
                "device": info.name,
                "device_kind": device,
                "torch": info.torch_version,
                "executor_overhead": overhead["overhead"],
                "executor": overhead,
                "matmul_tflops": {d: {str(n): round(t, 4) for n, t in s.items()} for d, s in results.items()},
                "peak_tflops": peaks,
                "peak_fraction": peak_fraction,
                "peak_fraction_dtype": headline if peak else None,
                "llm_gen": llm,
            }
        )
    )


if __name__ == "__main__":
    main()
