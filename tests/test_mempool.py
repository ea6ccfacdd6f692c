"""The pool: nonce order, future queue, fee priority, replace-by-fee, limits, eviction."""

import pytest

from aitbc_p2p.chain.transition import ChainRules
from aitbc_p2p.exceptions import TxRejected
from aitbc_p2p.mempool import Mempool
from aitbc_p2p.store import ChainStore, LevelDBKV
from aitbc_p2p.testing import ChainBuilder, make_key, make_tx


@pytest.fixture
def chain(genesis, authority):
    return ChainBuilder(genesis, [authority])


def refused(reason, pool, tx, state, height=0):
    size = len(pool)
    with pytest.raises(TxRejected) as info:
        pool.add(tx, state, height=height)
    assert info.value.reason == reason, info.value
    assert len(pool) == size


def test_names_every_admission_refusal(chain, genesis, alice, bob):
    chain.add_block([make_tx(bob, nonce=0)])
    state = chain.state
    pool = Mempool(ChainRules.of(genesis), max_size=10, max_per_sender=3)
    pool.add(make_tx(alice, nonce=0), state, height=1)
    pool.add(make_tx(alice, nonce=1), state, height=1)
    assert pool.pending_nonce(alice.address, state) == 2
    refused("Duplicate", pool, make_tx(alice, nonce=1), state)
    refused("ReplacementUnderpriced", pool, make_tx(alice, nonce=0, amount=7), state)
    refused("NonceTooLow", pool, make_tx(bob, nonce=0, amount=7), state)
    refused("InsufficientFunds", pool, make_tx(bob, nonce=1, amount=10**9), state)
    refused("Underpriced", pool, make_tx(bob, nonce=1, fee=1), state)
    refused("WrongChain", pool, make_tx(bob, nonce=1, chain_id="elsewhere"), state)
    pool.add(make_tx(alice, nonce=2), state, height=1)
    refused("PoolFull", pool, make_tx(alice, nonce=3), state)  # per-sender limit
    assert [tx.nonce for tx in pool.candidates()] == [0, 1, 2]


def test_future_nonces_wait_then_promote(chain, genesis, alice):
    pool = Mempool(ChainRules.of(genesis), max_future_per_sender=2)
    state = chain.state
    pool.add(make_tx(alice, nonce=2), state, height=0)
    pool.add(make_tx(alice, nonce=3), state, height=0)
    refused("PoolFull", pool, make_tx(alice, nonce=5), state)  # the future queue is capped
    assert list(pool.candidates()) == [] and pool.statistics().future == 2
    pool.add(make_tx(alice, nonce=0), state, height=0)
    assert [tx.nonce for tx in pool.candidates()] == [0]
    pool.add(make_tx(alice, nonce=1), state, height=0)  # fills the gap: 2 and 3 become ready
    assert [tx.nonce for tx in pool.candidates()] == [0, 1, 2, 3]
    assert pool.pending_nonce(alice.address, state) == 4


def test_fee_priority_keeps_each_senders_nonce_order(chain, genesis, alice, bob, authority):
    pool = Mempool(ChainRules.of(genesis))
    state = chain.state
    pool.add(make_tx(alice, nonce=0, fee=1000), state, height=0)
    pool.add(make_tx(alice, nonce=1, fee=9000), state, height=0)
    pool.add(make_tx(bob, nonce=0, fee=5000), state, height=0)
    pool.add(make_tx(authority, nonce=0, fee=2000), state, height=0)
    order = [(tx.sender, tx.nonce) for tx in pool.candidates()]
    assert order == [(bob.address, 0), (authority.address, 0), (alice.address, 0), (alice.address, 1)]


def test_replace_by_fee_drops_what_no_longer_applies(chain, genesis, bob):
    pool = Mempool(ChainRules.of(genesis))
    state = chain.state  # bob holds 10**9
    first = make_tx(bob, nonce=0, amount=10, fee=1000)
    second = make_tx(bob, nonce=1, amount=10**8, fee=1000)
    pool.add(first, state, height=0)
    pool.add(second, state, height=0)
    bigger = make_tx(bob, nonce=0, amount=10**9 - 10**7, fee=1100)  # leaves too little for nonce 1
    gone = pool.add(bigger, state, height=0)
    assert {tx.hash for tx in gone} == {first.hash, second.hash}
    assert [tx.hash for tx in pool.candidates()] == [bigger.hash]
    assert pool.statistics().replaced == 1
    refused("InsufficientFunds", pool, make_tx(bob, nonce=0, amount=10**9, fee=2000), state)
    assert [tx.hash for tx in pool.candidates()] == [bigger.hash]  # a failed replacement changes nothing


def test_full_pool_evicts_the_cheapest_tail(chain, genesis, alice, bob, authority):
    pool = Mempool(ChainRules.of(genesis), max_size=2)
    state = chain.state
    cheap = make_tx(alice, nonce=0, fee=1000)
    pool.add(cheap, state, height=0)
    pool.add(make_tx(bob, nonce=0, fee=3000), state, height=0)
    refused("PoolFull", pool, make_tx(authority, nonce=0, fee=1000), state)
    evicted = pool.add(make_tx(authority, nonce=0, fee=2000), state, height=0)
    assert evicted == [cheap] and cheap.hash not in pool and len(pool) == 2
    assert pool.statistics().evicted == 1


def test_a_full_pool_names_a_transactions_own_fault_first_and_keeps_its_queues(chain, genesis, alice, bob, authority):
    pool = Mempool(ChainRules.of(genesis), max_size=3)
    state = chain.state
    for key, fee in ((alice, 5000), (bob, 3000), (authority, 4000)):
        pool.add(make_tx(key, nonce=0, fee=fee), state, height=0)
    # It would pay enough to evict bob's, but it cannot apply: nothing is evicted.
    refused("InsufficientFunds", pool, make_tx(alice, nonce=1, amount=10**19, fee=9000), state)
    refused("PoolFull", pool, make_tx(alice, nonce=1, fee=1000), state)
    pool.max_size = 4
    # Neither refusal moved alice's projected nonce.
    late = make_tx(alice, nonce=1, fee=1000)
    pool.add(late, state, height=0)
    assert pool.is_ready(late.hash) and pool.pending_nonce(alice.address, state) == 2


def test_prune_after_commit_and_reinject_after_reorg(chain, genesis, alice):
    pool = Mempool(ChainRules.of(genesis))
    txs = [make_tx(alice, nonce=n) for n in range(3)]
    for tx in txs:
        pool.add(tx, chain.state, height=0)
    chain.add_block(txs[:2])
    pool.remove(txs[:2])
    pool.prune(chain.state)
    assert [tx.nonce for tx in pool.candidates()] == [2]
    # The block is reverted: its transactions come back, in nonce order, ahead of nonce 2.
    fresh = Mempool(ChainRules.of(genesis))
    fresh.add(txs[2], ChainBuilder(genesis, [make_key("authority")]).state, height=0)
    back = fresh.reinject(txs[:2], ChainBuilder(genesis, [make_key("authority")]).state, height=0)
    assert back == txs[:2]
    assert [tx.nonce for tx in fresh.candidates()] == [0, 1, 2]


def test_admission_while_a_block_is_written_sees_one_consistent_state(tmp_path, chain, genesis, alice, bob):
    """The node writes a block in a worker thread while gossip admission goes on. The
    pool must judge each arrival against the state its queues match: the next nonce after
    its ready queue is ready, not "future" (which would count against the future queue's cap)."""
    store = ChainStore(LevelDBKV(tmp_path / "db"), genesis)
    pool = Mempool(ChainRules.of(genesis))
    txs = [make_tx(alice, nonce=n, to=bob.address) for n in range(6)]
    for tx in txs[:5]:
        pool.add(tx, store.state, height=0)
    store.write_block(chain.add_block(txs[:3]))  # in the node: a worker thread
    store.state.clear_cache()  # as for an account not read since the last publish
    pool.add(txs[5], store.state, height=store.head.height)
    assert pool.is_ready(txs[5].hash)
    store.publish()  # then, in one step on the event loop:
    pool.remove(txs[:3])
    pool.prune(store.state)
    assert [tx.nonce for tx in pool.candidates()] == [3, 4, 5]
    store.close()


def test_a_senders_whole_window_arriving_last_nonce_first_is_all_admitted(chain, genesis, alice, bob):
    """Gossiped bundles are checked concurrently and admitted as their checks end, so a
    sender's burst can arrive in any order. Every nonce the sender may have pending is
    kept until the gap fills (before, past 16 the rest were dropped, and a provider's
    burst of receipts missed its escrows' deadlines on a loaded machine)."""
    pool = Mempool(ChainRules.of(genesis))
    txs = [make_tx(alice, nonce=n, to=bob.address) for n in range(pool.max_per_sender)]
    for tx in reversed(txs):
        pool.add(tx, chain.state, height=0)
    assert [tx.nonce for tx in pool.candidates()] == list(range(pool.max_per_sender))
    assert pool.statistics().future == 0


def test_future_transactions_are_capped_in_all_and_expire(chain, genesis, alice, bob, authority):
    """Future nonces pay nothing until their gap fills: a bounded share of the pool, for
    a bounded time, and a nonce far ahead is refused outright (NonceTooHigh)."""
    pool = Mempool(ChainRules.of(genesis), max_future=2, future_ttl_blocks=3)
    state = chain.state
    refused("NonceTooHigh", pool, make_tx(alice, nonce=1000), state)
    refused("NonceTooHigh", pool, make_tx(alice, nonce=2**64 - 1), state)
    pool.add(make_tx(alice, nonce=5), state, height=0)
    pool.add(make_tx(bob, nonce=5), state, height=1)
    refused("PoolFull", pool, make_tx(authority, nonce=5), state)  # the pool's future share is full
    pool.add(make_tx(authority, nonce=0), state, height=1)  # ready ones still get in
    assert pool.statistics().future == 2
    for _ in range(4):  # blocks go by; alice's gap never fills
        chain.add_block()
    pool.settle(chain.state, [chain.blocks[-1].block])  # height 4: admitted at 0, past 0 + 3
    assert pool.statistics().future == 1 and pool.statistics().expired == 1
    pool.add(make_tx(authority, nonce=7), chain.state, height=4)  # room again
    chain.add_block()
    pool.settle(chain.state, [chain.blocks[-1].block])  # height 5: bob's (admitted at 1) expires too
    assert pool.statistics().future == 1 and pool.statistics().expired == 2
    assert [tx.sender for tx in pool.pending() if not pool.is_ready(tx.hash)] == [authority.address]
