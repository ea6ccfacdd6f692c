"""The market's journal (specs/market.md, "Persistence"): what a peer is answerable for
is in its LevelDB directory and comes back when the peer opens it again. Real peers on
127.0.0.1 with real data directories; the SIGKILL case is tests/test_devnet_persistence.py."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from aitbc_p2p.codec import decode, encode
from aitbc_p2p.exceptions import MarketError
from aitbc_p2p.market import Bid, JobResult
from aitbc_p2p.node.market import ClientJob, HeldJob, Phase
from aitbc_p2p.store import LevelDBKV
from aitbc_p2p.store.journal import MarketJournal, Side
from aitbc_p2p.testing import make_key, open_test_network
from aitbc_p2p.testing.market import make_offer, offer_job, open_escrow, wait_for
from aitbc_p2p.types import Hash32, JobId, aitbc

CLIENT = make_key("client")
PROVIDER = make_key("peer1")
ALLOC = {CLIENT.address: aitbc(10_000), make_key("peer0").address: aitbc(1), PROVIDER.address: aitbc(1_000)}


def journal_of(path: Any, side: Side) -> dict[JobId, bytes]:
    kv = LevelDBKV(path / "chain")
    try:
        return dict(MarketJournal(kv).records(side))
    finally:
        kv.close()


async def test_a_settled_jobs_result_outlives_a_restart_and_the_provider_keeps_no_record_of_it(tmp_path: Any) -> None:
    async with open_test_network(2, providers=[1], alloc=ALLOC, data_root=tmp_path) as (client_node, provider):
        await wait_for(lambda: provider.market.registered() and PROVIDER.address in client_node.market.providers)
        job_id, offer = await offer_job(client_node, CLIENT, "echo", {"message": "kept"})
        bid = await open_escrow(client_node, CLIENT, job_id, offer)
        await wait_for(lambda: client_node.job_status(job_id).status == "settled")
        await wait_for(lambda: job_id not in provider.market._held)
        await client_node.wait_height(client_node.head.height + 1)  # the journal's last batch is written
    # The provider's obligation ended with the escrow: its journal holds nothing.
    assert journal_of(tmp_path / "peer1", Side.PROVIDER) == {}
    async with open_test_network(2, providers=[1], alloc=ALLOC, data_root=tmp_path) as (client_node, _):
        tracked = client_node.market.client_jobs[job_id]
        assert tracked.offer == offer and tracked.bids[bid.signer] == bid
        assert tracked.phase is Phase.RESULT_RECEIVED and tracked.acted
        result = client_node.job_result(job_id)
        assert result is not None and result.receipt_matches
        assert decode(result.result.output) == {"message": "kept", "length": 4}
        assert client_node.job_status(job_id[:4].hex()).status == "settled"  # found by its prefix as before


async def test_a_job_offered_before_a_restart_is_still_tracked_and_can_be_escrowed_after_it(tmp_path: Any) -> None:
    async with open_test_network(2, providers=[1], alloc=ALLOC, data_root=tmp_path) as (client_node, provider):
        await wait_for(lambda: provider.market.registered() and PROVIDER.address in client_node.market.providers)
        job_id, offer = await offer_job(client_node, CLIENT, "echo", {"message": "later"})
        await client_node.wait_height(client_node.head.height + 1)
    async with open_test_network(2, providers=[1], alloc=ALLOC, data_root=tmp_path) as (client_node, provider):
        assert client_node.job_status(job_id).phase == "bids_ready"  # the window is over: choose
        provider.market._offers_seen[job_id] = offer  # (the provider's memory of its bid: not journaled)
        await open_escrow(client_node, CLIENT, job_id, offer)
        await wait_for(lambda: client_node.job_status(job_id).status == "settled")


async def test_an_unreadable_record_is_skipped_with_an_error_and_the_peer_starts(tmp_path: Any, caplog: Any) -> None:
    async with open_test_network(1, alloc=ALLOC, data_root=tmp_path):
        pass
    kv = LevelDBKV(tmp_path / "peer0" / "chain")
    bad = JobId(Hash32(b"\x07" * 32))
    MarketJournal(kv).write([(Side.CLIENT, bad, b"\xff\x00"), (Side.PROVIDER, bad, encode({"peer": 1}))], [])
    kv.close()
    with caplog.at_level(logging.ERROR, logger="aitbc_p2p.node.market"):
        async with open_test_network(1, alloc=ALLOC, data_root=tmp_path) as (node,):
            assert bad not in node.market.client_jobs and bad not in node.market._held
    assert "client job 0707" in caplog.text and "held job 0707" in caplog.text


def test_a_client_job_mid_failover_reads_back_as_it_was_written() -> None:
    from aitbc_p2p.testing import make_genesis

    genesis = make_genesis([make_key("peer0")], {CLIENT.address: aitbc(10)})

    class Stub:
        pass

    node: Any = Stub()
    node.genesis, node.clock_ms = genesis, lambda: 1_000
    params = {"message": "again"}
    offer = make_offer(node, CLIENT, "echo", params)
    bids = [
        Bid.for_offer(
            make_key(f"p{i}"), offer, peer_id=f"peer-{i}", price=aitbc(1) + i, price_per_s=10, gflops=1, wait_ms=0
        )
        for i in range(3)
    ]
    job = ClientJob(offer, "echo", params, phase=Phase.FAILING_OVER, bids_wanted=3, error="e" * 5000, peer="peer-0")
    job.bids = {b.signer: b for b in bids}
    job.tried, job.next_bid = {bids[0].signer}, bids[1]
    job.result = JobResult(offer.job_id, False, error="out of memory")
    back = ClientJob.from_record(job.to_record())
    assert back.to_record() == job.to_record()
    assert back.error == "e" * 4096  # an over-long error is cut to what a record holds
    assert (back.phase, back.tried, back.next_bid, back.bids, back.result) == (
        Phase.FAILING_OVER, {bids[0].signer}, bids[1], job.bids, job.result,
    )  # fmt: skip
    bidding = ClientJob(offer, "echo", params)
    assert ClientJob.from_record(bidding.to_record()).phase is Phase.BIDS_READY  # a restart ends the window
    with pytest.raises(MarketError, match="unreadable client job record"):
        ClientJob.from_record(encode({**decode(job.to_record()), "phase": "lost"}))


def test_a_held_job_that_was_running_reads_back_interrupted() -> None:
    job_id = JobId(Hash32(b"\x01" * 32))
    running = HeldJob(job_id, "peer-a")
    back = HeldJob.from_record(job_id, running.to_record())
    assert back.done.is_set() and not back.answer().ok and "interrupted" in back.answer().error
    done = HeldJob(job_id, "peer-a", result=JobResult(job_id, True, b"\xa0", metrics={"compute_ms": 3}), cost=7)
    done.ack = b"\x02" * 65
    done.done.set()
    back = HeldJob.from_record(job_id, done.to_record())
    assert (back.peer, back.result, back.ack, back.cost) == ("peer-a", done.result, done.ack, 7)
    with pytest.raises(MarketError, match="names another job"):
        HeldJob.from_record(JobId(Hash32(b"\x09" * 32)), done.to_record())
