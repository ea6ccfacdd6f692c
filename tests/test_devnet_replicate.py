"""Verification level ``replicate`` with real ``aitbc-peer`` processes and the SDK
(specs/market.md, "Replicate"): a client's peer, three providers (the cheapest makes its
results up) and an arbiter's peer.

``submit_job(verification="replicate")`` signs two offers of the same job and escrows them
to two different providers. The first pair (the cheater and the next cheapest) differs:
the client's peer settles it by the spot check, disputes the made-up echo, the arbiter
rules against the cheater (slashed, struck off) and the honest replica is paid. The next
pair (two honest providers, submitted with ``aitbc job submit --verify replicate``) agrees
and both are acked. Balances and supply over RPC.
"""

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

from aitbc_p2p.cli import devnet
from aitbc_p2p.crypto import load_key_file
from aitbc_p2p.exceptions import MarketError
from aitbc_p2p.testing.devnets import ProviderSpec, write_devnet
from aitbc_p2p.types import aitbc

NODES = Path(__file__).resolve().parents[1] / "nodes" / "devnet"
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def _cli(nodes: Path, run_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``aitbc --devnet ARGS`` through its real command line, against this devnet."""
    env = {**os.environ, "AITBC_WALLET_PASSWORD": "devnet"}
    base = [sys.executable, "-m", "aitbc_p2p.cli.main", "--devnet", "--nodes-dir", str(nodes)]
    base += ["--run-dir", str(run_dir)]
    return subprocess.run([*base, *args], capture_output=True, text=True, env=env, timeout=180)


async def _ended(proc: devnet.PeerProcess, job_id: str, timeout: float = 90) -> dict[str, Any]:
    with trio.fail_after(timeout):
        async with proc.rpc() as rpc:
            while (job := await rpc.job(job_id))["status"] not in ("settled", "refunded"):
                await trio.sleep(0.3)
    return job


async def test_a_replicated_job_catches_a_made_up_result_and_pays_a_pair_that_agrees(tmp_path: Path) -> None:
    specs = [ProviderSpec(10_000_000, cheat="random_output"), ProviderSpec(20_000_000), ProviderSpec(30_000_000)]
    net = write_devnet(tmp_path / "nodes", NODES, specs, arbiter=True, rules={"dispute_blocks": 8})
    cheater, honest, dearer = net.providers
    client = load_key_file(NODES / "wallets" / "client.json", "devnet")
    procs = devnet.start(net.nodes, tmp_path / "run")
    client_peer = procs[0]
    try:
        with trio.fail_after(120):
            await devnet.wait_ready(procs, progress=lambda s: None)
            async with client_peer.rpc() as rpc:
                while len(await rpc.providers()) < len(specs):
                    await trio.sleep(0.3)
        async with client_peer.rpc() as rpc:
            stake = (await rpc.account(cheater))["stake"]
            said: list[str] = []
            job_id = await rpc.submit_job(
                client, "echo", {"message": "twice"}, max_price=aitbc(5), verification="replicate",
                progress=said.append,
            )  # fmt: skip
            replica = (await rpc.job(job_id))["replica"]
        assert replica and replica != job_id and sum("opening escrow" in s for s in said) == 2, said
        first, second = await _ended(client_peer, job_id), await _ended(client_peer, replica)
        assert (first["escrow"]["provider"], second["escrow"]["provider"]) == (cheater, honest)
        assert first["status"] == "refunded" and first["escrow"]["challenger"] == net.agent, first
        assert first["check"]["verdict"] == "client" and "not the message sent" in first["check"]["why"], first
        assert second["status"] == "settled" and second["check"]["verdict"] == "provider", second
        async with client_peer.rpc() as rpc:
            account = await rpc.account(cheater)
        assert (account["provider"], account["stake"]) == (False, stake - stake // 10), account
        # The next pair, from the command line: the two honest providers, whose results agree; both acked.
        submit = ["job", "submit", "--workload", "echo", "--message", "again", "--verify", "replicate", "--wait"]
        out = await trio.to_thread.run_sync(_cli, net.nodes, tmp_path / "run", *submit, "--json")
        assert out.returncode == 0, out.stderr
        job_id, replica = json.loads(out.stdout)["job_id"], json.loads(out.stdout)["replica"]
        pair = await _ended(client_peer, job_id), await _ended(client_peer, replica)
        assert {job["escrow"]["provider"] for job in pair} == {honest, dearer}
        for job, other in zip(pair, (replica, job_id), strict=True):
            assert job["status"] == "settled" and job["check"] == {
                "verdict": "provider",
                "why": f"agrees with its replica {other[:16]}",
            }, job
        async with client_peer.rpc() as rpc:
            supply = await rpc.supply()
        assert supply["total"] == supply["genesis_total"] and supply["escrowed"] == 0, supply
        arbiter_log = procs[-1].log.read_text()
        assert arbiter_log.count("for the client") == 1 and "for the provider" not in arbiter_log
    finally:
        devnet.stop(tmp_path / "run")


async def test_replicate_without_a_second_provider_sends_no_escrow(tmp_path: Path) -> None:
    net = write_devnet(tmp_path / "nodes", NODES, [ProviderSpec()])
    client = load_key_file(NODES / "wallets" / "client.json", "devnet")
    procs = devnet.start(net.nodes, tmp_path / "run")
    try:
        with trio.fail_after(120):
            await devnet.wait_ready(procs, progress=lambda s: None)
            async with procs[0].rpc() as rpc:
                while not await rpc.providers():
                    await trio.sleep(0.3)
        async with procs[0].rpc() as rpc:
            before = (await rpc.account(client.address))["balance"]
            with pytest.raises(MarketError, match="no second provider bid for its replica"):
                await rpc.submit_job(
                    client, "echo", {"message": "once"}, max_price=aitbc(5), verification="replicate", bid_timeout=5
                )
            jobs = await rpc.jobs()
            assert len(jobs) == 2 and all(j["status"] == "cancelled" and j["escrow"] is None for j in jobs), jobs
            assert (await rpc.account(client.address))["balance"] == before
    finally:
        devnet.stop(tmp_path / "run")
