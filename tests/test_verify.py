"""The stateless stage: decode, chain id and signatures of encoded transactions."""

from aitbc_p2p.chain import Transaction
from aitbc_p2p.chain.transition import ChainRules
from aitbc_p2p.node.verify import MIN_PARALLEL, Verified, admit_pipelined, decode_and_verify
from aitbc_p2p.testing import make_genesis, make_key, make_tx

RULES = ChainRules.of(make_genesis([make_key("verify-authority")], {}))


def _forged(tx: Transaction, thief_address: str) -> bytes:
    """``tx`` claiming another sender: the signature no longer recovers to it."""
    body = dict(tx.body(), **{"from": thief_address})
    return Transaction.from_wire({"body": body, "sig": tx.signature}).encode()


async def test_every_refusal_is_reported_in_input_order(alice, bob):
    good = [make_tx(alice, nonce=n, to=bob.address) for n in range(3)]
    other_chain = Transaction.create(
        alice, chain_id="ait-other", kind="transfer", nonce=0, fee=10**6, payload={"to": bob.address, "amount": 1}
    )
    cheap = make_tx(alice, nonce=5, to=bob.address, fee=RULES.min_fee - 1)
    batch = [good[0].encode(), b"\xff\x00", good[1].encode(), other_chain.encode(), _forged(good[2], bob.address)]
    batch += [good[2].encode(), cheap.encode()]
    out = await decode_and_verify(batch, RULES)
    assert [tx.hash for tx in out.txs] == [good[0].hash, good[1].hash, good[2].hash]
    assert [(i, e.reason) for i, e in out.rejected] == [
        (1, "Malformed"),
        (3, "WrongChain"),
        (4, "BadSignature"),
        (6, "Underpriced"),
    ]


async def test_large_batches_split_across_threads_keep_order_and_catch_forgeries(alice, bob):
    senders = [make_key(f"verify-{i}") for i in range(4)]
    txs = [make_tx(k, nonce=n, to=bob.address) for n in range(MIN_PARALLEL) for k in senders]
    encoded = [tx.encode() for tx in txs]
    encoded[100] = _forged(txs[100], alice.address)
    out = await decode_and_verify(encoded, RULES, threads=3)
    assert [tx.hash for tx in out.txs] == [tx.hash for i, tx in enumerate(txs) if i != 100]
    assert [(i, e.reason) for i, e in out.rejected] == [(100, "BadSignature")]


async def test_pipelined_admission_sees_every_batch_once_in_order(alice, bob):
    txs = [make_tx(alice, nonce=n, to=bob.address) for n in range(10)]
    batches = [[tx.encode() for tx in txs[i : i + 3]] for i in range(0, 10, 3)]
    seen: list[Verified] = []

    async def admit(verified: Verified) -> None:
        seen.append(verified)

    await admit_pipelined(batches, RULES, admit)
    assert [tx.hash for v in seen for tx in v.txs] == [tx.hash for tx in txs]
    assert len(seen) == 4
