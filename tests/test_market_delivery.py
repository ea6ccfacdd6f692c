"""Delivery before payment (specs/market.md, "Delivery"), over the in-memory network with
real worker processes (so the real clock).

The provider holds each accepted job's result until its escrow ends; the client's peer
fetches a result its stream lost, acks it (the provider then settles at once), and
disputes a receipt for a result it never got. Balances, escrow and supply are checked
to the unit.
"""

from __future__ import annotations

from typing import Any

import trio

from aitbc_p2p.chain.payloads import JobReceipt
from aitbc_p2p.chain.state import JobStatus
from aitbc_p2p.codec import decode, encode
from aitbc_p2p.exceptions import MarketError, TxRejected
from aitbc_p2p.market import JobPayload, JobResult
from aitbc_p2p.market.jobs import ACK_REFUSED, FetchAnswer, Held, JobAck, JobFetch
from aitbc_p2p.network import JOB_PROTOCOL
from aitbc_p2p.network.memory import MemoryHub
from aitbc_p2p.testing import make_key, make_tx, open_test_network
from aitbc_p2p.testing.market import make_offer, offer_job, open_escrow, wait_for
from aitbc_p2p.types import aitbc

CLIENT = make_key("client")
AGENT = make_key("peer0")  # the client's peer: nodes[0]
PROVIDER = make_key("peer1")
ARBITER = make_key("peer2")  # nodes[2], where a test has one
STRANGER = make_key("stranger")
ALLOC = {CLIENT.address: aitbc(10_000), AGENT.address: aitbc(10), PROVIDER.address: aitbc(1_000)}
WITH_ARBITER = {"alloc": {**ALLOC, ARBITER.address: aitbc(1)}, "genesis_params": {"arbiters": [ARBITER.address]}}


def balances(node: Any) -> dict[str, int]:
    return {k.address: node.account(k.address).account.balance for k in (CLIENT, AGENT, PROVIDER)}


async def ruled_for_the_client(node: Any, job_id: Any, bid_price: int, before: dict[str, int]) -> None:
    """The arbiter's ruling against the provider, to the unit: the client has its escrow
    back, the provider lost 10% of its stake and its registration, the agent (the
    challenger) has its bond back and half the slash."""
    await wait_for(lambda: node.job_status(job_id).status == "refunded")
    assert node.store.state.job(job_id).challenger == AGENT.address
    fee, stake = node.genesis.min_fee, node.genesis.min_provider_stake
    after = balances(node)
    assert after[CLIENT.address] == before[CLIENT.address] - fee  # the open's fee only
    assert after[PROVIDER.address] == before[PROVIDER.address] - fee  # its receipt's fee, no payment
    assert after[AGENT.address] == before[AGENT.address] - fee + stake // 10 // 2  # dispute fee; bond back; reward
    account = node.account(PROVIDER.address).account
    assert (account.stake, account.provider) == (stake - stake // 10, False)
    supply = node.supply()
    assert supply.total == supply.genesis_total and supply.escrowed == 0


async def test_a_result_whose_stream_was_cut_is_fetched_acked_and_settled_at_once(monkeypatch: Any) -> None:
    # A dispute window far longer than the test: a settlement in it can only be the ack's.
    window = {"dispute_blocks": 1000}
    async with open_test_network(2, providers=[1], alloc=ALLOC, hub=MemoryHub(), genesis_params=window) as (
        client_node,
        provider,
    ):
        await wait_for(lambda: provider.market.registered() and PROVIDER.address in client_node.market.providers)
        real_run = provider.market._run_job

        async def run_then_cut(payload: JobPayload, peer: str = "", emit: Any = None) -> JobResult:
            await real_run(payload, peer, emit)  # computed, held and receipted...
            raise MarketError("the stream is cut")  # ...but the answer never leaves: a reset

        monkeypatch.setattr(provider.market, "_run_job", run_then_cut)
        before, fee = balances(client_node), client_node.genesis.min_fee
        job_id, offer = await offer_job(client_node, CLIENT, "echo", {"message": "hello"})
        await open_escrow(client_node, CLIENT, job_id, offer)
        await wait_for(lambda: client_node.job_status(job_id).status == "settled")
        escrow = client_node.store.state.job(job_id)
        # The client's peer got the result by fetching it, and it is the one receipted.
        result = client_node.job_result(job_id)
        assert decode(result.result.output) == {"message": "hello", "length": 5} and result.receipt_matches
        # Settled with the client peer's ack, long before the dispute window could close.
        assert client_node.head.height <= escrow.receipt_height + client_node.genesis.dispute_blocks
        (settle,) = [loc.tx for loc in client_node.history(PROVIDER.address, 10) if loc.tx.kind == "job_settle"]
        assert settle.payload.ack and settle.sender == PROVIDER.address
        after = balances(client_node)
        assert after[CLIENT.address] == before[CLIENT.address] - escrow.cost - fee  # open; the rest refunded
        assert after[PROVIDER.address] == before[PROVIDER.address] + escrow.cost - 2 * fee  # receipt + settle
        assert after[AGENT.address] == before[AGENT.address]  # the ack costs the agent nothing
        supply = client_node.supply()
        assert supply.total == supply.genesis_total and supply.escrowed == 0
        await wait_for(lambda: job_id not in provider.market._held)  # released once the escrow ended


async def test_a_receipt_for_a_result_never_delivered_is_disputed_and_ruled_against(monkeypatch: Any) -> None:
    """The provider receipts a result it cannot deliver. The agent disputes it as the window
    closes; the arbiter asks the provider for the receipted result, gets none, and rules."""
    monkeypatch.setattr("aitbc_p2p.node.audit.ARBITER_PATIENCE_S", 3.0)
    async with open_test_network(3, providers=[1], hub=MemoryHub(), **WITH_ARBITER) as (client_node, provider, arbiter):
        await wait_for(lambda: provider.market.registered() and PROVIDER.address in client_node.market.providers)
        real_run = provider.market._run_job

        async def run_and_lose(payload: JobPayload, peer: str = "", emit: Any = None) -> JobResult:
            await real_run(payload, peer, emit)  # receipted...
            del provider.market._held[payload.job_id]  # ...and the result lost (a crash, a liar)
            while client_node.store.state.job(payload.job_id).status is not JobStatus.RECEIPTED:
                await client_node.wait_head_change()  # (the receipt is in before the client's peer hears)
            raise MarketError("the stream is cut")

        monkeypatch.setattr(provider.market, "_run_job", run_and_lose)
        before = balances(client_node)
        job_id, offer = await offer_job(client_node, CLIENT, "echo", {"message": "x"})
        bid = await open_escrow(client_node, CLIENT, job_id, offer)
        await wait_for(lambda: client_node.job_status(job_id).status == "disputed")
        info = client_node.job_status(job_id)
        assert info.phase == "failed" and "did not deliver" in info.error
        await ruled_for_the_client(client_node, job_id, bid.body["price"], before)
        assert "did not answer the audit" in arbiter.audit.rulings[job_id].why  # it holds no such result
        assert client_node.job_status(job_id).check[0] == "client"  # the agent's own ruling, shown with the job


async def test_a_receipt_charging_more_than_the_bid_is_disputed_and_never_acked(monkeypatch: Any) -> None:
    """The escrow holds more than the winning bid (the SDK's failover reserve); a provider
    that bills past its own bid gets no ack; the client's agent disputes at once with the
    provider's signed bid as evidence, and the arbiter rules on it alone."""
    async with open_test_network(3, providers=[1], hub=MemoryHub(), **WITH_ARBITER) as (client_node, provider, arbiter):
        await wait_for(lambda: provider.market.registered() and PROVIDER.address in client_node.market.providers)
        monkeypatch.setattr("aitbc_p2p.node.market.job_cost", lambda price, ms, cap: cap)  # bills it all
        before = balances(client_node)
        job_id, offer = await offer_job(client_node, CLIENT, "echo", {"message": "x"})
        bid = await open_escrow(client_node, CLIENT, job_id, offer, reserve=aitbc(1))
        await wait_for(lambda: client_node.job_status(job_id).status == "disputed")
        escrow = client_node.store.state.job(job_id)
        assert escrow.cost == escrow.amount == bid.body["price"] + aitbc(1)
        assert client_node.job_status(job_id).result_available  # delivered, and still disputed
        assert provider.market._held[job_id].ack == b""  # the agent never vouched for the bill
        await ruled_for_the_client(client_node, job_id, bid.body["price"], before)
        assert "more than the bid" in arbiter.audit.rulings[job_id].why


async def test_a_held_job_runs_once_and_goes_only_to_the_peer_that_sent_it() -> None:
    hub = MemoryHub()
    other = make_key("other-stranger")
    async with (
        open_test_network(1, providers=[0], alloc={CLIENT.address: aitbc(100)}, hub=hub) as (provider,),
        hub.open_network(STRANGER) as stranger,
        hub.open_network(other) as eavesdropper,
    ):
        for net in (stranger, eavesdropper):
            await net.connect(provider.network.listen_addrs()[0])
        await wait_for(provider.market.registered)
        params = {"message": "once"}
        offer = make_offer(provider, CLIENT, "echo", params)
        await stranger.publish(provider.topics.job, encode({"offer": offer.to_wire()}))
        await wait_for(lambda: offer.job_id in provider.market._offers_seen)
        await provider.submit_tx(
            make_tx(
                CLIENT, "job_open", chain_id=provider.genesis.chain_id, fee=provider.genesis.min_fee,
                job_id=offer.job_id, provider=provider.key.address, amount=aitbc(5),
                deadline=provider.head.height + 100, agent=CLIENT.address,
            )
        )  # fmt: skip
        await wait_for(lambda: provider.store.state.job(offer.job_id) is not None)
        executor = provider.market._executor
        ran: list[Any] = []
        real_run = executor.run

        async def spy(*args: Any, **kwargs: Any) -> Any:
            ran.append(args)
            return await real_run(*args, **kwargs)

        executor.run = spy
        peer = provider.network.peer_id
        payload = JobPayload(offer.job_id, "echo", params).encode()
        answers: list[bytes] = []

        async def ask() -> None:
            answers.append(await stranger.request(peer, JOB_PROTOCOL, payload, timeout=30))

        async with trio.open_nursery() as nursery:  # the same job sent twice at once
            nursery.start_soon(ask)
            nursery.start_soon(ask)
        assert len(ran) == 1 and answers[0] == answers[1] and JobResult.decode(answers[0]).ok
        fetch = JobFetch(offer.job_id).encode()
        held = FetchAnswer.decode(await stranger.request(peer, JOB_PROTOCOL, fetch, timeout=10))
        assert held.state is Held.DONE and held.result == JobResult.decode(answers[0])
        # Another peer learns nothing of it, cannot have it run again, and cannot ack it.
        unknown = FetchAnswer.decode(await eavesdropper.request(peer, JOB_PROTOCOL, fetch, timeout=10))
        assert unknown.state is Held.UNKNOWN
        again = JobResult.decode(await eavesdropper.request(peer, JOB_PROTOCOL, payload, timeout=10))
        assert not again.ok and "another peer" in again.error and len(ran) == 1
        ack = JobAck(offer.job_id, b"\x01" * 65).encode()
        assert await eavesdropper.request(peer, JOB_PROTOCOL, ack, timeout=10) == ACK_REFUSED
        assert provider.market._held[offer.job_id].ack == b""


async def test_an_escrow_whose_receipt_never_lands_by_the_deadline_goes_back_to_the_client(
    monkeypatch: Any,
) -> None:
    """The result is delivered but the provider's receipt never reaches a block (lost in
    gossip: CI once saw a burst of receipts dropped this way). Before, the client's agent
    refunded only failed jobs, so this escrow stayed locked for good and the SDK's
    ``wait_job`` never returned; now the agent takes it back once the deadline passes."""
    async with open_test_network(2, providers=[1], alloc=ALLOC, hub=MemoryHub()) as (client_node, provider):
        await wait_for(lambda: provider.market.registered() and PROVIDER.address in client_node.market.providers)
        real_send = provider.relay.send_own_tx

        async def lose_receipts(payload: Any) -> Any:
            if isinstance(payload, JobReceipt):
                raise TxRejected("PoolFull", "lost on its way (the test's)")
            return await real_send(payload)

        monkeypatch.setattr(provider.relay, "send_own_tx", lose_receipts)
        before, fee = balances(client_node), client_node.genesis.min_fee
        job_id, offer = await offer_job(client_node, CLIENT, "echo", {"message": "free"})
        await open_escrow(client_node, CLIENT, job_id, offer, blocks=8)
        await wait_for(lambda: client_node.job_status(job_id).phase == "result_received")
        await wait_for(lambda: client_node.job_status(job_id).status == "refunded")
        assert decode(client_node.job_result(job_id).result.output) == {"message": "free", "length": 4}
        after = balances(client_node)
        assert after[CLIENT.address] == before[CLIENT.address] - fee  # the open's fee; the escrow back
        assert after[AGENT.address] == before[AGENT.address] - fee  # the refund's fee
        assert after[PROVIDER.address] == before[PROVIDER.address]  # nothing committed, nothing paid
        supply = client_node.supply()
        assert supply.total == supply.genesis_total and supply.escrowed == 0
        await wait_for(lambda: job_id not in provider.market._held)  # nothing left to deliver
