"""Transactions, blocks and genesis: frozen values with canonical wire forms.

Wire shapes are normative in specs/transactions.md and specs/wire.md. ``from_wire``
checks shape, types and bounds only; signatures and chain rules are checked by
:mod:`aitbc_p2p.chain.validation` and :mod:`aitbc_p2p.chain.transition`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aitbc_p2p.chain.merkle import merkle_root
from aitbc_p2p.chain.payloads import (
    MAX_METRICS,
    MOVES_AMOUNT,
    JobOpen,
    Payload,
    Transfer,
    TxKind,
    Verdict,
    exact_keys,
    malformed,
    read_address,
    read_payload,
)
from aitbc_p2p.codec import decode, encode, fields, head
from aitbc_p2p.codec.fields import FieldOutOfRange
from aitbc_p2p.crypto import Domain, PrivateKey, recover_address, sha256, signing_digest
from aitbc_p2p.crypto.keys import is_key_of, recover_public_key, signing_digest_encoded
from aitbc_p2p.exceptions import BadSignature, CodecError, TxRejected, ValidationError
from aitbc_p2p.types import MAX_CHAIN_ID, ZERO_HASH, Address, Hash32

MAX_TXS_PER_BLOCK = 5000
MAX_ROUND = 2**32 - 1
DEFAULT_UNBONDING_BLOCKS = 100
DEFAULT_DISPUTE_BLOCKS = 10
DEFAULT_MIN_PROVIDER_STAKE = 100 * 10**9
DEFAULT_DISPUTE_BOND = 10**9
"""1 AITBC: what a dispute locks from its sender until the ruling (lost if it was false)."""
DEFAULT_SLASH_BPS = 1000
"""A ruling against a provider burns 10% of its stake (at least the job's amount)."""
DEFAULT_CHALLENGER_BPS = 5000
DEFAULT_ARBITER_QUORUM = 1
DEFAULT_CHALLENGE_BLOCKS = 0
"""Blocks after a receipt in which a settled job may still be disputed (0: not at all)."""
"""Half of what is slashed goes to the challenger that proved the fault; the rest is burned."""


MAX_SIGNATURE_BYTES = 128
"""A bound on what is read as a signature (a valid one is 65 bytes; others are refused
when verified, as BadSignature)."""

_TX_KEYS = frozenset({"body", "sig"})
_BODY_KEYS = frozenset({"chain_id", "kind", "from", "nonce", "fee", "payload"})
_malformed, _address, _exact_keys = malformed, read_address, exact_keys
__all__ = ["MAX_METRICS", "MOVES_AMOUNT", "TxKind", "Verdict"]  # re-exported: their home is chain/payloads.py


def _hash32(obj: Mapping[str, Any], name: str) -> Hash32:
    return Hash32(fields.hash32(obj, name))


@dataclass(frozen=True, slots=True)
class Transaction:
    """A signed transaction. ``sender`` is proven by recovering the signer's address."""

    chain_id: str
    kind: TxKind
    sender: Address
    nonce: int
    fee: int
    payload: Payload
    """What the transaction says: the dataclass of its kind (chain/payloads.py)."""
    signature: bytes = b""
    hash: Hash32 = field(default=ZERO_HASH, compare=False)
    raw: bytes = field(default=b"", compare=False, repr=False)
    """The canonical encoding (set by ``from_wire``), so it is never encoded twice."""
    body_raw: bytes = field(default=b"", compare=False, repr=False)
    """The canonical encoding of ``body()``: a slice of ``raw``, what the signature covers."""

    def body(self) -> dict[str, Any]:
        return {
            "chain_id": self.chain_id,
            "kind": str(self.kind),
            "from": self.sender,
            "nonce": self.nonce,
            "fee": self.fee,
            "payload": self.payload.to_wire(),
        }

    def to_wire(self) -> dict[str, Any]:
        return {"body": self.body(), "sig": self.signature}

    def encode(self) -> bytes:
        return self.raw or encode(self.to_wire())

    @classmethod
    def create(
        cls,
        key: PrivateKey,
        *,
        chain_id: str,
        nonce: int,
        fee: int,
        payload: Payload | Mapping[str, Any],
        kind: TxKind | str | None = None,
    ) -> Transaction:
        """Build and sign a transaction from ``key``'s address. Raises TxRejected on bad fields.

        ``payload``: a payload dataclass (its kind is the transaction's), or its wire map
        with ``kind`` named.
        """
        if isinstance(payload, Mapping):
            if kind is None:
                raise TypeError("a payload given as a map needs its kind")
            wire = dict(payload)
        else:
            if kind is not None and str(kind) != payload.KIND:
                raise TypeError(f"a {type(payload).__name__} payload is a {payload.KIND} transaction, not {kind}")
            kind, wire = payload.KIND, payload.to_wire()
        unsigned = {
            "chain_id": chain_id,
            "kind": str(kind),
            "from": key.address,
            "nonce": nonce,
            "fee": fee,
            "payload": wire,
        }
        cls.from_wire({"body": unsigned, "sig": b""})  # bounds and shape before signing
        sig = key.sign(Domain.TX, chain_id, unsigned)
        return cls.from_wire({"body": unsigned, "sig": sig})

    @classmethod
    def from_wire(cls, obj: Any, *, raw: bytes | None = None) -> Transaction:
        """Parse the wire form. Checks shape and bounds, not the signature.

        ``raw``: the canonical bytes ``obj`` was decoded from, if any (saves re-encoding).
        """
        if not isinstance(obj, dict):
            raise _malformed("transaction must be a map")
        try:
            _exact_keys(obj, _TX_KEYS, "transaction")
            body = fields.mapping(obj, "body")
            sig = fields.blob(obj, "sig", max_len=MAX_SIGNATURE_BYTES)
            _exact_keys(body, _BODY_KEYS, "body")
            chain_id = fields.text(body, "chain_id", max_len=MAX_CHAIN_ID)
            try:
                kind = TxKind(fields.text(body, "kind", max_len=32))
            except ValueError as e:
                raise _malformed(f"unknown transaction kind {body['kind']!r}") from e
            payload = read_payload(kind, fields.mapping(body, "payload"))
            tx = cls(
                chain_id=chain_id,
                kind=kind,
                sender=_address(body, "from"),
                nonce=fields.uint(body, "nonce"),
                fee=fields.uint(body, "fee"),
                payload=payload,
                signature=sig,
            )
        except FieldOutOfRange as e:
            raise TxRejected("AmountOutOfRange", str(e), field=e.field) from e
        except CodecError as e:  # the field readers' refusals: a wrong type, a missing key
            raise _malformed(str(e)) from e
        data = raw if raw is not None else encode(obj)
        object.__setattr__(tx, "raw", data)
        object.__setattr__(tx, "hash", sha256(data))
        # Canonical map order puts "sig" (3 bytes) before "body" (4), so the body's bytes
        # are the tail of ``raw`` after a fixed prefix.
        prefix = b"\xa2\x63sig" + head(2, len(sig)) + sig + b"\x64body"
        if data.startswith(prefix):
            object.__setattr__(tx, "body_raw", data[len(prefix) :])
        return tx

    @classmethod
    def decode(cls, data: bytes) -> Transaction:
        try:
            return cls.from_wire(decode(data), raw=bytes(data))
        except CodecError as e:
            raise _malformed(str(e)) from e

    def __reduce__(self) -> tuple[Any, ...]:
        # Positional fields, no per-field state dict: a verifying worker process sends
        # decoded transactions back, and this unpickles in a third of the default's time.
        return (
            type(self),
            (self.chain_id, self.kind, self.sender, self.nonce, self.fee, self.payload, self.signature, self.hash,
             self.raw, self.body_raw),
        )  # fmt: skip

    def signing_digest(self) -> Hash32:
        """The digest that ``signature`` covers."""
        if self.body_raw:
            return signing_digest_encoded(Domain.TX, self.chain_id, self.body_raw)
        return signing_digest(Domain.TX, self.chain_id, self.body(), checked=True)

    def verify_signature(self) -> None:
        """Raise TxRejected('BadSignature') unless ``sender`` signed this body."""
        check_tx_signature(self.signing_digest(), self.signature, self.sender)

    def parties(self) -> tuple[Address, ...]:
        """Addresses whose history this transaction belongs to (besides job parties)."""
        p = self.payload
        if isinstance(p, Transfer):
            return (self.sender, p.to)
        if isinstance(p, JobOpen):
            return (self.sender, p.provider)
        return (self.sender,)


def check_tx_signature(digest: bytes, signature: bytes, sender: Address) -> None:
    """Raise TxRejected('BadSignature') unless ``sender`` made ``signature`` over ``digest``."""
    try:
        key = recover_public_key(digest, signature)
    except BadSignature as e:
        raise TxRejected("BadSignature", str(e)) from e
    if not is_key_of(key, sender):  # no address encoded: see is_key_of
        raise TxRejected("BadSignature", "signature is not by the sender", sender=sender)


@dataclass(frozen=True, slots=True)
class BlockHeader:
    chain_id: str
    height: int
    parent: Hash32
    timestamp_ms: int
    proposer: Address
    tx_root: Hash32
    state_root: Hash32
    receipts_root: Hash32
    round: int = 0
    """The consensus round (or backup rank) in which this block was proposed."""
    signature: bytes = b""
    _hash: bytes = field(default=b"", init=False, compare=False, repr=False)
    """The block id once computed (the fields are frozen): a node asks for its head's id
    in every status exchange. Not an argument, so a header built from another's fields
    never inherits its id."""

    def body(self) -> dict[str, Any]:
        return {
            "chain_id": self.chain_id,
            "height": self.height,
            "parent": self.parent,
            "timestamp_ms": self.timestamp_ms,
            "proposer": self.proposer,
            "round": self.round,
            "tx_root": self.tx_root,
            "state_root": self.state_root,
            "receipts_root": self.receipts_root,
        }

    @property
    def hash(self) -> Hash32:
        """The block id: SHA-256 of the canonical unsigned header."""
        if not self._hash:
            object.__setattr__(self, "_hash", sha256(encode(self.body())))
        return Hash32(self._hash)

    def signed(self, key: PrivateKey) -> BlockHeader:
        sig = key.sign(Domain.BLOCK, self.chain_id, self.body())
        return BlockHeader(**{**self._fields(), "signature": sig})

    def _fields(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__ if name != "_hash"}

    def verify_signature(self) -> None:
        try:
            signer = recover_address(signing_digest(Domain.BLOCK, self.chain_id, self.body()), self.signature)
        except BadSignature as e:
            raise ValidationError(f"block {self.height}: {e}") from e
        if signer != self.proposer:
            raise ValidationError(f"block {self.height} is not signed by its proposer")

    @classmethod
    def from_wire(cls, body: Any, sig: Any) -> BlockHeader:
        try:
            if not isinstance(body, dict) or not isinstance(sig, bytes):
                raise _malformed("header must be a map and sig bytes")
            keys = {
                "chain_id", "height", "parent", "timestamp_ms", "proposer", "round",
                "tx_root", "state_root", "receipts_root",
            }  # fmt: skip
            _exact_keys(body, keys, "header")
            proposer = fields.text(body, "proposer", max_len=128)
            return cls(
                chain_id=fields.text(body, "chain_id", max_len=MAX_CHAIN_ID),
                height=fields.uint(body, "height"),
                parent=_hash32(body, "parent"),
                timestamp_ms=fields.uint(body, "timestamp_ms"),
                proposer=Address(proposer) if proposer == "" else _address(body, "proposer"),
                round=fields.uint(body, "round", high=MAX_ROUND),
                tx_root=_hash32(body, "tx_root"),
                state_root=_hash32(body, "state_root"),
                receipts_root=_hash32(body, "receipts_root"),
                signature=sig,
            )
        except TxRejected as e:
            raise ValidationError(f"malformed header: {e.message}") from e
        except CodecError as e:
            raise ValidationError(f"malformed header: {e}") from e


@dataclass(frozen=True, slots=True)
class Block:
    header: BlockHeader
    txs: tuple[Transaction, ...] = ()
    _raw: bytes = field(default=b"", compare=False, repr=False)

    @property
    def hash(self) -> Hash32:
        return self.header.hash

    @property
    def height(self) -> int:
        return self.header.height

    def to_wire(self) -> dict[str, Any]:
        return {
            "header": self.header.body(),
            "sig": self.header.signature,
            "txs": [tx.to_wire() for tx in self.txs],
        }

    def encode(self) -> bytes:
        """Canonical CBOR, assembled around the transactions' own encodings and cached.

        Canonical map order is by encoded key: "sig", "txs" (3 bytes), then "header".
        """
        if not self._raw:
            parts = [
                head(5, 3),
                encode("sig"),
                encode(self.header.signature),
                encode("txs"),
                head(4, len(self.txs)),
                *(tx.encode() for tx in self.txs),
                encode("header"),
                encode(self.header.body()),
            ]
            object.__setattr__(self, "_raw", b"".join(parts))
        return self._raw

    @classmethod
    def from_wire(cls, obj: Any) -> Block:
        if not isinstance(obj, dict) or set(obj) != {"header", "sig", "txs"}:
            raise ValidationError("block must be a map of header, sig, txs")
        txs = obj["txs"]
        if not isinstance(txs, list) or len(txs) > MAX_TXS_PER_BLOCK:
            raise ValidationError(f"block txs must be a list of at most {MAX_TXS_PER_BLOCK}")
        try:
            # The block was type-checked as a whole when decoded; hash each tx without re-walking it.
            parsed = tuple(Transaction.from_wire(t, raw=encode(t, check=False)) for t in txs)
        except TxRejected as e:
            raise ValidationError(f"block holds a malformed transaction: {e}") from e
        return cls(BlockHeader.from_wire(obj["header"], obj["sig"]), parsed)

    @classmethod
    def decode(cls, data: bytes, *, max_size: int = 8 << 20) -> Block:
        try:
            # Each transaction is encoded canonically for its hash anyway, so the block's
            # canonical form is checked by assembling it from those parts, not by encoding
            # the whole block a second time.
            block = cls.from_wire(decode(data, max_size=max_size, canonical=False))
        except CodecError as e:
            raise ValidationError(f"malformed block: {e}") from e
        if block.encode() != data:
            raise ValidationError("malformed block: not canonical CBOR (or trailing bytes)")
        return block


def tx_root(txs: Sequence[Transaction]) -> Hash32:
    return merkle_root([tx.hash for tx in txs])


@dataclass(frozen=True, slots=True)
class Genesis:
    """The chain's first state and rules. Its hash is in every handshake (specs/wire.md)."""

    chain_id: str
    timestamp_ms: int
    alloc: tuple[tuple[Address, int], ...]
    consensus: Mapping[str, Any]
    min_fee: int = 1000
    stakes: tuple[tuple[Address, int], ...] = ()
    """Initial bonded stake per address (validators of ``pos``, providers)."""
    providers: tuple[Address, ...] = ()
    """Addresses registered as providers at genesis (each needs ``min_provider_stake``)."""
    arbiters: tuple[Address, ...] = ()
    """Addresses that may resolve disputed jobs."""
    unbonding_blocks: int = DEFAULT_UNBONDING_BLOCKS
    dispute_blocks: int = DEFAULT_DISPUTE_BLOCKS
    min_provider_stake: int = DEFAULT_MIN_PROVIDER_STAKE
    dispute_bond: int = DEFAULT_DISPUTE_BOND
    slash_bps: int = DEFAULT_SLASH_BPS
    challenger_bps: int = DEFAULT_CHALLENGER_BPS
    arbiter_quorum: int = DEFAULT_ARBITER_QUORUM
    """Arbiters whose rulings must agree before a dispute is resolved (1: the first ruling)."""
    challenge_blocks: int = DEFAULT_CHALLENGE_BLOCKS
    """Blocks after its receipt in which a settled job may still be challenged (an audit
    by anyone, after the provider was paid): a ruling against it slashes the provider and
    refunds the client from the slash."""
    labels: Mapping[str, str] = field(default_factory=dict, compare=False)

    def to_wire(self) -> dict[str, Any]:
        return {
            "chain_id": self.chain_id,
            "timestamp_ms": self.timestamp_ms,
            "alloc": [[addr, amount] for addr, amount in self.alloc],
            "consensus": dict(self.consensus),
            "min_fee": self.min_fee,
            "stakes": [[addr, amount] for addr, amount in self.stakes],
            "providers": list(self.providers),
            "arbiters": list(self.arbiters),
            "unbonding_blocks": self.unbonding_blocks,
            "dispute_blocks": self.dispute_blocks,
            "min_provider_stake": self.min_provider_stake,
            # Rules added after the first chains: in the hash only where a genesis sets
            # them to other than their default, so those chains keep their hash.
            **{name: value for name, value, default in self._later_rules() if value != default},
        }

    def _later_rules(self) -> tuple[tuple[str, int, int], ...]:
        return (
            ("dispute_bond", self.dispute_bond, DEFAULT_DISPUTE_BOND),
            ("slash_bps", self.slash_bps, DEFAULT_SLASH_BPS),
            ("challenger_bps", self.challenger_bps, DEFAULT_CHALLENGER_BPS),
            ("arbiter_quorum", self.arbiter_quorum, DEFAULT_ARBITER_QUORUM),
            ("challenge_blocks", self.challenge_blocks, DEFAULT_CHALLENGE_BLOCKS),
        )

    @property
    def hash(self) -> Hash32:
        return sha256(encode(self.to_wire()))

    @property
    def total_supply(self) -> int:
        return sum(amount for _, amount in self.alloc) + sum(amount for _, amount in self.stakes)

    def stake_of(self, address: str) -> int:
        return sum(amount for a, amount in self.stakes if a == address)
