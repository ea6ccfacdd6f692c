"""The node's own protocol messages (specs/wire.md): status, sync, block gossip and the
consensus topic's envelope. Pure: bytes in, values out, through the strict field readers
of :mod:`aitbc_p2p.codec.fields`; every parse error is a CodecError or ValidationError.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aitbc_p2p.chain.models import Block
from aitbc_p2p.chain.votes import Vote
from aitbc_p2p.codec import decode, encode, fields
from aitbc_p2p.codec import head as cbor_head
from aitbc_p2p.consensus.tendermint import decode_certificate
from aitbc_p2p.exceptions import CodecError, ValidationError
from aitbc_p2p.types import MAX_CHAIN_ID, Hash32

MAX_CONSENSUS_MESSAGE = 8 << 20
"""A proposal carries a whole block."""
MAX_LISTEN = 16
"""Addresses a status may advertise (more are not read)."""


@dataclass(frozen=True, slots=True)
class Status:
    """``/aitbc/status/1``: what each side of the handshake says of itself."""

    chain_id: str
    genesis: Hash32
    height: int
    head: Hash32
    listen: tuple[str, ...] = ()

    def encode(self) -> bytes:
        return encode(
            {
                "chain_id": self.chain_id,
                "genesis": self.genesis,
                "height": self.height,
                "head": self.head,
                "listen": list(self.listen),
            }
        )

    @classmethod
    def decode(cls, data: bytes) -> Status:
        """Raises CodecError for anything but a well-formed status."""
        obj = fields.record(decode(data), ("chain_id", "genesis", "height", "head"), "a status", optional=("listen",))
        listen = obj.get("listen", [])
        if not isinstance(listen, list):
            raise CodecError("field 'listen' must be a list")
        return cls(
            chain_id=fields.text(obj, "chain_id", max_len=MAX_CHAIN_ID),
            genesis=Hash32(fields.hash32(obj, "genesis")),
            height=fields.uint(obj, "height"),
            head=Hash32(fields.hash32(obj, "head")),
            # Each address is checked where it is used (PeerBook keeps only dialable ones).
            listen=tuple(a for a in listen[:MAX_LISTEN] if isinstance(a, str)),
        )


def encode_sync_request(start: int, end: int) -> bytes:
    return encode({"from": start, "to": end})


def decode_sync_request(data: bytes) -> tuple[int, int]:
    """``(from, to)`` of a ``/aitbc/sync/2`` request. Raises CodecError."""
    obj = fields.record(decode(data), ("from", "to"), "a sync request")
    return fields.uint(obj, "from"), fields.uint(obj, "to")


def encode_block_message(block: Block, certificate: bytes = b"\x80") -> bytes:
    """``[block, certificate]`` as canonical CBOR, reusing the block's cached encoding.

    The certificate is the CBOR list of precommits (empty for engines without votes).
    """
    return cbor_head(4, 2) + block.encode() + certificate


def encode_sync_item(encoded_block: bytes, certificate: bytes = b"\x80") -> bytes:
    """``[block bytes, certificate]``: one block of a sync response, the block as a byte
    string so that the receiver decodes it in a worker process."""
    return cbor_head(4, 2) + cbor_head(2, len(encoded_block)) + encoded_block + certificate


def decode_sync_item(obj: object) -> tuple[bytes, tuple[Vote, ...]]:
    """Parse a decoded ``[block bytes, certificate]``. Raises ValidationError."""
    if not isinstance(obj, list) or len(obj) != 2 or not isinstance(obj[0], bytes):
        raise ValidationError("a sync item is [block bytes, certificate]")
    return obj[0], decode_certificate(obj[1])


def consensus_envelope(obj: object) -> dict[str, Any]:
    """A consensus message, as gossiped or served in a round-state answer: a one-key map,
    ``{"vote": ...}`` or ``{"proposal": ...}`` (the driver parses what it holds).
    Raises CodecError."""
    if not isinstance(obj, dict) or len(obj) != 1 or not ("vote" in obj or "proposal" in obj):
        raise CodecError("a consensus message is {'vote': ...} or {'proposal': ...}")
    return obj


def decode_consensus_message(data: bytes) -> dict[str, Any]:
    """The consensus topic's message decoded and its envelope checked. Raises CodecError."""
    return consensus_envelope(decode(data, max_size=MAX_CONSENSUS_MESSAGE))
