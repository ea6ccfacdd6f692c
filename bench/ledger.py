"""Ledger throughput: the raw single-core ceiling against the node's own path, in one run.

(a) raw: decode each transaction, verify its signature, update balances in a dict.
(b) node: mempool admission (signatures verified in parallel batches, as gossip delivers
    them), block building from the pool (no second verification), block validation as a
    receiving peer that has seen none of the transactions (parallel verification, then
    apply and state root), and the synced LevelDB commit.

Prints progress to stderr and, as its last line, JSON:
{"bench": "ledger", "raw_single_core_tx_s": ..., "node_tx_s": ..., "ratio": ..., "import_tx_s": ...}
(c) sync import: a fresh peer imports the blocks of (b) as a syncing peer does (decode,
    parallel signature checks, apply, state root, synced commit); ``--txs 1000000``
    makes it 1,000 full blocks.
Run: .venv/bin/python bench/ledger.py [--txs 4000] [--block-size 1000]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import trio

from aitbc_p2p.chain import Block, Transaction, build_block, validate_block
from aitbc_p2p.chain.transition import ChainRules
from aitbc_p2p.mempool import Mempool
from aitbc_p2p.node.verify import verify_signatures
from aitbc_p2p.store import ChainStore, LevelDBKV
from aitbc_p2p.testing import make_genesis, make_key, make_tx


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--txs", type=int, default=4000)
    parser.add_argument("--block-size", type=int, default=1000)
    parser.add_argument("--senders", type=int, default=40)
    args = parser.parse_args()

    authority = make_key("bench-authority")
    senders = [make_key(f"bench-sender-{i}") for i in range(args.senders)]
    genesis = make_genesis([authority], {k.address: 10**15 for k in senders}, block_time_ms=1)
    rules = ChainRules.of(genesis)
    per_sender = args.txs // len(senders)
    dest = make_key("bench-dest").address
    print(f"signing {per_sender * len(senders)} transactions ...", file=sys.stderr)
    txs = [make_tx(k, nonce=n, to=dest, amount=1) for n in range(per_sender) for k in senders]
    wire = [tx.encode() for tx in txs]

    # (a) the raw single-core ceiling
    start = time.perf_counter()
    balances = {k.address: 10**15 for k in senders}
    for data in wire:
        tx = Transaction.decode(data)
        tx.verify_signature()
        balances[tx.sender] -= tx.payload["amount"] + tx.fee
        balances[dest] = balances.get(dest, 0) + tx.payload["amount"]
    raw = len(wire) / (time.perf_counter() - start)
    print(f"raw: {raw:,.0f} tx/s", file=sys.stderr)

    # (b) the node's own path on a real LevelDB
    with tempfile.TemporaryDirectory() as tmp:
        store = ChainStore(LevelDBKV(Path(tmp) / "db"), genesis)
        pool = Mempool(rules, max_size=len(wire) + 1, max_per_sender=per_sender + 1)
        start = time.perf_counter()
        for i in range(0, len(wire), args.block_size):
            batch = [Transaction.decode(data) for data in wire[i : i + args.block_size]]
            good, _ = trio.run(verify_signatures, batch)
            for tx in batch:
                pool.add(tx, store.state, height=store.head.height, verified=tx.hash in good)
        admitted = time.perf_counter()
        committed = 0
        shipped: list[bytes] = []
        while len(pool):
            head = store.head
            applied, _ = build_block(
                authority, head, store.state, list(pool.candidates()), rules,
                timestamp_ms=head.timestamp_ms + 1, max_txs=args.block_size, verified=pool,
            )  # fmt: skip
            # A receiving peer: decode the block, verify its signatures on all cores, apply.
            received = Block.decode(applied.block.encode())
            good, _ = trio.run(verify_signatures, received.txs)
            validate_block(received, head, store.state, rules, verified=good)
            store.commit(applied)
            shipped.append(applied.block.encode())
            pool.remove(list(applied.block.txs))
            committed += len(applied.block.txs)
            print(f"  block {applied.block.height}: {committed}/{len(wire)} committed", file=sys.stderr)
        elapsed = time.perf_counter() - start
        node = committed / elapsed
        store.close()
        print(f"node: {node:,.0f} tx/s (admission {admitted - start:.2f} s of {elapsed:.2f} s)", file=sys.stderr)

        # (c) a peer syncing the same full blocks: decode, verify on all cores, apply, commit.
        syncing = ChainStore(LevelDBKV(Path(tmp) / "sync"), genesis)
        start = time.perf_counter()
        for data in shipped:
            block = Block.decode(data)
            good, _ = trio.run(verify_signatures, block.txs)
            syncing.commit(validate_block(block, syncing.head, syncing.state, rules, verified=good))
        import_s = time.perf_counter() - start
        syncing.close()
    blocks_s = len(shipped) / import_s
    print(f"sync import: {blocks_s:,.1f} blocks/s, {committed / import_s:,.0f} tx/s", file=sys.stderr)
    print(json.dumps({
        "bench": "ledger", "txs": len(wire), "block_size": args.block_size,
        "raw_single_core_tx_s": round(raw), "node_tx_s": round(node), "ratio": round(node / raw, 3),
        "import_blocks": len(shipped), "import_blocks_s": round(blocks_s, 2),
        "import_tx_s": round(committed / import_s), "import_ratio": round(committed / import_s / raw, 3),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
