"""State records, the read-only :class:`StateView` seam and a copy-on-write overlay.

State is accounts (balance, nonce, stake, unbonding, provider flag), jobs (escrow
records), slashed-offence markers and the burned counter. Every record is a leaf
``(key, canonical value)``; the header commits to them through the bucketed tree of
:mod:`aitbc_p2p.chain.commitment` (specs/transactions.md, "State commitment").
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple, Protocol

from aitbc_p2p.chain.commitment import StateTree, bucket_of, bucket_root
from aitbc_p2p.codec import decode, decode_record, encode, head
from aitbc_p2p.types import Address, Hash32, JobId

ACCOUNT_PREFIX = b"a"
JOB_PREFIX = b"j"
EVIDENCE_PREFIX = b"e"
REPUTATION_PREFIX = b"r"
BURNED_KEY = b"m:burned"
MAX_UNBONDING = 16
"""Unbonding entries an account may hold at once."""


class JobStatus(enum.StrEnum):
    OPEN = "open"
    RECEIPTED = "receipted"
    DISPUTED = "disputed"
    SETTLED = "settled"
    REFUNDED = "refunded"
    CANCELLED = "cancelled"
    """The client cancelled without the provider's release: the provider may still post
    its receipt for ``dispute_blocks``; then the escrow is refundable or reassignable."""
    CHALLENGED = "challenged"
    """Settled (the provider was paid), then disputed within ``challenge_blocks`` of its
    receipt: the challenger's bond is locked until the arbiters rule."""

    @property
    def escrowed(self) -> bool:
        """Whether the job's amount is still locked."""
        return self in (JobStatus.OPEN, JobStatus.RECEIPTED, JobStatus.DISPUTED, JobStatus.CANCELLED)


class Account(NamedTuple):
    """An account record. Immutable; a NamedTuple rather than a frozen dataclass because
    the transition makes two or three per transaction, and a frozen dataclass's
    constructor costs three times as much (1.1 us against 0.3 us here)."""

    balance: int = 0
    nonce: int = 0
    stake: int = 0
    """Bonded: slashable, counts for provider registration and validator weight."""
    unbonding: tuple[tuple[int, int], ...] = ()
    """``(amount, release_height)`` entries, still slashable until withdrawn."""
    provider: bool = False
    active_jobs: int = 0
    """Jobs naming this account as provider whose escrow is not yet released."""

    @property
    def unbonding_total(self) -> int:
        return sum(amount for amount, _ in self.unbonding)

    def encode(self) -> bytes:
        """``canonical([balance, nonce, stake, [[amount, release], ...], provider,
        active_jobs])``, assembled: every field is a bounded int or a bool set by the
        transition, and an account is encoded for every block that changes it."""
        unbonding = head(4, len(self.unbonding)) + b"".join(
            b"\x82" + head(0, amount) + head(0, release) for amount, release in self.unbonding
        )
        return (
            b"\x86" + head(0, self.balance) + head(0, self.nonce) + head(0, self.stake) + unbonding
            + (b"\xf5" if self.provider else b"\xf4") + head(0, self.active_jobs)
        )  # fmt: skip

    @classmethod
    def decode(cls, data: bytes) -> Account:
        # A state record this node wrote (several reads per transaction): no strict walk.
        balance, nonce, stake, unbonding, provider, active_jobs = decode_record(data)
        return cls(balance, nonce, stake, tuple((a, h) for a, h in unbonding), provider, active_jobs)

    def with_(self, **changes: Any) -> Account:
        return self._replace(**changes)


@dataclass(frozen=True, slots=True)
class Job:
    """An escrow record. ``amount`` is locked from ``client`` until settle or refund."""

    job_id: JobId
    client: Address
    provider: Address
    amount: int
    deadline: int
    opened_at: int
    agent: Address
    """May act for the client on this escrow (settle, dispute); see JobOpen."""
    status: JobStatus = JobStatus.OPEN
    result_hash: bytes = b""
    cost: int = 0
    metrics: dict[str, int] = field(default_factory=dict)
    receipt_tx: bytes = b""
    receipt_height: int = 0
    cancelled_at: int = 0
    """Height of the client's cancel (status ``cancelled``), else 0."""
    attempts: int = 1
    """Providers this escrow has named, the current one included (at most MAX_ATTEMPTS)."""
    challenger: str = ""
    """Who disputed its receipt (empty: never disputed)."""
    bond: int = 0
    """What the challenger locked; escrowed while the job is disputed."""
    dispute_tx: bytes = b""
    """The dispute transaction's hash: where the arbiters read its evidence."""
    votes: tuple[tuple[str, str], ...] = ()
    """The arbiters' rulings so far, ``(arbiter, verdict)`` in order (a genesis with an
    ``arbiter_quorum`` above 1 resolves once that many agree)."""

    def to_wire(self) -> dict[str, Any]:
        wire = {
            "job_id": self.job_id,
            "client": self.client,
            "provider": self.provider,
            "amount": self.amount,
            "deadline": self.deadline,
            "opened_at": self.opened_at,
            "agent": self.agent,
            "status": str(self.status),
            "result_hash": self.result_hash,
            "cost": self.cost,
            "metrics": dict(self.metrics),
            "receipt_tx": self.receipt_tx,
            "receipt_height": self.receipt_height,
            "cancelled_at": self.cancelled_at,
            "attempts": self.attempts,
        }
        if self.challenger:  # only disputed jobs carry these (earlier records stay as they were)
            wire.update(challenger=self.challenger, bond=self.bond, dispute_tx=self.dispute_tx)
        if self.votes:  # only where a quorum of arbiters is counted
            wire["votes"] = [[arbiter, verdict] for arbiter, verdict in self.votes]
        return wire

    @property
    def locked(self) -> int:
        """What this record holds out of balances: the escrow, and a pending dispute's bond."""
        held = self.amount if self.status.escrowed else 0
        return held + (self.bond if self.status in (JobStatus.DISPUTED, JobStatus.CHALLENGED) else 0)

    def encode(self) -> bytes:
        return encode(self.to_wire(), check=False)  # built from a checked transaction payload

    @classmethod
    def decode(cls, data: bytes) -> Job:
        w = decode(data)
        return cls(
            job_id=JobId(Hash32(w["job_id"])),
            client=Address(w["client"]),
            provider=Address(w["provider"]),
            amount=w["amount"],
            deadline=w["deadline"],
            opened_at=w["opened_at"],
            agent=Address(w["agent"]),
            status=JobStatus(w["status"]),
            result_hash=w["result_hash"],
            cost=w["cost"],
            metrics=dict(w["metrics"]),
            receipt_tx=w["receipt_tx"],
            receipt_height=w["receipt_height"],
            cancelled_at=w["cancelled_at"],
            attempts=w["attempts"],
            challenger=w.get("challenger", ""),
            bond=w.get("bond", 0),
            dispute_tx=w.get("dispute_tx", b""),
            votes=tuple((arbiter, verdict) for arbiter, verdict in w.get("votes", [])),
        )

    def with_(self, **changes: Any) -> Job:
        return replace(self, **changes)


def account_key(address: Address) -> bytes:
    return ACCOUNT_PREFIX + address.encode()


def job_key(job_id: bytes) -> bytes:
    return JOB_PREFIX + job_id


def evidence_key(offence: bytes) -> bytes:
    return EVIDENCE_PREFIX + offence


def reputation_key(address: Address) -> bytes:
    return REPUTATION_PREFIX + address.encode()


class Reputation(NamedTuple):
    """A provider's record on chain, kept by the transition (specs/transactions.md, "State"):
    what every peer weighs its bids by (market/messages.py, ``rank_bids``)."""

    settled: int = 0
    """Escrows released to it as paid (a settle, or a ruling for it)."""
    failed: int = 0
    """Escrows taken from it unreceipted: moved to the next provider, or refunded past their deadline."""
    lost: int = 0
    """Disputes ruled against it."""
    slashed: int = 0
    """Stake those rulings took."""

    def encode(self) -> bytes:
        return encode(list(self), check=False)

    @classmethod
    def decode(cls, data: bytes) -> Reputation:
        settled, failed, lost, slashed = decode_record(data)
        return cls(settled, failed, lost, slashed)

    def score_milli(self) -> int:
        """Trust in thousandths: 1000 for a provider with nothing against it, falling with
        each failure (counted twice) and each lost dispute (ten times) against its paid jobs."""
        paid = self.settled + 1
        return max(1, 1000 * paid // (paid + 2 * self.failed + 10 * self.lost))


def read_reputation(view: StateView, address: Address) -> Reputation:
    raw = view.get(reputation_key(address))
    return Reputation() if raw is None else Reputation.decode(raw)


class StateView(Protocol):
    """Read-only access to committed state. Implementations must not block for long."""

    def get(self, key: bytes) -> bytes | None:
        """The raw record at a state key."""
        ...

    def bucket_records(self, buckets: Iterable[int]) -> dict[int, list[tuple[bytes, bytes]]]:
        """The records of each commitment bucket, in ascending key order (read together:
        a block re-hashes about as many buckets as it touches records)."""
        ...

    def leaves(self) -> Iterator[tuple[bytes, bytes]]:
        """Every state record as (key, value), in no particular order."""
        ...

    def tree(self) -> StateTree:
        """The commitment tree of this state."""
        ...

    def account(self, address: Address) -> Account: ...

    def job(self, job_id: bytes) -> Job | None: ...

    def burned(self) -> int: ...


def read_account(view: StateView, address: Address) -> Account:
    raw = view.get(account_key(address))
    return Account() if raw is None else Account.decode(raw)


def read_job(view: StateView, job_id: bytes) -> Job | None:
    raw = view.get(job_key(job_id))
    return None if raw is None else Job.decode(raw)


def read_burned(view: StateView) -> int:
    raw = view.get(BURNED_KEY)
    return 0 if raw is None else int(decode_record(raw))  # a state record: see Account.decode


class Overlay:
    """A :class:`StateView` over a base view that collects changes as raw records.

    Typed readers (``account``, ``job``) decode once and cache per overlay.
    """

    def __init__(self, base: StateView) -> None:
        self.base = base
        self._raw: dict[bytes, bytes] = {}
        # Accounts written since the last flush, encoded only when raw records are read:
        # a block touching an account many times encodes it once.
        self._pending: dict[Address, Account] = {}
        self._accounts: dict[Address, Account] = {}
        self._jobs: dict[bytes, Job | None] = {}
        self._burned: int | None = None
        self._burned_set = False  # encoded into the raw changes only when they are read
        self.bucket_contents: dict[int, list[tuple[bytes, bytes]]] = {}
        """Set by :meth:`tree`: every bucket it re-hashed, with all its records here."""

    # typed access: every write goes through a setter that updates both the typed
    # cache and the raw changes, so an address not cached here is the base's.
    def account(self, address: Address) -> Account:
        found = self._accounts.get(address)
        if found is None:
            found = self._accounts[address] = self.base.account(address)
        return found

    def job(self, job_id: bytes) -> Job | None:
        if job_id not in self._jobs:
            self._jobs[job_id] = self.base.job(job_id)
        return self._jobs[job_id]

    def burned(self) -> int:
        if self._burned is None:
            self._burned = self.base.burned()
        return self._burned

    def has_evidence(self, offence: bytes) -> bool:
        return self.get(evidence_key(offence)) is not None

    @property
    def accounts(self) -> Mapping[Address, Account]:
        """Every account this overlay read or wrote, at its value here: a superset of the
        accounts among :attr:`changes` (every account write goes through ``set_account``)."""
        return self._accounts

    @property
    def changes(self) -> dict[bytes, bytes]:
        """Every changed record, raw: ``state key -> canonical value``."""
        if self._pending:
            for address, account in self._pending.items():
                self._raw[account_key(address)] = account.encode()
            self._pending.clear()
        if self._burned_set:
            self._raw[BURNED_KEY] = encode(self._burned, check=False)
            self._burned_set = False
        return self._raw

    def set_account(self, address: Address, account: Account) -> None:
        self._accounts[address] = account
        self._pending[address] = account

    def set_job(self, job: Job) -> None:
        self._jobs[job.job_id] = job
        self._raw[job_key(job.job_id)] = job.encode()

    def set_burned(self, value: int) -> None:
        self._burned = value
        self._burned_set = True

    def set_evidence(self, offence: bytes, height: int) -> None:
        self._raw[evidence_key(offence)] = encode(height)

    def set_reputation(self, address: Address, reputation: Reputation) -> None:
        self._raw[reputation_key(address)] = reputation.encode()

    def absorb(self, other: Overlay) -> None:
        """Take ``other``'s changes (``other`` must sit on this overlay)."""
        for key in other._raw:
            if key.startswith(ACCOUNT_PREFIX):
                self._pending.pop(Address(key[len(ACCOUNT_PREFIX) :].decode()), None)
        if BURNED_KEY in other._raw:
            self._burned_set = False
        self._raw.update(other._raw)
        self._pending.update(other._pending)
        self._accounts.update(other._accounts)
        self._jobs.update(other._jobs)
        if other._burned_set or BURNED_KEY in other._raw:
            self._burned = other._burned
            self._burned_set = self._burned_set or other._burned_set

    # StateView
    def get(self, key: bytes) -> bytes | None:
        found = self.changes.get(key)
        return found if found is not None else self.base.get(key)

    def bucket_records(self, buckets: Iterable[int]) -> dict[int, list[tuple[bytes, bytes]]]:
        records = self.base.bucket_records(buckets)
        mine = self._changes_by_bucket()
        for bucket, items in records.items():
            changed = mine.get(bucket)
            if changed:
                records[bucket] = sorted({**dict(items), **changed}.items())
        return records

    def _changes_by_bucket(self) -> dict[int, dict[bytes, bytes]]:
        by_bucket: dict[int, dict[bytes, bytes]] = {}
        for k, v in self.changes.items():
            by_bucket.setdefault(bucket_of(k), {})[k] = v
        return by_bucket

    def leaves(self) -> Iterator[tuple[bytes, bytes]]:
        yield from ((k, v) for k, v in self.base.leaves() if k not in self.changes)
        yield from self.changes.items()

    def tree(self) -> StateTree:
        """The base tree with every bucket this overlay touched re-hashed."""
        by_bucket = self._changes_by_bucket()
        base = self.base.bucket_records(sorted(by_bucket))
        contents = {}
        for bucket, changed in by_bucket.items():
            records = base[bucket]
            if records:
                changed = {**dict(records), **changed}
            contents[bucket] = sorted(changed.items())
        self.bucket_contents = contents
        return self.base.tree().updated({bucket: bucket_root(records) for bucket, records in contents.items()})


class EmptyState:
    """The state before genesis."""

    def get(self, key: bytes) -> bytes | None:
        return None

    def bucket_records(self, buckets: Iterable[int]) -> dict[int, list[tuple[bytes, bytes]]]:
        return {bucket: [] for bucket in buckets}

    def leaves(self) -> Iterator[tuple[bytes, bytes]]:
        return iter(())

    def tree(self) -> StateTree:
        return StateTree.empty()

    def account(self, address: Address) -> Account:
        return Account()

    def job(self, job_id: bytes) -> Job | None:
        return None

    def burned(self) -> int:
        return 0


@dataclass(frozen=True, slots=True)
class Supply:
    """Where every unit is. Invariant: ``total`` (balances + escrowed + staked + unbonding
    + burned) equals ``genesis_total``: nothing is minted, nothing lost."""

    balances: int
    escrowed: int
    staked: int
    unbonding: int
    burned: int
    genesis_total: int

    @property
    def total(self) -> int:
        return self.balances + self.escrowed + self.staked + self.unbonding + self.burned


def supply_of(view: StateView, genesis_total: int) -> Supply:
    """Sum the state: see :class:`Supply`."""
    balances = escrowed = staked = unbonding = 0
    for key, value in view.leaves():
        if key.startswith(ACCOUNT_PREFIX):
            acct = Account.decode(value)
            balances += acct.balance
            staked += acct.stake
            unbonding += acct.unbonding_total
        elif key.startswith(JOB_PREFIX):
            escrowed += Job.decode(value).locked
    return Supply(balances, escrowed, staked, unbonding, view.burned(), genesis_total)
