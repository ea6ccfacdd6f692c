import pytest

from aitbc_p2p.chain.models import BlockHeader
from aitbc_p2p.chain.transition import ChainRules
from aitbc_p2p.consensus import PoaEngine, SoloEngine, engine_for
from aitbc_p2p.exceptions import ConsensusError, MarketError, TxRejected
from aitbc_p2p.market import Bid, JobOffer, job_cost, params_hash, quote, select_bid
from aitbc_p2p.mempool import Mempool
from aitbc_p2p.testing import ChainBuilder, make_genesis, make_key, make_tx


def header(height, proposer, ts):
    return BlockHeader("c", height, b"\x00" * 32, ts, proposer, b"\x00" * 32, b"\x00" * 32)


def test_poa_round_robin_and_timing():
    keys = [make_key(f"a{i}") for i in range(3)]
    engine = PoaEngine([k.address for k in keys], block_time_ms=1000)
    assert [engine.proposer(h) for h in range(4)] == [
        keys[0].address,
        keys[1].address,
        keys[2].address,
        keys[0].address,
    ]
    parent = header(4, keys[1].address, 10_000)
    engine.validate_header(header(5, keys[2].address, 11_000), parent)
    with pytest.raises(ConsensusError, match="proposed by"):
        engine.validate_header(header(5, keys[0].address, 11_000), parent)
    with pytest.raises(ConsensusError, match="slot"):
        engine.validate_header(header(5, keys[2].address, 10_999), parent)


def test_engine_selection_by_genesis():
    a, b = make_key("a"), make_key("b")
    assert isinstance(engine_for(make_genesis([a])), SoloEngine)
    assert engine_for(make_genesis([a, b])).name == "poa"
    with pytest.raises(ConsensusError, match="unknown"):
        engine_for(make_genesis([a], engine="nakamoto"))
    with pytest.raises(ConsensusError, match="exactly one"):
        engine_for(make_genesis([a, b], engine="solo"))


@pytest.fixture
def pool(genesis):
    return Mempool(ChainRules.of(genesis), max_size=4, max_per_sender=3)


def test_mempool_orders_nonces_and_names_rejections(pool, genesis, authority, alice, bob):
    chain = ChainBuilder(genesis, [authority])
    chain.add_block([make_tx(bob, nonce=0)])
    state = chain.state
    pool.add(make_tx(alice, nonce=0), state, height=0)
    pool.add(make_tx(alice, nonce=1), state, height=0)
    assert pool.pending_nonce(alice.address, state) == 2
    for tx, reason in [
        (make_tx(alice, nonce=1), "Duplicate"),
        (make_tx(alice, nonce=0, amount=7), "Duplicate"),  # replace-by-fee is not offered yet
        (make_tx(bob, nonce=0, amount=7), "NonceTooLow"),
        (make_tx(alice, nonce=5), "NonceTooHigh"),
        (make_tx(bob, nonce=1, amount=10**9), "InsufficientFunds"),
        (make_tx(bob, nonce=1, fee=1), "Underpriced"),
        (make_tx(bob, nonce=1, chain_id="elsewhere"), "WrongChain"),
    ]:
        with pytest.raises(TxRejected) as info:
            pool.add(tx, state, height=0)
        assert info.value.reason == reason
    pool.add(make_tx(alice, nonce=2), state, height=0)
    with pytest.raises(TxRejected) as info:
        pool.add(make_tx(alice, nonce=3), state, height=0)
    assert info.value.reason == "PoolFull"
    assert [tx.nonce for tx in pool.candidates()] == [0, 1, 2]
    assert pool.statistics().size == 3


def test_offer_bid_and_choice():
    client, p1, p2 = make_key("client"), make_key("p1"), make_key("p2")
    offer = JobOffer.create(
        client, "ait-devnet", workload="echo", params_hash=params_hash("echo", {"message": "x"}),
        max_price=100, max_runtime_s=10, verification="none", timestamp_ms=1,
    )  # fmt: skip
    assert JobOffer.decode(offer.encode()) == offer

    def bid(key, price, gflops=1):
        return Bid.create(
            key, "ait-devnet", job_id=offer.job_id, peer_id="p", price=price, price_per_s=1, gflops=gflops
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
