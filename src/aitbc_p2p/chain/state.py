"""State records, the read-only :class:`StateView` seam and a copy-on-write overlay.

State is accounts (balance, nonce), jobs (escrow records) and the burned-fee counter.
Every record is a leaf ``(key, canonical value)``; the header commits to the Merkle
root of all leaves in key order (specs/transactions.md, "State commitment").
"""

from __future__ import annotations

import enum
import heapq
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from aitbc_p2p.chain.merkle import merkle_root
from aitbc_p2p.codec import decode, encode
from aitbc_p2p.types import Address, Hash32

ACCOUNT_PREFIX = b"a"
JOB_PREFIX = b"j"
BURNED_KEY = b"m:burned"


class JobStatus(enum.StrEnum):
    OPEN = "open"
    RECEIPTED = "receipted"
    SETTLED = "settled"
    REFUNDED = "refunded"


@dataclass(frozen=True, slots=True)
class Account:
    balance: int = 0
    nonce: int = 0

    def encode(self) -> bytes:
        return encode([self.balance, self.nonce])

    @classmethod
    def decode(cls, data: bytes) -> Account:
        balance, nonce = decode(data)
        return cls(balance, nonce)


@dataclass(frozen=True, slots=True)
class Job:
    """An escrow record. ``amount`` is locked from ``client`` until settle or refund."""

    job_id: Hash32
    client: Address
    provider: Address
    amount: int
    deadline: int
    opened_at: int
    status: JobStatus = JobStatus.OPEN
    result_hash: bytes = b""
    cost: int = 0
    metrics: dict[str, int] = field(default_factory=dict)
    receipt_tx: bytes = b""

    def to_wire(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "client": self.client,
            "provider": self.provider,
            "amount": self.amount,
            "deadline": self.deadline,
            "opened_at": self.opened_at,
            "status": str(self.status),
            "result_hash": self.result_hash,
            "cost": self.cost,
            "metrics": dict(self.metrics),
            "receipt_tx": self.receipt_tx,
        }

    def encode(self) -> bytes:
        return encode(self.to_wire())

    @classmethod
    def decode(cls, data: bytes) -> Job:
        w = decode(data)
        return cls(
            job_id=Hash32(w["job_id"]),
            client=Address(w["client"]),
            provider=Address(w["provider"]),
            amount=w["amount"],
            deadline=w["deadline"],
            opened_at=w["opened_at"],
            status=JobStatus(w["status"]),
            result_hash=w["result_hash"],
            cost=w["cost"],
            metrics=dict(w["metrics"]),
            receipt_tx=w["receipt_tx"],
        )

    def with_(self, **changes: Any) -> Job:
        return replace(self, **changes)


def account_key(address: Address) -> bytes:
    return ACCOUNT_PREFIX + address.encode()


def job_key(job_id: bytes) -> bytes:
    return JOB_PREFIX + job_id


class StateView(Protocol):
    """Read-only access to committed state. Implementations must not block for long."""

    def account(self, address: Address) -> Account: ...

    def job(self, job_id: Hash32) -> Job | None: ...

    def burned(self) -> int: ...

    def leaves(self) -> Iterator[tuple[bytes, bytes]]:
        """Every state record as (key, value), in ascending key order."""
        ...


@dataclass(slots=True)
class StateDiff:
    """The records a block (or the genesis) changes."""

    accounts: dict[Address, Account] = field(default_factory=dict)
    jobs: dict[Hash32, Job] = field(default_factory=dict)
    burned: int | None = None

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        for addr, acct in self.accounts.items():
            yield account_key(addr), acct.encode()
        for job_id, job in self.jobs.items():
            yield job_key(job_id), job.encode()
        if self.burned is not None:
            yield BURNED_KEY, encode(self.burned)


class Overlay:
    """A :class:`StateView` over a base view that collects changes in a :class:`StateDiff`."""

    def __init__(self, base: StateView) -> None:
        self.base = base
        self.diff = StateDiff()

    def account(self, address: Address) -> Account:
        found = self.diff.accounts.get(address)
        return found if found is not None else self.base.account(address)

    def job(self, job_id: Hash32) -> Job | None:
        found = self.diff.jobs.get(job_id)
        return found if found is not None else self.base.job(job_id)

    def burned(self) -> int:
        return self.diff.burned if self.diff.burned is not None else self.base.burned()

    def set_account(self, address: Address, account: Account) -> None:
        self.diff.accounts[address] = account

    def set_job(self, job: Job) -> None:
        self.diff.jobs[job.job_id] = job

    def set_burned(self, value: int) -> None:
        self.diff.burned = value

    def leaves(self) -> Iterator[tuple[bytes, bytes]]:
        changed = dict(self.diff.items())
        base = ((k, v) for k, v in self.base.leaves() if k not in changed)
        yield from heapq.merge(base, sorted(changed.items()))


class EmptyState:
    """The state before genesis."""

    def account(self, address: Address) -> Account:
        return Account()

    def job(self, job_id: Hash32) -> Job | None:
        return None

    def burned(self) -> int:
        return 0

    def leaves(self) -> Iterator[tuple[bytes, bytes]]:
        return iter(())


def state_root(leaves: Iterable[tuple[bytes, bytes]]) -> Hash32:
    """Merkle root over ``encode([key, value])`` of each leaf, in key order."""
    return merkle_root([encode([k, v]) for k, v in leaves])
