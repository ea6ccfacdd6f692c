"""Signed consensus votes and double-sign evidence (specs/consensus.md, "Votes").

A vote is a validator's signature on ``(chain, height, round, step, block)``. Two votes
by one validator for the same ``(height, round, step)`` and different blocks are
*equivocation*: anyone may post them in a ``slash`` transaction to burn its stake.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from aitbc_p2p.codec import encode, fields
from aitbc_p2p.crypto import Domain, PrivateKey, recover_address, sha256, signing_digest
from aitbc_p2p.crypto.keys import validate_address
from aitbc_p2p.exceptions import BadSignature, CodecError, CryptoError, ValidationError
from aitbc_p2p.types import MAX_AMOUNT, MAX_CHAIN_ID, Address, Hash32

NIL = b""
"""The block field of a vote for no block."""


class VoteStep(enum.StrEnum):
    PREVOTE = "prevote"
    PRECOMMIT = "precommit"


_KEYS = {"chain_id", "height", "round", "step", "block", "validator"}


@dataclass(frozen=True, slots=True)
class Vote:
    chain_id: str
    height: int
    round: int
    step: VoteStep
    block: bytes
    """The block id voted for, or :data:`NIL`."""
    validator: Address
    signature: bytes = b""

    def body(self) -> dict[str, Any]:
        return {
            "chain_id": self.chain_id,
            "height": self.height,
            "round": self.round,
            "step": str(self.step),
            "block": self.block,
            "validator": self.validator,
        }

    def to_wire(self) -> dict[str, Any]:
        return {"body": self.body(), "sig": self.signature}

    def encode(self) -> bytes:
        return encode(self.to_wire())

    @property
    def slot(self) -> tuple[int, int, VoteStep]:
        return (self.height, self.round, self.step)

    @property
    def id(self) -> Hash32:
        return sha256(self.encode())

    def signed(self, key: PrivateKey) -> Vote:
        if key.address != self.validator:
            raise ValidationError("a vote is signed by its own validator")
        sig = key.sign(Domain.VOTE, self.chain_id, self.body())
        return Vote(self.chain_id, self.height, self.round, self.step, self.block, self.validator, sig)

    def verify(self) -> None:
        """Raise :class:`ValidationError` unless ``validator`` signed this vote."""
        try:
            signer = recover_address(signing_digest(Domain.VOTE, self.chain_id, self.body()), self.signature)
        except BadSignature as e:
            raise ValidationError(f"vote signature: {e}") from e
        if signer != self.validator:
            raise ValidationError("vote is not signed by its validator")

    def conflicts_with(self, other: Vote) -> bool:
        """Whether the two votes are equivocation by one validator."""
        return (
            self.chain_id == other.chain_id
            and self.validator == other.validator
            and self.slot == other.slot
            and self.block != other.block
        )

    @classmethod
    def from_wire(cls, obj: Any) -> Vote:
        """Parse shape and bounds (not the signature). Raises :class:`ValidationError`."""
        try:
            w = fields.record(obj, ("body", "sig"), "a vote")
            body = fields.record(w["body"], _KEYS, "a vote body")
            block = fields.blob(body, "block", max_len=32)
            if len(block) not in (0, 32):
                raise CodecError("field 'block' must be 32 bytes or empty")
            return cls(
                chain_id=fields.text(body, "chain_id", max_len=MAX_CHAIN_ID),
                height=fields.uint(body, "height", high=MAX_AMOUNT),
                round=fields.uint(body, "round", high=MAX_AMOUNT),
                step=VoteStep(fields.text(body, "step", max_len=16)),
                block=block,
                validator=validate_address(fields.text(body, "validator", max_len=128)),
                signature=fields.blob(w, "sig", max_len=65),
            )
        except (CodecError, ValueError, CryptoError) as e:
            raise ValidationError(f"malformed vote: {e}") from e


def check_evidence(chain_id: str, evidence: list[Any]) -> tuple[Address, Hash32]:
    """Check double-sign evidence; return the offender and an id for the offence.

    The id names the slot, not the pair, so one offence is slashed once however many
    conflicting pairs exist.

    Raises:
        ValidationError: malformed votes, bad signatures, or votes that do not conflict.
    """
    a, b = (Vote.from_wire(v) for v in evidence)
    if a.chain_id != chain_id:
        raise ValidationError("evidence is from another chain")
    if not a.conflicts_with(b):
        raise ValidationError("the votes do not conflict")
    a.verify()
    b.verify()
    offence = sha256(encode(["double-sign", a.validator, a.height, a.round, str(a.step)]))
    return a.validator, offence
