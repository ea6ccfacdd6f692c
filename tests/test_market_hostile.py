"""What a stranger can send the market: malformed job payloads, results and bid floods.

The parsers are pure and tested byte by byte; the node-level tests run a real peer over
libp2p on 127.0.0.1 against a hostile counterpart that is a bare network host.
"""

from collections import OrderedDict

import pytest
import trio

from aitbc_p2p.codec import encode
from aitbc_p2p.exceptions import MarketError, NetworkError
from aitbc_p2p.market import Bid, CapabilityRecord, JobOffer, JobPayload, JobResult, params_hash
from aitbc_p2p.network import JOB_PROTOCOL, open_libp2p_network
from aitbc_p2p.node import market as market_module
from aitbc_p2p.node.market import MAX_BIDS_PER_JOB
from aitbc_p2p.testing import make_key, open_test_network
from aitbc_p2p.types import aitbc

CLIENT = make_key("client")
JOB_ID = "ab" * 32
GOOD_RESULT = {"job_id": JOB_ID, "ok": True, "output": b"\xa0", "error": "", "metrics": {"compute_ms": 3}}
GOOD_PAYLOAD = {"job_id": JOB_ID, "workload": "echo", "params": {"message": "x"}}


async def wait_for(predicate, timeout=30):
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.05)


def test_well_formed_results_and_payloads_round_trip():
    r = JobResult.decode(encode(GOOD_RESULT))
    assert (r.job_id, r.ok, r.output, r.metrics) == (bytes.fromhex(JOB_ID), True, b"\xa0", {"compute_ms": 3})
    assert JobResult.decode(r.encode()) == r
    p = JobPayload.decode(encode(GOOD_PAYLOAD))
    assert JobPayload.decode(p.encode()) == p


@pytest.mark.parametrize(
    "change",
    [
        {"output": -1},  # bytes(-1): ValueError
        {"output": 2**63},  # bytes(2**63): OverflowError
        {"output": 2**27},  # bytes(2**27): 128 MiB from five bytes
        {"output": "text"},
        {"metrics": "xy"},  # dict("xy"): ValueError
        {"metrics": {"compute_ms": -5}},
        {"metrics": {"compute_ms": True}},
        {"metrics": {f"m{i}": 1 for i in range(100)}},
        {"ok": 1},
        {"error": 7},
        {"error": "e" * 5000},
        {"job_id": 5},
        {"job_id": "a" * 100},
        {"job_id": "AB" * 32},  # one spelling of an id: lowercase
        {"job_id": "ab" * 31},
        {"job_id": "zz" * 32},
        {"extra": 1},
    ],
)
def test_a_malformed_job_result_is_a_market_error(change):
    with pytest.raises(MarketError, match="malformed job result"):
        JobResult.decode(encode({**GOOD_RESULT, **change}))


@pytest.mark.parametrize("drop", ["job_id", "ok", "output", "error", "metrics"])
def test_a_job_result_missing_a_field_is_a_market_error(drop):
    with pytest.raises(MarketError):
        JobResult.decode(encode({k: v for k, v in GOOD_RESULT.items() if k != drop}))


@pytest.mark.parametrize(
    "change",
    [{"job_id": 5}, {"workload": ["echo"]}, {"workload": "w" * 100}, {"params": [1]}, {"params": "x"}, {"x": 1}],
)
def test_a_malformed_job_payload_is_a_market_error(change):
    with pytest.raises(MarketError, match="malformed job payload"):
        JobPayload.decode(encode({**GOOD_PAYLOAD, **change}))


@pytest.mark.parametrize("data", [b"", b"\xff", b"\x04\xff\xff\xff\xff", encode([1, 2])])
def test_garbage_is_a_market_error_for_both(data):
    with pytest.raises(MarketError):
        JobPayload.decode(data)
    with pytest.raises(MarketError):
        JobResult.decode(data)


async def test_a_provider_survives_malformed_job_payloads():
    """The job stream of a real provider peer, written to by a stranger."""
    async with (
        open_test_network(1, providers=[0], alloc={CLIENT.address: aitbc(10)}) as (provider,),
        open_libp2p_network(make_key("stranger"), ["/ip4/127.0.0.1/tcp/0"]) as stranger,
    ):
        await stranger.connect(provider.network.listen_addrs()[0])
        for bad in (b"\x04\xff\xff\xff\xff", encode({**GOOD_PAYLOAD, "params": 7}), encode({"job_id": -1})):
            with pytest.raises(NetworkError):  # the stream is reset
                await stranger.request(provider.network.peer_id, JOB_PROTOCOL, bad, timeout=10)
        # Well-formed, for a job it never bid on: a refusal in the protocol, not a reset.
        answer = JobResult.decode(await stranger.request(provider.network.peer_id, JOB_PROTOCOL, encode(GOOD_PAYLOAD)))
        assert not answer.ok and "no bid" in answer.error
        height = provider.store.head.height
        await wait_for(lambda: provider.store.head.height > height)  # still producing blocks


async def _client_job(node):
    params = {"message": "x"}
    offer = JobOffer.create(
        CLIENT, node.genesis.chain_id, workload="echo", params_hash=params_hash("echo", params),
        max_price=aitbc(5), max_runtime_s=30, verification="none", timestamp_ms=node.clock_ms(),
    )  # fmt: skip
    job_id = await node.submit_job(offer, "echo", params)
    return offer, node.market.client_jobs[job_id]


@pytest.mark.parametrize(
    "answer",
    [
        encode({**GOOD_RESULT, "output": -1}),
        encode({**GOOD_RESULT, "output": 2**63}),
        encode({**GOOD_RESULT, "output": 2**27}),
        encode({**GOOD_RESULT, "metrics": "xy"}),
        b"\x04\xff\xff\xff\xff",
    ],
)
async def test_a_client_survives_a_malformed_job_result(answer):
    async with (
        open_test_network(1, alloc={CLIENT.address: aitbc(10)}) as (client,),
        open_libp2p_network(make_key("liar"), ["/ip4/127.0.0.1/tcp/0"]) as liar,
    ):

        async def lie(_peer, _request, _emit):
            return answer

        liar.set_stream_handler(JOB_PROTOCOL, lie)
        await client.network.connect(liar.listen_addrs()[0])
        offer, job = await _client_job(client)
        bid = Bid.create(
            make_key("liar"), offer.chain_id, job_id=offer.job_id.hex(), peer_id=liar.peer_id,
            price=1, price_per_s=1, gflops=1, wait_ms=0,
        )  # fmt: skip
        await client.market._dispatch(offer.job_id, job, bid)
        assert job.phase == "failed" and "malformed job result" in job.error
        height = client.store.head.height
        await wait_for(lambda: client.store.head.height > height)  # the node goes on


async def test_bids_per_job_are_bounded_and_cheaper_ones_still_get_in(monkeypatch):
    async with open_test_network(1, alloc={CLIENT.address: aitbc(10)}) as (client,):
        offer, job = await _client_job(client)
        unregistered = Bid.create(
            make_key("nobody"), offer.chain_id, job_id=offer.job_id.hex(), peer_id="p", price=1, price_per_s=1,
            gflops=1, wait_ms=0,
        )  # fmt: skip
        client.market._take_bid(unregistered)
        assert not job.bids  # an escrow could not name it: not taken
        monkeypatch.setattr(client.market, "_for_hire", lambda address: True)  # 192 bidders, as if registered

        def bid(i, price):
            key = make_key(f"bidder{i}")
            return Bid.create(
                key,
                offer.chain_id,
                job_id=offer.job_id.hex(),
                peer_id="p",
                price=price,
                price_per_s=1,
                gflops=1,
                wait_ms=0,
            )

        for i in range(3 * MAX_BIDS_PER_JOB):
            client.market._take_bid(bid(i, 1000 + i))
        assert len(job.bids) == MAX_BIDS_PER_JOB
        cheap = bid("cheap", 10)
        client.market._take_bid(cheap)
        assert len(job.bids) == MAX_BIDS_PER_JOB and job.bids[cheap.signer] == cheap
        assert max(b.body["price"] for b in job.bids.values()) < 1000 + 3 * MAX_BIDS_PER_JOB - 1


async def test_capability_records_are_bounded(monkeypatch):
    monkeypatch.setattr(market_module, "MAX_PROVIDERS", 5)
    svc = market_module.MarketService.__new__(market_module.MarketService)
    svc.providers = OrderedDict()
    svc._heard = {}
    for i in range(20):
        rec = CapabilityRecord.create(
            make_key(f"prov{i}"), "ait-devnet", miner_id=f"m{i}", peer_id="p", mode="cpu", gpu=False, device="d",
            concurrency=1, workloads=["echo"], limits={}, gflops=1, gflops_by_dtype={}, versions={},
            price_per_s=1, timestamp_ms=i,
            load={"slots": 1, "free_slots": 1, "queued": 0, "max_queue": 8, "wait_ms": 0}, models=[],
        )  # fmt: skip
        svc._remember_provider(rec)
    assert len(svc.providers) == 5 and set(svc._heard) == set(svc.providers)  # both bounded
    assert [r.body["miner_id"] for r in svc.providers.values()] == [f"m{i}" for i in range(15, 20)]
