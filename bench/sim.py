"""Sim: N whole peers in one process over the in-memory network, in virtual time.

Every peer is a real node (open_node: chain, mempool, consensus, sync, peering, the
gossip gates) on a :class:`~aitbc_p2p.network.memory.MemoryHub`, and the run is driven by
Trio's ``MockClock(autojump_threshold=0)``: timers fire as soon as nothing else is left
to do, so ten simulated minutes take as long as the work in them. The peers' blocking
work runs inline (node/offload.py), so no virtual time passes while a thread works.

The scenario, on ``--minutes`` of simulated time (the schedule scales with it):

* links of 10 to 60 ms (drawn per pair from ``--seed``), ``--loss`` of every gossip
  transmission lost; each peer bootstraps from three earlier ones and finds the rest by
  peer exchange, up to the node's peer floor;
* transfers at ``--tx-rate`` per simulated second, sent to random peers;
* from 20 % to 35 % of the run, the peers are split in two halves; then healed;
* at 50 %, ``--crashes`` peers stop without notice (their LevelDB kept) and come back
  30 simulated seconds later;
* the last 15 % runs with no faults, for the network to settle.

Reported (virtual time): block propagation from the first commit anywhere to each other
peer's commit (p50, p99), finality latency (from a block's timestamp to the moment a
peer holds it as final: at once under pos; under poa once a majority of the authorities
proposed it or a block above it),
gossip messages and bytes each peer sent per block, blocks reverted by reorgs, forks
(heights at which two peers still hold different blocks at the end), whether all heads
agree, and wall seconds per simulated minute. Progress goes to stderr, one line per
simulated minute; the last line of stdout is JSON:
{"bench": "sim", "peers": ..., "consensus": ..., "simulated_s": ..., "wall_s": ...,
 "agree": true|false, "forks": ..., "propagation_p99_ms": ..., "finality_p99_ms": ...}

Run: .venv/bin/python bench/sim.py [--peers 100] [--consensus poa|pos] [--minutes 10]
     [--validators 0] [--loss 0.01] [--crashes 2] [--tx-rate 2] [--seed 1]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import random
import statistics
import sys
import tempfile
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import trio
import trio.testing

from aitbc_p2p.chain.models import Transaction
from aitbc_p2p.exceptions import AitbcError
from aitbc_p2p.network.memory import MemoryHub, MemoryNetwork, memory_peer_id
from aitbc_p2p.node import Node, NodeConfig, open_node
from aitbc_p2p.node.offload import run_blocking_inline
from aitbc_p2p.testing import make_genesis, make_key, virtual_clock_ms
from aitbc_p2p.types import aitbc

BLOCK_TIME_MS = 1000
BOOTSTRAP = 3
SETTLE_S = 60.0
"""After the run, at most this much more virtual time for the last blocks to arrive
before heads are compared (a block in flight is not a disagreement)."""


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Sim:
    def __init__(self, args: argparse.Namespace, data_root: Path) -> None:
        self.args = args
        self.data_root = data_root
        self.rng = random.Random(args.seed)
        self.keys = [make_key(f"sim-peer-{i}") for i in range(args.peers)]
        self.wallets = [make_key(f"sim-wallet-{i}") for i in range(16)]
        validators = self.keys[: args.validators or args.peers]
        alloc = {w.address: aitbc(1_000_000) for w in self.wallets}
        if args.consensus == "pos":
            self.genesis = make_genesis(
                validators,
                alloc,
                engine="pos",
                block_time_ms=BLOCK_TIME_MS,
                validators=[k.address for k in validators],
                stakes={k.address: aitbc(100) for k in validators},
                round_timeout_ms=2 * BLOCK_TIME_MS,
            )
        else:
            self.genesis = make_genesis(validators, alloc, engine="poa", block_time_ms=BLOCK_TIME_MS)
        seed = args.seed

        def latency(a: str, b: str) -> float:
            pair = "|".join(sorted((a, b)))
            draw = int.from_bytes(hashlib.sha256(f"{seed}:{pair}".encode()).digest()[:4], "big")
            return 0.010 + (draw % 50_000) / 1_000_000  # 10 to 60 ms

        self.hub = MemoryHub(latency_s=latency, loss=args.loss, seed=args.seed)
        self.nodes: dict[int, Node] = {}
        self.scopes: dict[int, trio.CancelScope] = {}
        self.committed: dict[bytes, dict[int, float]] = {}
        """Block hash -> peer index -> virtual time it became that peer's (at or below its head)."""
        self.timestamps: dict[bytes, int] = {}
        self.final_at: dict[bytes, dict[int, float]] = {}
        self.reverted = 0
        self.crashed: set[int] = set()

    # ------------------------------------------------------------ peers
    def config(self, i: int) -> NodeConfig:
        earlier = [j for j in range(i)]
        picks = self.rng.sample(earlier, min(BOOTSTRAP, len(earlier)))
        crash_target = i in self.crash_targets()
        return NodeConfig(
            key=self.keys[i],
            genesis=self.genesis,
            data_dir=self.data_root / f"peer{i}" if crash_target else None,  # kept across its crash
            bootstrap=tuple(f"/memory/{self._peer_id(j)}/p2p/{self._peer_id(j)}" for j in picks),
            verify_in_workers=False,
        )

    def _peer_id(self, i: int) -> str:
        return memory_peer_id(self.keys[i])

    def crash_targets(self) -> list[int]:
        # Not validator 0..2 (pos needs a quorum up: the crashed ones are extra validators).
        return list(range(self.args.peers - self.args.crashes, self.args.peers))

    async def run_peer(
        self, i: int, configs: dict[int, NodeConfig], task_status: Any = trio.TASK_STATUS_IGNORED
    ) -> None:
        with trio.CancelScope() as scope:
            self.scopes[i] = scope
            async with open_node(configs[i], clock_ms=virtual_clock_ms, network=self.hub.node_network) as node:
                self.nodes[i] = node
                task_status.started()
                await self.watch(i, node)

    async def watch(self, i: int, node: Node) -> None:
        """Record when each block becomes this peer's, and when it becomes final here."""
        seen: dict[int, bytes] = {}
        floor = 0  # heights below it are forgotten
        while True:
            head = node.store.head.height
            now = trio.current_time()
            for h in [h for h in seen if h > head]:  # reverted by a reorg
                self.reverted += 1
                del seen[h]
            h = head
            while h > floor:  # walk down the part of the chain that is new to this watcher
                block = node.store.block(h)
                if block is None or seen.get(h) == block.hash:
                    break
                if h in seen:
                    self.reverted += 1
                seen[h] = block.hash
                self.committed.setdefault(block.hash, {}).setdefault(i, now)
                self.timestamps[block.hash] = block.header.timestamp_ms
                h -= 1
            final = node.final_height()
            for h in range(max(floor + 1, final - 64), final + 1):
                self.final_at.setdefault(seen[h], {}).setdefault(i, now)
            if final - 128 > floor:
                for h in range(floor + 1, final - 127):
                    seen.pop(h, None)
                floor = final - 128
            await node.wait_head_change()

    # ------------------------------------------------------------ load and faults
    async def load(self) -> None:
        nonces = [0] * len(self.wallets)
        sink = make_key("sim-sink").address
        while True:
            await trio.sleep(1 / self.args.tx_rate)
            w = self.rng.randrange(len(self.wallets))
            live = [n for i, n in self.nodes.items() if i not in self.crashed]
            if not live:
                continue
            node = self.rng.choice(live)
            tx = Transaction.create(
                self.wallets[w],
                chain_id=self.genesis.chain_id,
                kind="transfer",
                nonce=nonces[w],
                fee=self.genesis.min_fee,
                payload={"to": sink, "amount": 1},
            )
            try:
                await node.submit_tx(tx)
                nonces[w] += 1
            except AitbcError:
                nonces[w] = node.mempool.pending_nonce(self.wallets[w].address, node.store.state)

    async def faults(self, nursery: trio.Nursery, configs: dict[int, NodeConfig], total_s: float) -> None:
        half = [self._peer_id(i) for i in range(self.args.peers // 2)]
        other = [self._peer_id(i) for i in range(self.args.peers // 2, self.args.peers)]
        await trio.sleep(0.20 * total_s)
        print(f"   t={trio.current_time():.0f}s partition {len(half)}/{len(other)}", file=sys.stderr)
        self.hub.partition(half, other)
        await trio.sleep(0.15 * total_s)
        self.hub.heal()
        print(f"   t={trio.current_time():.0f}s healed", file=sys.stderr)
        await trio.sleep(0.15 * total_s)
        for i in self.crash_targets():
            print(f"   t={trio.current_time():.0f}s peer {i} crashes", file=sys.stderr)
            self.crashed.add(i)
            self.scopes[i].cancel()
            self.nodes.pop(i, None)
        await trio.sleep(30)
        for i in self.crash_targets():
            print(f"   t={trio.current_time():.0f}s peer {i} restarts", file=sys.stderr)
            await nursery.start(self.run_peer, i, configs)
            self.crashed.discard(i)
        await trio.sleep(max(0.0, 0.85 * total_s - trio.current_time()))
        print(f"   t={trio.current_time():.0f}s no more loss: settling", file=sys.stderr)
        self.hub.loss = 0.0

    async def progress(self, wall0: float) -> None:
        while True:
            await trio.sleep(60)
            heads = [n.store.head.height for n in self.nodes.values()]
            print(
                f"   t={trio.current_time():4.0f}s  heads {min(heads)}..{max(heads)}  "
                f"wall {time.monotonic() - wall0:6.1f}s",
                file=sys.stderr,
            )

    # ------------------------------------------------------------ run
    async def main(self) -> dict[str, Any]:
        run_blocking_inline()
        total_s = self.args.minutes * 60
        wall0 = time.monotonic()
        configs = {i: self.config(i) for i in range(self.args.peers)}
        async with AsyncExitStack() as stack:
            nursery = await stack.enter_async_context(trio.open_nursery())
            for i in range(self.args.peers):
                await nursery.start(self.run_peer, i, configs)
            print(f"   {self.args.peers} peers up ({time.monotonic() - wall0:.1f}s wall)", file=sys.stderr)
            nursery.start_soon(self.load)
            nursery.start_soon(self.faults, nursery, configs, total_s)
            nursery.start_soon(self.progress, wall0)
            await trio.sleep_until(total_s)
            simulated_wall = time.monotonic() - wall0
            # Settle: laggards (a restarted peer) catch up; a block in flight is no disagreement.
            with trio.move_on_after(SETTLE_S):
                while not self.settled():  # noqa: ASYNC110 (a condition over every peer's chain)
                    await trio.sleep(0.1)
            result = self.report(total_s, simulated_wall)
            nursery.cancel_scope.cancel()
        return result

    def settled(self) -> bool:
        """Heads within two blocks of each other, and one chain up to the lowest."""
        nodes = list(self.nodes.values())
        heads = [n.store.head.height for n in nodes]
        low = min(heads)
        return max(heads) - low <= 2 and len({n.store.block(low).hash for n in nodes}) == 1  # type: ignore[union-attr]

    def report(self, total_s: float, wall_s: float) -> dict[str, Any]:
        nodes = list(self.nodes.values())
        low = min(n.store.head.height for n in nodes)
        forks = sum(1 for h in range(1, low + 1) if len({n.store.block(h).hash for n in nodes}) > 1)  # type: ignore[union-attr]
        agree = forks == 0 and len({n.store.block(low).hash for n in nodes}) == 1  # type: ignore[union-attr]
        propagation = []
        for times in self.committed.values():
            first = min(times.values())
            propagation += [(t - first) * 1000 for t in times.values() if t > first]
        finality = [
            t * 1000 - self.timestamps[h]
            for h, at in self.final_at.items()
            if h in self.timestamps
            for t in at.values()
        ]
        blocks = max(1, low)
        sent = [n.network.sent for n in nodes if isinstance(n.network, MemoryNetwork)]
        return {
            "bench": "sim",
            "peers": self.args.peers,
            "consensus": self.args.consensus,
            "validators": self.args.validators or self.args.peers,
            "simulated_s": total_s,
            "wall_s": round(wall_s, 1),
            "wall_s_per_simulated_min": round(wall_s / (total_s / 60), 2),
            "agree": agree,
            "forks": forks,
            "height": low,
            "blocks_reverted": self.reverted,
            "propagation_p50_ms": round(_pct(propagation, 0.5), 1),
            "propagation_p99_ms": round(_pct(propagation, 0.99), 1),
            "finality_p50_ms": round(_pct(finality, 0.5), 1),
            "finality_p99_ms": round(_pct(finality, 0.99), 1),
            "messages_per_peer_per_block": round(statistics.mean(s.messages for s in sent) / blocks, 1),
            "bytes_per_peer_per_block": round(statistics.mean(s.bytes for s in sent) / blocks),
            "loss": self.args.loss,
            "crashes": self.args.crashes,
            "seed": self.args.seed,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--peers", type=int, default=100)
    parser.add_argument("--consensus", choices=["poa", "pos"], default="poa")
    parser.add_argument("--validators", type=int, default=0, help="authorities/validators: the first N peers (0: all)")
    parser.add_argument("--minutes", type=float, default=10.0, help="simulated minutes")
    parser.add_argument("--loss", type=float, default=0.01)
    parser.add_argument("--crashes", type=int, default=2)
    parser.add_argument("--tx-rate", type=float, default=2.0, help="transfers per simulated second")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    if args.peers < 4 or args.crashes >= args.peers // 2:
        parser.error("--peers must be at least 4 and --crashes under half of them")
    logging.basicConfig(level=logging.ERROR, stream=sys.stderr)
    print(f"-- {args.peers} peers, {args.consensus}, {args.minutes:g} simulated minutes", file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        result = trio.run(Sim(args, Path(tmp)).main, clock=trio.testing.MockClock(autojump_threshold=0))
    print(
        f"   agree {result['agree']}, forks {result['forks']}, height {result['height']}, "
        f"propagation p50/p99 {result['propagation_p50_ms']}/{result['propagation_p99_ms']} ms, "
        f"finality p50/p99 {result['finality_p50_ms']}/{result['finality_p99_ms']} ms, "
        f"{result['wall_s_per_simulated_min']} wall s per simulated minute",
        file=sys.stderr,
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
