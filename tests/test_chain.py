"""The pure state transition, every rejection reason, block validation and commitments."""

from collections.abc import Callable

import pytest

from aitbc_p2p.chain import Genesis, Transaction, TxKind, genesis_from_json, genesis_to_json, validate_block
from aitbc_p2p.chain.blocks import build_block, encode_receipts, receipts_root
from aitbc_p2p.chain.commitment import StateTree, bucket_of, leaf_data, prove
from aitbc_p2p.chain.merkle import merkle_proof, verify_proof
from aitbc_p2p.chain.models import Block, BlockHeader
from aitbc_p2p.chain.state import Account, JobStatus, Overlay, account_key, read_reputation, supply_of
from aitbc_p2p.chain.transition import ChainRules, Receipt, apply_tx, check_stateless
from aitbc_p2p.chain.votes import Vote, VoteStep
from aitbc_p2p.codec import encode
from aitbc_p2p.exceptions import REJECTION_REASONS, ConfigError, TxRejected, ValidationError
from aitbc_p2p.mempool import Mempool
from aitbc_p2p.testing import ChainBuilder, make_genesis, make_key, make_tx
from aitbc_p2p.types import MAX_AMOUNT, Hash32

JOB = b"\x11" * 32
RESULT = b"\x22" * 32


def rejected(reason, fn, *args, **kwargs):
    with pytest.raises(TxRejected) as info:
        fn(*args, **kwargs)
    assert info.value.reason == reason, info.value
    return info.value


@pytest.fixture
def chain(genesis, authority):
    return ChainBuilder(genesis, [authority])


def refuse(chain, reason, tx, *, height=None):
    """``tx`` is refused at the next height with ``reason`` and the overlay stays empty."""
    state = Overlay(chain.state)
    h = height if height is not None else chain.blocks[-1].block.height + 1
    rejected(reason, apply_tx, state, tx, height=h, rules=chain.rules)
    assert state.changes == {}


def _open(client, provider, amount=10_000, deadline=50, nonce=0, job_id=JOB, agent=None):
    agent = (agent or client).address
    payload = {"job_id": job_id, "provider": provider.address, "amount": amount, "deadline": deadline, "agent": agent}
    return make_tx(client, TxKind.JOB_OPEN, nonce=nonce, **payload)


def _receipt(provider, cost=4000, nonce=0, job_id=JOB):
    return make_tx(
        provider, TxKind.JOB_RECEIPT, nonce=nonce, job_id=job_id, result_hash=RESULT, cost=cost, metrics={"ms": 5}
    )


def _vote(key, block, height=7, rnd=0, step=VoteStep.PRECOMMIT, chain_id="ait-devnet"):
    return Vote(chain_id, height, rnd, step, block, key.address).signed(key)


def total_is_conserved(chain):
    supply = supply_of(chain.state, chain.genesis.total_supply)
    assert supply.total == chain.genesis.total_supply, supply
    return supply


# ------------------------------------------------------------------ one test per reason
def _malformed(chain, alice, bob, authority):
    good = make_tx(alice).to_wire()
    for bad in [
        None,
        {"body": good["body"]},
        {**good, "extra": 1},
        {"body": {**good["body"], "kind": "mint"}, "sig": good["sig"]},
        {"body": {**good["body"], "payload": {"to": "nope", "amount": 1}}, "sig": good["sig"]},
        {"body": {**good["body"], "fee": True}, "sig": good["sig"]},
        {"body": {**good["body"], "kind": "job_resolve", "payload": {"job_id": JOB, "verdict": "x"}}, "sig": b""},
    ]:
        rejected("Malformed", Transaction.from_wire, bad)
    rejected("Malformed", Transaction.decode, b"\xff\x00")


def _bad_signature(chain, alice, bob, authority):
    good = make_tx(alice)
    forged = Transaction.from_wire({"body": {**good.body(), "nonce": 5}, "sig": good.signature})
    rejected("BadSignature", check_stateless, forged, chain.rules)
    stolen = Transaction.from_wire({"body": {**good.body(), "from": bob.address}, "sig": good.signature})
    rejected("BadSignature", check_stateless, stolen, chain.rules)


def _wrong_chain(chain, alice, bob, authority):
    rejected("WrongChain", check_stateless, make_tx(alice, chain_id="other"), chain.rules)


def _underpriced(chain, alice, bob, authority):
    rejected("Underpriced", check_stateless, make_tx(alice, fee=999), chain.rules)


def _amount_out_of_range(chain, alice, bob, authority):
    for amount in (0, MAX_AMOUNT + 1, 2**64 + 1):
        rejected("AmountOutOfRange", make_tx, alice, amount=amount)
    for nonce in (-1, 2**64):
        rejected("AmountOutOfRange", make_tx, alice, nonce=nonce)
    chain.add_block([_open(alice, bob)])
    refuse(chain, "AmountOutOfRange", _receipt(bob, cost=10_001))


def _nonce_too_low(chain, alice, bob, authority):
    chain.add_block([make_tx(alice, nonce=0)])
    refuse(chain, "NonceTooLow", make_tx(alice, nonce=0, amount=2))


def _nonce_too_high(chain, alice, bob, authority):
    refuse(chain, "NonceTooHigh", make_tx(alice, nonce=1))
    # The pool waits for a gap to fill only up to max_per_sender nonces ahead.
    pool = Mempool(chain.rules, max_per_sender=64)
    pool.add(make_tx(alice, nonce=63), chain.state, height=0)
    for nonce in (64, 1000, 2**64 - 1):
        rejected("NonceTooHigh", pool.add, make_tx(alice, nonce=nonce), chain.state, height=0)


def _insufficient_funds(chain, alice, bob, authority):
    refuse(chain, "InsufficientFunds", make_tx(bob, to=alice.address, amount=10**9))
    refuse(chain, "InsufficientFunds", make_tx(bob, TxKind.STAKE, amount=10**9))


def _insufficient_stake(chain, alice, bob, authority):
    refuse(chain, "InsufficientStake", make_tx(alice, TxKind.UNSTAKE, amount=1))
    refuse(chain, "InsufficientStake", make_tx(alice, TxKind.PROVIDER_REGISTER))
    refuse(chain, "InsufficientStake", make_tx(bob, TxKind.UNSTAKE, amount=1))  # would fall below the minimum


def _nothing_to_withdraw(chain, alice, bob, authority):
    refuse(chain, "NothingToWithdraw", make_tx(alice, TxKind.WITHDRAW))
    chain.add_block([make_tx(alice, TxKind.STAKE, amount=500), make_tx(alice, TxKind.UNSTAKE, nonce=1, amount=500)])
    refuse(chain, "NothingToWithdraw", make_tx(alice, TxKind.WITHDRAW, nonce=2))  # not matured


def _not_provider(chain, alice, bob, authority):
    refuse(chain, "NotProvider", _open(bob, alice))
    refuse(chain, "NotProvider", make_tx(alice, TxKind.PROVIDER_UNREGISTER))


def _unknown_job(chain, alice, bob, authority):
    refuse(chain, "UnknownJob", _receipt(bob))
    refuse(chain, "UnknownJob", make_tx(alice, TxKind.JOB_SETTLE, job_id=JOB, ack=b""))


def _not_job_party(chain, alice, bob, authority):
    refuse(chain, "NotJobParty", _open(bob, bob))
    chain.add_block([_open(alice, bob)])
    refuse(chain, "NotJobParty", _receipt(authority))


def _not_arbiter(chain, alice, bob, authority):
    chain.add_block([_open(alice, bob)])
    chain.add_block([_receipt(bob)])
    chain.add_block([make_tx(alice, TxKind.JOB_DISPUTE, nonce=1, job_id=JOB, evidence=b"")])
    refuse(chain, "NotArbiter", make_tx(alice, TxKind.JOB_RESOLVE, nonce=2, job_id=JOB, verdict="client"))


def _job_state(chain, alice, bob, authority):
    refuse(chain, "JobState", _open(alice, bob, deadline=1))
    chain.add_block([_open(alice, bob, deadline=4)])
    refuse(chain, "JobState", make_tx(alice, TxKind.JOB_SETTLE, nonce=1, job_id=JOB, ack=b""))  # not receipted
    refuse(chain, "JobState", make_tx(alice, TxKind.JOB_REFUND, nonce=1, job_id=JOB))  # before the deadline
    refuse(chain, "JobState", _receipt(bob), height=5)  # after the deadline
    refuse(chain, "JobState", make_tx(bob, TxKind.PROVIDER_UNREGISTER))  # escrow still names bob
    chain.add_block([_receipt(bob)])
    refuse(chain, "JobState", make_tx(bob, TxKind.JOB_SETTLE, nonce=1, job_id=JOB, ack=b""))  # dispute window open


def _bad_evidence(chain, alice, bob, authority):
    a = _vote(authority, b"\x01" * 32)
    same = _vote(authority, b"\x01" * 32)
    other_round = _vote(authority, b"\x02" * 32, rnd=1)
    forged = Vote(a.chain_id, a.height, a.round, a.step, b"\x02" * 32, a.validator, a.signature)
    for pair in [(a, same), (a, other_round), (a, forged)]:
        refuse(chain, "BadEvidence", make_tx(alice, TxKind.SLASH, evidence=[v.to_wire() for v in pair]))
    no_stake = make_key("nobody")
    pair = (_vote(no_stake, b"\x01" * 32), _vote(no_stake, b"\x02" * 32))
    refuse(chain, "BadEvidence", make_tx(alice, TxKind.SLASH, evidence=[v.to_wire() for v in pair]))


def _duplicate(chain, alice, bob, authority):
    chain.add_block([_open(alice, bob)])
    refuse(chain, "Duplicate", _open(alice, bob, nonce=1))
    refuse(chain, "Duplicate", make_tx(bob, TxKind.PROVIDER_REGISTER))
    pool = Mempool(chain.rules)
    tx = make_tx(alice, nonce=1)
    pool.add(tx, chain.state, height=1)
    rejected("Duplicate", pool.add, tx, chain.state, height=1)


def _pool_full(chain, alice, bob, authority):
    pool = Mempool(chain.rules, max_size=2, max_per_sender=4, max_future_per_sender=1)
    pool.add(make_tx(alice, nonce=0), chain.state, height=0)
    pool.add(make_tx(alice, nonce=2), chain.state, height=0)
    rejected("PoolFull", pool.add, make_tx(alice, nonce=3), chain.state, height=0)  # future queue
    rejected("PoolFull", pool.add, make_tx(bob, nonce=0), chain.state, height=0)  # pays no more than the tail
    assert len(pool) == 2


def _replacement_underpriced(chain, alice, bob, authority):
    pool = Mempool(chain.rules)
    pool.add(make_tx(alice, nonce=0, fee=1000), chain.state, height=0)
    rejected("ReplacementUnderpriced", pool.add, make_tx(alice, nonce=0, fee=1099, amount=2), chain.state, height=0)


SCENARIOS: dict[str, Callable] = {
    "Malformed": _malformed,
    "BadSignature": _bad_signature,
    "WrongChain": _wrong_chain,
    "Underpriced": _underpriced,
    "AmountOutOfRange": _amount_out_of_range,
    "NonceTooLow": _nonce_too_low,
    "NonceTooHigh": _nonce_too_high,
    "InsufficientFunds": _insufficient_funds,
    "InsufficientStake": _insufficient_stake,
    "NothingToWithdraw": _nothing_to_withdraw,
    "NotProvider": _not_provider,
    "UnknownJob": _unknown_job,
    "NotJobParty": _not_job_party,
    "NotArbiter": _not_arbiter,
    "JobState": _job_state,
    "BadEvidence": _bad_evidence,
    "Duplicate": _duplicate,
    "PoolFull": _pool_full,
    "ReplacementUnderpriced": _replacement_underpriced,
}


def test_every_rejection_reason_has_a_test():
    assert set(SCENARIOS) == set(REJECTION_REASONS)


@pytest.mark.parametrize("reason", REJECTION_REASONS)
def test_rejection_reason(reason, chain, alice, bob, authority):
    SCENARIOS[reason](chain, alice, bob, authority)
    total_is_conserved(chain)


# ------------------------------------------------------------------ bounds at 2^64
@pytest.mark.parametrize(
    ("amount", "outcome"),
    [(2**63 - 1, "InsufficientFunds"), (2**63, "InsufficientFunds"), (2**64 - 1, "InsufficientFunds")],
)
def test_amounts_up_to_the_bound_parse_and_are_checked_against_funds(chain, alice, amount, outcome):
    refuse(chain, outcome, make_tx(alice, amount=amount))


def test_balance_credit_at_the_bound(authority):
    rich, poor = make_key("rich"), make_key("poor")

    # 2^64-1 is reachable; one unit more (2^64) is refused, and nothing changes.
    for start, reason in [(MAX_AMOUNT - 1001, None), (MAX_AMOUNT - 1000, "AmountOutOfRange")]:
        genesis = make_genesis([authority], {rich.address: 10**6, poor.address: start})
        chain = ChainBuilder(genesis, [authority])
        tx = make_tx(rich, to=poor.address, amount=1001)
        if reason is None:
            chain.add_block([tx])
            assert chain.state.account(poor.address).balance == MAX_AMOUNT
        else:
            refuse(chain, reason, tx)


# ------------------------------------------------------------------ lifecycles
def test_transfer_moves_funds_and_burns_fee(chain, alice, bob):
    applied = chain.add_block([make_tx(alice, to=bob.address, amount=500, fee=1000)])
    assert chain.state.account(bob.address).balance == 10**9 + 500
    assert chain.state.account(alice.address).balance == 10**12 - 1500
    assert chain.state.account(alice.address).nonce == 1
    assert chain.state.burned() == 1000
    assert applied.receipts[0].events == (("transfer", bob.address, 500),)
    total_is_conserved(chain)


def test_a_transfer_to_oneself_costs_the_fee_only(chain, alice):
    before = chain.state.account(alice.address)
    applied = chain.add_block([make_tx(alice, to=alice.address, amount=500, fee=1000)])
    after = chain.state.account(alice.address)
    assert (after.balance, after.nonce) == (before.balance - 1000, before.nonce + 1)
    assert applied.receipts[0].events == (("transfer", alice.address, 500),)
    total_is_conserved(chain)


def test_escrow_settles_exactly_once(chain, alice, bob):
    chain.add_block([_open(alice, bob)])
    assert chain.state.job(Hash32(JOB)).status is JobStatus.OPEN
    assert total_is_conserved(chain).escrowed == 10_000
    assert chain.state.account(bob.address).active_jobs == 1
    chain.add_block([_receipt(bob)])
    bob_before = chain.state.account(bob.address).balance
    alice_before = chain.state.account(alice.address).balance
    chain.add_block([make_tx(alice, TxKind.JOB_SETTLE, nonce=1, job_id=JOB, ack=b"")])  # the client accepts at once
    assert chain.state.account(bob.address).balance == bob_before + 4000
    assert chain.state.account(alice.address).balance == alice_before + 6000 - 1000
    assert chain.state.job(Hash32(JOB)).status is JobStatus.SETTLED
    assert chain.state.account(bob.address).active_jobs == 0
    refuse(chain, "JobState", make_tx(bob, TxKind.JOB_SETTLE, nonce=1, job_id=JOB, ack=b""), height=9)
    refuse(chain, "JobState", make_tx(alice, TxKind.JOB_REFUND, nonce=2, job_id=JOB), height=90)
    assert total_is_conserved(chain).escrowed == 0


def test_provider_settles_after_the_dispute_window(chain, alice, bob):
    chain.add_block([_open(alice, bob)])
    chain.add_block([_receipt(bob)])  # height 2, window until 4
    chain.add_block()
    chain.add_block()
    chain.add_block([make_tx(bob, TxKind.JOB_SETTLE, nonce=1, job_id=JOB, ack=b"")])
    assert chain.state.job(Hash32(JOB)).status is JobStatus.SETTLED


@pytest.mark.parametrize("verdict", ["provider", "client"])
def test_dispute_resolution(chain, alice, bob, authority, verdict):
    """A dispute locks the challenger's bond. For the provider: paid, and the bond is its
    own. For the client: refunded; the provider loses 10% of its stake (at least the job's
    amount) and its registration; half the slash and the bond go to the challenger."""
    chain.add_block([_open(alice, bob)])
    chain.add_block([_receipt(bob)])
    alice_before = chain.state.account(alice.address).balance
    chain.add_block([make_tx(alice, TxKind.JOB_DISPUTE, nonce=1, job_id=JOB, evidence=b"\xa0")])
    job = chain.state.job(Hash32(JOB))
    assert (job.status, job.challenger, job.bond) == (JobStatus.DISPUTED, alice.address, 5000)
    assert chain.state.account(alice.address).balance == alice_before - 1000 - 5000  # fee and bond
    assert total_is_conserved(chain).escrowed == 10_000 + 5000
    refuse(chain, "JobState", make_tx(bob, TxKind.JOB_SETTLE, nonce=1, job_id=JOB, ack=b""), height=20)
    refuse(chain, "NotArbiter", make_tx(alice, TxKind.JOB_RESOLVE, nonce=2, job_id=JOB, verdict="client"))
    stake = chain.state.account(bob.address).stake
    alice_before, bob_before = chain.state.account(alice.address).balance, chain.state.account(bob.address).balance
    burned_before = chain.state.burned()
    chain.add_block([make_tx(authority, TxKind.JOB_RESOLVE, job_id=JOB, verdict=verdict)])
    job = chain.state.job(Hash32(JOB))
    bob_after = chain.state.account(bob.address)
    if verdict == "provider":
        assert job.status is JobStatus.SETTLED
        assert bob_after.balance == bob_before + 4000 + 5000  # its cost and the false challenger's bond
        assert (bob_after.stake, bob_after.provider) == (stake, True)
        assert chain.state.account(alice.address).balance == alice_before + 6000
    else:
        slashed = stake // 10
        assert job.status is JobStatus.REFUNDED
        assert chain.state.account(alice.address).balance == alice_before + 10_000 + 5000 + slashed // 2
        assert (bob_after.stake, bob_after.provider) == (stake - slashed, False)
        assert chain.state.burned() == burned_before + 1000 + slashed - slashed // 2
        refuse(chain, "NotProvider", _open(alice, bob, nonce=2, job_id=b"\x14" * 32))  # no longer for hire
    assert total_is_conserved(chain).escrowed == 0
    refuse(chain, "JobState", make_tx(authority, TxKind.JOB_RESOLVE, nonce=1, job_id=JOB, verdict=verdict))


def test_a_quorum_of_arbiters_resolves_a_dispute_once_that_many_agree(alice, bob, authority):
    """``arbiter_quorum`` 2 of 3: a ruling short of it is recorded and the dispute stays
    open; an arbiter rules once; the second agreeing ruling resolves it (a split waits for
    the third). The genesis of quorum 1 keeps its hash (the rule is left out of it)."""
    judges = [make_key(f"judge{i}") for i in range(3)]
    alloc = {alice.address: 10**12, bob.address: 10**9, **{j.address: 10**9 for j in judges}}
    options = {"providers": [bob.address], "dispute_blocks": 2, "dispute_bond": 5000}
    genesis = make_genesis([authority], alloc, arbiters=[j.address for j in judges], arbiter_quorum=2, **options)
    assert genesis.arbiter_quorum == 2 and genesis_from_json(genesis_to_json(genesis)) == genesis
    single = make_genesis([authority], alloc, arbiters=[j.address for j in judges], **options)
    assert "arbiter_quorum" not in single.to_wire() and "arbiter_quorum" in genesis.to_wire()
    for verdicts, ruled in ((["client", "client"], "client"), (["client", "provider", "provider"], "provider")):
        chain = ChainBuilder(genesis, [authority])
        chain.add_block([_open(alice, bob)])
        chain.add_block([_receipt(bob)])
        chain.add_block([make_tx(alice, TxKind.JOB_DISPUTE, nonce=1, job_id=JOB, evidence=b"")])
        for i, verdict in enumerate(verdicts):
            job = chain.state.job(Hash32(JOB))
            assert job.status is JobStatus.DISPUTED and len(job.votes) == i
            if i:  # one ruling each
                refuse(chain, "Duplicate", make_tx(judges[0], TxKind.JOB_RESOLVE, nonce=1, job_id=JOB, verdict=verdict))
            chain.add_block([make_tx(judges[i], TxKind.JOB_RESOLVE, job_id=JOB, verdict=verdict)])
        job = chain.state.job(Hash32(JOB))
        assert job.status is (JobStatus.REFUNDED if ruled == "client" else JobStatus.SETTLED)
        assert [v for _, v in job.votes] == verdicts
        assert chain.state.account(bob.address).provider is (ruled != "client")
        assert total_is_conserved(chain).escrowed == 0
    with pytest.raises(ConfigError, match="arbiter_quorum must be 1 to the number of arbiters"):
        genesis_from_json(genesis_to_json(genesis).replace('"arbiter_quorum": 2', '"arbiter_quorum": 4'))


@pytest.mark.parametrize("verdict", ["provider", "client"])
def test_a_settled_job_may_be_challenged_within_challenge_blocks(alice, bob, authority, verdict):
    """``challenge_blocks`` 6: a job settled at once (level none) may still be disputed by
    anyone, once, within 6 blocks of its receipt, at the risk of the bond. For the
    provider: it stays settled and takes the bond. For the client: the provider loses 10%
    of its stake (at least what it was paid) and its registration; the client gets back
    what it paid, from the slash; the challenger its bond and half the rest; the rest is
    burned. A genesis without the rule keeps its hash and refuses such a challenge."""
    auditor = make_key("auditor")
    alloc = {alice.address: 10**12, bob.address: 10**9, authority.address: 10**9, auditor.address: 10**6}
    options = {"providers": [bob.address], "arbiters": [authority.address], "dispute_blocks": 2, "dispute_bond": 5000}
    genesis = make_genesis([authority], alloc, challenge_blocks=6, **options)
    assert genesis.challenge_blocks == 6 and genesis_from_json(genesis_to_json(genesis)) == genesis
    plain = make_genesis([authority], alloc, **options)
    assert "challenge_blocks" not in plain.to_wire() and "challenge_blocks" in genesis.to_wire()
    before = ChainBuilder(plain, [authority])
    before.add_block([_open(alice, bob)])
    before.add_block([_receipt(bob)])
    before.add_block([make_tx(alice, TxKind.JOB_SETTLE, nonce=1, job_id=JOB, ack=b"")])
    refuse(before, "JobState", make_tx(auditor, TxKind.JOB_DISPUTE, job_id=JOB, evidence=b""))

    chain = ChainBuilder(genesis, [authority])
    chain.add_block([_open(alice, bob)])
    chain.add_block([_receipt(bob)])  # height 2: challenges until 8
    chain.add_block([make_tx(alice, TxKind.JOB_SETTLE, nonce=1, job_id=JOB, ack=b"")])  # paid: 4000 to bob
    refuse(chain, "NotJobParty", make_tx(bob, TxKind.JOB_DISPUTE, nonce=1, job_id=JOB, evidence=b""))
    refuse(chain, "JobState", make_tx(auditor, TxKind.JOB_DISPUTE, job_id=JOB, evidence=b""), height=9)
    chain.add_block([make_tx(auditor, TxKind.JOB_DISPUTE, job_id=JOB, evidence=b"\xa0")])
    job = chain.state.job(Hash32(JOB))
    assert (job.status, job.challenger, job.bond) == (JobStatus.CHALLENGED, auditor.address, 5000)
    assert total_is_conserved(chain).escrowed == 5000  # the bond: the escrow was released already
    refuse(chain, "JobState", make_tx(alice, TxKind.JOB_DISPUTE, nonce=2, job_id=JOB, evidence=b""))  # once
    refuse(chain, "JobState", make_tx(bob, TxKind.JOB_SETTLE, nonce=1, job_id=JOB, ack=b""))
    stake = chain.state.account(bob.address).stake
    balances = {k: chain.state.account(k.address).balance for k in (alice, bob, auditor)}
    burned = chain.state.burned()
    chain.add_block([make_tx(authority, TxKind.JOB_RESOLVE, job_id=JOB, verdict=verdict)])
    job, bob_after = chain.state.job(Hash32(JOB)), chain.state.account(bob.address)
    if verdict == "provider":
        assert job.status is JobStatus.SETTLED
        assert bob_after.balance == balances[bob] + 5000 and (bob_after.stake, bob_after.provider) == (stake, True)
        assert chain.state.account(auditor.address).balance == balances[auditor]  # its bond is gone
        refuse(chain, "JobState", make_tx(alice, TxKind.JOB_DISPUTE, nonce=2, job_id=JOB, evidence=b""))  # once
    else:
        slashed = stake // 10
        assert job.status is JobStatus.REFUNDED
        assert chain.state.account(alice.address).balance == balances[alice] + 4000  # what it paid
        rest = slashed - 4000
        assert chain.state.account(auditor.address).balance == balances[auditor] + 5000 + rest // 2
        assert (bob_after.stake, bob_after.provider, bob_after.balance) == (stake - slashed, False, balances[bob])
        assert chain.state.burned() == burned + 1000 + rest - rest // 2
    assert total_is_conserved(chain).escrowed == 0
    refuse(chain, "JobState", make_tx(authority, TxKind.JOB_RESOLVE, nonce=1, job_id=JOB, verdict=verdict))


def test_a_dispute_needs_its_bond_and_is_not_the_providers(chain, alice, bob, authority):
    chain.add_block([_open(alice, bob)])
    chain.add_block([_receipt(bob)])
    refuse(chain, "NotJobParty", make_tx(bob, TxKind.JOB_DISPUTE, nonce=1, job_id=JOB, evidence=b""))
    poor = make_key("poor")
    chain.add_block([make_tx(alice, to=poor.address, amount=5999, nonce=1)])
    refuse(chain, "InsufficientFunds", make_tx(poor, TxKind.JOB_DISPUTE, job_id=JOB, evidence=b""))  # fee + bond
    assert chain.state.job(Hash32(JOB)).status is JobStatus.RECEIPTED
    big = b"\x00" * (64 * 1024 + 1)
    with pytest.raises(TxRejected):
        make_tx(authority, TxKind.JOB_DISPUTE, job_id=JOB, evidence=big)
    chain.add_block([make_tx(authority, TxKind.JOB_DISPUTE, job_id=JOB, evidence=b"")])  # an auditor: anyone may
    assert chain.state.job(Hash32(JOB)).challenger == authority.address
    total_is_conserved(chain)


def test_timeout_refund(chain, alice, bob):
    chain.add_block([_open(alice, bob, deadline=2)])
    after_open = chain.state.account(alice.address).balance
    chain.add_block()
    chain.add_block([make_tx(alice, TxKind.JOB_REFUND, nonce=1, job_id=JOB)])
    assert chain.state.account(alice.address).balance == after_open + 10_000 - 1000
    assert chain.state.job(Hash32(JOB)).status is JobStatus.REFUNDED
    total_is_conserved(chain)


def test_stake_unbond_withdraw(chain, alice):
    chain.add_block([make_tx(alice, TxKind.STAKE, amount=10**6)])
    chain.add_block([make_tx(alice, TxKind.UNSTAKE, nonce=1, amount=4 * 10**5)])  # height 2, release at 5
    acct = chain.state.account(alice.address)
    assert acct.stake == 6 * 10**5 and acct.unbonding == ((4 * 10**5, 5),)
    total_is_conserved(chain)
    refuse(chain, "NothingToWithdraw", make_tx(alice, TxKind.WITHDRAW, nonce=2), height=4)
    before = acct.balance
    chain.add_block()
    chain.add_block()
    chain.add_block([make_tx(alice, TxKind.WITHDRAW, nonce=2)])
    acct = chain.state.account(alice.address)
    assert acct.unbonding == () and acct.balance == before + 4 * 10**5 - 1000
    total_is_conserved(chain)


def test_provider_registration_lifecycle(chain, alice, bob):
    carol = make_key("carol")
    chain.add_block([make_tx(alice, to=carol.address, amount=2 * 10**11)])
    chain.add_block([make_tx(carol, TxKind.STAKE, amount=10**11), make_tx(carol, TxKind.PROVIDER_REGISTER, nonce=1)])
    assert chain.state.account(carol.address).provider
    chain.add_block([_open(alice, carol, nonce=1)])
    refuse(chain, "JobState", make_tx(carol, TxKind.PROVIDER_UNREGISTER, nonce=2))


def test_double_sign_slash_burns_stake_once(chain, alice, bob):
    pair = [_vote(bob, b"\x01" * 32).to_wire(), _vote(bob, b"\x02" * 32).to_wire()]
    stake = chain.state.account(bob.address).stake
    burned = chain.state.burned()
    chain.add_block([make_tx(alice, TxKind.SLASH, evidence=pair)])
    assert chain.state.account(bob.address).stake == 0
    assert chain.state.burned() == burned + stake + 1000
    refuse(chain, "Duplicate", make_tx(alice, TxKind.SLASH, nonce=1, evidence=pair[::-1]))
    total_is_conserved(chain)


# ------------------------------------------------------------------ blocks and commitments
def test_block_validation(chain, alice, bob, genesis):
    rules = ChainRules.of(genesis)
    parent = chain.blocks[-1]
    parent_state = chain.state
    applied = chain.add_block([make_tx(alice, to=bob.address)])
    block = applied.block
    assert validate_block(block, parent.block.header, parent_state, rules).block == block
    assert Block.decode(block.encode()) == block

    def fields(**changes):
        return {**block.header._fields(), **changes}

    key = make_key("authority")
    for bad in [
        Block(BlockHeader(**fields(state_root=b"\x00" * 32)), block.txs),  # signature no longer matches
        Block(block.header, ()),  # tx_root mismatch
        Block(BlockHeader(**fields(height=5)), block.txs),
        Block(BlockHeader(**fields(chain_id="other")), block.txs),
    ]:
        with pytest.raises(ValidationError):
            validate_block(bad, parent.block.header, parent_state, rules)
    for lie in ("state_root", "receipts_root"):  # correctly signed, but the commitment lies
        liar = Block(BlockHeader(**fields(**{lie: b"\x01" * 32})).signed(key), block.txs)
        with pytest.raises(ValidationError, match=lie):
            validate_block(liar, parent.block.header, parent_state, rules)


def test_block_decoding_refuses_non_canonical_bytes(chain, alice, bob):
    """A block's canonical form is checked from its parts: the same content in another
    key order, with a non-minimal integer, or with trailing bytes is refused."""
    import cbor2

    block = chain.add_block([make_tx(alice, to=bob.address), make_tx(bob, to=alice.address)]).block
    data = block.encode()
    assert Block.decode(data) == block
    obj = cbor2.loads(data)
    reordered = cbor2.dumps({"header": obj["header"], "txs": obj["txs"], "sig": obj["sig"]})
    assert cbor2.loads(reordered) == obj and reordered != data
    tx_reordered = dict(obj, txs=[{"body": t["body"], "sig": t["sig"]} for t in obj["txs"]])
    long_int = data.replace(b"\x66height\x01", b"\x66height\x18\x01", 1)  # height 1 in two bytes
    assert long_int != data
    for bad in (reordered, cbor2.dumps(tx_reordered), long_int, data + b"\x00"):
        with pytest.raises(ValidationError, match="malformed block"):
            Block.decode(bad)


def test_build_block_drops_what_no_longer_applies(chain, alice, bob, genesis, authority):
    parent = chain.blocks[-1]
    txs = [make_tx(alice, nonce=0), make_tx(alice, nonce=0, amount=2), make_tx(bob, amount=10**10)]
    applied, dropped = build_block(
        authority, parent.block.header, chain.state, txs, ChainRules.of(genesis), timestamp_ms=10, max_txs=10
    )
    assert [tx.hash for tx in applied.block.txs] == [txs[0].hash]
    assert sorted(e.reason for _, e in dropped) == ["InsufficientFunds", "NonceTooLow"]


def test_state_root_is_incremental_and_proofs_verify_offline(chain, alice, bob):
    applied = chain.add_block([make_tx(alice, to=make_key(f"r{i}").address, nonce=i) for i in range(30)])
    full = StateTree.from_records(chain.state.leaves())
    assert full.root == applied.tree.root == applied.block.header.state_root
    key = account_key(alice.address)
    records = sorted(kv for kv in chain.state.leaves() if bucket_of(kv[0]) == bucket_of(key))
    proof = prove(applied.tree, records, key)
    assert proof is not None and proof.verify(applied.block.header.state_root)
    assert not proof.verify(chain.blocks[-2].block.header.state_root)
    tampered = type(proof)(proof.key, proof.value + b"\x00", proof.in_bucket, proof.bucket_path)
    assert not tampered.verify(applied.block.header.state_root)


def test_receipt_inclusion_proof_against_header(chain, alice, bob):
    applied = chain.add_block([make_tx(alice, nonce=i, to=bob.address, amount=i + 1) for i in range(5)])
    header = applied.block.header
    assert receipts_root(applied.receipts) == header.receipts_root
    leaves = [r.encode() for r in applied.receipts]
    path = merkle_proof(leaves, 3)
    assert verify_proof(header.receipts_root, leaves[3], path)
    assert not verify_proof(header.receipts_root, leaves[2], path)


def test_diverging_chains_differ_at_the_first_differing_block(genesis, authority, alice, bob):
    a, b = ChainBuilder(genesis, [authority]), ChainBuilder(genesis, [authority])
    for chain in (a, b):
        chain.add_block([make_tx(alice, to=bob.address, amount=5)])
    a.add_block([make_tx(alice, nonce=1, to=bob.address, amount=6)])
    b.add_block([make_tx(alice, nonce=1, to=bob.address, amount=7)])
    ha, hb = (c.blocks[2].block.header for c in (a, b))
    assert a.blocks[1].block.hash == b.blocks[1].block.hash
    assert ha.state_root != hb.state_root and ha.receipts_root != hb.receipts_root


def test_genesis_json_roundtrip_and_errors(genesis):
    again = genesis_from_json(genesis_to_json(genesis))
    assert isinstance(again, Genesis) and again.hash == genesis.hash
    assert again.providers == genesis.providers and again.stakes == genesis.stakes
    text = genesis_to_json(genesis)
    bad_texts = ["{", '{"chain_id": "x"}', text.replace('"balance": 1', '"balance": -1')]
    for bad in [*bad_texts, text.replace('"stake": ', '"stake": 1 + ')]:
        with pytest.raises(ConfigError):
            genesis_from_json(bad)
    low = text.replace(f'"min_provider_stake": {genesis.min_provider_stake}', f'"min_provider_stake": {10**15}')
    with pytest.raises(ConfigError, match="min_provider_stake"):
        genesis_from_json(low)
    # A chain id every wire parser can read back (they take 64 characters at most), and text.
    chain_id = f'"chain_id": "{genesis.chain_id}"'
    for bad_id in ('"chain_id": 5', '"chain_id": ""', f'"chain_id": "{"x" * 65}"'):
        with pytest.raises(ConfigError, match="chain_id"):
            genesis_from_json(text.replace(chain_id, bad_id))


@pytest.mark.parametrize(
    "receipt",
    [
        Receipt(Hash32(b"\x11" * 32), 0, 0),
        Receipt(Hash32(b"\x22" * 32), 999, 10**6, (("transfer", "aitbc1abc", "aitbc1def", 2**64 - 1), ("burn", 7))),
        Receipt(Hash32(b"\x44" * 32), 1000, 10**4, (("transfer", "aitbc1" + "q" * 58, 2**64 - 1),)),
        Receipt(Hash32(b"\x55" * 32), 23, 24, (("transfer", "aitbc1q", 0),)),
        Receipt(Hash32(b"\x66" * 32), 1, 1, (("transfer", b"not text", 5),)),  # not from the transition
        Receipt(Hash32(b"\x33" * 32), 2**32, 2**40, (("job_open", b"\x01" * 32, "aitbc1x", {"max_price": 5}),)),
    ],
)
def test_assembled_receipt_and_record_encodings_are_the_canonical_ones(receipt):
    """Receipts and state-tree leaves are assembled from parts on the hot path; the bytes
    must be exactly canonical CBOR, or roots would differ from the spec's."""
    assert receipt.encode() == encode(receipt.to_wire())
    assert encode_receipts([receipt, receipt]) == encode([receipt.to_wire(), receipt.to_wire()])
    key, value = b"a" * 23, b"v" * 300
    assert leaf_data(key, value) == encode([key, value])


@pytest.mark.parametrize(
    "account",
    [
        Account(),
        Account(2**64 - 1, 2**64 - 1, 2**64 - 1, ((2**64 - 1, 2**32), (1, 23), (24, 255), (256, 65535)), True, 9),
        Account(10**15, 24, 0, (), False, 65536),
    ],
)
def test_assembled_account_encoding_is_the_canonical_one(account):
    wire = [account.balance, account.nonce, account.stake, [list(u) for u in account.unbonding]]
    assert account.encode() == encode([*wire, account.provider, account.active_jobs])
    assert Account.decode(account.encode()) == account


def test_anyone_may_refund_an_expired_escrow_and_it_goes_to_the_client(chain, alice, bob, authority):
    """The client's peer (another key) refunds a failed job by itself after the deadline."""
    chain.add_block([_open(alice, bob)])
    deadline = chain.state.job(Hash32(JOB)).deadline
    refuse(chain, "JobState", make_tx(authority, TxKind.JOB_REFUND, job_id=JOB))  # not before the deadline
    while chain.blocks[-1].block.height <= deadline:
        chain.add_block()
    before = chain.state.account(alice.address).balance
    chain.add_block([make_tx(authority, TxKind.JOB_REFUND, job_id=JOB)])
    job = chain.state.job(Hash32(JOB))
    assert job.status is JobStatus.REFUNDED
    assert chain.state.account(alice.address).balance == before + job.amount


def test_a_header_built_from_another_computes_its_own_id():
    key = make_key("authority")
    z = b"\x00" * 32
    header = BlockHeader("c", 1, z, 100, key.address, z, z, z)
    first = header.hash  # now cached on it
    moved = BlockHeader(**{**header._fields(), "height": 2})
    assert moved.hash != first
    assert moved.hash == BlockHeader("c", 2, z, 100, key.address, z, z, z).hash
    assert header.signed(key).hash == first  # the signature is not part of the id


def test_every_transaction_kind_has_exactly_one_payload_class_and_one_handler():
    from aitbc_p2p.chain.payloads import PAYLOADS, Transfer
    from aitbc_p2p.chain.transition import _HANDLERS

    assert set(PAYLOADS) == set(TxKind)
    assert all(cls.KIND is kind for kind, cls in PAYLOADS.items())
    # transfers are applied inline, first
    assert set(_HANDLERS) == set(PAYLOADS.values()) - {Transfer}


def test_a_typed_payload_signs_the_same_bytes_as_its_wire_map_for_every_kind(alice, bob):
    """The dataclasses are a reading of the wire map, not a new format: built from either,
    a transaction has the same bytes and hash, and decoding it gives the dataclass back."""
    from aitbc_p2p.chain import payloads as p

    vote = {"body": {"x": 1}, "sig": b"\x01"}
    examples = [
        p.Transfer(bob.address, 5),
        p.Stake(7),
        p.Unstake(3),
        p.Withdraw(),
        p.ProviderRegister(),
        p.ProviderUnregister(),
        p.JobOpen(Hash32(JOB), bob.address, 10_000, 50, alice.address),
        p.JobReceipt(Hash32(JOB), Hash32(RESULT), 9, {"compute_ms": 4}),
        p.JobSettle(Hash32(JOB)),
        p.JobDispute(Hash32(JOB)),
        p.JobResolve(Hash32(JOB), p.Verdict.CLIENT),
        p.JobRefund(Hash32(JOB)),
        p.JobCancel(Hash32(JOB), b"\x01" * 65),
        p.JobReassign(Hash32(JOB), bob.address, 90, b""),
        p.Slash((vote, vote)),
    ]
    assert {type(e).KIND for e in examples} == set(TxKind)
    for payload in examples:
        typed = Transaction.create(alice, chain_id="c", nonce=1, fee=2, payload=payload)
        mapped = Transaction.create(alice, chain_id="c", kind=payload.KIND, nonce=1, fee=2, payload=payload.to_wire())
        assert typed.encode() == mapped.encode() and typed.hash == mapped.hash
        decoded = Transaction.decode(typed.encode())
        assert decoded.kind is payload.KIND and decoded.payload == payload


def test_a_payload_and_a_kind_that_disagree_are_refused_before_signing(alice, bob):
    from aitbc_p2p.chain.payloads import Stake

    with pytest.raises(TypeError, match="is a stake transaction, not transfer"):
        Transaction.create(alice, chain_id="c", kind=TxKind.TRANSFER, nonce=0, fee=1, payload=Stake(5))
    with pytest.raises(TypeError, match="needs its kind"):
        Transaction.create(alice, chain_id="c", nonce=0, fee=1, payload={"amount": 5})
    # a map that is not the kind's: named, as from a peer
    rejected("Malformed", Transaction.create, alice, chain_id="c", kind="stake", nonce=0, fee=1, payload={"to": 1})


def test_a_delivery_ack_of_the_receipted_result_lets_the_provider_settle_at_once(chain, alice, bob, authority):
    """job_settle's ``ack``: the client's agent signed that it holds the result with the
    receipted hash, so the dispute window need not pass. Only that exact ack works."""
    from aitbc_p2p.chain.payloads import sign_ack

    agent = make_key("agent")  # acks cost nothing: an unfunded agent can give one
    chain.add_block([_open(alice, bob, agent=agent)])
    chain.add_block([_receipt(bob)])  # height 2; the window runs to 4
    chain_id = chain.genesis.chain_id

    def settle(ack):
        return make_tx(bob, TxKind.JOB_SETTLE, nonce=1, job_id=JOB, ack=ack)

    refuse(chain, "NotJobParty", settle(sign_ack(make_key("stranger"), chain_id, JOB, RESULT)), height=3)
    refuse(chain, "NotJobParty", settle(sign_ack(agent, chain_id, JOB, b"\x99" * 32)), height=3)  # another result
    refuse(chain, "NotJobParty", settle(sign_ack(agent, "ait-other", JOB, RESULT)), height=3)  # another chain
    refuse(chain, "NotJobParty", settle(b"\x01" * 65), height=3)  # recovers some key, not the agent's
    refuse(chain, "BadSignature", settle(b"\x01" * 64 + b"\x07"), height=3)
    refuse(chain, "BadSignature", settle(b"\x01"), height=3)
    refuse(chain, "JobState", settle(b""), height=3)  # no ack: the window is still open
    bob_before = chain.state.account(bob.address).balance
    chain.add_block([settle(sign_ack(agent, chain_id, JOB, RESULT))])  # height 3
    assert chain.state.job(Hash32(JOB)).status is JobStatus.SETTLED
    assert chain.state.account(bob.address).balance == bob_before + 4000 - 1000
    # The client's own ack settles as well.
    again = ChainBuilder(chain.genesis, [authority])
    again.add_block([_open(alice, bob, agent=agent)])
    again.add_block([_receipt(bob)])
    again.add_block([settle(sign_ack(alice, chain_id, JOB, RESULT))])
    assert again.state.job(Hash32(JOB)).status is JobStatus.SETTLED


def test_the_clients_agent_settles_and_disputes_but_is_never_paid(chain, alice, bob):
    agent = make_key("agent")
    chain.add_block([make_tx(alice, to=agent.address, amount=10_000)])
    chain.add_block([_open(alice, bob, agent=agent, nonce=1)])
    refuse(chain, "NotJobParty", _open(alice, bob, agent=bob, nonce=2, job_id=b"\x12" * 32))  # not the provider
    chain.add_block([_receipt(bob)])
    agent_before, alice_before = chain.state.account(agent.address).balance, chain.state.account(alice.address).balance
    chain.add_block([make_tx(agent, TxKind.JOB_SETTLE, job_id=JOB, ack=b"")])  # accepted at once, for the client
    assert chain.state.job(Hash32(JOB)).status is JobStatus.SETTLED
    assert chain.state.account(alice.address).balance == alice_before + 10_000 - 4000  # the rest: to the client
    assert chain.state.account(agent.address).balance == agent_before - 1000  # the agent only paid its fee
    other = b"\x13" * 32
    chain.add_block([_open(alice, bob, agent=agent, nonce=2, job_id=other)])
    chain.add_block([_receipt(bob, nonce=1, job_id=other)])
    chain.add_block([make_tx(agent, TxKind.JOB_DISPUTE, nonce=1, job_id=other, evidence=b"")])
    assert chain.state.job(Hash32(other)).status is JobStatus.DISPUTED


def _cancel(sender, nonce=1, release=b"", job_id=JOB):
    return make_tx(sender, TxKind.JOB_CANCEL, nonce=nonce, job_id=job_id, release=release)


def _reassign(sender, provider, nonce=1, release=b"", deadline=90, job_id=JOB):
    payload = {"job_id": job_id, "provider": provider.address, "deadline": deadline, "release": release}
    return make_tx(sender, TxKind.JOB_REASSIGN, nonce=nonce, **payload)


def test_a_cancel_with_the_providers_release_refunds_at_once(chain, alice, bob):
    from aitbc_p2p.chain.payloads import sign_release

    chain.add_block([_open(alice, bob)])
    chain_id = chain.genesis.chain_id
    refuse(chain, "NotJobParty", _cancel(bob, nonce=0))  # the provider does not cancel
    refuse(chain, "NotJobParty", _cancel(alice, release=sign_release(alice, chain_id, JOB, 1)))  # not bob's
    refuse(chain, "NotJobParty", _cancel(alice, release=sign_release(bob, chain_id, JOB, 2)))  # another attempt
    refuse(chain, "BadSignature", _cancel(alice, release=b"\x01" * 64 + b"\x07"))
    before = chain.state.account(alice.address).balance
    chain.add_block([_cancel(alice, release=sign_release(bob, chain_id, JOB, 1))])
    job = chain.state.job(Hash32(JOB))
    assert job.status is JobStatus.REFUNDED
    assert chain.state.account(alice.address).balance == before + 10_000 - 1000
    assert chain.state.account(bob.address).active_jobs == 0
    assert total_is_conserved(chain).escrowed == 0
    refuse(chain, "JobState", _cancel(alice, nonce=2))  # nothing left to cancel


def test_a_cancel_without_a_release_leaves_the_provider_its_grace(chain, alice, bob):
    """dispute_blocks (2 here) for the provider to post a receipt for work already done;
    after that the escrow is refundable by anyone, long before its deadline."""
    chain.add_block([_open(alice, bob, deadline=50)])
    chain.add_block([_cancel(alice)])  # height 2: grace to 4
    assert chain.state.job(Hash32(JOB)).status is JobStatus.CANCELLED
    assert total_is_conserved(chain).escrowed == 10_000  # still locked
    refuse(chain, "JobState", make_tx(bob, TxKind.JOB_REFUND, job_id=JOB), height=4)
    refuse(chain, "JobState", _cancel(alice, nonce=2), height=3)
    # A receipt in the grace stands, and the job goes on as any receipted one.
    graced = ChainBuilder(chain.genesis, [make_key("authority")])
    graced.add_block([_open(alice, bob, deadline=50)])
    graced.add_block([_cancel(alice)])
    graced.add_block([_receipt(bob)])  # height 3
    assert graced.state.job(Hash32(JOB)).status is JobStatus.RECEIPTED
    # Past the grace: no receipt, and a refund (by anyone) returns everything.
    chain.add_block()
    chain.add_block()  # height 4
    refuse(chain, "JobState", _receipt(bob), height=5)
    before = chain.state.account(alice.address).balance
    chain.add_block([make_tx(bob, TxKind.JOB_REFUND, job_id=JOB)])  # height 5
    assert chain.state.job(Hash32(JOB)).status is JobStatus.REFUNDED
    assert chain.state.account(alice.address).balance == before + 10_000


def test_an_escrow_fails_over_to_at_most_three_providers(chain, alice, bob):
    from aitbc_p2p.chain.payloads import sign_release

    carol, dave = make_key("carol"), make_key("dave")
    chain_id = chain.genesis.chain_id
    stake = chain.genesis.min_provider_stake
    chain.add_block([make_tx(alice, to=k.address, amount=stake + 10**6, nonce=i) for i, k in enumerate((carol, dave))])
    chain.add_block([make_tx(k, TxKind.STAKE, amount=stake) for k in (carol, dave)] if stake else [])
    chain.add_block([make_tx(k, TxKind.PROVIDER_REGISTER, nonce=1 if stake else 0) for k in (carol, dave)])
    chain.add_block([_open(alice, bob, nonce=2)])
    released = sign_release(bob, chain_id, JOB, 1)
    refuse(chain, "JobState", _reassign(alice, carol, nonce=3))  # open, and no release from bob
    refuse(chain, "NotJobParty", _reassign(alice, alice, nonce=3, release=released))
    refuse(chain, "NotProvider", _reassign(alice, make_key("nobody"), nonce=3, release=released))
    chain.add_block([_reassign(alice, carol, nonce=3, release=released)])
    job = chain.state.job(Hash32(JOB))
    assert (job.provider, job.status, job.attempts, job.deadline) == (carol.address, JobStatus.OPEN, 2, 90)
    assert chain.state.account(bob.address).active_jobs == 0 and chain.state.account(carol.address).active_jobs == 1
    assert read_reputation(chain.state, bob.address).failed == 1  # the escrow moved on from it
    refuse(chain, "NotJobParty", _receipt(bob))  # bob's part is over
    # carol goes silent: cancelled, and after her grace the escrow moves to dave.
    chain.add_block([_cancel(alice, nonce=4)])
    cancelled_at = chain.blocks[-1].block.height
    refuse(chain, "JobState", _reassign(alice, dave, nonce=5), height=cancelled_at + 2)
    chain.add_block()
    chain.add_block()
    chain.add_block([_reassign(alice, dave, nonce=5)])
    job = chain.state.job(Hash32(JOB))
    assert (job.provider, job.status, job.attempts, job.cancelled_at) == (dave.address, JobStatus.OPEN, 3, 0)
    refuse(chain, "JobState", _reassign(alice, bob, nonce=6, release=sign_release(dave, chain_id, JOB, 3)))  # a 4th
    assert total_is_conserved(chain).escrowed == 10_000


def test_the_chain_keeps_each_providers_record(chain, alice, bob, authority):
    """Settled escrows, failures (an escrow moved on or refunded past its deadline, never
    receipted) and lost disputes with what they slashed: every peer reads the same record."""
    from aitbc_p2p.chain.state import Reputation

    carol = make_key("carol")
    chain.add_block([_open(alice, bob)])
    chain.add_block([_receipt(bob)])
    chain.add_block([make_tx(alice, TxKind.JOB_SETTLE, nonce=1, job_id=JOB, ack=b"")])
    assert read_reputation(chain.state, bob.address) == Reputation(settled=1)
    second = b"\x21" * 32
    chain.add_block([_open(alice, bob, nonce=2, job_id=second, deadline=6)])
    chain.add_block()
    chain.add_block()
    chain.add_block([make_tx(alice, TxKind.JOB_REFUND, nonce=3, job_id=second)])  # past its deadline, unreceipted
    assert read_reputation(chain.state, bob.address) == Reputation(settled=1, failed=1)
    third = b"\x22" * 32
    chain.add_block([_open(alice, bob, nonce=4, job_id=third)])
    chain.add_block([_receipt(bob, nonce=1, job_id=third)])
    chain.add_block([make_tx(alice, TxKind.JOB_DISPUTE, nonce=5, job_id=third, evidence=b"")])
    stake = chain.state.account(bob.address).stake
    chain.add_block([make_tx(authority, TxKind.JOB_RESOLVE, job_id=third, verdict="client")])
    assert read_reputation(chain.state, bob.address) == Reputation(settled=1, failed=1, lost=1, slashed=stake // 10)
    assert read_reputation(chain.state, carol.address) == Reputation()
    assert read_reputation(chain.state, bob.address).score_milli() == 1000 * 2 // (2 + 2 + 10)
    total_is_conserved(chain)
