"""Ledger throughput: the raw single-core ceiling against the node's own path, in one run.

(a) raw: decode each transaction, verify its signature, update balances in a dict.
(b) node: the proposer's path. Mempool admission of encoded transactions as gossip
    delivers them in bundles (decode and signature checks in worker threads on all cores,
    overlapping the stateful admission of the previous bundle on the Trio thread), block
    building from the pool with 1000-transaction blocks (apply, receipts, state root; no
    second verification), and the synced LevelDB commit.

Prints progress to stderr and, as its last line, JSON:
{"bench": "ledger", "raw_single_core_tx_s": ..., "node_tx_s": ..., "ratio": ..., "import_tx_s": ...}
(c) sync import: a fresh peer imports the blocks of (b) as a syncing peer does (decode,
    parallel signature checks, apply, state root, synced commit); ``--txs 1000000``
    makes it 1,000 full blocks.
(a) and (b) alternate ``--repeat`` times (default 5) and the medians are reported, with the
range of the per-run ratios: on a shared 2-core machine single runs vary by 30 %.
Run: .venv/bin/python bench/ledger.py [--txs 4000] [--block-size 1000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import trio

from aitbc_p2p.chain import Block, Genesis, Transaction, build_block, validate_block
from aitbc_p2p.chain.transition import ChainRules
from aitbc_p2p.crypto import PrivateKey
from aitbc_p2p.mempool import Mempool
from aitbc_p2p.node.verify import Verified, admit_pipelined, verify_signatures
from aitbc_p2p.store import ChainStore, LevelDBKV
from aitbc_p2p.testing import make_genesis, make_key, make_tx


def raw_ceiling(wire: list[bytes], funded: list[str], dest: str) -> float:
    """(a) decode, verify and update balances in a dict, on one core: tx/s."""
    start = time.perf_counter()
    balances = dict.fromkeys(funded, 10**15)
    for data in wire:
        tx = Transaction.decode(data)
        tx.verify_signature()
        balances[tx.sender] -= tx.payload["amount"] + tx.fee
        balances[dest] = balances.get(dest, 0) + tx.payload["amount"]
    return len(wire) / (time.perf_counter() - start)


def node_path(
    wire: list[bytes], genesis: Genesis, authority: PrivateKey, block_size: int, db: Path, *, quiet: bool
) -> tuple[float, list[bytes]]:
    """(b) admission, block building and the synced commit on a real LevelDB: (tx/s, blocks)."""
    rules = ChainRules.of(genesis)
    store = ChainStore(LevelDBKV(db), genesis)
    pool = Mempool(rules, max_size=len(wire) + 1, max_per_sender=len(wire) + 1)

    def admit(verified: Verified) -> None:
        for tx in verified.txs:
            pool.add(tx, store.state, height=store.head.height, verified=True)

    batches = [wire[i : i + block_size] for i in range(0, len(wire), block_size)]
    start = time.perf_counter()
    trio.run(partial(admit_pipelined, batches, rules, admit))
    admitted = time.perf_counter()
    committed = 0
    shipped: list[bytes] = []
    while len(pool):
        head = store.head
        applied, _ = build_block(
            authority, head, store.state, list(pool.candidates()), rules,
            timestamp_ms=head.timestamp_ms + 1, max_txs=block_size, verified=pool,
        )  # fmt: skip
        store.commit(applied)
        shipped.append(applied.block.encode())
        pool.remove(list(applied.block.txs))
        committed += len(applied.block.txs)
        if not quiet:
            print(f"  block {applied.block.height}: {committed}/{len(wire)} committed", file=sys.stderr)
    elapsed = time.perf_counter() - start
    store.close()
    print(f"  node: {committed / elapsed:,.0f} tx/s (admission {admitted - start:.2f} s of {elapsed:.2f} s)",
          file=sys.stderr)  # fmt: skip
    return committed / elapsed, shipped


def sync_import(shipped: list[bytes], genesis: Genesis, db: Path) -> float:
    """(c) a peer receiving full blocks, as in sync: decode, verify on all cores, apply,
    state root, synced commit. Returns seconds."""
    rules = ChainRules.of(genesis)
    syncing = ChainStore(LevelDBKV(db), genesis)
    start = time.perf_counter()
    for data in shipped:
        block = Block.decode(data)
        good, _ = trio.run(verify_signatures, block.txs)
        syncing.commit(validate_block(block, syncing.head, syncing.state, rules, verified=good))
    elapsed = time.perf_counter() - start
    syncing.close()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--txs", type=int, default=4000)
    parser.add_argument("--block-size", type=int, default=1000)
    parser.add_argument("--senders", type=int, default=40)
    parser.add_argument("--repeat", type=int, default=5, help="alternating raw and node runs; medians reported")
    args = parser.parse_args()

    authority = make_key("bench-authority")
    senders = [make_key(f"bench-sender-{i}") for i in range(args.senders)]
    funded = [k.address for k in senders]
    genesis = make_genesis([authority], dict.fromkeys(funded, 10**15), block_time_ms=1)
    per_sender = args.txs // len(senders)
    dest = make_key("bench-dest").address
    print(f"signing {per_sender * len(senders)} transactions ...", file=sys.stderr)
    txs = [make_tx(k, nonce=n, to=dest, amount=1) for n in range(per_sender) for k in senders]
    wire = [tx.encode() for tx in txs]

    raws: list[float] = []
    nodes: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        for run in range(args.repeat):
            # Alternate, so that a noisy neighbour slows both sides alike.
            raws.append(raw_ceiling(wire, funded, dest))
            print(f"run {run + 1}/{args.repeat}: raw {raws[-1]:,.0f} tx/s", file=sys.stderr)
            node, shipped = node_path(wire, genesis, authority, args.block_size, Path(tmp) / f"db{run}", quiet=run > 0)
            nodes.append(node)
        import_s = sync_import(shipped, genesis, Path(tmp) / "sync")
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
