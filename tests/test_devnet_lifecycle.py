"""A job's bad days with real ``aitbc-peer`` processes (specs/market.md, "Delivery" and
"Failover and cancel"): a provider that dies with the result computed, one that fails the
job, one that goes silent mid-job, and a client that cancels a running job. Every test
checks balances, escrow and supply to the unit; the in-memory twins of these cases are
tests/test_market_delivery.py and tests/test_market_failover.py."""

import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

from aitbc_p2p.cli import devnet
from aitbc_p2p.crypto import PrivateKey, load_key_file
from aitbc_p2p.store.crash import CRASH_ENV
from aitbc_p2p.testing.devnets import Devnet, ProviderSpec, write_devnet
from aitbc_p2p.types import aitbc

NODES = Path(__file__).resolve().parents[1] / "nodes" / "devnet"
FEE = 1000
CHEAP, DEAR = 10_000_000, 20_000_000
"""Prices per second: the cheap provider (peer2) wins every first bid."""
pytestmark = pytest.mark.slow


async def _wait(predicate: Any, timeout: float, what: str) -> None:
    with trio.move_on_after(timeout):
        while not await predicate():
            await trio.sleep(0.2)
        return
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


async def _status(proc: devnet.PeerProcess) -> dict[str, Any]:
    async with proc.rpc() as rpc:
        return await rpc.status()


async def _refunded(proc: devnet.PeerProcess, job_id: str, timeout: float) -> dict[str, Any]:
    """The job once its escrow is refunded (``failed`` comes first: the escrow is then
    cancelled, and refunded after the provider's grace)."""
    async with proc.rpc() as rpc:
        with trio.fail_after(timeout):
            while (job := await rpc.job(job_id))["status"] != "refunded":
                await trio.sleep(0.3)
    return job


async def _running(proc: devnet.PeerProcess) -> bool:
    return bool((await _status(proc))["provider"]["running"])


async def _kill(proc: devnet.PeerProcess) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    with trio.fail_after(10):
        while devnet._alive(proc.pid):
            await trio.sleep(0.05)


class Books:
    """Balances of the parties and the supply, read from one peer's RPC."""

    def __init__(self, proc: devnet.PeerProcess, parties: dict[str, str]) -> None:
        self.proc, self.parties = proc, parties

    async def read(self) -> dict[str, int]:
        async with self.proc.rpc() as rpc:
            out = {name: (await rpc.account(a))["balance"] for name, a in self.parties.items()}
            supply = await rpc.supply()
        out["supply"], out["escrowed"] = supply["total"], supply["escrowed"]
        assert supply["total"] == supply["genesis_total"]  # nothing minted, nothing burnt
        return out


async def _start(nodes: Path, run_dir: Path, providers: int) -> list[devnet.PeerProcess]:
    procs = devnet.start(nodes, run_dir)
    with trio.fail_after(120):
        await devnet.wait_ready(procs, progress=lambda s: None)
    async with procs[0].rpc() as rpc:
        with trio.fail_after(60):
            while len(await rpc.providers()) < providers:
                await trio.sleep(0.3)
    return procs


def _market_devnet(tmp_path: Path, *providers: ProviderSpec) -> tuple[Devnet, Path]:
    """A devnet of the client's peer (funded, to pay for what it posts as agent) and
    ``providers``; and the directory it runs in."""
    return write_devnet(tmp_path / "nodes", NODES, providers), tmp_path / "run"


def _client() -> PrivateKey:
    return load_key_file(NODES / "wallets" / "client.json", "devnet")


def _books(net: Devnet, procs: list[devnet.PeerProcess]) -> Books:
    names = {"client": _client().address, "agent": net.agent}
    names.update({f"peer{i}": a for i, a in enumerate(net.providers, start=2)})
    return Books(procs[0], names)


def _cli(run_dir: Path, nodes: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "aitbc_p2p.cli.main", "--devnet", "--nodes-dir", str(nodes), "--run-dir", str(run_dir)]
    env = {**os.environ, "AITBC_WALLET_PASSWORD": "devnet"}
    return subprocess.run([*cmd, *args], capture_output=True, text=True, env=env, timeout=120)


async def test_a_result_computed_before_the_provider_died_is_fetched_acked_and_paid_once(tmp_path, monkeypatch):
    """Delivery before payment: the provider is SIGKILLed with the result computed and
    journaled, before it answers or receipts. The client's stream drops; its peer fetches
    the result from the restarted provider, acks it, and the provider, paid on the ack,
    receipts and settles once."""
    run_dir = tmp_path / "run"
    monkeypatch.setenv(CRASH_ENV, "market.result_held")  # reached only where a job runs: peer3
    procs = devnet.start(NODES, run_dir)
    monkeypatch.delenv(CRASH_ENV)  # the restart runs unarmed
    client_peer, provider_peer = procs[0], procs[2]
    try:
        with trio.fail_after(90):
            await devnet.wait_ready(procs, progress=lambda s: None)
        client = _client()
        async with procs[1].rpc() as rpc:  # a bystander, alive throughout
            with trio.fail_after(30):
                while not (providers := await rpc.providers()):
                    await trio.sleep(0.2)
        provider, agent = providers[0]["provider"], (await _status(client_peer))["address"]
        books = Books(procs[1], {"client": client.address, "provider": provider, "agent": agent})
        before = await books.read()
        async with client_peer.rpc() as rpc:
            job_id = await rpc.submit_job(client, "echo", {"message": "kept"}, max_price=aitbc(5), max_runtime_s=30)
        with trio.fail_after(60):
            while devnet._alive(provider_peer.pid):
                await trio.sleep(0.1)
        async with procs[1].rpc() as rpc:
            assert (await rpc.job(job_id))["status"] == "open"  # computed, and nothing receipted
        provider_peer = devnet.restart_peer(run_dir, provider_peer.name)
        async with client_peer.rpc() as rpc:
            job = await rpc.wait_job(job_id, timeout=90)
            assert job["status"] == "settled", job
            result = await rpc.job_result(job_id)
        assert result["ok"] and result["receipt_matches"] and result["output"]["message"] == "kept"
        cost = job["escrow"]["cost"]
        after = await books.read()
        assert after["client"] == before["client"] - cost - FEE  # the escrow's fee; the rest refunded
        assert after["provider"] == before["provider"] + cost - 2 * FEE  # one receipt, one settle
        assert after["agent"] == before["agent"] and after["escrowed"] == 0
        async with procs[1].rpc() as rpc:
            kinds = [t["kind"] for t in await rpc.history(provider, 100)]
        assert kinds.count("job_receipt") == 1 and kinds.count("job_settle") == 1, kinds
        assert "no result on the stream" in client_peer.log.read_text()
        assert re.search(r"journal: resuming \d+ client jobs, 1 held jobs", provider_peer.log.read_text())
    finally:
        devnet.stop(run_dir)


async def test_a_failing_provider_releases_and_the_job_moves_on_and_a_running_job_is_cancelled(tmp_path):
    """Failover with a release: the cheaper provider fails every job (its worker passes
    its memory cap), releases it, and the client's peer reassigns the escrow to the other
    at once. Cancel: a job running on the other is cancelled from the CLI; without a
    release (the job is running) the escrow comes back after the provider's grace."""
    net, run_dir = _market_devnet(tmp_path, ProviderSpec(CHEAP, max_ram_mb=1), ProviderSpec(DEAR))
    procs = await _start(net.nodes, run_dir, 2)
    try:
        client, books, dear = _client(), _books(net, procs), net.providers[1]
        # 1. Failover: the job fails on peer2 and settles on peer3, in one escrow.
        before = await books.read()
        params = {"message": "move me", "chunks": 3, "interval_ms": 300}  # long enough for the memory watch
        async with procs[0].rpc() as rpc:
            job_id = await rpc.submit_job(client, "echo", params, max_price=aitbc(5), max_runtime_s=30)
            job = await rpc.wait_job(job_id, timeout=120)
            result = await rpc.job_result(job_id)
        escrow = job["escrow"]
        assert job["status"] == "settled" and (escrow["provider"], escrow["attempts"]) == (dear, 2), job
        assert result["ok"] and result["output"]["message"] == "move me" and result["receipt_matches"]
        after = await books.read()
        assert after["client"] == before["client"] - escrow["cost"] - FEE
        assert after["agent"] == before["agent"] - FEE  # the reassignment; the release made it immediate
        assert after["peer2"] == before["peer2"]  # a release costs nothing and earns nothing
        assert after["peer3"] == before["peer3"] + escrow["cost"] - 2 * FEE
        assert after["escrowed"] == 0
        failed = (await _status(procs[1]))["provider"]
        assert (failed["failed"], failed["done"]) == (1, 0), failed
        # 2. Cancel while running. peer2's record on chain now holds that failure (trust 1/3),
        # so its cheaper bid weighs more than peer3's: the job goes to peer3 at once.
        before = await books.read()
        params = {"message": "x" * 20, "chunks": 20, "interval_ms": 1000}  # 19 s on peer3
        async with procs[0].rpc() as rpc:
            job_id = await rpc.submit_job(client, "echo", params, max_price=aitbc(5), max_runtime_s=60)
        await _wait(lambda: _running(procs[2]), 90, "the job running on peer3")
        out = await trio.to_thread.run_sync(lambda: _cli(run_dir, net.nodes, "job", "cancel", job_id[:16], "--json"))
        assert out.returncode == 0 and '"status": "cancelled"' in out.stdout, out.stderr
        job = await _refunded(procs[0], job_id, 90)
        assert job["escrow"]["attempts"] == 1 and job["escrow"]["provider"] == dear, job
        assert {b["provider"]: b["trust_milli"] for b in job["bids"]} == {net.providers[0]: 333, dear: 1000}, job
        refunds = [t for t in await _history(procs[0], net.agent) if t["kind"] == "job_refund"]
        assert len(refunds) == 1 and refunds[0]["height"] > job["escrow"]["cancelled_at"] + 3  # after the grace
        await _wait(lambda: _not(_running(procs[2])), 60, "peer3 to finish the cancelled job")
        after = await books.read()
        assert after["client"] == before["client"] - FEE  # all of the escrow back but its fee
        assert after["agent"] == before["agent"] - 2 * FEE  # cancel, refund
        assert (after["peer2"], after["peer3"]) == (before["peer2"], before["peer3"])  # no receipt past the grace
        assert after["escrowed"] == 0
    finally:
        devnet.stop(run_dir)


async def _history(proc: devnet.PeerProcess, address: str) -> list[dict[str, Any]]:
    async with proc.rpc() as rpc:
        return await rpc.history(address, 100)


async def _not(awaitable: Any) -> bool:
    return not await awaitable


async def test_a_silent_provider_is_replaced_after_its_grace_and_the_last_one_is_refunded(tmp_path):
    """A provider SIGKILLed mid-job is silent: after 20 s of failed fetches the client's
    peer cancels the escrow (no release can come), reassigns it once the grace is over,
    and the job settles on the other provider. When that one dies mid-job too, no bid is
    left: the escrow is cancelled and refunded, and the client pays only the fee."""
    net, run_dir = _market_devnet(tmp_path, ProviderSpec(CHEAP), ProviderSpec(DEAR))
    procs = await _start(net.nodes, run_dir, 2)
    try:
        client, books, dear = _client(), _books(net, procs), net.providers[1]
        before = await books.read()
        params = {"message": "x" * 8, "chunks": 8, "interval_ms": 1000}  # 7 s
        async with procs[0].rpc() as rpc:
            job_id = await rpc.submit_job(client, "echo", params, max_price=aitbc(5), max_runtime_s=30)
        await _wait(lambda: _running(procs[1]), 60, "the job running on peer2")
        await _kill(procs[1])
        async with procs[0].rpc() as rpc:
            job = await rpc.wait_job(job_id, timeout=150)
            result = await rpc.job_result(job_id)
        escrow = job["escrow"]
        assert job["status"] == "settled" and (escrow["provider"], escrow["attempts"]) == (dear, 2), job
        assert result["ok"] and result["output"]["message"] == "x" * 8 and result["receipt_matches"]
        assert re.search(r"job [0-9a-f]{16}: provider unreachable for \d+ s: silent", procs[0].log.read_text())
        after = await books.read()
        assert after["client"] == before["client"] - escrow["cost"] - FEE
        assert after["agent"] == before["agent"] - 2 * FEE  # cancel, then reassign after the grace
        assert after["peer2"] == before["peer2"]
        assert after["peer3"] == before["peer3"] + escrow["cost"] - 2 * FEE
        assert after["escrowed"] == 0
        # The last provider dies mid-job: nothing to fail over to; refunded by the client's peer.
        before = after
        async with procs[0].rpc() as rpc:
            job_id = await rpc.submit_job(client, "echo", params, max_price=aitbc(5), max_runtime_s=30)
        await _wait(lambda: _running(procs[2]), 60, "the job running on peer3")
        await _kill(procs[2])
        job = await _refunded(procs[0], job_id, 150)
        assert job["escrow"]["provider"] == dear, job
        assert "no other bid to fail over to" in job["error"], job
        after = await books.read()
        assert after["client"] == before["client"] - FEE
        assert after["agent"] == before["agent"] - 2 * FEE  # cancel, refund
        assert (after["peer2"], after["peer3"]) == (before["peer2"], before["peer3"])
        assert after["escrowed"] == 0
    finally:
        devnet.stop(run_dir)
