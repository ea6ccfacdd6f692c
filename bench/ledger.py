"""Ledger throughput: the raw single-core ceiling against the node's own path, in one run.

(a) raw: decode each transaction, verify its signature, update balances in a dict.
(b) node: mempool admission, block building (blocks of --block-size), block validation
    as a receiving peer does it, and the synced LevelDB commit.

Prints progress to stderr and, as its last line, JSON:
{"bench": "ledger", "raw_single_core_tx_s": ..., "node_tx_s": ..., "ratio": ...}
Run: .venv/bin/python bench/ledger.py [--txs 4000] [--block-size 1000]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from aitbc_p2p.chain import Transaction, build_block, validate_block
from aitbc_p2p.chain.transition import ChainRules
from aitbc_p2p.mempool import Mempool
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
        for data in wire:
            pool.add(Transaction.decode(data), store.state, height=store.head.height)
        committed = 0
        while len(pool):
            head = store.head
            applied, _ = build_block(
                authority, head, store.state, list(pool.candidates()), rules,
                timestamp_ms=head.timestamp_ms + 1, max_txs=args.block_size,
            )  # fmt: skip
            validate_block(applied.block, head, store.state, rules)  # as a receiving peer does
            store.commit(applied)
            pool.remove(list(applied.block.txs))
            committed += len(applied.block.txs)
            print(f"  block {applied.block.height}: {committed}/{len(wire)} committed", file=sys.stderr)
        node = committed / (time.perf_counter() - start)
        store.close()
    print(f"node: {node:,.0f} tx/s", file=sys.stderr)
    print(json.dumps({
        "bench": "ledger", "txs": len(wire), "block_size": args.block_size,
        "raw_single_core_tx_s": round(raw), "node_tx_s": round(node), "ratio": round(node / raw, 3),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
