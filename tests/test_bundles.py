"""Transaction bundles on the tx topic: limits, stateless verdicts and re-announcement,
with real nodes on 127.0.0.1."""

import pytest
import trio

from aitbc_p2p.chain import Transaction
from aitbc_p2p.exceptions import CodecError
from aitbc_p2p.network import open_libp2p_network
from aitbc_p2p.node.bundles import MAX_BUNDLE_BYTES, MAX_BUNDLE_TXS, decode_bundle, encode_bundle, split_bundles
from aitbc_p2p.testing import gate, make_key, make_tx, open_test_network
from aitbc_p2p.types import aitbc

CLIENT = make_key("bundle-client")
ALLOC = {CLIENT.address: aitbc(10_000)}
SLOW = 600_000


def test_bundles_split_on_count_and_size_and_refuse_malformed_input():
    small = [b"x" * 100] * (MAX_BUNDLE_TXS + 1)
    parts = [decode_bundle(b) for b in split_bundles(small)]
    assert [len(p) for p in parts] == [MAX_BUNDLE_TXS, 1]
    big = [b"y" * 300_000] * 7
    parts = [decode_bundle(b) for b in split_bundles(big)]
    assert [tx for p in parts for tx in p] == big and all(len(encode_bundle(p)) <= MAX_BUNDLE_BYTES for p in parts)
    for bad in (encode_bundle([]), b"\x81\x01", encode_bundle([b"a"] * (MAX_BUNDLE_TXS + 1)), b"\xff"):
        with pytest.raises(CodecError):
            decode_bundle(bad)


async def test_pending_transactions_are_reannounced_to_a_peer_that_missed_them():
    async with open_test_network(2, alloc=ALLOC, block_time_ms=SLOW, reannounce_s=0.5) as (a, b):
        with trio.move_on_after(3):  # the first block may fall due at once; the next only after SLOW
            await a.wait_height(1)
            await b.wait_height(1)
        tx = make_tx(CLIENT, to=make_key("x").address, amount=1, chain_id=a.genesis.chain_id)
        a.mempool.add(tx, a.store.state, height=a.store.head.height)  # as if its gossip was lost
        with trio.fail_after(10):
            while tx.hash not in b.mempool:  # only gossip puts it there (a block would commit it)
                await trio.sleep(0.05)


async def test_a_bundle_with_one_forged_transaction_is_rejected_whole_and_penalized():
    async with open_test_network(1, alloc=ALLOC, block_time_ms=SLOW) as (node,):
        chain = node.genesis.chain_id
        good = make_tx(CLIENT, to=make_key("x").address, amount=1, chain_id=chain)
        other = make_tx(CLIENT, nonce=1, to=make_key("x").address, amount=1, chain_id=chain)
        forged = Transaction.from_wire(
            {"body": dict(other.body(), **{"from": make_key("victim").address}), "sig": other.signature}
        )
        async with open_libp2p_network(make_key("bundle-attacker"), ["/ip4/127.0.0.1/tcp/0"]) as attacker:
            tx_topic = node.topics.tx
            await attacker.subscribe(tx_topic, gate(lambda data: True))
            await attacker.connect(node.network.listen_addrs()[0])
            with trio.fail_after(15):
                while node.network.verdicts["reject"] == 0:
                    await attacker.publish(tx_topic, encode_bundle([good.encode(), forged.encode()]))
                    await trio.sleep(0.2)
                assert good.hash not in node.mempool and len(node.mempool) == 0
                assert node.network.scores.score(attacker.peer_id) < 0
                # The same transaction alone, well signed, is admitted from the same peer.
                while good.hash not in node.mempool:
                    await attacker.publish(tx_topic, encode_bundle([good.encode()]))
                    await trio.sleep(0.2)
