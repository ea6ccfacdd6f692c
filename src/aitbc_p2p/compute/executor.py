"""Runs workloads in worker processes, with slots per device, limits and cancellation.

Each device's work happens in long-lived worker processes (compute/worker.py), so a job
that crashes, leaks or runs out of memory takes down only its worker: the job is reported
failed (and so is not paid) and a fresh worker replaces it. Limits per job:

* runtime cap: the worker is killed when the job runs past it;
* RAM cap: the worker's resident set is watched and the worker killed above it;
* cancellation: cancelling the caller kills the worker running the job.

Parameters are validated in the peer before anything is dispatched.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from aitbc_p2p.codec import decode, encode
from aitbc_p2p.codec.framing import FrameBuffer, frame
from aitbc_p2p.compute.capability import (
    DeviceInfo,
    proc_status_mb,
    read_measure_cache,
    supported_dtypes,
    write_measure_cache,
)
from aitbc_p2p.compute.workloads import Workload, get_workload
from aitbc_p2p.exceptions import CodecError, ComputeError

logger = logging.getLogger(__name__)

MAX_FRAME = 64 << 20
WORKER_START_TIMEOUT_S = 120.0
RSS_POLL_S = 0.05


@dataclass(frozen=True, slots=True)
class Execution:
    ok: bool
    output: bytes  # canonical CBOR of the workload's result map (empty on failure)
    error: str = ""
    metrics: dict[str, int] = field(default_factory=dict)
    kept: bytes = b""
    """What the workload handed back for the provider alone (RunContext.keep)."""


class WorkerProcess:
    """One worker process and its framed pipes."""

    def __init__(self, process: trio.Process, device: str) -> None:
        self.process = process
        self.device = device
        self._frames = FrameBuffer(MAX_FRAME)
        self._next_id = 0
        self.healthy = True

    @property
    def pid(self) -> int:
        return self.process.pid

    async def send(self, obj: dict[str, Any]) -> int:
        self._next_id += 1
        assert self.process.stdin is not None
        await self.process.stdin.send_all(frame(encode({"id": self._next_id, **obj})))
        return self._next_id

    async def receive(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        while True:
            try:
                body = self._frames.next()
                msg = None if body is None else decode(body, max_size=MAX_FRAME)
            except CodecError as e:
                raise ComputeError(f"worker sent a malformed frame: {e}") from e
            if body is not None:
                if not isinstance(msg, dict):
                    raise ComputeError("worker sent a non-map frame")
                return msg
            chunk = await self.process.stdout.receive_some(1 << 20)
            if not chunk:
                code = await self.process.wait()
                how = f"signal {-code}" if code < 0 else f"exit status {code}"
                raise ComputeError(f"worker process ended ({how})")
            self._frames.feed(chunk)

    def kill(self) -> None:
        self.healthy = False
        if self.process.returncode is None:
            self.process.kill()


async def start_worker(cmd: list[str], device: str) -> WorkerProcess:
    process = await trio.lowlevel.open_process(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    worker = WorkerProcess(process, device)
    try:
        with trio.fail_after(WORKER_START_TIMEOUT_S):
            ready = await worker.receive()
    except (trio.TooSlowError, ComputeError) as e:
        worker.kill()
        raise ComputeError(f"compute worker did not start: {e}") from e
    if not ready.get("ready"):
        worker.kill()
        raise ComputeError(f"compute worker sent {ready!r} instead of ready")
    worker.device = str(ready["device"])
    return worker


class Executor:
    """A pool of worker processes. Open it with :func:`open_executor`."""

    checkable = True
    """Its results can be spot-checked and audited: it keeps what a challenge asks for."""
    models: tuple[str, ...] = ()
    """The content hashes of the models its workers run (set when it opens)."""

    def __init__(
        self,
        nursery: trio.Nursery,
        base_cmd: list[str],
        cache: Path | None,
        workloads: Mapping[str, Workload] | None = None,
    ) -> None:
        self._nursery = nursery
        self._workloads = workloads
        self._base_cmd = base_cmd
        self._cache = cache
        self._idle_send, self._idle = trio.open_memory_channel[WorkerProcess](1024)
        self._workers: set[WorkerProcess] = set()
        self._slots = 0
        self.device = "cpu"
        self._done = self._failed = self._restarts = 0
        self._running = self._peak = 0
        self._info: DeviceInfo | None = None

    def statistics(self) -> dict[str, int]:
        return {
            "slots": self._slots,
            "free_slots": self._idle.statistics().current_buffer_used,
            "done": self._done,
            "failed": self._failed,
            "worker_restarts": self._restarts,
            "running": self._running,
            "peak_running": self._peak,
        }

    async def _add_worker(self, device: str | None) -> WorkerProcess:
        cmd = self._base_cmd + (["--device", device] if device else [])
        worker = await start_worker(cmd, device or "")
        self._workers.add(worker)
        self._idle_send.send_nowait(worker)
        return worker

    async def _replace(self, dead: WorkerProcess) -> None:
        self._workers.discard(dead)
        with trio.CancelScope(shield=True):
            await dead.process.wait()
        self._restarts += 1
        try:
            await self._add_worker(dead.device)
        except ComputeError as e:
            logger.error("could not restart a compute worker: %s", e)
            self._slots -= 1

    async def info(self, *, benchmark: bool = True) -> DeviceInfo:
        """Device details and measured GFLOP/s per dtype (measured once per device and torch
        version, then read from the cache file; skipped with ``benchmark=False``)."""
        if self._info is not None:
            return self._info
        info = dict((await self._call({"op": "info"}))["info"])
        if info["torch_version"] and benchmark:
            measured = read_measure_cache(self._cache, info)
            if measured is None:
                dtypes = supported_dtypes(str(info["device"]))
                reply = await self._call({"op": "measure", "dtypes": dtypes}, timeout=600)
                measured = {str(k): int(v) for k, v in reply["gflops"].items()}
                write_measure_cache(self._cache, info, measured)
            info["gflops_by_dtype"] = measured
            info["gflops"] = measured.get("float32", 0)
        self._info = DeviceInfo.from_dict(info)
        return self._info

    async def _call(self, request: dict[str, Any], *, timeout: float = 60.0) -> dict[str, Any]:
        worker = await self._idle.receive()
        try:
            with trio.fail_after(timeout):
                await worker.send(request)
                reply = await worker.receive()
        except BaseException:
            worker.kill()
            self._nursery.start_soon(self._replace, worker)
            raise
        self._idle_send.send_nowait(worker)
        if not reply.get("ok"):
            raise ComputeError(str(reply.get("error", "worker error")))
        return reply

    async def run(
        self,
        workload: str,
        params: dict[str, Any],
        *,
        max_runtime_s: float,
        max_ram_mb: int | None = None,
        on_event: Callable[[dict[str, Any]], None] | None = None,
        job_id: bytes = b"",
    ) -> Execution:
        """Validate, then run one job in a free worker. A job's own failure returns ok=False.
        ``job_id`` is the market's name for the job (unused here; the miner pool's key).

        Cancellation: the worker running the job is killed and replaced; Cancelled propagates.
        """
        try:
            get_workload(workload, self._workloads).validate(params)
        except ComputeError as e:
            self._failed += 1
            return Execution(False, b"", f"bad job: {e}")
        worker = await self._idle.receive()
        failure = ""
        reply: dict[str, Any] = {}
        over_memory = trio.Event()
        self._running += 1
        self._peak = max(self._peak, self._running)
        try:
            async with trio.open_nursery() as watch:
                if max_ram_mb is not None:
                    watch.start_soon(self._watch_rss, worker, max_ram_mb, over_memory)
                try:
                    with trio.move_on_after(max_runtime_s) as deadline:
                        await worker.send({"op": "run", "workload": workload, "params": params})
                        while True:
                            msg = await worker.receive()
                            if "event" not in msg:
                                reply = msg
                                break
                            if on_event is not None:
                                on_event(dict(msg["event"]))
                    if deadline.cancelled_caught:
                        failure = f"runtime cap of {max_runtime_s} s exceeded"
                except ComputeError as e:  # the worker died under the job
                    failure = str(e)
                if over_memory.is_set():
                    failure = f"memory cap of {max_ram_mb} MiB exceeded"
                watch.cancel_scope.cancel()
        finally:
            self._running -= 1
            if failure or not reply:  # also on cancellation: never reuse a worker mid-job
                worker.kill()
                self._nursery.start_soon(self._replace, worker)
            else:
                self._idle_send.send_nowait(worker)
        if failure:
            self._failed += 1
            logger.warning("job %s failed: %s", workload, failure)
            return Execution(False, b"", failure)
        if not reply.get("ok"):
            self._failed += 1
            return Execution(False, b"", str(reply.get("error", "unknown error")))
        self._done += 1
        metrics = {str(k): int(v) for k, v in dict(reply.get("metrics", {})).items()}
        kept = reply.get("kept", b"")
        return Execution(True, bytes(reply["output"]), metrics=metrics, kept=kept if isinstance(kept, bytes) else b"")

    async def _watch_rss(self, worker: WorkerProcess, cap_mb: int, over: trio.Event) -> None:
        while True:
            if proc_status_mb("VmRSS", worker.pid) > cap_mb:
                logger.warning("worker %d above %d MiB; killing it", worker.pid, cap_mb)
                over.set()
                worker.kill()  # the job's read then ends with "worker process ended"
                return
            await trio.sleep(RSS_POLL_S)


@asynccontextmanager
async def open_executor(
    *,
    accel_mode: str = "auto",
    slots: int = 1,
    models: dict[str, str] | None = None,
    ollama_url: str | None = None,
    cache: Path | None = None,
    fault_workloads: bool = False,
) -> AsyncIterator[Executor]:
    """Start ``slots`` worker processes per device; kill them all on exit.

    The first worker picks the device as ``accel_mode`` says (the seed's ACCEL_MODE); with
    several CUDA devices, each gets ``slots`` workers of its own.

    ``fault_workloads``: tests only; the workers run :mod:`~aitbc_p2p.compute.faults`
    too (a crash, a sleep, an allocation, a stream of events, a large output).

    Raises:
        ComputeError: a worker could not start.
    """
    if slots < 1:
        raise ComputeError("slots must be at least 1")
    cmd = [sys.executable, "-m", "aitbc_p2p.compute.worker", "--accel", accel_mode]
    digests: tuple[str, ...] = ()
    if models:  # each model also by its content hash, read once here (a large model: seconds)
        from aitbc_p2p.compute.context import with_digests
        from aitbc_p2p.market.messages import is_model_digest

        started, named = time.monotonic(), dict(models)
        models = await trio.to_thread.run_sync(with_digests, named)
        for digest, path in models.items():
            if is_model_digest(digest):
                names = [name for name, p in named.items() if p == path]
                logger.info("model %s is %s (hashed in %.1f s)", "/".join(names), digest, time.monotonic() - started)
        digests = tuple(sorted(d for d in models if is_model_digest(d)))
    for name, path in (models or {}).items():
        cmd += ["--model", f"{name}={path}"]
    if ollama_url:
        cmd += ["--ollama-url", ollama_url]
    table = None
    if fault_workloads:
        from aitbc_p2p.compute.faults import with_faults

        cmd.append("--fault-workloads")
        table = with_faults()
    async with trio.open_nursery() as nursery:
        executor = Executor(nursery, cmd, cache, table)
        executor.models = digests
        try:
            first = await executor._add_worker(None)
            executor.device = first.device
            devices = [first.device]
            if first.device.startswith("cuda"):
                info = (await executor._call({"op": "info"}))["info"]
                devices = list(info["devices"])
            for device in devices:
                for _ in range(slots - (1 if device == first.device else 0)):
                    await executor._add_worker(device)
            executor._slots = slots * len(devices)
            yield executor
        finally:
            for worker in list(executor._workers):
                worker.kill()
            nursery.cancel_scope.cancel()
