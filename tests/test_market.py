"""Signed offers and bids, bid choice and pricing."""

import pytest

from aitbc_p2p.exceptions import MarketError
from aitbc_p2p.market import Bid, JobOffer, job_cost, params_hash, quote, select_bid
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
            key, "ait-devnet", job_id=offer.job_id.hex(), peer_id="p", price=price, price_per_s=1, gflops=gflops
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
