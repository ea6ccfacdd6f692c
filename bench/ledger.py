"""Ledger throughput: the raw single-core ceiling against the node's own path, in one run.

(a) raw: decode each transaction, verify its signature, update balances in a dict.
(b) node: the proposer's path, with the node's concurrency. Gossip bundles of encoded
    transactions go through the stateless stage (decode and signatures in worker
    processes on every core, several bundles ahead) into mempool admission on the Trio
    thread; meanwhile the proposer builds 1000-transaction blocks from the pool (apply,
    receipts, state root, no second signature check) and commits each one as the node
    does: a synced LevelDB batch written in a thread, then published together with the
    pool's prune in one step on the Trio thread.
(c) sync import: a fresh peer imports the blocks of (b) as a syncing peer does: each
    block decoded and its signatures checked in a worker process, a few blocks ahead of
    the one being applied (state root) and committed (synced batch); ``--txs 1000000``
    makes it 1,000 full blocks.

Prints progress to stderr and, as its last line, JSON:
{"bench": "ledger", "raw_single_core_tx_s": ..., "node_tx_s": ..., "ratio": ..., "import_tx_s": ...}
(a) and (b) alternate ``--repeat`` times (default 5) and the medians are reported, with the
range of the per-run ratios: on a shared 2-core machine single runs vary by 30 %.
Every run starts cold, as a peer that sees these senders for the first time: (a) with
its address caches emptied, (b) and (c) with fresh worker processes (two per core, all
started before the clock starts, as a node under load has them). The garbage collector
is tuned as the daemon tunes it (aitbc_p2p.node.runtime), for the whole process: both
paths run under the same settings.
Run: .venv/bin/python bench/ledger.py [--txs 4000] [--block-size 1000] [--bundle 250] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import trio
import trio_parallel

from aitbc_p2p.chain import Genesis, Transaction, build_block, validate_block
from aitbc_p2p.chain.batch import Checked, CheckedBlock
from aitbc_p2p.chain.transition import ChainRules
from aitbc_p2p.crypto import PrivateKey
from aitbc_p2p.crypto.keys import clear_address_caches
from aitbc_p2p.mempool import Mempool
from aitbc_p2p.node.runtime import tune_gc
from aitbc_p2p.node.verify import BLOCKS_AHEAD, WORKERS_PER_CORE, admit_pipelined, decode_block, pipelined, warm_up
from aitbc_p2p.store import ChainStore, LevelDBKV
from aitbc_p2p.testing import make_genesis, make_key, make_tx
from aitbc_p2p.types import Address


def raw_ceiling(wire: list[bytes], funded: list[Address], dest: Address) -> float:
    """(a) decode, verify and update balances in a dict, on one core: tx/s. Starts with
    cold address caches, as (b)'s fresh workers do."""
    clear_address_caches()
    start = time.perf_counter()
    balances = dict.fromkeys(funded, 10**15)
    for data in wire:
        tx = Transaction.decode(data)
        tx.verify_signature()
        amount = tx.payload.amount  # type: ignore[union-attr]  # every one is a transfer
        balances[tx.sender] -= amount + tx.fee
        balances[dest] = balances.get(dest, 0) + amount
    return len(wire) / (time.perf_counter() - start)


async def node_path(
    wire: list[bytes], genesis: Genesis, authority: PrivateKey, block_size: int, bundle: int, db: Path, *, quiet: bool
) -> tuple[float, list[bytes]]:
    """(b) admission and block production at once, on a real LevelDB: (tx/s, blocks).
    Call it with fresh, started workers (see :func:`measure`)."""
    clear_address_caches()
    rules = ChainRules.of(genesis)
    store = await trio.to_thread.run_sync(ChainStore, LevelDBKV(db), genesis)
    # Room for every transaction: admission may run ahead of block production here.
    pool = Mempool(rules, max_size=len(wire) + 1, max_per_sender=len(wire) + 1)
    shipped: list[bytes] = []
    admitted = trio.Event()
    arrived = [trio.Event()]

    def admit(checked: Checked) -> None:
        for tx in checked.txs:
            pool.add(tx, store.state, height=store.head.height, verified=True)
        arrived[0].set()
        arrived[0] = trio.Event()

    async def produce() -> None:
        committed = 0
        while committed < len(wire):
            if len(pool) < block_size and not admitted.is_set():
                await arrived[0].wait()
                continue
            head = store.head
            build = partial(
                build_block, authority, head, store.state, list(pool.candidates(limit=2 * block_size)), rules,
                timestamp_ms=head.timestamp_ms + 1, max_txs=block_size, verified=pool,
            )  # fmt: skip
            applied, _ = await trio.to_thread.run_sync(build)
            await trio.to_thread.run_sync(store.write_block, applied)
            store.publish()  # as Node._publish: the pool moves with the state, no checkpoint between
            pool.settle(store.state, [applied.block])
            shipped.append(applied.block.encode())
            committed += len(applied.block.txs)
            if not quiet:
                print(f"  block {applied.block.height}: {committed}/{len(wire)} committed", file=sys.stderr)

    bundles = [wire[i : i + bundle] for i in range(0, len(wire), bundle)]
    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(produce)
        await admit_pipelined(bundles, rules, admit)
        admitted.set()
        arrived[0].set()
    elapsed = time.perf_counter() - start
    store.close()
    print(f"  node: {len(wire) / elapsed:,.0f} tx/s in {len(shipped)} blocks", file=sys.stderr)
    return len(wire) / elapsed, shipped


async def sync_import(shipped: list[bytes], genesis: Genesis, db: Path) -> float:
    """(c) a peer receiving full blocks, as sync does: each block decoded and its signatures
    checked in a worker process while the blocks before it are applied (state root in a
    thread) and committed (synced batch). Returns seconds."""
    rules = ChainRules.of(genesis)
    syncing = ChainStore(LevelDBKV(db), genesis)

    async def apply(_: bytes, checked: CheckedBlock) -> None:
        if checked.block is None or checked.bad:
            raise RuntimeError(f"a shipped block does not check: {checked.error or checked.bad}")
        applied = await trio.to_thread.run_sync(
            partial(validate_block, checked.block, syncing.head, syncing.state, rules, verified=checked.verified())
        )
        await trio.to_thread.run_sync(syncing.write_block, applied)
        syncing.publish()

    start = time.perf_counter()
    await pipelined(shipped, decode_block, apply, ahead=BLOCKS_AHEAD)
    elapsed = time.perf_counter() - start
    syncing.close()
    return elapsed


@asynccontextmanager
async def fresh_workers() -> AsyncIterator[None]:
    """New worker processes for what runs inside, all started, as a node under load has
    them: none remembers the senders of an earlier run, just as (a) starts with cold caches."""
    async with trio_parallel.cache_scope():
        await warm_up(WORKERS_PER_CORE * (os.cpu_count() or 2))
        yield


async def measure(
    args: argparse.Namespace,
    wire: list[bytes],
    funded: list[str],
    dest: str,
    genesis: Genesis,
    authority: PrivateKey,
    tmp: Path,
) -> tuple[list[float], list[float], list[bytes], float]:
    """(a) and (b) alternating, then (c): (raw tx/s per run, node tx/s per run, blocks, import seconds)."""
    raws: list[float] = []
    nodes: list[float] = []
    shipped: list[bytes] = []
    for run in range(args.repeat):
        # Alternate, so that a noisy neighbour slows both sides alike.
        raws.append(raw_ceiling(wire, funded, dest))
        print(f"run {run + 1}/{args.repeat}: raw {raws[-1]:,.0f} tx/s", file=sys.stderr)
        async with fresh_workers():
            node, shipped = await node_path(
                wire, genesis, authority, args.block_size, args.bundle, tmp / f"db{run}", quiet=run > 0
            )
        nodes.append(node)
    async with fresh_workers():
        imported = await sync_import(shipped, genesis, tmp / "sync")
    return raws, nodes, shipped, imported


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--txs", type=int, default=4000)
    parser.add_argument("--block-size", type=int, default=1000)
    parser.add_argument("--bundle", type=int, default=250, help="transactions per gossip bundle")
    parser.add_argument(
        "--per-sender", type=int, default=16, help="transactions per sender (the pool holds at most 64 per sender)"
    )
    parser.add_argument("--repeat", type=int, default=5, help="alternating raw and node runs; medians reported")
    args = parser.parse_args()

    authority = make_key("bench-authority")
    per_sender = args.per_sender
    senders = [make_key(f"bench-sender-{i}") for i in range(max(1, args.txs // per_sender))]
    funded = [k.address for k in senders]
    genesis = make_genesis([authority], dict.fromkeys(funded, 10**15), block_time_ms=1)
    dest = make_key("bench-dest").address
    print(f"signing {per_sender * len(senders)} transactions from {len(senders)} senders ...", file=sys.stderr)
    wire = [make_tx(k, nonce=n, to=dest, amount=1).encode() for n in range(per_sender) for k in senders]
    tune_gc()  # as the daemon does once it has started; for both paths alike

    with tempfile.TemporaryDirectory() as tmp:
        raws, nodes, shipped, import_s = trio.run(measure, args, wire, funded, dest, genesis, authority, Path(tmp))
    raw, node = statistics.median(raws), statistics.median(nodes)
    ratios = sorted(n / r for n, r in zip(nodes, raws, strict=True))
    committed = len(wire)
    blocks_s = len(shipped) / import_s
    print(f"raw {raw:,.0f} tx/s, node {node:,.0f} tx/s (medians of {args.repeat}); "
          f"per-run ratios {', '.join(f'{r:.2f}' for r in ratios)}", file=sys.stderr)  # fmt: skip
    print(f"sync import: {blocks_s:,.1f} blocks/s, {committed / import_s:,.0f} tx/s", file=sys.stderr)
    print(json.dumps({
        "bench": "ledger", "txs": committed, "block_size": args.block_size, "repeat": args.repeat,
        "raw_single_core_tx_s": round(raw), "node_tx_s": round(node), "ratio": round(node / raw, 3),
        "ratio_min": round(ratios[0], 3), "ratio_max": round(ratios[-1], 3),
        "import_blocks": len(shipped), "import_blocks_s": round(blocks_s, 2),
        "import_tx_s": round(committed / import_s), "import_ratio": round(committed / import_s / raw, 3),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
