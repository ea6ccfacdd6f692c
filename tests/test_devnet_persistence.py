"""A job survives SIGKILL of both its peers (specs/market.md, "Persistence"): three real
``aitbc-peer`` processes, the provider killed the moment its receipt is posted (before it
answers or settles), the client's peer killed the moment it has journaled the result
(before its delivery ack leaves). Each restarts from its data directory, and the job
still settles once, with balances, escrow and supply exact to the unit."""

import re
from pathlib import Path

import pytest
import trio

from aitbc_p2p.cli import devnet
from aitbc_p2p.crypto import load_key_file
from aitbc_p2p.store.crash import CRASH_ENV
from aitbc_p2p.types import aitbc

NODES = Path(__file__).resolve().parents[1] / "nodes" / "devnet"

pytestmark = pytest.mark.slow
FEE = 1000


async def _wait_dead(proc: devnet.PeerProcess, timeout: float) -> None:
    with trio.fail_after(timeout):
        while devnet._alive(proc.pid):
            await trio.sleep(0.1)


async def _wait_up(proc: devnet.PeerProcess) -> None:
    with trio.fail_after(60):
        while not (proc.data_dir / "node.json").exists():
            await trio.sleep(0.1)


async def test_a_job_settles_once_when_the_provider_and_the_clients_peer_are_killed_mid_job(tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    # Armed in every peer; each point is reached only on its own side (peer3 sells, peer1 buys).
    monkeypatch.setenv(CRASH_ENV, "market.receipt_posted,market.result_saved")
    procs = devnet.start(NODES, run_dir)
    monkeypatch.delenv(CRASH_ENV)  # restarts run unarmed
    client_peer, provider_peer = procs[0], procs[2]
    try:
        with trio.fail_after(90):
            await devnet.wait_ready(procs, progress=lambda s: None)
        client = load_key_file(NODES / "wallets" / "client.json", "devnet")
        async with procs[1].rpc() as rpc:  # a bystander's view of the chain, alive throughout
            with trio.fail_after(30):
                while not (providers := await rpc.providers()):
                    await trio.sleep(0.2)
            provider, agent = providers[0]["provider"], (await client_peer_address(client_peer))
            parties = (client.address, provider, agent)
            before = {a: (await rpc.account(a))["balance"] for a in parties}
        async with client_peer.rpc() as rpc:
            job_id = await rpc.submit_job(client, "echo", {"message": "survive"}, max_price=aitbc(5), max_runtime_s=30)
        # The provider dies with its receipt posted and nothing settled or answered.
        await _wait_dead(provider_peer, 60)
        provider_peer = devnet.restart_peer(run_dir, provider_peer.name)
        await _wait_up(provider_peer)
        # The client's peer fetches the held result from the restarted provider, journals
        # it, and dies before its ack leaves.
        await _wait_dead(client_peer, 90)
        async with procs[1].rpc() as rpc:
            assert (await rpc.job(job_id))["status"] in ("open", "receipted")  # not settled yet
        client_peer = devnet.restart_peer(run_dir, client_peer.name)
        await _wait_up(client_peer)
        async with client_peer.rpc() as rpc:
            job = await rpc.wait_job(job_id, timeout=90)
            assert job["status"] == "settled", job
            result = await rpc.job_result(job_id)  # the result outlived the kill
            assert result["ok"] and result["receipt_matches"] and result["output"]["message"] == "survive"
        async with procs[1].rpc() as rpc:
            escrow = (await rpc.job(job_id))["escrow"]
            after = {a: (await rpc.account(a))["balance"] for a in parties}
            supply = await rpc.supply()
            receipts = [t for t in await rpc.history(provider, 100) if t["kind"] == "job_receipt"]
        cost = escrow["cost"]
        assert 0 < cost <= escrow["amount"]
        assert after[client.address] == before[client.address] - cost - FEE  # job_open; the rest refunded
        assert after[provider] == before[provider] + cost - 2 * FEE  # one receipt, one settle
        assert after[agent] == before[agent]  # no dispute: the ack after the restart settled it
        assert len(receipts) == 1  # run once, receipted once
        assert supply["total"] == supply["genesis_total"] and supply["escrowed"] == 0
        # Both went on from their journals, not from scratch.
        assert re.search(r"journal: resuming \d+ client jobs, 1 held jobs", provider_peer.log.read_text())
        assert re.search(r"journal: resuming 1 client jobs, 0 held jobs", client_peer.log.read_text())
    finally:
        devnet.stop(run_dir)


async def client_peer_address(proc: devnet.PeerProcess) -> str:
    async with proc.rpc() as rpc:
        return str((await rpc.status())["address"])
