import time

import pytest
import trio

from aitbc_p2p.codec import decode
from aitbc_p2p.compute import WORKLOADS, Executor, Workload, available_workloads, detect, get_workload, torch_available
from aitbc_p2p.compute import workloads as workloads_module
from aitbc_p2p.exceptions import ComputeError

needs_torch = pytest.mark.skipif(not torch_available(), reason="torch not installed (pip install '.[torch]')")


def test_echo_validates_parameters():
    echo = get_workload("echo")
    assert echo.validate({"message": "hi"}) == {"message": "hi"}
    for bad in [{"message": 3}, {"message": "x" * 5000}, {"other": 1}]:
        with pytest.raises(ComputeError):
            echo.validate(bad)
    with pytest.raises(ComputeError, match="unknown workload"):
        get_workload("sd_infer")


def test_without_torch_only_echo(monkeypatch):
    monkeypatch.setattr(workloads_module, "torch_available", lambda: False)
    monkeypatch.setattr("aitbc_p2p.compute.capability.torch_available", lambda: False)
    assert available_workloads() == ["echo"]
    with pytest.raises(ComputeError, match="needs torch"):
        get_workload("torch_bench")
    info = detect("auto")
    assert (info.mode, info.gpu, info.gflops, info.workloads) == ("cpu", False, 0, ("echo",))


def test_accel_mode_is_checked():
    with pytest.raises(ComputeError, match="ACCEL_MODE"):
        detect("tpu")


@needs_torch
def test_torch_bench_is_seeded_and_reproducible():
    bench = get_workload("torch_bench")
    params = bench.validate({"n": 64, "iters": 2, "seed": 7})
    a, b = bench.run(params, "cpu"), bench.run(params, "cpu")
    assert a["digest"] == b["digest"] and a["gflops"] > 0
    other = bench.run(bench.validate({"n": 64, "iters": 2, "seed": 8}), "cpu")
    assert other["digest"] != a["digest"]
    for bad in [{"n": 8}, {"dtype": "int8"}, {"iters": 0}, {"n": "64"}]:
        with pytest.raises(ComputeError):
            bench.validate(bad)


@needs_torch
def test_detect_with_torch_measures_throughput():
    info = detect("cpu")
    assert info.mode == "cpu" and info.gflops > 0 and "torch_bench" in info.workloads and info.torch_version


async def test_executor_runs_and_reports_metrics():
    ex = Executor("cpu", slots=1)
    run = await ex.run("echo", {"message": "hi"}, max_runtime_s=5)
    assert run.ok and decode(run.output) == {"message": "hi", "length": 2}
    assert run.metrics["compute_ms"] >= 1
    bad = await ex.run("echo", {"message": 1}, max_runtime_s=5)
    assert not bad.ok and "bad job" in bad.error
    assert ex.statistics()["done"] == 1 and ex.statistics()["failed"] == 1


async def test_executor_enforces_runtime_cap_and_survives_crashes(monkeypatch):
    def slow(params, device):
        time.sleep(1.0)
        return {}

    def crash(params, device):
        raise RuntimeError("CUDA out of memory (simulated)")

    monkeypatch.setitem(WORKLOADS, "slow", Workload("slow", dict, slow))
    monkeypatch.setitem(WORKLOADS, "crash", Workload("crash", dict, crash))
    ex = Executor("cpu", slots=2)
    with trio.fail_after(10):
        timed_out = await ex.run("slow", {}, max_runtime_s=0.1)
        crashed = await ex.run("crash", {}, max_runtime_s=5)
    assert not timed_out.ok and "runtime cap" in timed_out.error
    assert not crashed.ok and "out of memory" in crashed.error
    assert (await ex.run("echo", {}, max_runtime_s=5)).ok
