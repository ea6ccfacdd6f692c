"""Runs workloads off the Trio thread with concurrency slots and a runtime cap."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import trio

from aitbc_p2p.codec import encode
from aitbc_p2p.compute.workloads import get_workload
from aitbc_p2p.exceptions import AitbcError, ComputeError

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Execution:
    ok: bool
    output: bytes  # canonical CBOR of the workload's result map (empty on failure)
    error: str = ""
    metrics: dict[str, int] = field(default_factory=dict)


class Executor:
    """``slots`` jobs at a time on ``device``; each in a worker thread.

    A job over its runtime cap is reported failed (the thread is abandoned; worker
    processes that can be killed are the next step, see specs/market.md).
    """

    def __init__(self, device: str = "cpu", *, slots: int = 1) -> None:
        self.device = device
        self._slots = trio.Semaphore(slots)
        self._done = 0
        self._failed = 0

    def statistics(self) -> dict[str, int]:
        return {"free_slots": self._slots.value, "done": self._done, "failed": self._failed}

    async def run(self, workload: str, params: dict[str, object], *, max_runtime_s: float) -> Execution:
        """Validate and run one job. Never raises for a job's own failure: returns ok=False."""
        try:
            spec = get_workload(workload)
            clean = spec.validate(params)
        except ComputeError as e:
            self._failed += 1
            return Execution(False, b"", f"bad job: {e}")
        async with self._slots:
            start = time.perf_counter()
            try:
                with trio.fail_after(max_runtime_s):
                    result = await trio.to_thread.run_sync(spec.run, clean, self.device, abandon_on_cancel=True)
                output = encode(result)
            except trio.TooSlowError:
                self._failed += 1
                return Execution(False, b"", f"runtime cap of {max_runtime_s} s exceeded")
            except (AitbcError, RuntimeError, ValueError, MemoryError) as e:
                self._failed += 1
                logger.warning("job %s failed: %s", workload, e)
                return Execution(False, b"", f"{type(e).__name__}: {e}")
            compute_ms = max(1, int((time.perf_counter() - start) * 1000))
        self._done += 1
        return Execution(True, output, metrics={"compute_ms": compute_ms, "output_bytes": len(output)})
