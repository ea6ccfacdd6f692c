"""Fault-injection workloads for testing the executor's limits without torch.

A test asks for them by name: ``open_executor(fault_workloads=True)`` starts workers
with ``--fault-workloads``, and both sides then look workloads up in
:func:`with_faults`'s table. Nothing is added to the global table and nothing is read
from the environment; providers never offer them.
"""

from __future__ import annotations

import ctypes
import time
from collections.abc import Mapping
from typing import Any

from aitbc_p2p.compute.context import RunContext
from aitbc_p2p.compute.workloads import WORKLOADS, Workload


def _ms(params: Mapping[str, Any]) -> dict[str, Any]:
    return {"n": int(params.get("n", 0))}


def _sleep(params: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
    time.sleep(params["n"] / 1000)
    return {"slept_ms": params["n"]}


def _crash(params: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
    ctypes.string_at(0)  # SIGSEGV: the worker process dies as a CUDA fault or the OOM killer would kill it
    return {}


def _alloc(params: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
    block = bytearray(params["n"] << 20)  # n MiB, touched so that it is resident
    for i in range(0, len(block), 4096):
        block[i] = 1
    time.sleep(5)
    return {"allocated_mb": params["n"]}


def _events(params: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
    for i in range(params["n"]):
        ctx.emit({"token": f"t{i} "})
    return {"events": params["n"]}


def _output(params: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
    return {"blob": bytes(params["n"])}  # n bytes of output: the result size cap


FAULT_WORKLOADS: dict[str, Workload] = {
    name: Workload(name, _ms, run)
    for name, run in (
        ("fault_sleep", _sleep),
        ("fault_crash", _crash),
        ("fault_alloc", _alloc),
        ("fault_events", _events),
        ("fault_output", _output),
    )
}


def with_faults() -> dict[str, Workload]:
    """The real workloads and the fault-injection ones, as one lookup table."""
    return {**WORKLOADS, **FAULT_WORKLOADS}
