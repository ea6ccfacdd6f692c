"""The pure state transition: transactions applied to a :class:`StateView` overlay.

No clock, no I/O. Every refusal is a :class:`TxRejected` with a named reason, and a
refused transaction changes nothing: all checks run before the first write. Each applied
transaction yields a :class:`Receipt`. Rules: specs/transactions.md.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Sequence
from dataclasses import dataclass, field
from typing import Any

from aitbc_p2p.chain.models import Genesis, Transaction
from aitbc_p2p.chain.payloads import (
    MAX_ATTEMPTS,
    EscrowPayload,
    JobCancel,
    JobDispute,
    JobOpen,
    JobReassign,
    JobReceipt,
    JobRefund,
    JobResolve,
    JobSettle,
    Payload,
    ProviderRegister,
    ProviderUnregister,
    Slash,
    Stake,
    Transfer,
    Unstake,
    Verdict,
    Withdraw,
    ack_digest,
    release_digest,
)
from aitbc_p2p.chain.state import (
    MAX_UNBONDING,
    Account,
    EmptyState,
    Job,
    JobStatus,
    Overlay,
    Reputation,
    StateView,
    read_reputation,
)
from aitbc_p2p.chain.votes import check_evidence
from aitbc_p2p.codec import encode, head
from aitbc_p2p.crypto import recover_address
from aitbc_p2p.exceptions import CryptoError, TxRejected, ValidationError
from aitbc_p2p.types import MAX_AMOUNT, Address, Hash32, format_aitbc


@dataclass(frozen=True, slots=True)
class ChainRules:
    chain_id: str
    min_fee: int
    unbonding_blocks: int = 100
    dispute_blocks: int = 10
    min_provider_stake: int = 0
    arbiters: frozenset[str] = frozenset()
    dispute_bond: int = 0
    slash_bps: int = 0
    challenger_bps: int = 0
    arbiter_quorum: int = 1
    challenge_blocks: int = 0

    @classmethod
    def of(cls, genesis: Genesis) -> ChainRules:
        return cls(
            genesis.chain_id,
            genesis.min_fee,
            genesis.unbonding_blocks,
            genesis.dispute_blocks,
            genesis.min_provider_stake,
            frozenset(genesis.arbiters),
            genesis.dispute_bond,
            genesis.slash_bps,
            genesis.challenger_bps,
            genesis.arbiter_quorum,
            genesis.challenge_blocks,
        )


_RECEIPT_TX = b"\xa4\x62tx\x58\x20"
"""A 4-map, its first key "tx" and the head of a 32-byte string."""
_TRANSFER_EVENTS = b"\x81\x83\x68transfer"
"""A 1-array holding a 3-array whose first item is the text "transfer"."""


def _encode_events(events: tuple[tuple[Any, ...], ...]) -> bytes:
    """``canonical([list(e) for e in events])``; a transfer's one event is assembled."""
    if len(events) == 1 and len(event := events[0]) == 3 and event[0] == "transfer":
        _, to, amount = event
        if type(to) is str and type(amount) is int and 0 <= amount <= MAX_AMOUNT:
            raw = to.encode()
            return _TRANSFER_EVENTS + head(3, len(raw)) + raw + head(0, amount)
    return encode([list(e) for e in events], check=False)


@dataclass(frozen=True, slots=True)
class Receipt:
    """What one transaction did: committed under the header's ``receipts_root``."""

    tx: Hash32
    index: int
    fee: int
    events: tuple[tuple[Any, ...], ...] = field(default=())
    _raw: bytes = field(default=b"", compare=False, repr=False)

    def to_wire(self) -> dict[str, Any]:
        return {"tx": self.tx, "index": self.index, "fee": self.fee, "events": [list(e) for e in self.events]}

    def encode(self) -> bytes:
        if not self._raw and (len(self.tx) != 32 or self.fee < 0 or self.index < 0):
            object.__setattr__(self, "_raw", encode(self.to_wire()))  # not from the transition
        if not self._raw:
            # canonical(to_wire()), assembled (once per receipt per block, so it counts):
            # the keys in canonical order (shorter first), then the values built by the
            # transition from checked data, so no type walk.
            events = _encode_events(self.events)
            raw = _RECEIPT_TX + self.tx + b"\x63fee" + head(0, self.fee) + b"\x65index" + head(0, self.index)
            object.__setattr__(self, "_raw", raw + b"\x66events" + events)
        return self._raw

    @classmethod
    def from_wire(cls, obj: Any) -> Receipt:
        try:
            return cls(Hash32(obj["tx"]), int(obj["index"]), int(obj["fee"]), tuple(tuple(e) for e in obj["events"]))
        except (KeyError, TypeError, ValueError) as e:
            raise ValidationError(f"malformed receipt: {e}") from e


def check_stateless(tx: Transaction, rules: ChainRules, *, verified: bool = False) -> None:
    """Checks that need no state: chain id, fee floor, signature.

    ``verified``: the signature of this exact transaction (same hash) was already checked.
    """
    if tx.chain_id != rules.chain_id:
        raise TxRejected("WrongChain", f"transaction is for chain {tx.chain_id!r}", expected=rules.chain_id)
    if tx.fee < rules.min_fee:
        raise TxRejected(
            "Underpriced",
            f"fee {format_aitbc(tx.fee)} AITBC is below the minimum {format_aitbc(rules.min_fee)} AITBC",
            min_fee=rules.min_fee,
        )
    if not verified:
        tx.verify_signature()


def _add(value: int, amount: int, what: str) -> int:
    if value + amount > MAX_AMOUNT:
        raise TxRejected("AmountOutOfRange", f"{what} would exceed 2^64-1")
    return value + amount


def _job(state: Overlay, p: EscrowPayload) -> Job:
    job = state.job(p.job_id)
    if job is None:
        raise TxRejected("UnknownJob", "no escrow with this job id", job_id=p.job_id.hex())
    return job


class _Writes:
    """Account updates staged while checking, applied only when every check passed."""

    def __init__(self, state: Overlay) -> None:
        self.state = state
        self.accounts: dict[Address, Account] = {}
        self.jobs: list[Job] = []
        self.burn = 0
        self.evidence: bytes | None = None
        self.events: list[tuple[Any, ...]] = []
        self.reputations: dict[Address, Reputation] = {}

    def count(self, provider: Address, **deltas: int) -> None:
        """Add to a provider's reputation record."""
        rep = self.reputations.get(provider) or read_reputation(self.state, provider)
        self.reputations[provider] = rep._replace(**{k: getattr(rep, k) + v for k, v in deltas.items()})

    def get(self, address: Address) -> Account:
        return self.accounts.get(address) or self.state.account(address)

    def put(self, address: Address, account: Account) -> None:
        self.accounts[address] = account

    def credit(self, address: Address, amount: int) -> None:
        if amount:
            acct = self.get(address)
            self.put(address, acct.with_(balance=_add(acct.balance, amount, "balance")))

    def provider_jobs(self, address: Address, delta: int) -> None:
        acct = self.get(address)
        self.put(address, acct.with_(active_jobs=max(0, acct.active_jobs + delta)))

    def slash(self, address: Address, amount: int) -> int:
        """Burn up to ``amount`` of bonded then unbonding stake; return what was burned."""
        acct = self.get(address)
        take = min(amount, acct.stake)
        left = amount - take
        unbonding: list[tuple[int, int]] = []
        burned = take
        for value, release in acct.unbonding:
            cut = min(value, left)
            left -= cut
            burned += cut
            if value - cut:
                unbonding.append((value - cut, release))
        self.put(address, acct.with_(stake=acct.stake - take, unbonding=tuple(unbonding)))
        self.burn += burned
        if burned:
            self.events.append(("slashed", address, burned))
        return burned


def apply_tx(state: Overlay, tx: Transaction, *, height: int, rules: ChainRules, index: int = 0) -> Receipt:
    """Apply one stateless-checked transaction at block ``height`` (the block's
    ``index``-th); all checks come first.

    Raises:
        TxRejected: NonceTooLow, NonceTooHigh, InsufficientFunds, InsufficientStake,
            NotProvider, UnknownJob, NotJobParty, NotArbiter, JobState, Duplicate,
            NothingToWithdraw, BadEvidence, AmountOutOfRange. The overlay is unchanged then.
    """
    sender = state.account(tx.sender)
    if tx.nonce < sender.nonce:
        raise TxRejected("NonceTooLow", f"nonce {tx.nonce} already used", expected=sender.nonce)
    if tx.nonce > sender.nonce:
        raise TxRejected("NonceTooHigh", f"nonce {tx.nonce} skips ahead", expected=sender.nonce)
    if sender.nonce >= MAX_AMOUNT:
        raise TxRejected("AmountOutOfRange", "the account's nonce is exhausted")
    p = tx.payload
    spend = tx.fee
    if type(p) is Transfer or isinstance(p, Stake | JobOpen):  # the kinds in MOVES_AMOUNT
        spend += p.amount
    if sender.balance < spend:
        raise TxRejected(
            "InsufficientFunds",
            f"balance {format_aitbc(sender.balance)} AITBC is below {format_aitbc(spend)} AITBC",
            balance=sender.balance,
            needed=spend,
        )
    paid = Account(
        sender.balance - spend, sender.nonce + 1, sender.stake, sender.unbonding, sender.provider, sender.active_jobs
    )
    if type(p) is Transfer:
        # The bulk of every block, so without the staging below: the same checks (only
        # the recipient's bound can fail now), then the same writes.
        to, amount = p.to, p.amount
        recipient = paid if to == tx.sender else state.account(to)
        credited = Account(
            _add(recipient.balance, amount, "balance"), recipient.nonce, recipient.stake, recipient.unbonding,
            recipient.provider, recipient.active_jobs,
        )  # fmt: skip
        burned = _add(state.burned(), tx.fee, "burned")
        state.set_account(tx.sender, paid)
        if amount:
            state.set_account(to, credited)
        state.set_burned(burned)
        return Receipt(tx.hash, index, tx.fee, (("transfer", to, amount),))

    w = _Writes(state)
    w.put(tx.sender, paid)
    w.burn = tx.fee
    _HANDLERS[type(p)](w, tx, p, height, rules)

    # Every check passed: write. Fees (and slashed stake) are burned ("Fees").
    for address, account in w.accounts.items():
        state.set_account(address, account)
    for job in w.jobs:
        state.set_job(job)
    if w.evidence is not None:
        state.set_evidence(w.evidence, height)
    for address, reputation in w.reputations.items():
        state.set_reputation(address, reputation)
    state.set_burned(_add(state.burned(), w.burn, "burned"))
    return Receipt(tx.hash, index, tx.fee, tuple(w.events))


# ------------------------------------------------------------ one handler per kind
# Each checks first (raising TxRejected leaves the overlay as it was) and stages its
# writes on ``w``; apply_tx writes them once every check has passed.


def _stake(w: _Writes, tx: Transaction, p: Stake, height: int, rules: ChainRules) -> None:
    me = w.get(tx.sender)
    w.put(tx.sender, me.with_(stake=_add(me.stake, p.amount, "stake")))
    w.events.append(("staked", p.amount))


def _unstake(w: _Writes, tx: Transaction, p: Unstake, height: int, rules: ChainRules) -> None:
    me = w.get(tx.sender)
    if p.amount > me.stake:
        raise TxRejected(
            "InsufficientStake",
            f"stake {format_aitbc(me.stake)} AITBC is below {format_aitbc(p.amount)} AITBC",
            stake=me.stake,
        )
    if me.provider and me.stake - p.amount < rules.min_provider_stake:
        raise TxRejected("InsufficientStake", "a registered provider keeps min_provider_stake; unregister first")
    if len(me.unbonding) >= MAX_UNBONDING:
        raise TxRejected("AmountOutOfRange", f"at most {MAX_UNBONDING} unbonding entries")
    release = height + rules.unbonding_blocks
    w.put(tx.sender, me.with_(stake=me.stake - p.amount, unbonding=(*me.unbonding, (p.amount, release))))
    w.events.append(("unbonding", p.amount, release))


def _withdraw(w: _Writes, tx: Transaction, p: Withdraw, height: int, rules: ChainRules) -> None:
    me = w.get(tx.sender)
    ripe = sum(a for a, release in me.unbonding if release <= height)
    if not ripe:
        raise TxRejected("NothingToWithdraw", "no unbonding entry has matured")
    rest = tuple(u for u in me.unbonding if u[1] > height)
    w.put(tx.sender, me.with_(balance=_add(me.balance, ripe, "balance"), unbonding=rest))
    w.events.append(("withdrawn", ripe))


def _provider_register(w: _Writes, tx: Transaction, p: ProviderRegister, height: int, rules: ChainRules) -> None:
    me = w.get(tx.sender)
    if me.provider:
        raise TxRejected("Duplicate", "already a registered provider")
    if me.stake < rules.min_provider_stake:
        raise TxRejected("InsufficientStake", f"providers stake at least {rules.min_provider_stake}")
    w.put(tx.sender, me.with_(provider=True))


def _provider_unregister(w: _Writes, tx: Transaction, p: ProviderUnregister, height: int, rules: ChainRules) -> None:
    me = w.get(tx.sender)
    if not me.provider:
        raise TxRejected("NotProvider", "not a registered provider")
    if me.active_jobs:
        raise TxRejected("JobState", f"{me.active_jobs} jobs still hold escrow with this provider")
    w.put(tx.sender, me.with_(provider=False))


def _job_open(w: _Writes, tx: Transaction, p: JobOpen, height: int, rules: ChainRules) -> None:
    job_id, provider = p.job_id, p.provider
    if w.state.job(job_id) is not None:
        raise TxRejected("Duplicate", "an escrow with this job id exists")
    if provider == tx.sender:
        raise TxRejected("NotJobParty", "a client cannot hire itself")
    if p.agent == provider:
        raise TxRejected("NotJobParty", "the provider cannot be the client's agent")
    if not w.get(provider).provider:
        raise TxRejected("NotProvider", "the named provider is not registered", provider=provider)
    if p.deadline <= height:
        raise TxRejected("JobState", "deadline must be after the current height")
    w.jobs.append(Job(job_id, tx.sender, provider, p.amount, p.deadline, height, p.agent))
    w.provider_jobs(provider, +1)
    w.events.append(("escrowed", job_id, p.amount))


def _job_receipt(w: _Writes, tx: Transaction, p: JobReceipt, height: int, rules: ChainRules) -> None:
    job = _job(w.state, p)
    if tx.sender != job.provider:
        raise TxRejected("NotJobParty", "only the job's provider posts its receipt")
    in_grace = job.status is JobStatus.CANCELLED and height <= job.cancelled_at + rules.dispute_blocks
    if not (job.status is JobStatus.OPEN or in_grace) or height > job.deadline:
        raise TxRejected("JobState", f"job is {job.status}, deadline {job.deadline}")
    if p.cost > job.amount:
        raise TxRejected("AmountOutOfRange", "cost exceeds the escrowed amount")
    w.jobs.append(
        job.with_(
            status=JobStatus.RECEIPTED,
            result_hash=p.result_hash,
            cost=p.cost,
            metrics=dict(p.metrics),
            receipt_tx=tx.hash,
            receipt_height=height,
        )
    )


def _job_settle(w: _Writes, tx: Transaction, p: JobSettle, height: int, rules: ChainRules) -> None:
    job = _job(w.state, p)
    if tx.sender not in (job.client, job.agent, job.provider):
        raise TxRejected("NotJobParty", "only the client (or its agent) or the provider settles")
    if job.status is not JobStatus.RECEIPTED:
        raise TxRejected("JobState", f"job is {job.status}, not receipted")
    if p.ack:
        digest = ack_digest(rules.chain_id, job.job_id, job.result_hash)
        _check_signer(digest, p.ack, (job.client, job.agent), "the delivery ack of the receipted result")
    acked = bool(p.ack)
    window_end = job.receipt_height + rules.dispute_blocks
    if tx.sender == job.provider and height <= window_end and not acked:
        raise TxRejected("JobState", f"the client may dispute until height {window_end}", until=window_end)
    _release(w, job, JobStatus.SETTLED)


def challengeable(job: Job, rules: ChainRules, height: int) -> bool:
    """Whether a ``job_dispute`` in the block at ``height`` may challenge ``job`` once settled:
    never disputed, and within ``challenge_blocks`` of its receipt (the chain's rule; a
    provider holds such a job, and answers audits of it, for as long)."""
    return (
        job.status is JobStatus.SETTLED
        and not job.challenger
        and job.receipt_height > 0
        and height <= last_challenge_height(job, rules)
    )


def last_challenge_height(job: Job, rules: ChainRules) -> int:
    """The last block in which a settled ``job`` may be challenged (:func:`challengeable`)."""
    return job.receipt_height + rules.challenge_blocks


def _job_dispute(w: _Writes, tx: Transaction, p: JobDispute, height: int, rules: ChainRules) -> None:
    # Anyone may challenge a receipt (an audit), at the risk of its bond: the client and
    # its agent post one too. The arbiters read the evidence from this transaction. A job
    # already settled may still be challenged, once, within challenge_blocks of its receipt.
    job = _job(w.state, p)
    open_dispute = job.status is JobStatus.RECEIPTED and height <= job.receipt_height + rules.dispute_blocks
    if not (open_dispute or challengeable(job, rules, height)):
        raise TxRejected(
            "JobState",
            f"job is {job.status}; disputes close {rules.dispute_blocks} blocks after its receipt, challenges of a"
            f" settled job {rules.challenge_blocks}",
        )
    if tx.sender == job.provider:
        raise TxRejected("NotJobParty", "a provider does not dispute its own receipt")
    me = w.get(tx.sender)
    if me.balance < rules.dispute_bond:
        raise TxRejected(
            "InsufficientFunds",
            f"a dispute locks a bond of {format_aitbc(rules.dispute_bond)} AITBC",
            balance=me.balance,
            needed=rules.dispute_bond,
        )
    w.put(tx.sender, me.with_(balance=me.balance - rules.dispute_bond))
    status = JobStatus.DISPUTED if open_dispute else JobStatus.CHALLENGED
    w.jobs.append(job.with_(status=status, challenger=tx.sender, bond=rules.dispute_bond, dispute_tx=tx.hash))
    w.events.append(("disputed", job.job_id, tx.sender))


def _job_resolve(w: _Writes, tx: Transaction, p: JobResolve, height: int, rules: ChainRules) -> None:
    """For the provider: it is paid its receipt and takes the challenger's bond. For the
    client: the escrow goes back, the provider loses a share of its stake (at least the
    job's amount) and its registration, and the challenger gets its bond back and a
    share of what was slashed (the rest is burned). A challenged job (settled, then
    disputed) was paid already: for the provider it stays settled and takes the bond; for
    the client the slash refunds the client what it paid, first, then rewards the
    challenger."""
    job = _job(w.state, p)
    if tx.sender not in rules.arbiters:
        raise TxRejected("NotArbiter", "only a genesis arbiter resolves disputes")
    if job.status not in (JobStatus.DISPUTED, JobStatus.CHALLENGED):
        raise TxRejected("JobState", f"job is {job.status}, not disputed")
    if any(arbiter == tx.sender for arbiter, _ in job.votes):
        raise TxRejected("Duplicate", "this arbiter has already ruled on this dispute")
    if rules.arbiter_quorum > 1:  # rulings counted (a chain of one arbiter's ruling records none)
        job = job.with_(votes=(*job.votes, (tx.sender, p.verdict.value)))
        if sum(verdict == p.verdict.value for _, verdict in job.votes) < rules.arbiter_quorum:
            w.jobs.append(job)  # a ruling short of the quorum: recorded, the dispute stays open
            return
    challenger = Address(job.challenger)
    paid = job.status is JobStatus.CHALLENGED
    if p.verdict is Verdict.PROVIDER:
        if paid:
            w.jobs.append(job.with_(status=JobStatus.SETTLED))
        else:
            _release(w, job, JobStatus.SETTLED)
        w.credit(job.provider, job.bond)
        w.events.append(("ruled", job.job_id, "provider"))
        return
    if paid:
        w.jobs.append(job.with_(status=JobStatus.REFUNDED))
    else:
        _release(w, job, JobStatus.REFUNDED)
    offender = w.get(job.provider)
    share = (offender.stake + offender.unbonding_total) * rules.slash_bps // 10_000
    slashed = w.slash(job.provider, max(share, job.cost if paid else job.amount))
    refund = min(job.cost, slashed) if paid else 0  # what the client paid, back from the slash
    reward = (slashed - refund) * rules.challenger_bps // 10_000
    w.burn -= refund + reward
    w.credit(job.client, refund)
    w.credit(challenger, job.bond + reward)
    w.put(job.provider, w.get(job.provider).with_(provider=False))
    w.count(job.provider, lost=1, slashed=slashed)
    w.events.append(("ruled", job.job_id, "client"))


def _job_refund(w: _Writes, tx: Transaction, p: JobRefund, height: int, rules: ChainRules) -> None:
    # Anyone may post it (the sender pays the fee); it only ever returns the escrow
    # to its client, and only once the deadline has passed without a receipt. So the
    # client's peer can refund a failed job by itself (specs/transactions.md).
    job = _job(w.state, p)
    expired = job.status is JobStatus.OPEN and height > job.deadline
    if not (expired or _grace_over(job, height, rules)):
        why = f"job is {job.status}; refund only after deadline {job.deadline} or a cancel's grace"
        raise TxRejected("JobState", why)
    if expired:
        w.count(job.provider, failed=1)  # it held the escrow to its deadline without a receipt
    _release(w, job, JobStatus.REFUNDED)


def _grace_over(job: Job, height: int, rules: ChainRules) -> bool:
    """A cancelled escrow whose provider had its ``dispute_blocks`` to post a receipt."""
    return job.status is JobStatus.CANCELLED and height > job.cancelled_at + rules.dispute_blocks


def _client_side(job: Job, tx: Transaction, what: str) -> None:
    if tx.sender not in (job.client, job.agent):
        raise TxRejected("NotJobParty", f"only the client (or its agent) {what}")


def _check_signer(digest: bytes, signature: bytes, signers: tuple[Address, ...], what: str) -> None:
    """A signature carried in a payload (an ack, a release) must recover to one of ``signers``."""
    try:
        signer = recover_address(digest, signature)
    except CryptoError as e:
        raise TxRejected("BadSignature", f"{what} does not verify: {e}") from e
    if signer not in signers:
        raise TxRejected("NotJobParty", f"{what} is not signed by {' or '.join(signers)}")


def _check_release(job: Job, release: bytes, rules: ChainRules) -> None:
    """``release`` must be the current provider's release of the current attempt."""
    digest = release_digest(rules.chain_id, job.job_id, job.attempts)
    _check_signer(digest, release, (job.provider,), "the release of this attempt")


def _job_cancel(w: _Writes, tx: Transaction, p: JobCancel, height: int, rules: ChainRules) -> None:
    job = _job(w.state, p)
    _client_side(job, tx, "cancels")
    if job.status is not JobStatus.OPEN:
        raise TxRejected("JobState", f"job is {job.status}; only an open escrow is cancelled")
    if p.release:
        _check_release(job, p.release, rules)
        _release(w, job, JobStatus.REFUNDED)
    else:
        w.jobs.append(job.with_(status=JobStatus.CANCELLED, cancelled_at=height))
        w.events.append(("cancelled", job.job_id, height + rules.dispute_blocks))


def _job_reassign(w: _Writes, tx: Transaction, p: JobReassign, height: int, rules: ChainRules) -> None:
    job = _job(w.state, p)
    _client_side(job, tx, "reassigns")
    if job.status is JobStatus.OPEN:
        if not p.release:
            raise TxRejected("JobState", "an open escrow is reassigned with its provider's release, or cancelled first")
        _check_release(job, p.release, rules)
    elif not _grace_over(job, height, rules) or p.release:
        why = f"job is {job.status}; reassign an open one (with a release) or a cancelled one after its grace"
        raise TxRejected("JobState", why)
    if job.attempts >= MAX_ATTEMPTS:
        raise TxRejected("JobState", f"this escrow has named {job.attempts} providers, the most it may")
    if p.provider in (job.client, job.agent, job.provider):
        raise TxRejected("NotJobParty", "the next provider is neither the client, its agent nor the current one")
    if not w.get(p.provider).provider:
        raise TxRejected("NotProvider", "the named provider is not registered", provider=p.provider)
    if p.deadline <= height:
        raise TxRejected("JobState", "deadline must be after the current height")
    w.provider_jobs(job.provider, -1)
    w.provider_jobs(p.provider, +1)
    w.count(job.provider, failed=1)  # the escrow moves on from a provider that failed it
    w.jobs.append(
        job.with_(
            provider=p.provider, deadline=p.deadline, opened_at=height, status=JobStatus.OPEN, cancelled_at=0,
            attempts=job.attempts + 1,
        )
    )  # fmt: skip
    w.events.append(("reassigned", job.job_id, p.provider))


def _slash(w: _Writes, tx: Transaction, p: Slash, height: int, rules: ChainRules) -> None:
    try:
        offender, offence = check_evidence(rules.chain_id, list(p.evidence))
    except ValidationError as e:
        raise TxRejected("BadEvidence", str(e)) from e
    if w.state.has_evidence(offence):
        raise TxRejected("Duplicate", "this offence was already slashed")
    victim = w.get(offender)
    if not victim.stake + victim.unbonding_total:
        raise TxRejected("BadEvidence", "the offender has no stake to slash")
    w.slash(offender, victim.stake + victim.unbonding_total)
    w.evidence = offence


_HANDLERS: dict[type[Payload], Callable[[_Writes, Transaction, Any, int, ChainRules], None]] = {
    Stake: _stake,
    Unstake: _unstake,
    Withdraw: _withdraw,
    ProviderRegister: _provider_register,
    ProviderUnregister: _provider_unregister,
    JobOpen: _job_open,
    JobReceipt: _job_receipt,
    JobSettle: _job_settle,
    JobDispute: _job_dispute,
    JobResolve: _job_resolve,
    JobRefund: _job_refund,
    JobCancel: _job_cancel,
    JobReassign: _job_reassign,
    Slash: _slash,
}
"""Every payload but Transfer (the bulk of every block, applied inline in apply_tx); a
handler takes the payload of its own class."""


def _release(w: _Writes, job: Job, status: JobStatus) -> None:
    """Release a job's escrow, which happens exactly once: settled pays the provider its
    cost and returns the rest; refunded returns everything to the client."""
    to_provider = job.cost if status is JobStatus.SETTLED else 0
    if status is JobStatus.SETTLED:
        w.count(job.provider, settled=1)
    w.credit(job.provider, to_provider)
    w.credit(job.client, job.amount - to_provider)
    w.provider_jobs(job.provider, -1)
    w.jobs.append(job.with_(status=status))
    w.events.append(("released", job.job_id, to_provider, job.amount - to_provider))


def apply_txs(
    base: StateView,
    txs: Sequence[Transaction],
    rules: ChainRules,
    *,
    height: int,
    verified: Container[Hash32] = frozenset(),
) -> tuple[Overlay, list[Receipt]]:
    """Apply a block's transactions in order; the first refusal rejects them all.

    Signatures of transactions whose hash is in ``verified`` are not checked again.
    """
    state = Overlay(base)
    receipts: list[Receipt] = []
    for index, tx in enumerate(txs):
        check_stateless(tx, rules, verified=tx.hash in verified)
        try:
            receipts.append(apply_tx(state, tx, height=height, rules=rules, index=index))
        except TxRejected as e:
            e.details["index"] = index
            raise
    return state, receipts


def genesis_state(genesis: Genesis) -> Overlay:
    """The allocations, stakes and provider registrations of the genesis.

    Raises:
        TxRejected: an amount out of range, or a provider without ``min_provider_stake``.
    """
    state = Overlay(EmptyState())
    w = _Writes(state)
    for address, amount in genesis.alloc:
        if not 0 <= amount <= MAX_AMOUNT:
            raise TxRejected("AmountOutOfRange", f"genesis allocation for {address}")
        w.credit(address, amount)
    for address, amount in genesis.stakes:
        acct = w.get(address)
        w.put(address, acct.with_(stake=_add(acct.stake, amount, "stake")))
    for address in genesis.providers:
        acct = w.get(address)
        if acct.stake < genesis.min_provider_stake:
            raise TxRejected("InsufficientStake", f"genesis provider {address} lacks min_provider_stake")
        w.put(address, acct.with_(provider=True))
    for address, account in w.accounts.items():
        state.set_account(address, account)
    state.set_burned(0)
    return state
