"""The client's side of a job, through real peers on 127.0.0.1: parameters are checked
before any offer or escrow, a failed job's escrow comes back by itself, and a job is
found by any unique prefix of its id."""

import pytest
import trio

from aitbc_p2p.chain.state import JobStatus
from aitbc_p2p.exceptions import ComputeError, MarketError
from aitbc_p2p.market import JobOffer, JobResult, params_hash
from aitbc_p2p.testing import make_key, open_test_network
from aitbc_p2p.testing.market import offer_job, open_escrow
from aitbc_p2p.types import Hash32, JobId, aitbc

CLIENT = make_key("client")
ALLOC = {CLIENT.address: aitbc(10_000), make_key("peer1").address: aitbc(1_000)}


async def wait_for(predicate, timeout=30):
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.05)


def offer_for(node, workload, params, **kw):
    return JobOffer.create(
        CLIENT, node.genesis.chain_id, workload=workload, params_hash=params_hash(workload, params),
        max_price=kw.get("max_price", aitbc(5)), max_runtime_s=kw.get("max_runtime_s", 30), verification="none",
        timestamp_ms=node.clock_ms(),
    )  # fmt: skip


async def offer_and_open_escrow(node, *, deadline_blocks: int) -> JobId:
    """An echo job offered through ``node``, the cheapest bid chosen and its escrow opened
    (deadline ``deadline_blocks`` after the head); returns the job id."""
    job_id, offer = await offer_job(node, CLIENT, "echo", {"message": "x"})
    await open_escrow(node, CLIENT, job_id, offer, blocks=deadline_blocks)
    return job_id


@pytest.mark.parametrize(
    ("workload", "params", "match"),
    [
        ("echo", {"message": 5}, "must be a string"),
        ("echo", {"message": "x", "extra": 1}, "unknown parameters"),
        ("torch_bench", {"n": 10**9}, "parameter 'n'"),
        ("no_such_workload", {}, "unknown workload"),
    ],
)
async def test_bad_parameters_are_refused_before_the_offer_is_gossiped(workload, params, match):
    async with open_test_network(1, alloc=ALLOC) as (node,):
        with pytest.raises(ComputeError, match=match):
            await node.submit_job(offer_for(node, workload, params), workload, params)
        assert not node.market.client_jobs


async def test_a_failed_jobs_escrow_is_refunded_by_the_clients_peer(monkeypatch):
    """The client's peer pays the refund's fee from its own account (peer0 has 1 AITBC)."""
    alloc = {**ALLOC, make_key("peer0").address: aitbc(1)}
    async with open_test_network(2, providers=[1], alloc=alloc) as nodes:
        client_node, provider = nodes
        await wait_for(lambda: client_node.market.providers)

        async def fails(payload, peer="", emit=None):
            return JobResult(payload.job_id, False, error="the worker failed")

        monkeypatch.setattr(provider.market, "_run_job", fails)
        before = client_node.account(CLIENT.address).account.balance
        fee = client_node.genesis.min_fee
        job_id = await offer_and_open_escrow(client_node, deadline_blocks=4)
        await wait_for(lambda: client_node.job_status(job_id).phase == "failed")
        await wait_for(lambda: client_node.job_status(job_id).status == "refunded", timeout=60)
        escrow = client_node.store.state.job(job_id)
        assert escrow.status is JobStatus.REFUNDED and escrow.cost == 0
        assert client_node.account(CLIENT.address).account.balance == before - fee  # all but the escrow's fee back
        # The printed short id finds the job; too short or ambiguous ones do not. The
        # JobId and its full hex name it too.
        text = job_id.hex()
        assert client_node.job_status(text[:12]).job_id == job_id
        assert client_node.job_status(text.upper()).job_id == job_id
        assert client_node.job_status(job_id).job_id == job_id
        assert client_node.job_status(text[:3]) is None
        assert client_node.job_status("zz" * 32) is None
        twin = JobId(Hash32(job_id[:5] + bytes(27)))
        client_node.market.client_jobs[twin] = client_node.market.client_jobs[job_id]
        with pytest.raises(MarketError, match="ambiguous"):
            client_node.job_status(text[:10])


async def test_a_test_networks_provider_can_pay_its_fees_when_the_alloc_leaves_it_out():
    """open_test_network gives a provider it was not told about a balance: its receipt and
    settle fees are paid, and a job settles (it used to hang until a 120 s timeout)."""
    async with open_test_network(2, providers=[1], alloc={CLIENT.address: aitbc(10_000)}) as nodes:
        client_node = nodes[0]
        assert client_node.account(make_key("peer1").address).account.balance > 0
        await wait_for(lambda: client_node.market.providers)
        job_id = await offer_and_open_escrow(client_node, deadline_blocks=100)
        await wait_for(lambda: client_node.job_status(job_id).status == "settled", timeout=60)


async def test_bidding_closes_once_every_known_suitable_provider_has_bid():
    """The bid window is an upper bound: with one provider known that can take the job,
    its bid closes bidding; an offer no known provider can take waits the window out."""
    from aitbc_p2p.network.memory import MemoryHub

    async with open_test_network(2, providers=[1], alloc=ALLOC, hub=MemoryHub(), bid_window_s=60) as nodes:
        node = nodes[0]
        await wait_for(lambda: nodes[1].market.registered() and node.market.providers)
        params = {"message": "x"}
        job_id = await node.submit_job(offer_for(node, "echo", params), "echo", params)
        tracked = node.market.client_jobs[job_id]
        assert tracked.bids_wanted == 1
        await wait_for(lambda: tracked.phase == "bids_ready", timeout=20)  # long before the 60 s window
        assert list(tracked.bids) == [make_key("peer1").address]
        # Nobody known quotes within this max_price: bidding stays open for the window.
        cheap = offer_for(node, "echo", params, max_price=1)
        other = node.market.client_jobs[await node.submit_job(cheap, "echo", params)]
        assert other.bids_wanted == 0
        await trio.sleep(2)
        assert other.phase == "bidding" and not other.bids


async def test_an_offer_whose_client_never_opens_an_escrow_fails_instead_of_waiting_for_good(monkeypatch):
    """The client chooses and opens the escrow; one that never does (its SDK call ended,
    or the peer restarted under it) leaves a job that would stay ``bids_ready`` forever.
    Past ABANDONED_S after this peer took the job up it fails, with nothing locked."""
    monkeypatch.setattr("aitbc_p2p.node.market.ABANDONED_S", 2.0)
    async with open_test_network(2, providers=[1], alloc=ALLOC) as (client, _provider):
        params = {"message": "left alone"}
        job_id = await client.submit_job(offer_for(client, "echo", params), "echo", params)
        await wait_for(lambda: client.job_status(job_id).status == "bids_ready")
        await wait_for(lambda: client.job_status(job_id).status == "failed", timeout=30)
        info = client.job_status(job_id)
        assert info.finished and info.escrow is None and "no escrow opened" in info.error
        assert client.account(CLIENT.address).account.balance == ALLOC[CLIENT.address]
