"""Third-party audits with real ``aitbc-peer`` processes (specs/market.md, "Third-party
audits"): a client that asks for no verification, a cheap provider that makes its results
up, an honest dearer one, an arbiter's peer, and an auditor's peer (``audit_rate`` 1) on
a chain whose genesis keeps settled jobs open to challenge (``challenge_blocks``).

The client's peer acks the made-up echo on delivery and the cheater settles; the auditor,
which has nothing to do with the job, asks the cheater for the job's facts, recomputes the
echo and disputes it (a challenge, if the settle was first: the two race for the same
blocks); the arbiter rules: the cheater is slashed and struck off, the client gets back
what it paid, the auditor is rewarded. The next job goes to the
honest provider, which the auditor audits and leaves alone. Balances over RPC; supply is
conserved.
"""

from pathlib import Path
from typing import Any

import pytest
import trio

from aitbc_p2p.cli import devnet
from aitbc_p2p.crypto import load_key_file
from aitbc_p2p.testing.devnets import ProviderSpec, write_devnet
from aitbc_p2p.types import aitbc

NODES = Path(__file__).resolve().parents[1] / "nodes" / "devnet"
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


async def _until(proc: devnet.PeerProcess, job_id: str, status: str, timeout: float = 90) -> dict[str, Any]:
    with trio.fail_after(timeout):
        async with proc.rpc() as rpc:
            while (job := await rpc.job(job_id))["status"] != status:
                await trio.sleep(0.3)
    return job


async def _balance(proc: devnet.PeerProcess, address: str) -> int:
    async with proc.rpc() as rpc:
        return int((await rpc.account(address))["balance"])


async def test_an_auditor_challenges_a_settled_made_up_result_and_leaves_an_honest_one(tmp_path: Path) -> None:
    specs = [ProviderSpec(10_000_000, cheat="random_output"), ProviderSpec(20_000_000)]
    net = write_devnet(
        tmp_path / "nodes", NODES, specs, arbiter=True, auditor=True,
        rules={"dispute_blocks": 5, "challenge_blocks": 60},
    )  # fmt: skip
    cheater, honest = net.providers
    client = load_key_file(NODES / "wallets" / "client.json", "devnet")
    procs = devnet.start(net.nodes, tmp_path / "run")
    client_peer, auditor = procs[0], procs[len(specs) + 1]
    try:
        with trio.fail_after(120):
            await devnet.wait_ready(procs, progress=lambda s: None)
            async with auditor.rpc() as rpc:
                while len(await rpc.providers()) < len(specs):
                    await trio.sleep(0.3)
        before = {a: await _balance(client_peer, a) for a in (client.address, net.auditor)}
        async with client_peer.rpc() as rpc:
            stake = (await rpc.account(cheater))["stake"]
            params = {"message": "audit me"}
            job_id = await rpc.submit_job(client, "echo", params, max_price=aitbc(5), verification="none")
            paid = await rpc.wait_job(job_id, timeout=90)
        assert paid["status"] in ("settled", "refunded") and paid["escrow"]["provider"] == cheater, paid
        job = await _until(client_peer, job_id, "refunded")
        escrow = job["escrow"]
        assert escrow["challenger"] == net.auditor, job
        async with auditor.rpc() as rpc:
            check = (await rpc.job(job_id))["check"]
        assert check["verdict"] == "client" and "not the message sent" in check["why"], check
        async with client_peer.rpc() as rpc:
            account = await rpc.account(cheater)
            supply = await rpc.supply()
            fee = int((await rpc.status())["min_fee"])
        assert (account["provider"], account["stake"]) == (False, stake - stake // 10), account
        # The client paid the escrow's fee only: what the cheater was paid came back from its slash.
        assert await _balance(client_peer, client.address) == before[client.address] - fee
        # Its bond back and half the slash (of what is left once the client is refunded, for a
        # challenge of the settled job), less the dispute's fee.
        gained = await _balance(client_peer, net.auditor) - before[net.auditor]
        share, cost = stake // 10, int(escrow["cost"])
        assert gained in (share // 2 - fee, (share - cost) // 2 - fee), (gained, share, cost, fee)
        assert supply["total"] == supply["genesis_total"] and supply["escrowed"] == 0, supply
        # The next job goes to the honest provider; audited, and left settled.
        async with client_peer.rpc() as rpc:
            job_id = await rpc.submit_job(client, "echo", {"message": "again"}, max_price=aitbc(5))
            done = await rpc.wait_job(job_id, timeout=90)
        assert done["status"] == "settled" and done["escrow"]["provider"] == honest, done
        with trio.fail_after(60):
            async with auditor.rpc() as rpc:
                while (await rpc.job(job_id)).get("check") is None:
                    await trio.sleep(0.3)
                assert (await rpc.job(job_id))["check"]["verdict"] == "provider"
        async with client_peer.rpc() as rpc:
            assert "challenger" not in (await rpc.job(job_id))["escrow"]
        arbiter_log = procs[-1].log.read_text()
        assert arbiter_log.count("for the client") == 1 and "for the provider" not in arbiter_log
    finally:
        devnet.stop(tmp_path / "run")
