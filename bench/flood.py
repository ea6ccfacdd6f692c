"""Flood: a connected stranger floods invalid gossip at honest peers (issue 21, item 5).

Real peers (``open_test_network``: whole nodes on real libp2p hosts, 127.0.0.1, one
process) and an attacker host connected to every one of them. Honest load: signed
transfers submitted at peer 0, ``--rate`` a second; each transfer's propagation latency
is the time from its submission until it is in the pool of every other peer.

1. Baseline: ``--seconds`` of honest load alone.
2. Flood: the same honest load while the attacker publishes, as fast as its host lets it,
   invalid messages on every topic: transaction bundles whose transactions are signed
   by the wrong key (each costs a signature check before it is refused), blocks signed by
   an outsider, garbage on the consensus topic and mis-signed job offers.

Reported: how long each honest peer took to graylist the attacker (its gossip dropped
unread) and to ban it (disconnected, refused), the attacker's messages sent, and the
honest propagation p50/p99 in both phases, with the ratio of the p99s (the bound: 2).

Prints progress to stderr; its last line is JSON:
{"bench": "flood", "peers": 3, "graylisted_s_max": ..., "banned_s_max": ..., "sent": ...,
 "baseline_p99_ms": ..., "flood_p99_ms": ..., "p99_ratio": ..., "lost": 0}
Run: .venv/bin/python bench/flood.py [--peers 3] [--rate 20] [--seconds 10]
Exit status 1 if a peer never graylisted the attacker within 10 s, an honest transfer
was lost, or the p99 ratio passed 2.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import time
from collections.abc import Iterator
from typing import Any

import trio
import trio.lowlevel

from aitbc_p2p.chain import Transaction
from aitbc_p2p.chain.blocks import build_block
from aitbc_p2p.codec import encode
from aitbc_p2p.exceptions import NetworkError
from aitbc_p2p.market import JobOffer, params_hash
from aitbc_p2p.network import open_libp2p_network
from aitbc_p2p.network.protocols import topic
from aitbc_p2p.node import Node
from aitbc_p2p.node.bundles import encode_bundle
from aitbc_p2p.node.wire import encode_block_message
from aitbc_p2p.testing import make_key, make_tx, open_test_network
from aitbc_p2p.types import aitbc

GRAYLIST_BOUND_S = 10.0
P99_BOUND = 2.0
CLIENT = make_key("flood-client")
ATTACKER = make_key("flood-attacker")


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def invalid_messages(node: Node) -> Iterator[tuple[str, bytes]]:
    """Invalid messages for this chain, each one new (a peer drops a copy of what it saw
    unread, unpenalized), the four kinds in turn: a bundle of transactions signed by the
    forger in the client's name (each costs a signature check before it is refused), a
    block signed by an outsider, garbage on the consensus topic, a mis-signed job offer."""
    chain_id = node.genesis.chain_id
    forger = make_key("flood-forger")
    head = node.store.head
    for i in itertools.count():
        txs = []
        for n in range(20):
            signed = make_tx(forger, nonce=i * 20 + n, to=ATTACKER.address, amount=1)
            body = {**signed.body(), "from": CLIENT.address}
            txs.append(Transaction.from_wire({"body": body, "sig": signed.signature}))
        yield topic(chain_id, "tx"), encode_bundle([tx.encode() for tx in txs])
        by_outsider, _ = build_block(
            forger, head, node.store.state, [], node.rules, timestamp_ms=node.engine.due_ms(head, 1) + i,
            max_txs=1, round=1,
        )  # fmt: skip
        yield topic(chain_id, "block"), encode_block_message(by_outsider.block)
        yield topic(chain_id, "consensus"), os.urandom(64)
        offer = JobOffer.create(
            forger, chain_id, workload="echo", params_hash=params_hash("echo", {"message": "x"}),
            max_price=aitbc(1), max_runtime_s=30, verification="none", timestamp_ms=i,
        )  # fmt: skip
        mis_signed = offer.to_wire()
        mis_signed["body"]["client"] = CLIENT.address  # the forger's signature, the client's name
        yield topic(chain_id, "job"), encode({"offer": mis_signed})


async def honest_load(nodes: list[Node], rate: float, seconds: float) -> tuple[list[float], int]:
    """Transfers at peer 0 for ``seconds``; each one's latency (ms) until in every other
    peer's pool, and how many never arrived within 10 s."""
    latencies: list[float] = []
    lost = 0
    nonce = nodes[0].account(CLIENT.address).account.nonce + len(nodes[0].mempool)
    async with trio.open_nursery() as nursery:

        async def one(tx: Transaction, at: float) -> None:
            nonlocal lost
            with trio.move_on_after(10) as scope:
                while not all(tx.hash in n.mempool or n.store.find_tx(tx.hash) for n in nodes[1:]):  # noqa: ASYNC110 (polled: latency)
                    await trio.sleep(0.002)
                latencies.append((time.monotonic() - at) * 1000)
            if scope.cancelled_caught:
                lost += 1

        end = time.monotonic() + seconds
        while time.monotonic() < end:
            tx = make_tx(CLIENT, nonce=nonce, to=make_key("flood-dest").address, amount=1)
            nonce += 1
            at = time.monotonic()
            await nodes[0].submit_tx(tx)
            nursery.start_soon(one, tx, at)
            await trio.sleep(1 / rate)
    return latencies, lost


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peers", type=int, default=3)
    parser.add_argument("--rate", type=float, default=20.0, help="honest transfers a second")
    parser.add_argument("--seconds", type=float, default=10.0, help="each phase")
    args = parser.parse_args()
    alloc = {CLIENT.address: aitbc(1000)}
    async with open_test_network(args.peers, alloc=alloc, block_time_ms=1000) as nodes:
        await nodes[0].wait_height(2)
        say(f"{args.peers} peers up; baseline: {args.rate:g} transfers/s for {args.seconds:g} s")
        baseline, lost_before = await honest_load(nodes, args.rate, args.seconds)
        messages = invalid_messages(nodes[0])
        async with open_libp2p_network(ATTACKER, ["/ip4/127.0.0.1/tcp/0"]) as attacker:
            for node in nodes:
                await attacker.connect(node.network.listen_addrs()[0])
            await trio.sleep(1)  # subscriptions exchanged: the attacker's publishes reach the peers
            sent = 0
            graylisted: dict[str, float] = {}
            banned: dict[str, float] = {}
            started = time.monotonic()

            async def flood() -> None:
                nonlocal sent
                for name, data in messages:
                    try:
                        await attacker.publish(name, data)
                        sent += 1
                    except NetworkError:
                        pass
                    await trio.lowlevel.checkpoint()

            async def watch() -> None:
                while True:
                    for i, node in enumerate(nodes):
                        scores, peer = node.network.scores, attacker.peer_id
                        if str(i) not in graylisted and (scores.graylisted(peer) or scores.banned(peer)):
                            graylisted[str(i)] = time.monotonic() - started
                        if str(i) not in banned and scores.banned(peer):
                            banned[str(i)] = time.monotonic() - started
                    await trio.sleep(0.01)

            say("flood: the attacker publishes invalid bundles, blocks, consensus and job messages")
            async with trio.open_nursery() as nursery:
                nursery.start_soon(flood)
                nursery.start_soon(watch)
                flooded, lost_during = await honest_load(nodes, args.rate, args.seconds)
                nursery.cancel_scope.cancel()
        rejected = {str(i): n.network.scores.rejected.get(attacker.peer_id, 0) for i, n in enumerate(nodes)}
    result: dict[str, Any] = {
        "bench": "flood",
        "peers": args.peers,
        "rate_tx_s": args.rate,
        "seconds": args.seconds,
        "sent": sent,
        "rejected_by_peer": rejected,
        "graylisted_s": {k: round(v, 3) for k, v in sorted(graylisted.items())},
        "banned_s": {k: round(v, 3) for k, v in sorted(banned.items())},
        "graylisted_s_max": round(max(graylisted.values()), 3) if len(graylisted) == len(nodes) else None,
        "banned_s_max": round(max(banned.values()), 3) if len(banned) == len(nodes) else None,
        "baseline_p50_ms": round(statistics.median(baseline), 1) if baseline else None,
        "baseline_p99_ms": round(pct(baseline, 0.99), 1),
        "flood_p50_ms": round(statistics.median(flooded), 1) if flooded else None,
        "flood_p99_ms": round(pct(flooded, 0.99), 1),
        "lost": lost_before + lost_during,
    }
    result["p99_ratio"] = round(result["flood_p99_ms"] / result["baseline_p99_ms"], 2) if baseline else None
    ok = (
        result["graylisted_s_max"] is not None
        and result["graylisted_s_max"] <= GRAYLIST_BOUND_S
        and result["lost"] == 0
        and result["p99_ratio"] is not None
        and result["p99_ratio"] <= P99_BOUND
    )
    say(
        f"graylisted by every peer within {result['graylisted_s_max']} s, banned within {result['banned_s_max']} s; "
        f"{sent} invalid messages sent; honest p99 {result['baseline_p99_ms']} ms before, "
        f"{result['flood_p99_ms']} ms during (x{result['p99_ratio']}); lost {result['lost']}"
    )
    print(json.dumps(result))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(trio.run(main))
