"""Signed offers and bids, bid choice and pricing."""

import pytest

from aitbc_p2p.exceptions import MarketError
from aitbc_p2p.market import Bid, JobOffer, escrow_amount, job_cost, params_hash, quote, rank_bids, select_bid
from aitbc_p2p.testing import make_key


def test_offer_bid_and_choice():
    client, p1, p2 = make_key("client"), make_key("p1"), make_key("p2")
    offer = JobOffer.create(
        client, "ait-devnet", workload="echo", params_hash=params_hash("echo", {"message": "x"}),
        max_price=100, max_runtime_s=10, verification="none", timestamp_ms=1,
    )  # fmt: skip
    assert JobOffer.decode(offer.encode()) == offer

    def bid(key, price, gflops=1):
        return Bid.create(
            key, "ait-devnet", job_id=offer.job_id.hex(), peer_id="p", price=price, price_per_s=1, gflops=gflops,
            wait_ms=0,
        )

    cheap, dear, too_dear = bid(p1, 50), bid(p2, 60, gflops=99), bid(p2, 101)
    assert select_bid(offer, [dear, cheap, too_dear]) == cheap
    assert select_bid(offer, [too_dear]) is None
    forged = Bid({**cheap.body, "price": 1}, cheap.sig)
    with pytest.raises(MarketError):
        forged.check()
    # An offer signature never passes as a bid (domain separation).
    with pytest.raises(MarketError):
        Bid.from_wire({"body": dict(offer.body), "sig": offer.sig})


def test_pricing():
    assert quote(20_000_000, 30) == 600_000_000
    assert job_cost(20_000_000, 1500, 10**9) == 30_000_000
    assert job_cost(20_000_000, 0, 10**9) == 1
    assert job_cost(20_000_000, 10**9, 500) == 500


def test_a_bid_is_chosen_by_price_then_wait_and_equal_providers_share_a_burst():
    from aitbc_p2p.market import Load

    p1, p2, p3, client = (make_key(n) for n in ("lp1", "lp2", "lp3", "lclient"))

    def offer(i):
        return JobOffer.create(
            client, "ait-devnet", workload="echo", params_hash=b"\x01" * 32, max_price=100, max_runtime_s=2,
            verification="none", timestamp_ms=1, nonce=i,
        )  # fmt: skip

    def bid(key, o, price, wait_ms):
        return Bid.for_offer(key, o, peer_id="p", price=price, price_per_s=1, gflops=1, wait_ms=wait_ms)

    o = offer(0)
    # At one price the shorter wait wins; a cheaper bid wins over a shorter wait.
    assert select_bid(o, [bid(p1, o, 50, 900), bid(p2, o, 50, 0)]).signer == p2.address
    assert select_bid(o, [bid(p1, o, 40, 900), bid(p2, o, 50, 0)]).signer == p1.address
    # A wait longer than the job's own runtime cap is not taken.
    assert select_bid(o, [bid(p1, o, 10, 2001)]) is None
    # Equal bids: each job goes to the provider whose hash with its id is lowest, so a
    # burst spreads over all of them instead of landing on one.
    won = {p.address: 0 for p in (p1, p2, p3)}
    for i in range(300):
        oi = offer(i)
        won[select_bid(oi, [bid(p, oi, 50, 0) for p in (p1, p2, p3)]).signer] += 1
    assert all(60 < n < 140 for n in won.values()), won
    # The escrow covers a failover: the dearest of the best MAX_ATTEMPTS acceptable bids.
    bids = [bid(p1, o, 40, 0), bid(p2, o, 70, 0), bid(p3, o, 50, 0), bid(client, o, 101, 0)]
    assert [b.body["price"] for b in rank_bids(o, bids)] == [40, 50, 70]  # 101 is above max_price
    assert escrow_amount(o, bids, 3) == 70 and escrow_amount(o, bids, 2) == 50 and escrow_amount(o, bids, 1) == 40
    assert escrow_amount(o, [], 3) == 0 and escrow_amount(o, [bid(p1, o, 10, 2001)], 3) == 0
    # The record on chain weighs the price: one failure in two paid jobs (score 600) makes
    # 40 weigh 67, above an unblemished 50; a lost dispute (score 1000 * 1/11) far more.
    from aitbc_p2p.chain.state import Reputation

    shaky = Reputation(settled=1, failed=1).score_milli()
    assert shaky == 500 and Reputation().score_milli() == 1000 and Reputation(lost=1).score_milli() == 90
    trust = {p1.address: shaky}
    assert [b.body["price"] for b in rank_bids(o, bids, trust)] == [50, 70, 40]
    assert select_bid(o, bids, {p1.address: 900}).signer == p1.address  # 40 / 0.9 = 45 still wins
    assert escrow_amount(o, bids, 2, trust) == 70
    # A provider's live load: full when no slot is free and its queue is at its bound.
    assert Load(2, 0, 3, 3, 5000).full and not Load(2, 0, 2, 3, 5000).full and not Load(2, 1, 0, 0, 0).full
    with pytest.raises(MarketError, match="free_slots"):
        Load.read({"slots": 1, "free_slots": -1, "queued": 0, "max_queue": 0, "wait_ms": 0})
    with pytest.raises(MarketError):
        Load.read({"slots": 1})
