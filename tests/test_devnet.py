"""End to end with three real ``aitbc-peer`` processes on 127.0.0.1 (the demo's flow)."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from aitbc_p2p.cli import devnet
from aitbc_p2p.compute.workloads import module_available, torch_available
from aitbc_p2p.crypto import load_key_file
from aitbc_p2p.types import aitbc

NODES = Path(__file__).resolve().parents[1] / "nodes" / "devnet"
pytestmark = pytest.mark.slow


async def test_demo_flow_across_three_processes(tmp_path):
    lines: list[str] = []
    with trio.fail_after(150):
        outcome = await devnet.run_demo(NODES, tmp_path / "run", out=lines.append)
    job, result = outcome["job"], outcome["result"]
    assert job["status"] == "settled", lines
    assert job["receipt_id"] and len(job["receipt_id"]) == 64
    escrow = job["escrow"]
    assert result["ok"] and result["receipt_matches"]
    assert result["result_hash"] == escrow["result_hash"]
    cost, fee = escrow["cost"], 1000
    assert 0 < cost <= escrow["amount"]
    before, after = outcome["before"], outcome["after"]
    assert after["client"] == before["client"] - cost - fee  # escrow open; the rest refunded at settle
    assert after["provider"] == before["provider"] + cost - 2 * fee  # receipt + settle fees
    supply_before, supply_after = outcome["supply"]
    assert supply_before["total"] == supply_after["total"] == supply_before["genesis_total"]
    assert supply_after["escrowed"] == 0
    assert any("stopped" in line for line in lines) and not any("killed" in line for line in lines)
    assert devnet.load_state(tmp_path / "run") == []


@pytest.mark.skipif(not (torch_available() and module_available("transformers")), reason="llm_gen needs the llm extra")
async def test_demo_runs_llm_gen_with_streamed_generation(tmp_path):
    lines: list[str] = []
    with trio.fail_after(240):
        outcome = await devnet.run_demo(NODES, tmp_path / "run", workload="llm_gen", prompt="Hello", out=lines.append)
    assert outcome["job"]["status"] == "settled", lines
    output = outcome["result"]["output"]
    assert output["backend"] == "torch" and output["model"] == "tiny" and 0 < output["tokens"] <= 32
    assert outcome["result"]["metrics"]["tokens"] == output["tokens"]
    assert outcome["supply"][0]["total"] == outcome["supply"][1]["total"]


def aitbc_cli(run_dir, *args):
    env = {**os.environ, "AITBC_WALLET_PASSWORD": "devnet"}
    cmd = [
        sys.executable,
        "-m",
        "aitbc_p2p.cli.main",
        "--devnet",
        "--nodes-dir",
        str(NODES),
        "--run-dir",
        str(run_dir),
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)


async def test_cli_against_a_running_devnet(tmp_path):
    run_dir = tmp_path / "run"
    procs = devnet.start(NODES, run_dir)
    try:
        with trio.fail_after(90):
            await devnet.wait_ready(procs, progress=lambda s: None)
        genesis_wallet = load_key_file(NODES / "wallets" / "genesis.json", "devnet")
        client = load_key_file(NODES / "wallets" / "client.json", "devnet")
        out = await trio.to_thread.run_sync(aitbc_cli, run_dir, "wallet", "balance")
        assert out.returncode == 0 and client.address in out.stdout and "balance 10000 AITBC" in out.stdout, out
        out = await trio.to_thread.run_sync(
            aitbc_cli, run_dir, "wallet", "send", "2.5", genesis_wallet.address, "--wait"
        )
        assert out.returncode == 0 and "committed in block" in out.stdout, out.stderr
        out = await trio.to_thread.run_sync(aitbc_cli, run_dir, "wallet", "history")
        assert out.returncode == 0 and "transfer" in out.stdout and "2.5 AITBC" in out.stdout, out
        async with procs[1].rpc() as rpc:  # another peer sees the same committed state
            with trio.fail_after(20):
                while (await rpc.account(genesis_wallet.address))["balance"] != aitbc(1_000_000) + aitbc("2.5"):
                    await trio.sleep(0.2)
        out = await trio.to_thread.run_sync(
            aitbc_cli, run_dir, "job", "submit", "--workload", "echo", "--message", "hi", "--wait"
        )
        assert out.returncode == 0, out.stderr
        job = json.loads(out.stdout[out.stdout.index("{") :])
        assert job["status"] == "settled"
        out = await trio.to_thread.run_sync(aitbc_cli, run_dir, "wallet", "send", "999999", genesis_wallet.address)
        assert out.returncode == 1 and "INSUFFICIENT_FUNDS" in out.stderr
        # SIGKILL a peer: it restarts from its LevelDB at a whole block and catches up by sync.
        victim = procs[1]
        async with victim.rpc() as rpc:
            killed_at = (await rpc.status())["height"]
        os.kill(victim.pid, signal.SIGKILL)
        with trio.fail_after(10):
            while devnet._alive(victim.pid):
                await trio.sleep(0.05)
        restarted = devnet.restart_peer(run_dir, victim.name)
        with trio.fail_after(60):
            while not (restarted.data_dir / "node.json").exists():
                await trio.sleep(0.1)
            async with restarted.rpc() as rpc, procs[0].rpc() as rpc0:
                status = await rpc.status()
                assert status["height"] >= killed_at  # nothing committed was lost
                target = (await rpc0.status())["height"] + 2
                while (await rpc.status())["height"] < target:
                    await trio.sleep(0.2)
                assert (await rpc.status())["peers"]
                block_a = await rpc._call("GET", f"/v1/blocks/{target}")
                block_b = await rpc0._call("GET", f"/v1/blocks/{target}")
                assert block_a["header"]["hash"] == block_b["header"]["hash"]
    finally:
        report = devnet.stop(run_dir)
    assert all("stopped" in line for line in report), report
