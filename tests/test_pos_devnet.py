"""A 4-validator ``pos`` network of real ``aitbc-peer`` processes (nodes/pos-devnet/).

With one validator killed, the other three (3/4 of the stake, above the 2/3 quorum) keep
committing blocks, each with a commit certificate. The killed peer restarts from its
LevelDB and catches up by sync to the same blocks and state root.
"""

import os
import signal
from pathlib import Path

import pytest
import trio

from aitbc_p2p.cli import devnet
from aitbc_p2p.cli.config import load_peer_config
from aitbc_p2p.consensus import engine_for

NODES = Path(__file__).resolve().parents[1] / "nodes" / "pos-devnet"
pytestmark = pytest.mark.slow


async def heights(procs):
    out = []
    for p in procs:
        async with p.rpc() as rpc:
            out.append((await rpc.status())["height"])
    return out


async def block(proc, height):
    async with proc.rpc() as rpc:
        return await rpc._call("GET", f"/v1/blocks/{height}")


async def test_pos_keeps_finalizing_with_one_validator_down(tmp_path):
    run_dir = tmp_path / "run"
    procs = devnet.start(NODES, run_dir)
    try:
        with trio.fail_after(120):
            await devnet.wait_ready(procs, min_height=2, progress=lambda s: None)
        victim, live = procs[1], [p for i, p in enumerate(procs) if i != 1]
        killed_at = (await heights([victim]))[0]
        os.kill(victim.pid, signal.SIGKILL)
        start = max(await heights(live))
        cfg = load_peer_config(NODES / "peer2.toml").node
        engine = engine_for(cfg.genesis)
        # The first height where the dead validator is round 0's proposer: a later round must step in.
        orphaned = next(h for h in range(start + 1, start + 200) if engine.proposer(h, 0) == cfg.key.address)
        end = max(start + 5, orphaned + 1)
        with trio.fail_after(150):  # three of four validators keep committing
            while min(await heights(live)) < end:
                await trio.sleep(0.3)
        for h in range(start + 1, end + 1):
            views = [await block(p, h) for p in live]
            assert len({v["header"]["hash"] for v in views}) == 1  # one block per height: no fork
            cert = views[0]["certificate"]
            assert len(cert["validators"]) >= 3  # > 2/3 of the stake precommitted it
            assert cfg.key.address not in cert["validators"]
        assert (await block(live[0], orphaned))["certificate"]["round"] >= 1
        restarted = devnet.restart_peer(run_dir, victim.name)
        procs[1] = restarted
        with trio.fail_after(90):
            while not (restarted.data_dir / "node.json").exists():
                await trio.sleep(0.1)
            assert (await heights([restarted]))[0] >= killed_at  # nothing committed was lost
            target = max(await heights(live)) + 1
            while (await heights([restarted]))[0] < target:
                await trio.sleep(0.3)
        mine, theirs = await block(restarted, target), await block(live[0], target)
        assert mine["header"]["hash"] == theirs["header"]["hash"]
        assert mine["header"]["state_root"] == theirs["header"]["state_root"]
    finally:
        devnet.stop(run_dir)
