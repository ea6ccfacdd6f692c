"""Gossip: transactions across N peer processes on loopback, in one run.

Each peer is a separate process (this file with ``--worker``) holding a real libp2p host
(TCP + Noise + Yamux, gossipsub as the node configures it) and the node's stateless gate
on the tx topic: bundle decoding, stateless rules and signature checks in worker threads.
Peer i dials peers i-1, i-2 and i-3, so an 8-peer network is several hops wide.

One or more publishers gossip signed transfers at a set rate, in bundles every
``NodeConfig.bundle_interval_s`` (100 ms) as the node does (``--bundle-ms`` to try
others). For each rate the bench reports the delivered fraction (transactions that
passed the gate at every other peer, each counted once), the propagation latency from
publish to that point (p50, p99), duplicate deliveries and CPU per peer. Rates rise until
one loses transactions, the publishers cannot keep up, or p99 passes 1 s (a growing
backlog); the highest rate before that is ``sustained_tx_s``. The baseline, in the
same run: a request/response round trip on a fresh libp2p stream between two peers.

Prints a table and progress to stderr; its last line is JSON:
{"bench": "gossip", "peers": 4, "sustained_tx_s": ..., "loss": ..., "p99_ms_at_500_tx_s": ...,
 "stream_rtt_ms": ..., "networks": [...]}
Signatures are checked in threads, as the devnet's peers check them (they share the
host's cores; node/verify.py); ``--verify-in-workers`` uses worker processes instead, as
a peer alone on its host does.
Run: .venv/bin/python bench/gossip.py [--peers 4 8] [--rates 250,500,1000,...] [--seconds 3] [--publishers 1]
     [--verify-in-workers] [--bundle-ms 100]
(GOSSIP_DEBUG=1 prints each peer's verdict counts and any bundle it missed.)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

from aitbc_p2p.chain.batch import Checked
from aitbc_p2p.chain.transition import ChainRules
from aitbc_p2p.codec import decode, encode
from aitbc_p2p.exceptions import CodecError
from aitbc_p2p.network import REJECT, Verdict, accept, open_libp2p_network, topic
from aitbc_p2p.network.limits import RequestPolicy
from aitbc_p2p.node import NodeConfig
from aitbc_p2p.node.bundles import decode_bundle, split_bundles
from aitbc_p2p.node.verify import decode_and_verify, use_worker_processes, warm_up
from aitbc_p2p.testing import make_genesis, make_key, make_tx

BUNDLE_INTERVAL_S = NodeConfig.__dataclass_fields__["bundle_interval_s"].default
ECHO = "/aitbc-bench/echo/1"
DIAL_BACK = 3
MAX_P99_MS = 1000
"""A rate whose p99 passes this is not sustained: a backlog is growing."""
SENDERS = 64
GENESIS = make_genesis([make_key("gossip-bench-authority")])
TX_TOPIC = topic(GENESIS.chain_id, "tx")


# ---------------------------------------------------------------- worker process
class Worker:
    def __init__(self, index: int, txs_file: Path, workers: bool = False) -> None:
        self.index = index
        self.workers = workers
        self.txs_file = txs_file
        self.txs: list[bytes] = []
        self.rules = ChainRules.of(GENESIS)
        self.received: list[tuple[str, float, int]] = []  # bundle id, arrival, transactions
        self.received_txs = 0
        self.arrived = trio.Event()
        self.net: Any = None

    async def gate(self, data: bytes) -> Verdict[Checked]:
        """The node's tx gate (node/relay.py): what it parsed travels on the message."""
        try:
            verified = await decode_and_verify(decode_bundle(data), self.rules)
        except CodecError:
            return REJECT
        return REJECT if verified.rejected else accept(verified)

    async def consume(self, inbox: Any) -> None:
        async for msg in inbox:
            count = len(msg.value.txs) if msg.value is not None else len(decode(msg.data))
            self.received.append((hashlib.sha256(msg.data).hexdigest(), time.monotonic(), count))
            self.received_txs += self.received[-1][2]
            self.arrived.set()

    async def publish(self, net: Any, rate: int, seconds: float, offset: int, interval: float) -> dict[str, Any]:
        if not self.txs:
            self.txs = decode(self.txs_file.read_bytes(), max_size=1 << 30)
        total = int(rate * seconds)
        txs = self.txs[offset : offset + total]
        if len(txs) < total:
            raise SystemExit(f"need {total} transactions from {offset}, have {len(self.txs)}")
        per_tick = max(1, round(rate * interval))
        sent: list[tuple[str, float, int]] = []
        start = time.monotonic()
        for tick, i in enumerate(range(0, total, per_tick)):
            await trio.sleep(max(0.0, start + tick * interval - time.monotonic()))
            for bundle in split_bundles(txs[i : i + per_tick]):
                sent.append((hashlib.sha256(bundle).hexdigest(), time.monotonic(), len(decode(bundle))))
                await net.publish(TX_TOPIC, bundle)
        return {"sent": sent, "elapsed": time.monotonic() - start}

    async def collect(self, expect: int, timeout: float) -> dict[str, Any]:
        with trio.move_on_after(timeout):
            while self.received_txs < expect:
                self.arrived = trio.Event()
                await self.arrived.wait()
        verdicts = dict(self.net.verdicts) if self.net else {}
        out = {"recv": self.received, "cpu": time.process_time(), "verdicts": verdicts}
        self.received, self.received_txs = [], 0
        return out

    async def run(self) -> None:
        key = make_key(f"gossip-bench-peer-{self.index}")
        stdin = trio.wrap_file(sys.stdin)
        # The baseline is the transport's round trip: 200 requests back to back would meet
        # the per-peer request rate limit (20/s after a burst of 40) and measure that instead.
        unthrottled = RequestPolicy(rate_per_s=1e6, burst=1_000_000)
        async with (
            open_libp2p_network(key, ["/ip4/127.0.0.1/tcp/0"], requests=unthrottled) as net,
            trio.open_nursery() as nursery,
        ):
            use_worker_processes(self.workers)  # as the node does with NodeConfig.verify_in_workers
            await warm_up()

            async def echo(peer: str, data: bytes) -> bytes:
                return data

            net.set_request_handler(ECHO, echo)
            self.net = net
            nursery.start_soon(self.consume, await net.subscribe(TX_TOPIC, self.gate))
            _reply({"addr": net.listen_addrs()[0], "peer_id": net.peer_id})
            while line := await stdin.readline():
                cmd = json.loads(line)
                if cmd["cmd"] == "connect":
                    for addr in cmd["addrs"]:
                        await net.connect(addr)
                    _reply({"peers": len(net.connected_peers())})
                elif cmd["cmd"] == "peers":
                    _reply({"peers": len(net.connected_peers())})
                elif cmd["cmd"] == "publish":
                    _reply(await self.publish(net, cmd["rate"], cmd["seconds"], cmd["offset"], cmd["interval"]))
                elif cmd["cmd"] == "collect":
                    _reply(await self.collect(cmd["expect"], cmd["timeout"]))
                elif cmd["cmd"] == "rtt":
                    times = []
                    for _ in range(cmd["n"]):
                        t = time.perf_counter()
                        await net.request(cmd["peer"], ECHO, b"x" * 64)
                        times.append(time.perf_counter() - t)
                    _reply({"rtt_ms": statistics.median(times) * 1000})
                else:
                    break
            nursery.cancel_scope.cancel()


def _reply(doc: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(doc) + "\n")
    sys.stdout.flush()


# ---------------------------------------------------------------- coordinator
class Peer:
    def __init__(self, index: int, txs_file: Path, workers: bool = False) -> None:
        cmd = [sys.executable, __file__, "--worker", str(index), "--txs-file", str(txs_file)]
        cmd += ["--verify-in-workers"] if workers else []
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        hello = self.read()
        self.addr, self.peer_id = hello["addr"], hello["peer_id"]

    def read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"a worker exited (status {self.proc.wait()})")
        doc: dict[str, Any] = json.loads(line)
        return doc

    def send(self, **cmd: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()

    def ask(self, **cmd: Any) -> dict[str, Any]:
        self.send(**cmd)
        return self.read()

    def close(self) -> None:
        try:
            self.send(cmd="quit")
            self.proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()


def make_transactions(n: int, path: Path) -> None:
    senders = [make_key(f"gossip-bench-sender-{i}") for i in range(SENDERS)]
    dest = make_key("gossip-bench-dest").address
    wire = [make_tx(senders[i % SENDERS], nonce=i // SENDERS, to=dest, amount=1).encode() for i in range(n)]
    path.write_bytes(encode(wire))


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run_rate(
    peers: list[Peer], publishers: int, rate: int, seconds: float, offset: int, interval: float
) -> dict[str, Any]:
    pubs = peers[:publishers]
    cpu_before = [p.ask(cmd="collect", expect=0, timeout=0)["cpu"] for p in peers]
    per_pub = rate // publishers
    wall = time.monotonic()
    for i, p in enumerate(pubs):
        p.send(
            cmd="publish", rate=per_pub, seconds=seconds, offset=offset + i * int(per_pub * seconds), interval=interval
        )
    published = [p.read() for p in pubs]
    sent = {bid: (t, n, i) for i, doc in enumerate(published) for bid, t, n in doc["sent"]}
    sent_txs = sum(n for _, n, _ in sent.values())
    # Each peer should receive every transaction but its own.
    received: list[dict[str, Any]] = []
    for i, p in enumerate(peers):
        expect = sent_txs - (sum(n for _, n, src in sent.values() if src == i) if i < publishers else 0)
        received.append(p.ask(cmd="collect", expect=expect, timeout=10))
    wall = time.monotonic() - wall
    if os.environ.get("GOSSIP_DEBUG"):
        for i, doc in enumerate(received):
            got = {bid for bid, _, _ in doc["recv"]}
            missing = [(bid[:8], src) for bid, (_, _, src) in sent.items() if bid not in got and src != i]
            print(f"   peer {i}: verdicts {doc['verdicts']}, missing {missing}", file=sys.stderr)
    delivered, duplicates, latencies = 0, 0, []
    for i, doc in enumerate(received):
        seen: set[str] = set()
        for bid, t, n in doc["recv"]:
            if bid not in sent or sent[bid][2] == i:  # a publisher's own bundles come back to it locally
                continue
            if bid in seen:
                duplicates += 1
                continue
            seen.add(bid)
            delivered += n
            latencies.append((t - sent[bid][0]) * 1000)
    expected = sent_txs * (len(peers) - 1)
    elapsed = max(doc["elapsed"] for doc in published)
    cpu = [(doc["cpu"] - before) / wall * 100 for doc, before in zip(received, cpu_before, strict=True)]
    return {
        "rate": rate,
        "sent": sent_txs,
        "achieved_tx_s": round(sent_txs / elapsed),
        "delivered": round(delivered / expected, 5) if expected else 0.0,
        "loss": round(1 - delivered / expected, 5) if expected else 1.0,
        "duplicate_bundles": duplicates,
        "p50_ms": round(_pct(latencies, 0.5), 2),
        "p99_ms": round(_pct(latencies, 0.99), 2),
        "cpu_pct_mean": round(statistics.mean(cpu), 1),
        "cpu_pct_max": round(max(cpu), 1),
    }


def run_network(n: int, args: argparse.Namespace, txs_file: Path) -> dict[str, Any]:
    print(f"-- {n} peers: starting processes", file=sys.stderr)
    peers: list[Peer] = []
    try:
        for i in range(n):
            peers.append(Peer(i, txs_file, args.verify_in_workers))
        for i, p in enumerate(peers[1:], start=1):
            p.ask(cmd="connect", addrs=[peers[j].addr for j in range(max(0, i - DIAL_BACK), i)])
        time.sleep(3)  # subscriptions travel and gossipsub grafts its mesh (1 s heartbeat)
        rtt = peers[1].ask(cmd="rtt", peer=peers[0].peer_id, n=200)["rtt_ms"]
        print(f"   stream round trip {rtt:.2f} ms", file=sys.stderr)
        runs, offset, sustained = [], 0, 0
        for rate in args.rates:
            run = run_rate(peers, args.publishers, rate, args.seconds, offset, args.bundle_ms / 1000)
            offset += run["sent"]
            runs.append(run)
            kept_up = run["achieved_tx_s"] >= 0.95 * rate and run["p99_ms"] <= MAX_P99_MS
            print(
                f"   {rate:>6} tx/s: delivered {run['delivered']:.4f}, p50 {run['p50_ms']:.1f} ms, "
                f"p99 {run['p99_ms']:.1f} ms, cpu/peer {run['cpu_pct_mean']:.0f}% (max {run['cpu_pct_max']:.0f}%)"
                + (f", {run['duplicate_bundles']} duplicates" if run["duplicate_bundles"] else "")
                + ("" if kept_up else f" (not sustained: {run['achieved_tx_s']} tx/s published)"),
                file=sys.stderr,
            )
            if run["loss"] > 0 or not kept_up:
                break
            sustained = rate
    finally:
        for p in peers:
            p.close()
    at500 = next((r for r in runs if r["rate"] == 500), None)
    return {
        "peers": n,
        "publishers": args.publishers,
        "verify_in_workers": args.verify_in_workers,
        "bundle_ms": args.bundle_ms,
        "sustained_tx_s": sustained,
        "loss": max(r["loss"] for r in runs if r["rate"] <= max(sustained, args.rates[0])),
        "p99_ms_at_500_tx_s": at500["p99_ms"] if at500 else None,
        "stream_rtt_ms": round(rtt, 3),
        "runs": runs,
    }


def table(networks: list[dict[str, Any]]) -> str:
    lines = ["| peers | rate tx/s | delivered | p50 ms | p99 ms | CPU/peer % (max) |", "|---|---|---|---|---|---|"]
    for net in networks:
        for r in net["runs"]:
            lines.append(
                f"| {net['peers']} | {r['rate']} | {r['delivered']:.4f} | {r['p50_ms']} | {r['p99_ms']} "
                f"| {r['cpu_pct_mean']} ({r['cpu_pct_max']}) |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--peers", type=int, nargs="+", default=[4, 8])
    rates = [250, 500, 1000, 2000, 3000, 4000, 5000, 6000, 8000]
    parser.add_argument("--rates", type=lambda s: [int(x) for x in s.split(",")], default=rates)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--publishers", type=int, default=1)
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--txs-file", type=Path, help=argparse.SUPPRESS)
    parser.add_argument(
        "--verify-in-workers",
        action="store_true",
        help="check signatures in worker processes, as a peer alone on its host does (default: in threads, "
        "as peers sharing a host's cores do: the devnet's)",
    )
    parser.add_argument(
        "--bundle-ms",
        type=float,
        default=BUNDLE_INTERVAL_S * 1000,
        help="bundle interval of the publisher (default: the node's, NodeConfig.bundle_interval_s)",
    )
    args = parser.parse_args()
    if args.worker is not None:
        trio.run(Worker(args.worker, args.txs_file, args.verify_in_workers).run)
        return
    if not 1 <= args.publishers < min(args.peers):
        parser.error("--publishers must be at least 1 and fewer than the peers")
    need = int(sum(args.rates) * args.seconds) + len(args.rates) * 64
    with tempfile.TemporaryDirectory() as tmp:
        txs_file = Path(tmp) / "txs.cbor"
        print(f"signing {need} transactions ...", file=sys.stderr)
        make_transactions(need, txs_file)
        networks = [run_network(n, args, txs_file) for n in args.peers]
    print(table(networks), file=sys.stderr)
    first = networks[0]
    summary = {"bench": "gossip", **{k: v for k, v in first.items() if k != "runs"}, "cpu_count": os.cpu_count()}
    summary["networks"] = networks
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
