"""Signature verification on all cores: libsecp256k1 releases the GIL while it works,
so Trio worker threads verifying disjoint chunks run in parallel."""

from __future__ import annotations

import os
from collections.abc import Sequence

import trio

from aitbc_p2p.chain.models import Transaction
from aitbc_p2p.exceptions import TxRejected
from aitbc_p2p.types import Hash32

MIN_PARALLEL = 64
"""Below this many transactions one thread is faster than handing out work."""


def _verify_chunk(txs: Sequence[Transaction]) -> list[tuple[Transaction, TxRejected]]:
    bad = []
    for tx in txs:
        try:
            tx.verify_signature()
        except TxRejected as e:
            bad.append((tx, e))
    return bad


async def verify_signatures(
    txs: Sequence[Transaction], *, threads: int | None = None
) -> tuple[set[Hash32], list[tuple[Transaction, TxRejected]]]:
    """Verify every signature off the Trio thread, in ``threads`` chunks (default: one per
    core). Returns (hashes of the good transactions, the bad ones with their reasons)."""
    workers = 1 if len(txs) < MIN_PARALLEL else (threads or os.cpu_count() or 2)
    results: list[list[tuple[Transaction, TxRejected]]] = [[] for _ in range(workers)]

    async def run(i: int) -> None:
        results[i] = await trio.to_thread.run_sync(_verify_chunk, txs[i::workers])

    async with trio.open_nursery() as nursery:
        for i in range(workers):
            nursery.start_soon(run, i)
    bad = [item for part in results for item in part]
    rejected = {tx.hash for tx, _ in bad}
    return {tx.hash for tx in txs if tx.hash not in rejected}, bad
