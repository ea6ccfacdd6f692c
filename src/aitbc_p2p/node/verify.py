"""Stateless checks on every core, off the Trio thread.

A batch of at least :data:`MIN_PARALLEL` transactions is split into one contiguous chunk
per core, and each chunk is checked in a worker process (trio-parallel; spawned on first
use and kept). Threads would not do: decoding is pure Python and holds the GIL, so in
threads it runs one at a time with the node's own work (admission, block building, the
commit), and a thread returning from libsecp256k1 waits for the GIL behind all of it
(measured with bench/ledger.py: two verifying threads gained 1.2x over one, not 2x).
A worker returns decoded transactions, which unpickle in about a tenth of a decode.

A smaller batch is checked in one thread: a round trip to a worker costs more than it.
If a worker dies (killed, out of memory), its chunk is checked again in a thread: no
verdict is ever assumed.

Entry points:

- :func:`decode_and_verify`: transactions that arrive as bytes (gossip bundles, RPC
  batches): decode, shape and bounds, chain id and fee floor, signature.
- :func:`verify_signatures`: transactions already decoded (a block's).
- :func:`admit_pipelined`: feeds a stateful stage (the mempool) with checked batches, in
  order, while later batches are checked.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, TypeVar

import trio
import trio_parallel

from aitbc_p2p.chain.batch import Checked, check_encoded, check_signatures, signature_item
from aitbc_p2p.chain.models import Transaction
from aitbc_p2p.chain.transition import ChainRules
from aitbc_p2p.exceptions import TxRejected
from aitbc_p2p.types import Hash32

logger = logging.getLogger(__name__)

MIN_PARALLEL = 64
"""Below this many transactions one thread is faster than worker processes."""

T = TypeVar("T")


def _chunks(n: int, parallel: int | None) -> list[tuple[int, int]]:
    """Contiguous ``(start, end)`` ranges: one per core (or ``parallel``), none under MIN_PARALLEL."""
    count = max(1, min(parallel or os.cpu_count() or 2, math.ceil(n / MIN_PARALLEL)))
    size = math.ceil(n / count) if n else 0
    return [(start, min(start + size, n)) for start in range(0, n, size)] if n else []


async def _in_workers(fn: Callable[..., T], pieces: Sequence[tuple[Any, ...]]) -> list[T]:
    """``fn(*args)`` for each args tuple: in worker processes when there are several,
    else in a thread. Results in input order."""
    if len(pieces) == 1:
        return [await trio.to_thread.run_sync(fn, *pieces[0])]
    results: list[Any] = [None] * len(pieces)

    async def run(i: int) -> None:
        try:
            results[i] = await trio_parallel.run_sync(fn, *pieces[i])
        except trio_parallel.BrokenWorkerError as e:
            logger.warning("a verifying worker process died (%s); checking its chunk in a thread", e)
            results[i] = await trio.to_thread.run_sync(fn, *pieces[i])

    async with trio.open_nursery() as nursery:
        for i in range(len(pieces)):
            nursery.start_soon(run, i)
    return results


async def warm_up(parallel: int | None = None) -> None:
    """Start the worker processes now rather than on the first big batch (a spawn takes
    a few tenths of a second). They stay until idle for ten minutes."""
    async with trio.open_nursery() as nursery:
        for _ in range(parallel or os.cpu_count() or 2):
            nursery.start_soon(trio_parallel.run_sync, os.getpid)


async def decode_and_verify(encoded: Sequence[bytes], rules: ChainRules, *, parallel: int | None = None) -> Checked:
    """The stateless stage: every transaction decoded and checked against every rule
    that needs no state, its signature included. Never raises for bad input: each
    refusal is reported with its position and reason."""
    encoded = list(encoded)
    parts = await _in_workers(check_encoded, [(encoded[a:b], rules, a) for a, b in _chunks(len(encoded), parallel)])
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
    parts = await _in_workers(check_signatures, [(items[a:b], a) for a, b in _chunks(len(items), parallel)])
    bad = [(txs[i], e) for part in parts for i, e in part]
    rejected = {tx.hash for tx, _ in bad}
    return {tx.hash for tx in txs if tx.hash not in rejected}, bad


class _Pending:
    """One batch's verdict, delivered when its check finishes."""

    __slots__ = ("checked", "ready")

    def __init__(self) -> None:
        self.ready = trio.Event()
        self.checked = Checked()


async def admit_pipelined(
    batches: Iterable[Sequence[bytes]],
    rules: ChainRules,
    admit: Callable[[Checked], Awaitable[None] | None],
    *,
    ahead: int = 4,
    parallel: int | None = None,
) -> None:
    """Feed ``admit`` (the stateful stage, on the Trio thread) each batch's stateless
    verdict, in batch order, while up to ``ahead`` later batches are being checked: the
    workers do not wait for the stateful stage, nor it for one slow chunk."""
    send, receive = trio.open_memory_channel[_Pending](ahead)

    async def check(batch: Sequence[bytes], pending: _Pending) -> None:
        pending.checked = await decode_and_verify(batch, rules, parallel=parallel)
        pending.ready.set()

    async def produce(nursery: trio.Nursery) -> None:
        async with send:
            for batch in batches:
                pending = _Pending()
                await send.send(pending)  # waits while ``ahead`` batches are unadmitted
                nursery.start_soon(check, batch, pending)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(produce, nursery)
        async with receive:
            async for pending in receive:
                await pending.ready.wait()
                result = admit(pending.checked)
                if result is not None:
                    await result
