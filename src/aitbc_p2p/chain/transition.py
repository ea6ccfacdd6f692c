"""The pure state transition: transactions applied to a :class:`StateView` overlay.

No clock, no I/O. Every refusal is a :class:`TxRejected` with a named reason, and a
refused transaction changes nothing. Rules: specs/transactions.md.
"""

from __future__ import annotations

from collections.abc import Container, Sequence
from dataclasses import dataclass

from aitbc_p2p.chain.models import Genesis, Transaction, TxKind
from aitbc_p2p.chain.state import Account, EmptyState, Job, JobStatus, Overlay, StateView
from aitbc_p2p.exceptions import TxRejected
from aitbc_p2p.types import MAX_AMOUNT, Address, Hash32


@dataclass(frozen=True, slots=True)
class ChainRules:
    chain_id: str
    min_fee: int

    @classmethod
    def of(cls, genesis: Genesis) -> ChainRules:
        return cls(genesis.chain_id, genesis.min_fee)


def check_stateless(tx: Transaction, rules: ChainRules, *, verified: bool = False) -> None:
    """Checks that need no state: chain id, fee floor, signature.

    ``verified``: the signature of this exact transaction (same hash) was already checked.
    """
    if tx.chain_id != rules.chain_id:
        raise TxRejected("WrongChain", f"transaction is for chain {tx.chain_id!r}", expected=rules.chain_id)
    if tx.fee < rules.min_fee:
        raise TxRejected("Underpriced", f"fee {tx.fee} is below the minimum {rules.min_fee}", min_fee=rules.min_fee)
    if not verified:
        tx.verify_signature()


def _credit(state: Overlay, address: Address, amount: int) -> None:
    acct = state.account(address)
    if acct.balance + amount > MAX_AMOUNT:
        raise TxRejected("AmountOutOfRange", "credit would overflow the recipient's balance")
    state.set_account(address, Account(acct.balance + amount, acct.nonce))


def _job(state: Overlay, tx: Transaction) -> Job:
    job = state.job(Hash32(tx.payload["job_id"]))
    if job is None:
        raise TxRejected("UnknownJob", "no escrow with this job id", job_id=tx.payload["job_id"].hex())
    return job


def apply_tx(state: Overlay, tx: Transaction, *, height: int) -> None:
    """Apply one stateless-checked transaction at block ``height``; all checks come first.

    Raises:
        TxRejected: NonceTooLow, NonceTooHigh, InsufficientFunds, UnknownJob, NotJobParty,
            JobState, Duplicate, AmountOutOfRange. The overlay is unchanged then.
    """
    sender = state.account(tx.sender)
    if tx.nonce < sender.nonce:
        raise TxRejected("NonceTooLow", f"nonce {tx.nonce} already used", expected=sender.nonce)
    if tx.nonce > sender.nonce:
        raise TxRejected("NonceTooHigh", f"nonce {tx.nonce} skips ahead", expected=sender.nonce)
    p = tx.payload
    spend = tx.fee + (p["amount"] if tx.kind in (TxKind.TRANSFER, TxKind.JOB_OPEN) else 0)
    if sender.balance < spend:
        raise TxRejected(
            "InsufficientFunds", f"balance {sender.balance} is below {spend}", balance=sender.balance, needed=spend
        )
    after = Account(sender.balance - spend, sender.nonce)
    credits: list[tuple[Address, int]] = []
    job_update: Job | None = None

    if tx.kind is TxKind.TRANSFER:
        credits.append((Address(p["to"]), p["amount"]))
    elif tx.kind is TxKind.JOB_OPEN:
        job_id = Hash32(p["job_id"])
        if state.job(job_id) is not None:
            raise TxRejected("Duplicate", "an escrow with this job id exists")
        if p["provider"] == tx.sender:
            raise TxRejected("NotJobParty", "a client cannot hire itself")
        if p["deadline"] <= height:
            raise TxRejected("JobState", "deadline must be after the current height")
        job_update = Job(job_id, tx.sender, Address(p["provider"]), p["amount"], p["deadline"], height)
    elif tx.kind is TxKind.JOB_RECEIPT:
        job = _job(state, tx)
        if tx.sender != job.provider:
            raise TxRejected("NotJobParty", "only the job's provider posts its receipt")
        if job.status is not JobStatus.OPEN or height > job.deadline:
            raise TxRejected("JobState", f"job is {job.status}, deadline {job.deadline}")
        if p["cost"] > job.amount:
            raise TxRejected("AmountOutOfRange", "cost exceeds the escrowed amount")
        job_update = job.with_(
            status=JobStatus.RECEIPTED,
            result_hash=p["result_hash"],
            cost=p["cost"],
            metrics=dict(p["metrics"]),
            receipt_tx=tx.hash,
        )
    elif tx.kind is TxKind.JOB_SETTLE:
        job = _job(state, tx)
        if tx.sender not in (job.client, job.provider):
            raise TxRejected("NotJobParty", "only the client or the provider settles")
        if job.status is not JobStatus.RECEIPTED:
            raise TxRejected("JobState", f"job is {job.status}, not receipted")
        credits += [(job.provider, job.cost), (job.client, job.amount - job.cost)]
        job_update = job.with_(status=JobStatus.SETTLED)
    elif tx.kind is TxKind.JOB_REFUND:
        job = _job(state, tx)
        if tx.sender != job.client:
            raise TxRejected("NotJobParty", "only the client claims a refund")
        if job.status is not JobStatus.OPEN or height <= job.deadline:
            raise TxRejected("JobState", f"job is {job.status}; refund only after deadline {job.deadline}")
        credits.append((job.client, job.amount))
        job_update = job.with_(status=JobStatus.REFUNDED)

    # Every check passed: write. Fees are burned (specs/transactions.md, "Fees").
    state.set_account(tx.sender, Account(after.balance, after.nonce + 1))
    for address, amount in credits:
        if amount:
            _credit(state, address, amount)
    if job_update is not None:
        state.set_job(job_update)
    state.set_burned(state.burned() + tx.fee)


def apply_txs(
    base: StateView,
    txs: Sequence[Transaction],
    rules: ChainRules,
    *,
    height: int,
    verified: Container[Hash32] = frozenset(),
) -> Overlay:
    """Apply a block's transactions in order; the first refusal rejects them all.

    Signatures of transactions whose hash is in ``verified`` are not checked again.
    """
    state = Overlay(base)
    for index, tx in enumerate(txs):
        check_stateless(tx, rules, verified=tx.hash in verified)
        try:
            apply_tx(state, tx, height=height)
        except TxRejected as e:
            e.details["index"] = index
            raise
    return state


def genesis_state(genesis: Genesis) -> Overlay:
    state = Overlay(EmptyState())
    for address, amount in genesis.alloc:
        if not 0 <= amount <= MAX_AMOUNT:
            raise TxRejected("AmountOutOfRange", f"genesis allocation for {address}")
        _credit(state, address, amount)
    state.set_burned(0)
    return state
