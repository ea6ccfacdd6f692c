"""What each kind of transaction says: one frozen dataclass per :class:`TxKind`.

A transaction's ``payload`` is one of these. ``read`` is the strict parser of the wire
map (exactly the kind's keys, each through :mod:`aitbc_p2p.codec.fields`); ``to_wire``
gives the map back, key for key, so the canonical bytes and the hash do not change
(tests/vectors/wire.json holds one transaction of every kind). Rules: specs/transactions.md.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Any, ClassVar, Self

from aitbc_p2p.codec import fields
from aitbc_p2p.crypto.keys import Domain, PrivateKey, signing_digest, validate_address
from aitbc_p2p.exceptions import CodecError, CryptoError, TxRejected
from aitbc_p2p.types import Address, Hash32, JobId

MAX_METRICS = 16


class TxKind(enum.StrEnum):
    TRANSFER = "transfer"
    STAKE = "stake"
    UNSTAKE = "unstake"
    WITHDRAW = "withdraw"
    PROVIDER_REGISTER = "provider_register"
    PROVIDER_UNREGISTER = "provider_unregister"
    JOB_OPEN = "job_open"
    JOB_RECEIPT = "job_receipt"
    JOB_SETTLE = "job_settle"
    JOB_DISPUTE = "job_dispute"
    JOB_RESOLVE = "job_resolve"
    JOB_REFUND = "job_refund"
    JOB_CANCEL = "job_cancel"
    JOB_REASSIGN = "job_reassign"
    SLASH = "slash"


class Verdict(enum.StrEnum):
    """An arbiter's ruling on a disputed job."""

    PROVIDER = "provider"
    CLIENT = "client"


def malformed(message: str, **details: Any) -> TxRejected:
    return TxRejected("Malformed", message, **details)


def read_address(obj: Mapping[str, Any], name: str) -> Address:
    try:
        return validate_address(fields.text(obj, name, max_len=128))
    except CryptoError as e:
        raise CodecError(f"field {name!r}: {e}") from e


def _hash(obj: Mapping[str, Any], name: str) -> Hash32:
    return Hash32(fields.hash32(obj, name))


def _job_id(obj: Mapping[str, Any]) -> JobId:
    return JobId(Hash32(fields.hash32(obj, "job_id")))


def exact_keys(obj: Mapping[str, Any], keys: AbstractSet[str], what: str) -> None:
    if obj.keys() != keys:
        raise malformed(f"{what} fields must be exactly {sorted(keys)}", got=sorted(obj))


# Each payload: KIND, KEYS (its wire map's keys), ``read`` (strict, from the wire map) and
# ``to_wire`` (the same map back). ``read`` raises CodecError (a field's type or size) or
# FieldOutOfRange (a number's bounds); Transaction.from_wire names both.


@dataclass(frozen=True, slots=True)
class Transfer:
    KIND: ClassVar[TxKind] = TxKind.TRANSFER
    KEYS: ClassVar[frozenset[str]] = frozenset({"to", "amount"})
    to: Address
    amount: int

    @classmethod
    def read(cls, p: Mapping[str, Any]) -> Transfer:
        return cls(read_address(p, "to"), fields.uint(p, "amount", low=1))

    def to_wire(self) -> dict[str, Any]:
        return {"to": self.to, "amount": self.amount}

    def __reduce__(self) -> tuple[Any, ...]:  # positional: cheaper across the verify workers' pipes
        return (Transfer, (self.to, self.amount))


@dataclass(frozen=True, slots=True)
class _Amount:
    """A payload that is one amount of at least 1 unit."""

    KIND: ClassVar[TxKind]
    KEYS: ClassVar[frozenset[str]] = frozenset({"amount"})
    amount: int

    @classmethod
    def read(cls, p: Mapping[str, Any]) -> Self:
        return cls(fields.uint(p, "amount", low=1))

    def to_wire(self) -> dict[str, Any]:
        return {"amount": self.amount}


@dataclass(frozen=True, slots=True)
class Stake(_Amount):
    """Bond ``amount`` from the balance (validators' weight, providers' collateral)."""

    KIND: ClassVar[TxKind] = TxKind.STAKE


@dataclass(frozen=True, slots=True)
class Unstake(_Amount):
    """Start unbonding ``amount``; it is withdrawable ``unbonding_blocks`` later."""

    KIND: ClassVar[TxKind] = TxKind.UNSTAKE


@dataclass(frozen=True, slots=True)
class _NoFields:
    """A payload that says nothing but its kind (an empty map)."""

    KIND: ClassVar[TxKind]
    KEYS: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def read(cls, p: Mapping[str, Any]) -> Self:
        return cls()

    def to_wire(self) -> dict[str, Any]:
        return {}


@dataclass(frozen=True, slots=True)
class Withdraw(_NoFields):
    KIND: ClassVar[TxKind] = TxKind.WITHDRAW


@dataclass(frozen=True, slots=True)
class ProviderRegister(_NoFields):
    KIND: ClassVar[TxKind] = TxKind.PROVIDER_REGISTER


@dataclass(frozen=True, slots=True)
class ProviderUnregister(_NoFields):
    KIND: ClassVar[TxKind] = TxKind.PROVIDER_UNREGISTER


@dataclass(frozen=True, slots=True)
class JobOpen:
    """Escrow ``amount`` for job ``job_id`` (its offer's id) with ``provider`` until ``deadline``.

    ``agent``: the address that may act for the client on this escrow (ack a delivered
    result, settle, dispute, cancel, reassign): in practice the client's own peer, which
    tracks the job while the wallet that signs this is away. The client's own address
    names no one else. Money only ever goes to the client or the provider.
    """

    KIND: ClassVar[TxKind] = TxKind.JOB_OPEN
    KEYS: ClassVar[frozenset[str]] = frozenset({"job_id", "provider", "amount", "deadline", "agent"})
    job_id: JobId
    provider: Address
    amount: int
    deadline: int
    agent: Address

    @classmethod
    def read(cls, p: Mapping[str, Any]) -> JobOpen:
        return cls(
            _job_id(p),
            read_address(p, "provider"),
            fields.uint(p, "amount", low=1),
            fields.uint(p, "deadline", low=1),
            read_address(p, "agent"),
        )

    def to_wire(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "provider": self.provider,
            "amount": self.amount,
            "deadline": self.deadline,
            "agent": self.agent,
        }


@dataclass(frozen=True, slots=True)
class JobReceipt:
    """The provider's claim: the result's hash, what it costs, how it ran."""

    KIND: ClassVar[TxKind] = TxKind.JOB_RECEIPT
    KEYS: ClassVar[frozenset[str]] = frozenset({"job_id", "result_hash", "cost", "metrics"})
    job_id: JobId
    result_hash: Hash32
    cost: int
    metrics: Mapping[str, int]

    @classmethod
    def read(cls, p: Mapping[str, Any]) -> JobReceipt:
        job_id, result_hash, cost = _job_id(p), _hash(p, "result_hash"), fields.uint(p, "cost")
        try:
            metrics = fields.uint_map(p, "metrics", max_items=MAX_METRICS, max_key_len=32)
        except CodecError as e:
            raise malformed(f"metrics must map at most {MAX_METRICS} short names to uint64") from e
        return cls(job_id, result_hash, cost, metrics)

    def to_wire(self) -> dict[str, Any]:
        metrics = dict(self.metrics)
        return {"job_id": self.job_id, "result_hash": self.result_hash, "cost": self.cost, "metrics": metrics}


MAX_ACK_BYTES = 128
"""A bound on what is read as an ack signature (a valid one is 65 bytes)."""


def ack_digest(chain_id: str, job_id: bytes, result_hash: bytes) -> Hash32:
    """What a delivery ack signs (domain ``aitbc/ack/1``): the client, or its agent, holds
    the result of ``job_id`` whose hash is ``result_hash``."""
    return signing_digest(Domain.ACK, chain_id, {"job_id": job_id, "result_hash": result_hash})


def sign_ack(key: PrivateKey, chain_id: str, job_id: bytes, result_hash: bytes) -> bytes:
    """A delivery ack by ``key`` (the client or its agent); see :func:`ack_digest`."""
    return key.sign_digest(ack_digest(chain_id, job_id, result_hash))


@dataclass(frozen=True, slots=True)
class JobSettle:
    """Pay the provider its receipted cost and return the rest to the client.

    ``ack``: the client's (or its agent's) delivery ack of the receipted result, which lets
    the provider settle at once instead of after the dispute window; empty for none.
    """

    KIND: ClassVar[TxKind] = TxKind.JOB_SETTLE
    KEYS: ClassVar[frozenset[str]] = frozenset({"job_id", "ack"})
    job_id: JobId
    ack: bytes = b""

    @classmethod
    def read(cls, p: Mapping[str, Any]) -> JobSettle:
        return cls(_job_id(p), fields.blob(p, "ack", max_len=MAX_ACK_BYTES))

    def to_wire(self) -> dict[str, Any]:
        return {"job_id": self.job_id, "ack": self.ack}


@dataclass(frozen=True, slots=True)
class _JobOnly:
    """A payload that names a job's escrow and nothing else."""

    KIND: ClassVar[TxKind]
    KEYS: ClassVar[frozenset[str]] = frozenset({"job_id"})
    job_id: JobId

    @classmethod
    def read(cls, p: Mapping[str, Any]) -> Self:
        return cls(_job_id(p))

    def to_wire(self) -> dict[str, Any]:
        return {"job_id": self.job_id}


MAX_EVIDENCE = 64 * 1024
"""A bound on a dispute's evidence (specs/market.md, "Evidence")."""


@dataclass(frozen=True, slots=True)
class JobDispute:
    """Challenge a receipt before its escrow is released: anyone may, locking the
    chain's ``dispute_bond`` until an arbiter rules. ``evidence``: what the challenger
    found (canonical CBOR, read by the arbiters' checker; the chain only bounds it)."""

    KIND: ClassVar[TxKind] = TxKind.JOB_DISPUTE
    KEYS: ClassVar[frozenset[str]] = frozenset({"job_id", "evidence"})
    job_id: JobId
    evidence: bytes = b""

    @classmethod
    def read(cls, p: Mapping[str, Any]) -> JobDispute:
        return cls(_job_id(p), fields.blob(p, "evidence", max_len=MAX_EVIDENCE))

    def to_wire(self) -> dict[str, Any]:
        return {"job_id": self.job_id, "evidence": self.evidence}


@dataclass(frozen=True, slots=True)
class JobResolve:
    KIND: ClassVar[TxKind] = TxKind.JOB_RESOLVE
    KEYS: ClassVar[frozenset[str]] = frozenset({"job_id", "verdict"})
    job_id: JobId
    verdict: Verdict

    @classmethod
    def read(cls, p: Mapping[str, Any]) -> JobResolve:
        job_id = _job_id(p)
        try:
            verdict = Verdict(fields.text(p, "verdict", max_len=16))
        except ValueError as e:
            raise malformed("verdict must be 'provider' or 'client'") from e
        return cls(job_id, verdict)

    def to_wire(self) -> dict[str, Any]:
        return {"job_id": self.job_id, "verdict": str(self.verdict)}


@dataclass(frozen=True, slots=True)
class JobRefund(_JobOnly):
    KIND: ClassVar[TxKind] = TxKind.JOB_REFUND


MAX_ATTEMPTS = 3
"""Providers one escrow may name in turn (the first and two reassignments)."""


def release_digest(chain_id: str, job_id: bytes, attempt: int) -> Hash32:
    """What a provider's release signs (domain ``aitbc/release/1``): it gives up the
    ``attempt``-th assignment of ``job_id`` and will not claim it."""
    return signing_digest(Domain.RELEASE, chain_id, {"job_id": job_id, "attempt": attempt})


def sign_release(key: PrivateKey, chain_id: str, job_id: bytes, attempt: int) -> bytes:
    return key.sign_digest(release_digest(chain_id, job_id, attempt))


@dataclass(frozen=True, slots=True)
class JobCancel:
    """The client (or its agent) takes the job back from its provider before a receipt.

    ``release``: the provider's release of this attempt, which refunds the client at once;
    empty for none, which leaves the provider ``dispute_blocks`` to post a receipt for work
    already done before the escrow can be refunded or reassigned.
    """

    KIND: ClassVar[TxKind] = TxKind.JOB_CANCEL
    KEYS: ClassVar[frozenset[str]] = frozenset({"job_id", "release"})
    job_id: JobId
    release: bytes = b""

    @classmethod
    def read(cls, p: Mapping[str, Any]) -> JobCancel:
        return cls(_job_id(p), fields.blob(p, "release", max_len=MAX_ACK_BYTES))

    def to_wire(self) -> dict[str, Any]:
        return {"job_id": self.job_id, "release": self.release}


@dataclass(frozen=True, slots=True)
class JobReassign:
    """Fail over: the same escrow names ``provider`` (the next bidder) until ``deadline``.

    Allowed with the current provider's ``release``, or once a cancelled escrow's grace
    (``dispute_blocks``) has passed without a receipt; at most MAX_ATTEMPTS providers.
    """

    KIND: ClassVar[TxKind] = TxKind.JOB_REASSIGN
    KEYS: ClassVar[frozenset[str]] = frozenset({"job_id", "provider", "deadline", "release"})
    job_id: JobId
    provider: Address
    deadline: int
    release: bytes = b""

    @classmethod
    def read(cls, p: Mapping[str, Any]) -> JobReassign:
        return cls(
            _job_id(p),
            read_address(p, "provider"),
            fields.uint(p, "deadline", low=1),
            fields.blob(p, "release", max_len=MAX_ACK_BYTES),
        )

    def to_wire(self) -> dict[str, Any]:
        return {"job_id": self.job_id, "provider": self.provider, "deadline": self.deadline, "release": self.release}


@dataclass(frozen=True, slots=True)
class Slash:
    """Two conflicting signed votes of one validator (checked by the transition)."""

    KIND: ClassVar[TxKind] = TxKind.SLASH
    KEYS: ClassVar[frozenset[str]] = frozenset({"evidence"})
    evidence: tuple[dict[str, Any], dict[str, Any]]

    @classmethod
    def read(cls, p: Mapping[str, Any]) -> Slash:
        evidence = fields.listing(p, "evidence", max_items=2)
        if len(evidence) != 2 or not all(isinstance(v, dict) for v in evidence):
            raise malformed("evidence must be two signed votes")
        return cls((evidence[0], evidence[1]))

    def to_wire(self) -> dict[str, Any]:
        return {"evidence": list(self.evidence)}


Payload = (
    Transfer | Stake | Unstake | Withdraw | ProviderRegister | ProviderUnregister | JobOpen | JobReceipt | JobSettle
    | JobDispute | JobResolve | JobRefund | JobCancel | JobReassign | Slash
)  # fmt: skip
EscrowPayload = JobOpen | JobReceipt | JobSettle | JobDispute | JobResolve | JobRefund | JobCancel | JobReassign
"""The kinds that name a job's escrow by ``job_id``."""

PAYLOADS: dict[TxKind, type[Payload]] = {
    cls.KIND: cls
    for cls in (
        Transfer, Stake, Unstake, Withdraw, ProviderRegister, ProviderUnregister, JobOpen, JobReceipt, JobSettle,
        JobDispute, JobResolve, JobRefund, JobCancel, JobReassign, Slash,
    )
}  # fmt: skip
"""Every kind's payload class."""


def read_payload(kind: TxKind, obj: Mapping[str, Any]) -> Payload:
    """The payload of a ``kind`` transaction from its wire map: exactly the kind's keys,
    each strictly read. Raises TxRejected('Malformed'), CodecError or FieldOutOfRange."""
    cls = PAYLOADS[kind]
    exact_keys(obj, cls.KEYS, f"{kind} payload")
    return cls.read(obj)


MOVES_AMOUNT = frozenset({TxKind.TRANSFER, TxKind.STAKE, TxKind.JOB_OPEN})
"""Kinds whose ``amount`` leaves the sender's balance."""
