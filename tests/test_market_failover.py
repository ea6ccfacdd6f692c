"""Failover and cancel (specs/market.md, "Failover and cancel"), over the in-memory
network with real worker processes (so the real clock): the escrow moves to the next
bidder when a provider fails, and a client's cancel returns the escrow, at once with the
provider's release or after its grace. Balances, escrow and supply to the unit."""

from __future__ import annotations

from typing import Any

import trio

from aitbc_p2p.chain.state import JobStatus
from aitbc_p2p.exceptions import NetworkError
from aitbc_p2p.market import JobPayload, JobResult
from aitbc_p2p.network.memory import MemoryHub
from aitbc_p2p.testing import make_key, open_test_network
from aitbc_p2p.testing.market import offer_job, open_escrow, wait_for
from aitbc_p2p.types import aitbc

CLIENT = make_key("client")
AGENT = make_key("peer0")  # the client's peer: nodes[0]
P1, P2 = make_key("peer1"), make_key("peer2")
ALLOC = {CLIENT.address: aitbc(10_000), AGENT.address: aitbc(1), P1.address: aitbc(1_000), P2.address: aitbc(1_000)}
KEYS = (CLIENT, AGENT, P1, P2)


def balances(node: Any) -> dict[str, int]:
    return {k.address: node.account(k.address).account.balance for k in KEYS}


async def _settle_after_a_failover(client_node: Any) -> tuple[Any, Any, Any, Any]:
    """Offer a job to both providers, escrow it for the first choice, wait until it settles
    (on the other one, after a failover): its id, the first bid, the escrow, the winner."""
    job_id, job = await offer_job(client_node, CLIENT, "echo", {"message": "hello"}, bids=2)
    first = await open_escrow(client_node, CLIENT, job_id, job)
    await wait_for(lambda: client_node.job_status(job_id).status == "settled")
    return job_id, first, client_node.store.state.job(job_id), P2 if first.signer == P1.address else P1


async def test_a_failed_provider_releases_the_job_and_the_escrow_moves_to_the_next_bidder(monkeypatch: Any) -> None:
    async with open_test_network(3, providers=[1, 2], alloc=ALLOC, hub=MemoryHub()) as (client_node, *providers):
        await wait_for(lambda: all(p.market.registered() for p in providers) and len(client_node.market.providers) == 2)
        failed: list[str] = []
        for node in providers:
            real = node.market._run_job

            async def run(
                payload: JobPayload, peer: str = "", emit: Any = None, node: Any = node, real: Any = real
            ) -> JobResult:
                if not failed:  # the first provider to get the job: its worker crashes
                    failed.append(node.key.address)
                    return JobResult(payload.job_id, False, error="bad job: the worker crashed")
                return await real(payload, peer, emit)

            monkeypatch.setattr(node.market, "_run_job", run)
        before, fee = balances(client_node), client_node.genesis.min_fee
        job_id, first, escrow, winner = await _settle_after_a_failover(client_node)
        assert failed == [first.signer] and escrow.provider == winner.address and escrow.attempts == 2
        assert client_node.job_result(job_id).receipt_matches
        after = balances(client_node)
        loser = P1 if winner is P2 else P2
        assert after[CLIENT.address] == before[CLIENT.address] - escrow.cost - fee  # one escrow, paid once
        assert after[AGENT.address] == before[AGENT.address] - fee  # the reassignment
        assert after[loser.address] == before[loser.address]  # a release costs nothing and earns nothing
        assert after[winner.address] == before[winner.address] + escrow.cost - 2 * fee  # receipt + settle
        supply = client_node.supply()
        assert supply.total == supply.genesis_total and supply.escrowed == 0
        assert client_node.account(loser.address).account.active_jobs == 0


async def test_a_silent_provider_is_cancelled_and_the_escrow_moves_on_after_its_grace(monkeypatch: Any) -> None:
    """No release can come from a provider that went silent: the client's peer cancels the
    escrow, waits out the grace, then reassigns it without one (and the job settles)."""
    monkeypatch.setattr("aitbc_p2p.node.market.SILENT_S", 0.5)
    async with open_test_network(3, providers=[1, 2], alloc=ALLOC, hub=MemoryHub()) as (client_node, *providers):
        await wait_for(lambda: all(p.market.registered() for p in providers) and len(client_node.market.providers) == 2)
        silent: list[str] = []

        def gone(node: Any) -> bool:  # the first provider sent the job: every stream to it fails from then on
            if not silent:
                silent.append(node.key.address)
            return silent[0] == node.key.address

        def unreachable_once_gone(node: Any, real: Any) -> Any:
            async def serve(*args: Any) -> Any:  # run and release requests
                if gone(node):
                    raise NetworkError("the connection closed")
                return await real(*args)

            return serve

        def fetch_unreachable_once_gone(node: Any, real: Any) -> Any:
            def fetch(*args: Any) -> Any:
                if gone(node):
                    raise NetworkError("the connection closed")
                return real(*args)

            return fetch

        for node in providers:
            for name in ("_run_job", "_give_release"):
                monkeypatch.setattr(node.market, name, unreachable_once_gone(node, getattr(node.market, name)))
            fetch = fetch_unreachable_once_gone(node, node.market._answer_fetch)
            monkeypatch.setattr(node.market, "_answer_fetch", fetch)
        before, fee = balances(client_node), client_node.genesis.min_fee
        _, first, escrow, winner = await _settle_after_a_failover(client_node)
        assert silent == [first.signer] and escrow.provider == winner.address and escrow.attempts == 2
        after = balances(client_node)
        assert after[CLIENT.address] == before[CLIENT.address] - escrow.cost - fee
        assert after[AGENT.address] == before[AGENT.address] - 2 * fee  # the cancel, then the reassignment
        assert after[first.signer] == before[first.signer]
        assert after[winner.address] == before[winner.address] + escrow.cost - 2 * fee
        assert client_node.supply().escrowed == 0


async def test_a_job_cancelled_before_its_escrow_is_refunded_at_once_when_the_escrow_opens() -> None:
    async with open_test_network(2, providers=[1], alloc=ALLOC, hub=MemoryHub()) as (client_node, provider):
        await wait_for(lambda: provider.market.registered() and client_node.market.providers)
        before, fee = balances(client_node), client_node.genesis.min_fee
        job_id, job = await offer_job(client_node, CLIENT, "echo", {"message": "hello"})
        info = await client_node.cancel_job(job_id)
        assert info.status == "cancelled" and info.escrow is None  # nothing on chain yet
        await open_escrow(client_node, CLIENT, job_id, job)  # the wallet opened it anyway (a race)
        await wait_for(lambda: client_node.job_status(job_id).status == "refunded")
        escrow = client_node.store.state.job(job_id)
        assert escrow.status is JobStatus.REFUNDED and escrow.cost == 0
        after = balances(client_node)
        assert after[CLIENT.address] == before[CLIENT.address] - fee  # all back at once but the escrow's fee
        assert after[AGENT.address] == before[AGENT.address] - fee  # the cancel, with the provider's release
        assert after[P1.address] == before[P1.address]
        assert provider.market._held[job_id].result.error == "this provider released the job"


async def test_a_job_cancelled_while_running_is_refunded_after_the_providers_grace(monkeypatch: Any) -> None:
    async with open_test_network(2, providers=[1], alloc=ALLOC, hub=MemoryHub()) as (client_node, provider):
        await wait_for(lambda: provider.market.registered() and client_node.market.providers)

        async def forever(*args: Any, **kwargs: Any) -> Any:
            await trio.sleep_forever()

        monkeypatch.setattr(provider.market._executor, "run", forever)  # the job runs and runs
        before, fee = balances(client_node), client_node.genesis.min_fee
        job_id, job = await offer_job(client_node, CLIENT, "echo", {"message": "hello"})
        await open_escrow(client_node, CLIENT, job_id, job)
        await wait_for(lambda: job_id in provider.market._held)  # it is running there
        await client_node.cancel_job(job_id)
        await wait_for(lambda: client_node.store.state.job(job_id).status is JobStatus.CANCELLED)
        cancelled_at = client_node.store.state.job(job_id).cancelled_at
        await wait_for(lambda: client_node.job_status(job_id).status == "refunded")
        # not before the provider's grace had passed
        assert client_node.head.height > cancelled_at + client_node.genesis.dispute_blocks
        after = balances(client_node)
        assert after[CLIENT.address] == before[CLIENT.address] - fee
        assert after[AGENT.address] == before[AGENT.address] - 2 * fee  # the cancel and the refund
        assert after[P1.address] == before[P1.address]
        assert client_node.supply().escrowed == 0
