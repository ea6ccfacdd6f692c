"""Chaos on the ``pos`` devnet of real ``aitbc-peer`` processes (nodes/pos-devnet/).

Under a steady transfer load, a validator chosen at random is killed with SIGKILL and
restarted, every 20 to 30 s, for three minutes. Blocks never stop for more than 20 s, no
restarted peer exits by itself, and the peers end on one chain with supply conserved.
(Before the seqno and catch-up fixes, restarted validators were muted and the chain
stopped for good after the second kill.)
"""

import itertools
import os
import random
import signal
from pathlib import Path

import pytest
import trio

from aitbc_p2p.cli import devnet
from aitbc_p2p.crypto.keyfile import load_key_file
from aitbc_p2p.exceptions import RpcError
from aitbc_p2p.testing import make_key

NODES = Path(__file__).resolve().parents[1] / "nodes" / "pos-devnet"
DURATION_S = 180
MAX_GAP_S = 20.0
"""Longest time between consecutive blocks' timestamps. A dead proposer costs a round
(about 3.3 s here); the longest stops measured were 7.6 s on a quiet 2-core machine, 7.4 s
with a busy loop on one of its cores, and 13 s on CI (2 cores shared with four peers and
the load). Before the seqno and catch-up fixes the chain stopped for good; any stop this
long is that, not load."""
pytestmark = pytest.mark.slow


async def _height(proc) -> int | None:
    try:
        async with proc.rpc() as rpc:
            return int((await rpc.status())["height"])
    except (RpcError, OSError, ValueError, KeyError):
        return None


async def test_pos_keeps_producing_blocks_while_validators_are_killed_and_restarted(tmp_path):
    rng = random.Random(20261202)
    run_dir = tmp_path / "run"
    procs = devnet.start(NODES, run_dir)
    client = load_key_file(NODES / "wallets" / "client.json", devnet.DEVNET_WALLET_PASSWORD)
    sink = make_key("chaos-sink").address
    down: set[str] = set()
    gaps: list[float] = []
    restarts = 0
    try:
        with trio.fail_after(120):
            await devnet.wait_ready(procs, min_height=2, progress=lambda s: None)
        supply = None
        async with procs[0].rpc() as rpc:
            supply = (await rpc.supply())["total"]
            start = int((await rpc.status())["height"])

        def live():
            return [p for p in procs if p.name not in down]

        async def load() -> None:  # about 10 transfers a second, to whichever peer is up
            while True:
                target = rng.choice(live())
                try:
                    async with target.rpc() as rpc:
                        for _ in range(10):
                            await rpc.transfer(client, sink, 1)
                except (RpcError, OSError, KeyError):
                    pass  # a peer killed under us, a nonce raced: the load goes on
                await trio.sleep(1)

        async def watch() -> None:
            last_height, last_change = -1, trio.current_time()
            while True:
                heights = [h for h in [await _height(p) for p in live()] if h is not None]
                now = trio.current_time()
                if heights and max(heights) > last_height:
                    if last_height >= 0:
                        gaps.append(now - last_change)
                    last_height, last_change = max(heights), now
                elif now - last_change > MAX_GAP_S:
                    gaps.append(now - last_change)
                await trio.sleep(0.25)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(load)
            nursery.start_soon(watch)
            end = trio.current_time() + DURATION_S
            while trio.current_time() < end:
                await trio.sleep(rng.uniform(20, 30))
                i = rng.randrange(len(procs))
                victim = procs[i]
                down.add(victim.name)
                os.kill(victim.pid, signal.SIGKILL)
                await trio.sleep(rng.uniform(1, 4))
                procs[i] = devnet.restart_peer(run_dir, victim.name)
                restarts += 1
                with trio.fail_after(60):
                    while not (procs[i].data_dir / "node.json").exists():
                        await trio.sleep(0.1)
                down.discard(victim.name)
            nursery.cancel_scope.cancel()

        assert restarts >= 5
        assert gaps, "the chain never moved under the chaos"
        for p in procs:  # no restarted peer exited by itself
            assert devnet._alive(p.pid), f"{p.name} exited: {p.log.read_text()[-2000:]}"
        with trio.fail_after(60):  # all catch up to one chain
            while True:
                heights = [await _height(p) for p in procs]
                if None not in heights and max(heights) - min(heights) <= 1:
                    break
                await trio.sleep(0.5)
        common = min(heights)
        hashes = set()
        for p in procs:
            async with p.rpc() as rpc:
                hashes.add((await rpc._call("GET", f"/v1/blocks/{common}"))["header"]["hash"])
                assert (await rpc.supply())["total"] == supply
        assert len(hashes) == 1
        # The stops, as the chain itself records them: the time between each block and the
        # next, from the proposers' timestamps (the poll above adds its own RPC round trips).
        async with procs[0].rpc() as rpc:
            stamps = [
                (await rpc._call("GET", f"/v1/blocks/{h}"))["header"]["timestamp_ms"] for h in range(start, common + 1)
            ]
        stops = [(b - a) / 1000 for a, b in itertools.pairwise(stamps)]
        assert max(stops) <= MAX_GAP_S, f"longest stop {max(stops):.1f} s; stops: {sorted(stops)[-5:]}"
    finally:
        devnet.stop(run_dir)
