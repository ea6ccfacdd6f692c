"""Transaction bundles: what the tx topic carries (specs/topics.md).

A bundle is a canonical CBOR array of 1 to :data:`MAX_BUNDLE_TXS` byte strings, each one
transaction's canonical encoding, at most :data:`MAX_BUNDLE_BYTES` in all. Gossip costs
about the same per message whatever its size, so a bundle carries as many transactions
as one message can.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from aitbc_p2p.codec import decode, encode, head
from aitbc_p2p.exceptions import CodecError

MAX_BUNDLE_TXS = 1000
MAX_BUNDLE_BYTES = 1 << 20
"""Equal to py-libp2p's largest pubsub RPC (1 MiB) less room for the envelope."""
_ENVELOPE = 4 << 10


def encode_bundle(encoded_txs: Sequence[bytes]) -> bytes:
    return encode(list(encoded_txs), check=False)


def decode_bundle(data: bytes) -> list[bytes]:
    """The transactions' encodings. Raises CodecError for anything but a well-formed bundle."""
    items = decode(data, max_size=MAX_BUNDLE_BYTES)
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_BUNDLE_TXS:
        raise CodecError(f"a bundle is an array of 1 to {MAX_BUNDLE_TXS} transactions")
    if not all(isinstance(item, bytes) for item in items):
        raise CodecError("a bundle holds transactions as byte strings")
    return items


def split_bundles(encoded_txs: Sequence[bytes]) -> Iterator[bytes]:
    """Pack transactions, in order, into as few bundles as the limits allow."""
    budget = MAX_BUNDLE_BYTES - _ENVELOPE
    part: list[bytes] = []
    size = 0
    for tx in encoded_txs:
        cost = len(tx) + len(head(2, len(tx)))
        if part and (len(part) == MAX_BUNDLE_TXS or size + cost > budget):
            yield encode_bundle(part)
            part, size = [], 0
        part.append(tx)
        size += cost
    if part:
        yield encode_bundle(part)
