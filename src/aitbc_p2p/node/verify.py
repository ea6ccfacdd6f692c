"""Stateless checks on every core, off the Trio thread.

A batch of at least :data:`MIN_PARALLEL` transactions is checked in worker processes
(trio-parallel; started by :func:`warm_up` and kept): split into one contiguous chunk per
core while workers are free (latency), or as one job when earlier batches keep them busy
(throughput: each job costs the event loop a fixed share of pickling and pipe work).
Threads would not do: decoding is pure Python and holds the GIL, so in threads it runs
one at a time with the node's own work (admission, block building, the commit), and a
thread returning from libsecp256k1 waits for the GIL behind all of it (measured with
bench/ledger.py: two verifying threads gained 1.2x over one, not 2x).
A worker returns decoded transactions, which unpickle in about a tenth of a decode.

Up to two jobs per core are in flight (:data:`WORKERS_PER_CORE`), in workers running at a lower
CPU priority (:data:`WORKER_NICENESS`): when a worker finishes a chunk, the next one is
already waiting in another worker, so the core does not idle while the Trio thread (busy
admitting, or holding the GIL for a block) is slow to hand it more; and when the Trio
thread wants a core, the kernel gives it one ahead of the workers. Measured with
bench/ledger.py (2 cores): busy time of the cores went from 0.82 to 0.93 of the node run,
and one job per bundle under load cut the event loop's CPU by about a sixth.

A smaller batch is checked in one thread: a round trip to a worker costs more than it.
If a worker dies (killed, out of memory), its chunk is checked again in a thread: no
verdict is ever assumed.

Entry points:

- :func:`decode_and_verify`: transactions that arrive as bytes (gossip bundles, RPC
  batches): decode, shape and bounds, chain id and fee floor, signature.
- :func:`verify_signatures`: transactions already decoded (a block's).
- :func:`decode_block`: a block that arrives as bytes (sync): decoded, every signature
  checked. :func:`decode_block_message`: the same for a gossiped block message, whose
  header signature is checked there too.
- :func:`pipelined`: feeds a stateful stage with each item's check, in order, while later
  items are checked: :func:`admit_pipelined` (gossip bundles into the mempool) and sync
  (each block decoded and verified in a worker while the ones before it are applied).
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
import signal
from collections.abc import Awaitable, Callable, Iterable, Sequence
from functools import partial
from typing import Any, Generic, TypeVar

import trio
import trio_parallel

from aitbc_p2p.chain.batch import (
    Checked,
    CheckedBlock,
    check_block,
    check_block_message,
    check_encoded,
    check_signatures,
    signature_item,
)
from aitbc_p2p.chain.models import Transaction
from aitbc_p2p.chain.transition import ChainRules
from aitbc_p2p.exceptions import TxRejected
from aitbc_p2p.node.offload import blocking, inline
from aitbc_p2p.types import Hash32

logger = logging.getLogger(__name__)

MIN_PARALLEL = 64
"""Below this many transactions one thread is faster than worker processes."""

MIN_PARALLEL_BLOCK_BYTES = 16 << 10
"""A block smaller than this (about MIN_PARALLEL transfers) is checked in a thread."""

BLOCKS_AHEAD = 4
"""Sync: blocks decoded and verified in workers while an earlier one is applied."""

WORKERS_PER_CORE = 2
"""Worker jobs in flight per core: one being checked, the next one waiting."""

WORKER_NICENESS = 10
"""Added to a worker process's niceness on its first job: the node's own process (the
event loop, admission, block production) runs first when both want a core."""

_LIMITER: trio.lowlevel.RunVar[trio.CapacityLimiter] = trio.lowlevel.RunVar("aitbc_verify_limiter")
_THREADS_ONLY: trio.lowlevel.RunVar[bool] = trio.lowlevel.RunVar("aitbc_verify_threads_only", default=False)
_lowered = False

T = TypeVar("T")
I = TypeVar("I")  # noqa: E741
R = TypeVar("R")


def _chunks(n: int, parallel: int | None) -> list[tuple[int, int]]:
    """Contiguous ``(start, end)`` ranges, none under MIN_PARALLEL: ``parallel`` of them, by
    default one per core but no more than the worker slots free now. An idle node splits a
    batch across its cores, for latency; a busy one (its slots taken by earlier batches)
    checks each batch as one job, for throughput: every job costs the event loop about as
    much as a hundred transactions' worth of pickling and pipe transfers."""
    if parallel is None:
        parallel = min(_cores(), int(_limiter().available_tokens))
    count = max(1, min(parallel, math.ceil(n / MIN_PARALLEL)))
    size = math.ceil(n / count) if n else 0
    return [(start, min(start + size, n)) for start in range(0, n, size)] if n else []


def _cores() -> int:
    return os.cpu_count() or 2


def _limiter() -> trio.CapacityLimiter:
    """This Trio run's cap on worker jobs in flight (and so on worker processes)."""
    try:
        return _LIMITER.get()
    except LookupError:
        limiter = trio.CapacityLimiter(WORKERS_PER_CORE * _cores())
        _LIMITER.set(limiter)
        return limiter


def use_worker_processes(enabled: bool) -> None:
    """Whether this Trio run checks big batches in worker processes (the default) or,
    ``False``, every batch in a thread.

    Worker processes pay off for a peer alone on its host: they use the cores its event
    loop does not. Peers that share a host's cores (a devnet, bench/gossip.py) should not
    start them: each peer's workers then compete with the other peers for the same cores,
    and every job adds pickling and pipe work on top. Four peers on two cores delivered a
    third of 2,000 tx/s with workers, and all of 5,000 tx/s in threads (bench/README.md).
    Set per peer with ``NodeConfig.verify_workers`` (``[node] verify_workers``).
    """
    _THREADS_ONLY.set(not enabled)


def _in_background(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` in a worker process, whose priority is lowered on its first job."""
    global _lowered
    if not _lowered and multiprocessing.parent_process() is not None:  # never the node's own
        _lowered = True
        try:
            os.nice(WORKER_NICENESS)
        except (AttributeError, OSError):  # no os.nice (Windows), or not permitted: run as is
            logger.debug("could not lower a verifying worker's priority")
        # SIGINT/SIGTERM sent to the whole process group (Ctrl-C, a service manager) are
        # the node's to handle: it stops its workers itself. A worker killed by them
        # first made trio-parallel's exit hook report a BrokenWorkerProcessError.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    return fn(*args)


async def _in_workers(fn: Callable[..., T], pieces: Sequence[tuple[Any, ...]], *, small: bool = False) -> list[T]:
    """``fn(*args)`` for each args tuple, in worker processes; in a thread when the batch
    is ``small`` (under MIN_PARALLEL: a round trip to a worker costs more). Results in
    input order."""
    if small or _THREADS_ONLY.get() or inline():
        return [await blocking(fn, *args) for args in pieces]
    results: list[Any] = [None] * len(pieces)

    async def run(i: int) -> None:
        try:
            results[i] = await trio_parallel.run_sync(_in_background, fn, *pieces[i], limiter=_limiter())
        except trio_parallel.BrokenWorkerError as e:
            logger.warning("a verifying worker process died (%s); checking its chunk in a thread", e)
            results[i] = await blocking(fn, *pieces[i])

    async with trio.open_nursery() as nursery:
        for i in range(len(pieces)):
            nursery.start_soon(run, i)
    return results


async def warm_up(workers: int | None = None) -> None:
    """Start ``workers`` worker processes now (default: one per core) rather than on the
    first big batches: a spawn, and importing the chain code a job needs, take a few
    tenths of a second of CPU each. The second worker per core starts when load first
    queues jobs behind the first ones. Workers retire after ten idle minutes."""
    if _THREADS_ONLY.get() or inline():
        return
    limiter = _limiter()
    job = partial(trio_parallel.run_sync, _in_background, check_signatures, [], limiter=limiter)  # imports it
    async with trio.open_nursery() as nursery:
        for _ in range(min(workers or _cores(), int(limiter.total_tokens))):  # each needs its own worker
            nursery.start_soon(job)


async def decode_and_verify(encoded: Sequence[bytes], rules: ChainRules, *, parallel: int | None = None) -> Checked:
    """The stateless stage: every transaction decoded and checked against every rule
    that needs no state, its signature included. Never raises for bad input: each
    refusal is reported with its position and reason."""
    encoded = list(encoded)
    if _THREADS_ONLY.get() or inline():  # one thread, one piece: no chunking without workers
        return await blocking(check_encoded, encoded, rules, 0)
    pieces = [(encoded[a:b], rules, a) for a, b in _chunks(len(encoded), parallel)]
    parts = await _in_workers(check_encoded, pieces, small=len(encoded) < MIN_PARALLEL)
    out = Checked()
    for part in parts:
        out.txs += part.txs
        out.rejected += part.rejected
    return out


async def verify_signatures(
    txs: Sequence[Transaction], *, parallel: int | None = None
) -> tuple[set[Hash32], list[tuple[Transaction, TxRejected]]]:
    """Verify every signature off the Trio thread. Returns (hashes of the good
    transactions, the bad ones with their reasons)."""
    items = [signature_item(tx) for tx in txs]
    pieces = [(items[a:b], a) for a, b in _chunks(len(items), parallel)]
    parts = await _in_workers(check_signatures, pieces, small=len(items) < MIN_PARALLEL)
    bad = [(txs[i], e) for part in parts for i, e in part]
    rejected = {tx.hash for tx, _ in bad}
    return {tx.hash for tx in txs if tx.hash not in rejected}, bad


async def decode_block(data: bytes) -> CheckedBlock:
    """A block's bytes decoded and its transactions' signatures checked, in a worker
    process (in a thread when it is small). Never raises for bad input."""
    (checked,) = await _in_workers(check_block, [(data,)], small=len(data) < MIN_PARALLEL_BLOCK_BYTES)
    return checked


async def decode_block_message(data: bytes) -> tuple[CheckedBlock, Any]:
    """A block-topic message (``[block, certificate]``) decoded, its header's and its
    transactions' signatures checked, in a worker process (in a thread when it is small):
    (the block, the certificate as decoded CBOR). Never raises for bad input."""
    (checked,) = await _in_workers(check_block_message, [(data,)], small=len(data) < MIN_PARALLEL_BLOCK_BYTES)
    return checked


class _Pending(Generic[R]):
    """One item's check, delivered when it finishes."""

    __slots__ = ("ready", "result")

    def __init__(self) -> None:
        self.ready = trio.Event()
        self.result: R | None = None


async def pipelined(
    items: Iterable[I],
    check: Callable[[I], Awaitable[R]],
    consume: Callable[[I, R], Awaitable[None] | None],
    *,
    ahead: int = 4,
) -> None:
    """``consume(item, await check(item))`` for each item, in order, while up to ``ahead``
    later items are being checked: the checks (in workers) do not wait for the stateful
    stage, nor it for one slow check. An exception from ``consume`` stops the checks
    still running and is raised as it is."""
    send, receive = trio.open_memory_channel[tuple[I, _Pending[R]]](ahead)
    failed: list[Exception] = []

    async def run_check(item: I, pending: _Pending[R]) -> None:
        pending.result = await check(item)
        pending.ready.set()

    async def produce(nursery: trio.Nursery) -> None:
        async with send:
            for item in items:
                pending = _Pending[R]()
                await send.send((item, pending))  # waits while ``ahead`` items are unconsumed
                nursery.start_soon(run_check, item, pending)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(produce, nursery)
        async with receive:
            async for item, pending in receive:
                await pending.ready.wait()
                try:
                    result = consume(item, pending.result)  # type: ignore[arg-type]
                    if result is not None:
                        await result
                except Exception as e:  # noqa: BLE001 - raised below, outside the nursery
                    failed.append(e)
                    nursery.cancel_scope.cancel()
                    break
    if failed:
        raise failed[0]


async def admit_pipelined(
    batches: Iterable[Sequence[bytes]],
    rules: ChainRules,
    admit: Callable[[Checked], Awaitable[None] | None],
    *,
    ahead: int = 4,
    parallel: int | None = None,
) -> None:
    """Feed ``admit`` (the stateful stage, on the Trio thread) each batch's stateless
    verdict, in batch order, while up to ``ahead`` later batches are being checked."""
    await pipelined(
        batches,
        partial(decode_and_verify, rules=rules, parallel=parallel),
        lambda _, checked: admit(checked),
        ahead=ahead,
    )
