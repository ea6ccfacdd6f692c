"""The pure state transition, block validation and the supply invariant."""

import pytest

from aitbc_p2p.chain import Genesis, Transaction, TxKind, genesis_from_json, genesis_to_json, validate_block
from aitbc_p2p.chain.blocks import build_block
from aitbc_p2p.chain.models import Block, BlockHeader
from aitbc_p2p.chain.state import JobStatus, Overlay
from aitbc_p2p.chain.transition import ChainRules, apply_tx, check_stateless
from aitbc_p2p.exceptions import ConfigError, TxRejected, ValidationError
from aitbc_p2p.node.node import supply_of
from aitbc_p2p.testing import ChainBuilder, make_key, make_tx
from aitbc_p2p.types import MAX_AMOUNT, Hash32

JOB = b"\x11" * 32


def rejected(reason, fn, *args, **kwargs):
    with pytest.raises(TxRejected) as info:
        fn(*args, **kwargs)
    assert info.value.reason == reason, info.value
    return info.value


@pytest.fixture
def chain(genesis, authority):
    return ChainBuilder(genesis, [authority])


def test_transfer_moves_funds_and_burns_fee(chain, alice, bob):
    chain.add_block([make_tx(alice, to=bob.address, amount=500, fee=1000)])
    assert chain.state.account(bob.address).balance == 10**9 + 500
    assert chain.state.account(alice.address).balance == 10**12 - 1500
    assert chain.state.account(alice.address).nonce == 1
    assert chain.state.burned() == 1000
    assert supply_of(chain.state, chain.genesis.total_supply)["total"] == chain.genesis.total_supply


def test_nonce_rules(chain, alice, bob):
    state = Overlay(chain.state)
    rejected("NonceTooHigh", apply_tx, state, make_tx(alice, nonce=1), height=1)
    apply_tx(state, make_tx(alice, nonce=0), height=1)
    rejected("NonceTooLow", apply_tx, state, make_tx(alice, nonce=0, amount=2), height=1)


def test_overspend_changes_nothing(chain, bob, alice):
    state = Overlay(chain.state)
    rejected("InsufficientFunds", apply_tx, state, make_tx(bob, to=alice.address, amount=10**9), height=1)
    assert state.diff.accounts == {} and state.diff.burned is None


def test_stateless_checks(genesis, alice):
    rules = ChainRules.of(genesis)
    rejected("WrongChain", check_stateless, make_tx(alice, chain_id="other"), rules)
    rejected("Underpriced", check_stateless, make_tx(alice, fee=999), rules)
    good = make_tx(alice)
    forged = Transaction.from_wire({"body": {**good.body(), "nonce": 5}, "sig": good.signature})
    rejected("BadSignature", check_stateless, forged, rules)
    stolen = Transaction.from_wire({"body": {**good.body(), "from": make_key("bob").address}, "sig": good.signature})
    rejected("BadSignature", check_stateless, stolen, rules)


@pytest.mark.parametrize(
    ("amount", "reason"),
    [
        (0, "AmountOutOfRange"),
        (MAX_AMOUNT, "InsufficientFunds"),
        (MAX_AMOUNT + 1, "AmountOutOfRange"),
        (2**64, "AmountOutOfRange"),
    ],
)
def test_amount_bounds(alice, amount, reason, chain):
    # 2**64 - 1 is representable (then too much); 2**64 and above are refused at parse.
    def build_and_apply():
        apply_tx(Overlay(chain.state), make_tx(alice, amount=amount), height=1)

    rejected(reason, build_and_apply)


@pytest.mark.parametrize("nonce", [-1, 2**64])
def test_nonce_bounds(alice, nonce):
    rejected("AmountOutOfRange", make_tx, alice, nonce=nonce)


def test_malformed_wire_forms(alice):
    good = make_tx(alice).to_wire()
    for bad in [
        None,
        {"body": good["body"]},
        {**good, "extra": 1},
        {"body": {**good["body"], "kind": "mint"}, "sig": good["sig"]},
        {"body": {**good["body"], "payload": {"to": "nope", "amount": 1}}, "sig": good["sig"]},
        {"body": {**good["body"], "fee": True}, "sig": good["sig"]},
    ]:
        rejected("Malformed", Transaction.from_wire, bad)
    rejected("Malformed", Transaction.decode, b"\xff\x00")


def _job_open(client, provider, amount=10_000, deadline=50, nonce=0):
    payload = {"job_id": JOB, "provider": provider.address, "amount": amount, "deadline": deadline}
    return make_tx(client, TxKind.JOB_OPEN, nonce=nonce, **payload)


def test_escrow_lifecycle_settles_exactly_once(chain, alice, bob):
    total = chain.genesis.total_supply
    chain.add_block([_job_open(alice, bob)])
    job = chain.state.job(Hash32(JOB))
    assert job.status is JobStatus.OPEN and job.amount == 10_000
    assert supply_of(chain.state, total)["escrowed"] == 10_000
    receipt = make_tx(
        bob, TxKind.JOB_RECEIPT, job_id=JOB, result_hash=b"\x22" * 32, cost=4000, metrics={"compute_ms": 5}
    )
    chain.add_block([receipt])
    assert chain.state.job(Hash32(JOB)).status is JobStatus.RECEIPTED
    bob_before = chain.state.account(bob.address).balance
    alice_before = chain.state.account(alice.address).balance
    chain.add_block([make_tx(alice, TxKind.JOB_SETTLE, nonce=1, job_id=JOB)])
    assert chain.state.account(bob.address).balance == bob_before + 4000
    assert chain.state.account(alice.address).balance == alice_before + 6000 - 1000
    assert chain.state.job(Hash32(JOB)).status is JobStatus.SETTLED
    rejected("JobState", apply_tx, Overlay(chain.state), make_tx(bob, TxKind.JOB_SETTLE, nonce=1, job_id=JOB), height=9)
    assert supply_of(chain.state, total) | {} == {**supply_of(chain.state, total), "total": total}


def test_escrow_rules(chain, alice, bob):
    carol = make_key("carol")
    chain.add_block([make_tx(alice, to=carol.address, amount=10**6)])
    rejected("NotJobParty", apply_tx, Overlay(chain.state), _job_open(alice, alice, nonce=1), height=2)
    rejected("JobState", apply_tx, Overlay(chain.state), _job_open(alice, bob, deadline=2, nonce=1), height=2)
    rejected("InsufficientFunds", apply_tx, Overlay(chain.state), _job_open(bob, alice, amount=10**9), height=1)
    chain.add_block([_job_open(alice, bob, deadline=4, nonce=1)])
    rejected("Duplicate", apply_tx, Overlay(chain.state), _job_open(alice, bob, nonce=2), height=3)
    receipt = dict(job_id=JOB, result_hash=b"\x22" * 32, cost=4000, metrics={})
    rejected("NotJobParty", apply_tx, Overlay(chain.state), make_tx(carol, TxKind.JOB_RECEIPT, **receipt), height=2)
    over = {**receipt, "cost": 10_001}
    rejected("AmountOutOfRange", apply_tx, Overlay(chain.state), make_tx(bob, TxKind.JOB_RECEIPT, **over), height=2)
    unknown = {**receipt, "job_id": b"\x33" * 32}
    rejected("UnknownJob", apply_tx, Overlay(chain.state), make_tx(bob, TxKind.JOB_RECEIPT, **unknown), height=2)
    rejected(
        "JobState", apply_tx, Overlay(chain.state), make_tx(alice, TxKind.JOB_SETTLE, nonce=2, job_id=JOB), height=3
    )
    rejected(
        "JobState", apply_tx, Overlay(chain.state), make_tx(alice, TxKind.JOB_REFUND, nonce=2, job_id=JOB), height=4
    )
    rejected("JobState", apply_tx, Overlay(chain.state), make_tx(bob, TxKind.JOB_RECEIPT, **receipt), height=5)


def test_timeout_refund(chain, alice, bob):
    chain.add_block([_job_open(alice, bob, deadline=2)])
    after_open = chain.state.account(alice.address).balance
    chain.add_block()
    chain.add_block([make_tx(alice, TxKind.JOB_REFUND, nonce=1, job_id=JOB)])
    assert chain.state.account(alice.address).balance == after_open + 10_000 - 1000
    assert chain.state.job(Hash32(JOB)).status is JobStatus.REFUNDED


def test_block_validation(chain, alice, bob, genesis):
    rules = ChainRules.of(genesis)
    parent = chain.blocks[-1]
    applied = chain.add_block([make_tx(alice, to=bob.address)])
    block = applied.block
    assert validate_block(block, parent.block.header, parent.state, rules).block == block
    assert Block.decode(block.encode()) == block

    def tampered(**changes):
        fields = {k: getattr(block.header, k) for k in BlockHeader.__slots__}
        return Block(BlockHeader(**{**fields, **changes}), block.txs)

    for bad in [
        tampered(state_root=b"\x00" * 32),  # signature no longer matches
        Block(block.header, ()),  # tx_root mismatch
        tampered(height=5),
        tampered(chain_id="other"),
    ]:
        with pytest.raises(ValidationError):
            validate_block(bad, parent.block.header, parent.state, rules)
    # A correctly signed block whose state root lies.
    key = make_key("authority")
    liar = Block(
        BlockHeader(
            **{**{k: getattr(block.header, k) for k in BlockHeader.__slots__}, "state_root": b"\x01" * 32}
        ).signed(key),
        block.txs,
    )
    with pytest.raises(ValidationError, match="state_root"):
        validate_block(liar, parent.block.header, parent.state, rules)


def test_build_block_drops_what_no_longer_applies(chain, alice, bob, genesis, authority):
    parent = chain.blocks[-1]
    txs = [make_tx(alice, nonce=0), make_tx(alice, nonce=0, amount=2), make_tx(bob, amount=10**10)]
    applied, dropped = build_block(
        authority, parent.block.header, parent.state, txs, ChainRules.of(genesis), timestamp_ms=10, max_txs=10
    )
    assert [tx.hash for tx in applied.block.txs] == [txs[0].hash]
    assert sorted(e.reason for _, e in dropped) == ["InsufficientFunds", "NonceTooLow"]


def test_genesis_json_roundtrip_and_errors(genesis):
    again = genesis_from_json(genesis_to_json(genesis))
    assert isinstance(again, Genesis) and again.hash == genesis.hash
    for text in ["{", '{"chain_id": "x"}', genesis_to_json(genesis).replace('"balance": 1', '"balance": -1')]:
        with pytest.raises(ConfigError):
            genesis_from_json(text)
