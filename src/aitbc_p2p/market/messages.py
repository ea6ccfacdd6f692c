"""Signed market messages gossiped on the job and provider topics (specs/market.md).

Every message is ``{"body": {...}, "sig": <65 bytes>}`` signed under its own domain by
the address the body names, so a bid can never pass for an offer or a capability record.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar, Self

from aitbc_p2p.codec import decode, encode, fields
from aitbc_p2p.crypto import Domain, PrivateKey, sha256, verify
from aitbc_p2p.crypto.keys import validate_address
from aitbc_p2p.exceptions import CodecError, CryptoError, MarketError
from aitbc_p2p.types import MAX_AMOUNT, Address, Hash32, JobId

MAX_MESSAGE_SIZE = 64 * 1024


class HexId:
    """A field type: a 32-byte id spelled as 64 lowercase hex digits (a job's id in a bid)."""


_READERS: dict[type, Callable[[Mapping[str, Any], str], Any]] = {
    HexId: fields.hex_hash32,
    int: partial(fields.uint, high=MAX_AMOUNT),
    bool: fields.boolean,
    str: fields.text,
    bytes: partial(fields.blob, max_len=fields.MAX_TEXT),
    list: partial(fields.listing, max_items=fields.MAX_TEXT),
    dict: fields.mapping,
}
"""The strict reader of each field type a market message body holds."""

DIGEST_PREFIX = "sha256:"
MAX_RECORD_MODELS = 64
"""Model content hashes a capability record lists at most."""


def is_model_digest(name: object) -> bool:
    """Whether a model name is a content hash: ``sha256:`` and 64 lowercase hex digits."""
    if not isinstance(name, str) or not name.startswith(DIGEST_PREFIX):
        return False
    rest = name[len(DIGEST_PREFIX) :]
    return len(rest) == 64 and all(c in "0123456789abcdef" for c in rest)


@dataclass(frozen=True, slots=True)
class Signed:
    """Base of signed market messages: subclasses name their domain, fields and signer."""

    body: Mapping[str, Any]
    sig: bytes

    DOMAIN: ClassVar[Domain]
    SIGNER: ClassVar[str]
    FIELDS: ClassVar[dict[str, type]]

    @classmethod
    def create(cls, key: PrivateKey, chain_id: str, **fields: Any) -> Self:
        body = {**fields, cls.SIGNER: key.address, "chain_id": chain_id}
        msg = cls(body, key.sign(cls.DOMAIN, chain_id, body))
        msg.check()
        return msg

    def check(self) -> None:
        """Shape, bounds and signature. Raises MarketError."""
        expected = {**self.FIELDS, self.SIGNER: str, "chain_id": str}
        if set(self.body) != set(expected):
            raise MarketError(f"{type(self).__name__} fields must be {sorted(expected)}")
        try:
            for name, kind in expected.items():
                _READERS[kind](self.body, name)
        except CodecError as e:
            raise MarketError(f"{type(self).__name__}: {e}") from e
        try:
            validate_address(self.body[self.SIGNER])
            verify(self.DOMAIN, self.body["chain_id"], dict(self.body), self.sig, Address(self.body[self.SIGNER]))
        except CryptoError as e:
            raise MarketError(f"{type(self).__name__}: {e}") from e

    @property
    def signer(self) -> Address:
        return Address(self.body[self.SIGNER])

    @property
    def chain_id(self) -> str:
        return str(self.body["chain_id"])

    def to_wire(self) -> dict[str, Any]:
        return {"body": dict(self.body), "sig": self.sig}

    def encode(self) -> bytes:
        return encode(self.to_wire())

    @property
    def id(self) -> Hash32:
        return sha256(self.encode())

    @classmethod
    def from_wire(cls, obj: Any) -> Self:
        if not isinstance(obj, dict) or set(obj) != {"body", "sig"}:
            raise MarketError("a signed message is a map of body and sig")
        if not isinstance(obj["body"], dict) or not isinstance(obj["sig"], bytes):
            raise MarketError("body must be a map, sig bytes")
        msg = cls(obj["body"], obj["sig"])
        msg.check()
        return msg

    @classmethod
    def decode(cls, data: bytes) -> Self:
        try:
            return cls.from_wire(decode(data, max_size=MAX_MESSAGE_SIZE))
        except CodecError as e:
            raise MarketError(f"malformed {cls.__name__}: {e}") from e


class CapabilityRecord(Signed):
    """What a provider offers; carries the seed's MinerCapabilities fields."""

    DOMAIN = Domain.PROVIDER
    SIGNER = "provider"
    FIELDS = {
        "miner_id": str,
        "peer_id": str,
        "mode": str,  # "gpu" | "cpu"
        "gpu": bool,
        "device": str,
        "concurrency": int,
        "workloads": list,
        "limits": dict,  # vram_mb, ram_mb, max_runtime_s
        "gflops": int,  # measured fp32 matmul throughput, GFLOP/s (integers on the wire)
        "gflops_by_dtype": dict,  # measured GFLOP/s per dtype the device supports
        "versions": dict,  # torch, cuda, driver
        "price_per_s": int,  # base units per second of compute
        "load": dict,  # live: slots, free_slots, queued, max_queue, wait_ms (specs/market.md, "Load")
        "models": list,  # the content hashes of the models it runs (llm_gen, sd_infer), sorted
        "timestamp_ms": int,
    }

    def check(self) -> None:
        super().check()
        Load.read(self.body["load"])  # MarketError: a load map of other keys, or not uints
        models = self.body["models"]
        if len(models) > MAX_RECORD_MODELS or not all(is_model_digest(m) for m in models):
            raise MarketError(f"models must be at most {MAX_RECORD_MODELS} content hashes (sha256:<64 hex>)")

    def holds(self, model: str) -> bool:
        """Whether it lists the model of this content hash."""
        return model in self.body["models"]

    def load(self) -> Load:
        """Its live load (checked when the record was read)."""
        return Load.read(self.body["load"])


class JobOffer(Signed):
    """A client's request for compute. ``params_hash`` binds the payload sent later."""

    DOMAIN = Domain.OFFER
    SIGNER = "client"
    FIELDS = {
        "workload": str,
        "params_hash": bytes,
        "max_price": int,
        "max_runtime_s": int,
        "verification": str,
        "timestamp_ms": int,
        "nonce": int,  # the client's random number: two identical jobs are two offers
    }

    @classmethod
    def create(cls, key: PrivateKey, chain_id: str, **fields: Any) -> Self:
        """Sign an offer; ``nonce`` defaults to a random 64-bit number, so that identical
        offers made at once (same workload, params and timestamp) get distinct job ids."""
        fields.setdefault("nonce", secrets.randbits(63))
        return super().create(key, chain_id, **fields)

    @property
    def job_id(self) -> JobId:
        """The job's id: this offer's hash, also its escrow's id on chain."""
        return JobId(self.id)


class Bid(Signed):
    """A provider's quote for an offer: the most it will charge and how to reach it."""

    DOMAIN = Domain.BID
    SIGNER = "provider"
    FIELDS = {"job_id": HexId, "peer_id": str, "price": int, "price_per_s": int, "gflops": int, "wait_ms": int}

    @classmethod
    def for_offer(cls, key: PrivateKey, offer: JobOffer, **fields: Any) -> Bid:
        """Sign a bid on ``offer`` (its chain, its job id)."""
        return cls.create(key, offer.chain_id, job_id=offer.job_id.hex(), **fields)

    @property
    def job_id(self) -> JobId:
        """The job this bid is for (checked to be 64 hex digits when the bid was read)."""
        return JobId(Hash32(bytes.fromhex(self.body["job_id"])))


@dataclass(frozen=True, slots=True)
class Load:
    """A provider's live load, as its capability record carries it."""

    slots: int
    free_slots: int
    queued: int
    """Accepted jobs waiting for a slot."""
    max_queue: int
    """The most it lets wait; with that many waiting it does not bid."""
    wait_ms: int
    """Its estimate of how long a job accepted now waits for a slot."""

    KEYS: ClassVar[tuple[str, ...]] = ("slots", "free_slots", "queued", "max_queue", "wait_ms")

    @property
    def full(self) -> bool:
        return self.free_slots == 0 and self.queued >= self.max_queue

    def to_wire(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in self.KEYS}

    @classmethod
    def read(cls, obj: Any) -> Load:
        """Raises MarketError for a map of other keys, or values that are not uints below 2^32."""
        try:
            w = fields.record(obj, cls.KEYS, "a provider's load")
            return cls(*(fields.uint(w, k, high=1 << 32) for k in cls.KEYS))
        except CodecError as e:
            raise MarketError(f"CapabilityRecord: {e}") from e


def decode_job_message(data: bytes, *, max_size: int = MAX_MESSAGE_SIZE) -> JobOffer | Bid:
    """A job-topic message: ``{"offer": signed offer}`` or ``{"bid": signed bid}``
    (specs/topics.md). Its signature is not checked here. Raises MarketError."""
    try:
        envelope = decode(data, max_size=max_size)
    except CodecError as e:
        raise MarketError(f"malformed job message: {e}") from e
    if not isinstance(envelope, dict) or len(envelope) != 1:
        raise MarketError("a job message is a map with one of offer, bid")
    ((kind, wire),) = envelope.items()
    if kind == "offer":
        return JobOffer.from_wire(wire)
    if kind == "bid":
        return Bid.from_wire(wire)
    raise MarketError(f"unknown job message {kind!r}")


def rank_bids(offer: JobOffer, bids: list[Bid], trust: Mapping[str, int] | None = None) -> list[Bid]:
    """The acceptable bids, best first (specs/market.md, "Choosing a bid"): the cheapest
    quote weighed by the provider's record on chain (``trust``: address -> score in
    thousandths, chain/state.py ``Reputation.score_milli``; 1000 where absent); at equal
    weighed price the shortest quoted wait for a slot, then the highest throughput; and
    among bids equal in all that, the provider whose hash with the job id is lowest (so
    that equal providers share a burst of jobs instead of all getting it).

    Bids for another job or chain, above the offer's max price, or quoting a wait for a
    slot longer than the offer's runtime cap are left out.
    """
    job_hex = offer.job_id.hex()
    scores = trust or {}
    ok = [
        b
        for b in bids
        if b.body["job_id"] == job_hex
        and b.chain_id == offer.chain_id
        and b.body["price"] <= offer.body["max_price"]
        and b.body["wait_ms"] <= offer.body["max_runtime_s"] * 1000
    ]

    def weighed(b: Bid) -> int:
        score = max(1, min(1000, scores.get(b.signer, 1000)))
        return int(-(-b.body["price"] * 1000 // score))

    return sorted(
        ok,
        key=lambda b: (weighed(b), b.body["wait_ms"], -b.body["gflops"], sha256(f"{job_hex}:{b.signer}".encode())),
    )


def select_bid(offer: JobOffer, bids: list[Bid], trust: Mapping[str, int] | None = None) -> Bid | None:
    """The best acceptable bid (see :func:`rank_bids`), or None."""
    ranked = rank_bids(offer, bids, trust)
    return ranked[0] if ranked else None


def escrow_amount(offer: JobOffer, bids: list[Bid], attempts: int, trust: Mapping[str, int] | None = None) -> int:
    """What the client escrows for a job: the dearest of the ``attempts`` best bids, so that
    a failover can move the escrow to any of them (a reassignment cannot add funds). Each
    provider is still paid only its own cost, and the client's agent disputes a receipt
    that claims more than its bid. Zero when no bid is acceptable."""
    return max((b.body["price"] for b in rank_bids(offer, bids, trust)[:attempts]), default=0)


def quote(price_per_s: int, max_runtime_s: int) -> int:
    """A provider's bid price: its rate over the offer's whole runtime cap."""
    return price_per_s * max_runtime_s


def job_cost(price_per_s: int, compute_ms: int, escrow: int) -> int:
    """What the provider charges for ``compute_ms`` of work: metered, at least 1 unit, capped by escrow."""
    metered = -(-price_per_s * compute_ms // 1000)
    return min(escrow, max(1, metered))
