"""External miners as a peer's compute: the job queue behind the v1 miner API.

The seed miner guide's ``miner.sh`` heartbeats, pulls a job with ``GET /v1/miner/next``,
runs it and posts a proof (specs/rpc.md, "Miner API"). A peer with ``[miners]`` sells that
compute on the network with this pool in place of its executor: the market runs a job
here as it would there (``run`` queues it and waits for the proof), so offers, bids,
escrow, receipts and settlement are the market's own.

Who is offered: the miners heard within ``heartbeat_timeout_s`` (by a heartbeat). What
they run: the workloads their heartbeat names, within what the operator sells (a
heartbeat that names none runs all of those). A job fails, so that the client's peer
fails over to its next bidder, when no heard miner runs its workload, when it waits
longer than its runtime cap for a miner, or when the miner holding it posts no proof
within that cap (``miner.sh`` runs a job without heartbeating, so silence while it holds
one is not failure), or when its proof is of an empty output.

Every request comes from a stranger holding a key: bodies are checked field by field,
a miner sees and proves only the jobs it took, and every map here is bounded.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import trio

from aitbc_p2p.codec import encode
from aitbc_p2p.compute.capability import DeviceInfo
from aitbc_p2p.compute.executor import Execution
from aitbc_p2p.compute.workloads import WORKLOADS
from aitbc_p2p.crypto.keys import holder_of
from aitbc_p2p.exceptions import ComputeError, StoreError

logger = logging.getLogger(__name__)

MAX_SLOTS = 64
"""The most jobs one miner may hold at once (``slots``, ``concurrency``)."""
MAX_OUTPUT = 512 << 10
"""The most UTF-8 bytes of ``output`` a proof may carry: with its JSON escapes it stays
under the RPC's 1 MiB body, and in the result under a result's 1,008 KiB."""
MAX_METRICS = 32
MAX_TEXT = 200
MAX_DONE = 1024
"""Finished jobs remembered per pool, so that a proof posted twice gets the same answer."""
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
"""A proof of an empty output fails its job: the client would pay for nothing (the seed's
miner.sh posts one for every torch_bench job: see examples/miner/README.md)."""
CHECK_S = 1.0
"""How often a waiting job looks again for a heard miner."""

HEARTBEAT_FIELDS = ("miner_id", "wallet", "mode", "gpu", "concurrency", "workloads", "limits")
"""The guide's heartbeat, and MinerCapabilities' fields beside it."""
PROOF_FIELDS = ("id", "mode", "output_sha", "metrics", "output", "error")

Proven = Callable[[bytes, str, str], Awaitable[None]]
"""``(job id, miner id, wallet)``: awaited once a proof is accepted, before the market
is told (the peer journals who is owed the job's pay)."""


class MinerRequestError(ComputeError):
    """A miner's request refused: ``status`` and ``code`` for the RPC's error envelope."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code = status, code


def _refuse(code: str, message: str, status: int = 400) -> MinerRequestError:
    return MinerRequestError(status, code, message)


@dataclass
class Miner:
    miner_id: str
    wallet: str = ""
    mode: str = "cpu"
    gpu: bool = False
    workloads: tuple[str, ...] = ()
    concurrency: int = 1
    heard: float = -math.inf
    """trio's clock at its last heartbeat."""
    done: int = 0
    failed: int = 0


@dataclass
class Task:
    job_id: bytes
    workload: str
    params: dict[str, Any]
    max_runtime_s: float
    miner: str = ""
    """The miner holding it (empty while queued)."""
    taken_at: float = 0.0
    finished: trio.Event = field(default_factory=trio.Event)
    execution: Execution | None = None


def _text(doc: Mapping[str, Any], name: str, *, required: bool = True, max_len: int = MAX_TEXT) -> str:
    value = doc.get(name)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or not value or len(value) > max_len:
        raise _refuse("BAD_REQUEST", f"{name!r} must be a string of 1 to {max_len} characters")
    return value


def _check_fields(doc: Mapping[str, Any], allowed: set[str], what: str) -> None:
    unknown = sorted(set(doc) - allowed)
    if unknown:
        raise _refuse("BAD_REQUEST", f"unknown fields {unknown[:8]} in {what}; it takes {sorted(allowed)}")


class MinerPool:
    """The compute of this peer's external miners. Its face to the market is the
    executor's (``run``, ``statistics``, ``device``); its face to the miners is
    ``heartbeat``, ``next`` and ``proof`` (rpc/miners.py)."""

    checkable = False
    models: tuple[str, ...] = ()
    """Its miners' models are their own: none is listed."""
    """A miner's proof is a hash: nothing a spot check or an audit can ask of it, so this
    peer bids only on offers that ask for no verification."""

    def __init__(
        self,
        keys: Mapping[str, str],
        *,
        workloads: tuple[str, ...],
        heartbeat_timeout_s: float,
        needs_wallet: bool,
        on_proven: Proven | None = None,
    ) -> None:
        self._keys = dict(keys)
        self.miners = {miner: Miner(miner) for miner in keys}
        self._sold = workloads
        self._timeout = heartbeat_timeout_s
        self._needs_wallet = needs_wallet
        self._on_proven = on_proven
        self._queue: OrderedDict[bytes, Task] = OrderedDict()
        self._taken: dict[bytes, Task] = {}
        self._finished: OrderedDict[bytes, tuple[str, dict[str, Any]]] = OrderedDict()
        """Job id -> (miner, the answer its proof got)."""
        self._arrived = trio.Event()
        self._done = self._failed = self._peak = 0

    # ------------------------------------------------------------- miners
    def authenticate(self, bearer: str) -> str | None:
        """The miner whose API key ``bearer`` is (compared in constant time), else None."""
        return holder_of(bearer, self._keys)

    def live(self) -> list[Miner]:
        """The miners heard within the heartbeat timeout."""
        now = trio.current_time()
        return [m for m in self.miners.values() if now - m.heard <= self._timeout]

    def heartbeat(
        self, miner_id: str, doc: Mapping[str, Any], *, valid_wallet: Callable[[str], bool]
    ) -> dict[str, Any]:
        """Take a heartbeat (the guide's ``{miner_id, wallet, mode, gpu}``, and optionally
        MinerCapabilities' ``concurrency``, ``workloads`` and ``limits``)."""
        _check_fields(doc, set(HEARTBEAT_FIELDS), "a heartbeat")
        if _text(doc, "miner_id") != miner_id:
            raise _refuse("MINER_MISMATCH", f"this API key is miner {miner_id!r}'s", 403)
        wallet = _text(doc, "wallet", required=self._needs_wallet)
        if self._needs_wallet and not valid_wallet(wallet):
            raise _refuse("BAD_WALLET", f"wallet {wallet[:80]!r} is not an aitbc1 address: this peer pays there", 422)
        mode = doc.get("mode", "cpu")
        if mode not in ("gpu", "cpu"):
            raise _refuse("BAD_REQUEST", "'mode' must be 'gpu' or 'cpu'")
        gpu = doc.get("gpu", mode == "gpu")
        if gpu not in (True, False, 0, 1):  # miner.sh sends 0 or 1
            raise _refuse("BAD_REQUEST", "'gpu' must be true, false, 0 or 1")
        concurrency = doc.get("concurrency", 1)
        if type(concurrency) is not int or not 1 <= concurrency <= MAX_SLOTS:
            raise _refuse("BAD_REQUEST", f"'concurrency' must be an integer from 1 to {MAX_SLOTS}")
        named = doc.get("workloads")
        if named is None:
            runs = self._sold
        elif isinstance(named, list) and len(named) <= 32 and all(isinstance(w, str) for w in named):
            runs = tuple(w for w in self._sold if w in named)
        else:
            raise _refuse("BAD_REQUEST", "'workloads' must be a list of workload names")
        if "limits" in doc and not isinstance(doc["limits"], dict):
            raise _refuse("BAD_REQUEST", "'limits' must be an object")
        miner = self.miners[miner_id]
        fresh = trio.current_time() - miner.heard > self._timeout
        miner.wallet, miner.mode, miner.gpu = wallet, str(mode), bool(gpu)
        miner.workloads, miner.concurrency, miner.heard = runs, concurrency, trio.current_time()
        if fresh:
            logger.info("miner %s is live (%s, workloads %s)", miner_id, mode, ", ".join(runs) or "none")
        return {
            "miner_id": miner_id,
            "offered": bool(runs),
            "workloads": list(runs),
            "heartbeat_timeout_s": self._timeout,
            "holding": sorted(t.job_id.hex() for t in self._taken.values() if t.miner == miner_id),
        }

    def next(self, miner_id: str, slots: int) -> dict[str, Any] | None:
        """The next queued job that ``miner_id`` runs, handed to it; None if there is none
        or it already holds ``slots`` jobs."""
        miner = self.miners[miner_id]
        if trio.current_time() - miner.heard > self._timeout:
            raise _refuse("HEARTBEAT_FIRST", "no recent heartbeat from this miner: POST /v1/miner/heartbeat", 409)
        holding = sum(1 for t in self._taken.values() if t.miner == miner_id)
        if holding >= min(slots, MAX_SLOTS):
            return None
        task = next((t for t in self._queue.values() if t.workload in miner.workloads), None)
        if task is None:
            return None
        del self._queue[task.job_id]
        task.miner, task.taken_at = miner_id, trio.current_time()
        self._taken[task.job_id] = task
        self._peak = max(self._peak, len(self._taken))
        logger.info("job %s handed to miner %s", task.job_id.hex()[:16], miner_id)
        return {
            "id": task.job_id.hex(),
            "workload": task.workload,
            "params": task.params,
            "max_runtime_s": task.max_runtime_s,
        }

    def proof(self, miner_id: str, doc: Mapping[str, Any]) -> dict[str, Any]:
        """Take a miner's proof of a job it holds: ``{id, mode, output_sha, metrics}``
        as the guide posts it, with the job's ``output`` (text whose SHA-256 is
        ``output_sha``) if the miner sends it, or ``error`` for a job it could not run."""
        _check_fields(doc, set(PROOF_FIELDS), "a proof")
        text = _text(doc, "id", max_len=64)
        try:
            job_id = bytes.fromhex(text)
        except ValueError as e:
            raise _refuse("BAD_REQUEST", "'id' must be the job id in hex") from e
        done = self._finished.get(job_id)
        if done is not None and done[0] == miner_id:
            return done[1]  # posted again (a retry): the same answer
        task = self._taken.get(job_id)
        if task is None or task.miner != miner_id:
            raise _refuse("JOB_NOT_HELD", f"miner {miner_id!r} holds no job {text[:16]}", 404)
        error = doc.get("error")
        if error is not None:
            if not isinstance(error, str) or len(error) > MAX_TEXT:
                raise _refuse("BAD_REQUEST", f"'error' must be a string of at most {MAX_TEXT} characters")
            self._finish(task, Execution(False, b"", f"miner {miner_id} failed the job: {error or 'no reason'}"))
            return self._answer(task, "failed")
        sha = _text(doc, "output_sha", max_len=64).lower()
        if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
            raise _refuse("BAD_REQUEST", "'output_sha' must be 64 hex characters (a SHA-256)")
        if sha == EMPTY_SHA256:  # the hash of nothing: whatever ran, nothing came of it
            self._finish(task, Execution(False, b"", f"miner {miner_id} produced no output"))
            raise _refuse("EMPTY_OUTPUT", "output_sha is the SHA-256 of nothing: an empty result is not sold", 422)
        output = doc.get("output")
        if output is not None:
            if not isinstance(output, str) or len(output.encode()) > MAX_OUTPUT:
                raise _refuse("BAD_REQUEST", f"'output' must be text of at most {MAX_OUTPUT} bytes (UTF-8)")
            if hashlib.sha256(output.encode()).hexdigest() != sha:
                raise _refuse("OUTPUT_MISMATCH", "the SHA-256 of 'output' is not 'output_sha'", 422)
        metrics = doc.get("metrics", {})
        if not isinstance(metrics, dict) or len(metrics) > MAX_METRICS:
            raise _refuse("BAD_METRICS", f"'metrics' must be an object of at most {MAX_METRICS} entries")
        for name, value in metrics.items():
            if len(name) > 64 or type(value) is not int or not 0 <= value < 1 << 63:
                raise _refuse("BAD_METRICS", f"metric {name[:64]!r} must be a non-negative integer (no floats)")
        mode = doc.get("mode", self.miners[miner_id].mode)
        if mode not in ("gpu", "cpu"):
            raise _refuse("BAD_REQUEST", "'mode' must be 'gpu' or 'cpu'")
        elapsed = trio.current_time() - task.taken_at
        compute_ms = max(1, min(int(elapsed * 1000), int(task.max_runtime_s * 1000)))
        result: dict[str, Any] = {"miner": miner_id, "mode": mode, "output_sha": sha}
        if output is not None:
            result["output"] = output
        self._finish(task, Execution(True, encode(result), metrics={**metrics, "compute_ms": compute_ms}))
        return self._answer(task, "accepted", compute_ms=compute_ms)

    def _answer(self, task: Task, status: str, **extra: Any) -> dict[str, Any]:
        answer = {"id": task.job_id.hex(), "status": status, **extra}
        self._finished[task.job_id] = (task.miner, answer)
        while len(self._finished) > MAX_DONE:
            self._finished.popitem(last=False)
        return answer

    def _finish(self, task: Task, execution: Execution) -> None:
        self._queue.pop(task.job_id, None)
        self._taken.pop(task.job_id, None)
        if task.execution is None:
            task.execution = execution
        task.finished.set()

    # -------------------------------------------------------- the market's
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
        """Queue a job for the miners and wait for its proof (or its failure)."""
        try:
            WORKLOADS[workload].validate(params)
        except (KeyError, ComputeError) as e:
            self._failed += 1
            return Execution(False, b"", f"bad job: {e}")
        if not any(workload in m.workloads for m in self.live()):
            self._failed += 1
            return Execution(False, b"", f"no miner of this peer runs {workload} now")
        if not job_id or job_id in self._queue or job_id in self._taken:
            self._failed += 1
            return Execution(False, b"", "this job is already with the miners")
        task = Task(job_id, workload, params, max_runtime_s)
        self._queue[job_id] = task
        queued_at = trio.current_time()
        try:
            while not task.finished.is_set():
                with trio.move_on_after(CHECK_S):
                    await task.finished.wait()
                now = trio.current_time()
                if task.finished.is_set():
                    break
                if not task.miner and not any(workload in m.workloads for m in self.live()):
                    self._finish(task, Execution(False, b"", f"no miner of this peer runs {workload} any more"))
                elif not task.miner and now - queued_at > max_runtime_s:
                    self._finish(task, Execution(False, b"", f"no miner took the job within {max_runtime_s} s"))
                elif task.miner and now - task.taken_at > max_runtime_s:
                    why = f"miner {task.miner} posted no proof within the runtime cap of {max_runtime_s} s"
                    self._finish(task, Execution(False, b"", why))
        finally:
            if not task.finished.is_set():  # cancelled: the job is not anyone's any more
                self._finish(task, Execution(False, b"", "cancelled"))
        execution = task.execution
        assert execution is not None
        miner = self.miners.get(task.miner)
        if not execution.ok:
            self._failed += 1
            if miner is not None:
                miner.failed += 1
            logger.warning("job %s failed: %s", job_id.hex()[:16], execution.error)
            return execution
        assert miner is not None
        if self._on_proven is not None:
            try:
                await self._on_proven(job_id, miner.miner_id, miner.wallet)
            except StoreError as e:  # unpaid miner is worse than an unsold job: no receipt then
                self._failed += 1
                logger.error("job %s: its miner's payout could not be journaled: %s", job_id.hex()[:16], e)
                return Execution(False, b"", "this peer could not record its miner's payout")
        self._done += 1
        miner.done += 1
        return execution

    def describe(self) -> list[dict[str, Any]]:
        """Every registered miner as the operator sees it (``GET /v1/miners``)."""
        now = trio.current_time()
        return [
            {
                "miner_id": m.miner_id,
                "live": now - m.heard <= self._timeout,
                "heard_s_ago": None if m.heard == -math.inf else round(now - m.heard, 1),
                "wallet": m.wallet,
                "mode": m.mode,
                "gpu": m.gpu,
                "workloads": list(m.workloads),
                "concurrency": m.concurrency,
                "holding": sorted(t.job_id.hex() for t in self._taken.values() if t.miner == m.miner_id),
                "done": m.done,
                "failed": m.failed,
            }
            for m in self.miners.values()
        ]

    def statistics(self) -> dict[str, int]:
        live = self.live()
        slots = sum(m.concurrency for m in live)
        return {
            "slots": slots,
            "free_slots": max(0, slots - len(self._taken)),
            "done": self._done,
            "failed": self._failed,
            "worker_restarts": 0,
            "running": len(self._taken),
            "peak_running": self._peak,
            "queued": len(self._queue),
            "miners": len(live),
        }

    def device(self) -> DeviceInfo:
        """What this peer sells now: its heard miners' union."""
        live = sorted(self.live(), key=lambda m: m.miner_id)
        runs = tuple(w for w in self._sold if any(w in m.workloads for m in live))
        gpu = any(m.gpu for m in live)
        names = ", ".join(m.miner_id for m in live)
        return DeviceInfo(
            mode="gpu" if gpu else "cpu",
            device="miners",
            name=f"{len(live)} external miner{'s' if len(live) != 1 else ''}: {names}"[:200] if live else "no miner",
            gpu=gpu,
            count=len(live),
            devices=tuple(m.miner_id for m in live),
            vram_mb=0,
            ram_mb=0,
            driver_version="",
            cuda_version="",
            torch_version="",
            gflops=0,
            workloads=runs,
        )


__all__ = ["HEARTBEAT_FIELDS", "PROOF_FIELDS", "Miner", "MinerPool", "MinerRequestError", "Proven"]
