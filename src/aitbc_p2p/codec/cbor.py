"""Deterministic CBOR encoding and a strict decoder.

Consensus objects use only: unsigned/negative integers, byte strings, text strings,
arrays, maps with text keys, booleans and null. No floats, no tags (specs/wire.md).
A decoder accepts exactly one canonical item: re-encoding must give the same bytes.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import cbor2

from aitbc_p2p.exceptions import CodecError

MAX_SIZE = 1 << 20
"""Largest encoded object accepted by :func:`decode` (1 MiB)."""
MAX_DEPTH = 16
"""Deepest nesting of arrays and maps accepted by :func:`decode`."""


_LOW = -(2**64)
_HIGH = 2**64


_LEAVES = frozenset({str, bytes, bool, type(None)})
"""Exact types of the allowed scalars other than integers."""


def _check(value: Any, depth: int) -> None:
    # Hot path (every decoded message): exact-type tests on leaves inline, recursion only
    # for containers, and the isinstance walk only for subclasses (str enums and the like).
    if depth > MAX_DEPTH:
        raise CodecError(f"nesting deeper than {MAX_DEPTH}")
    t = type(value)
    if t is dict:
        if value and depth >= MAX_DEPTH:
            raise CodecError(f"nesting deeper than {MAX_DEPTH}")  # its items would be deeper
        for key, item in value.items():
            if type(key) is not str and not isinstance(key, str):
                raise CodecError("map keys must be text")
            t = type(item)
            if t in _LEAVES:
                continue
            if t is int:
                if not _LOW <= item < _HIGH:
                    raise CodecError("integer outside the 64-bit CBOR range")
                continue
            _check(item, depth + 1)
        return
    if t is list or t is tuple:
        if value and depth >= MAX_DEPTH:
            raise CodecError(f"nesting deeper than {MAX_DEPTH}")
        for item in value:
            t = type(item)
            if t in _LEAVES:
                continue
            if t is int:
                if not _LOW <= item < _HIGH:
                    raise CodecError("integer outside the 64-bit CBOR range")
                continue
            _check(item, depth + 1)
        return
    if t in _LEAVES:
        return
    if t is int:
        if not _LOW <= value < _HIGH:
            raise CodecError("integer outside the 64-bit CBOR range")
        return
    _check_slow(value, depth)


def _check_slow(value: Any, depth: int) -> None:
    if isinstance(value, bool | str | bytes):
        return
    if isinstance(value, int):
        if not _LOW <= value < _HIGH:
            raise CodecError("integer outside the 64-bit CBOR range")
        return
    if isinstance(value, list | tuple):
        for item in value:
            _check(item, depth + 1)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise CodecError("map keys must be text")
            _check(item, depth + 1)
        return
    raise CodecError(f"type not allowed in consensus objects: {type(value).__name__}")


def encode(value: Any, *, check: bool = True) -> bytes:
    """Encode ``value`` canonically.

    ``check=False`` skips the type walk, for values built from already-checked data on
    hot paths (hashing and signing what was just decoded); never for outside input.

    Raises:
        CodecError: the value holds a float, a tag-producing type, a non-text map key,
            an integer beyond 64 bits, or nests deeper than :data:`MAX_DEPTH`.
    """
    if check:
        _check(value, 0)
    try:
        return cbor2.dumps(value, canonical=True)
    except (cbor2.CBOREncodeError, TypeError, ValueError) as e:
        raise CodecError(f"cannot encode: {e}") from e


def head(major: int, length: int) -> bytes:
    """The canonical head of a CBOR data item: major type and shortest-form length/value.

    Used to assemble a canonical container around items that are already encoded.
    """
    # Unrolled: several calls per transaction on the block-building path.
    if length < 24:
        return bytes((major << 5 | length,))
    if length < 0x100:
        return bytes((major << 5 | 24, length))
    if length < 0x10000:
        return bytes((major << 5 | 25,)) + length.to_bytes(2, "big")
    if length < 0x100000000:
        return bytes((major << 5 | 26,)) + length.to_bytes(4, "big")
    if length < 0x10000000000000000:
        return bytes((major << 5 | 27,)) + length.to_bytes(8, "big")
    raise CodecError("length beyond 64 bits")


def decode(data: bytes, *, max_size: int = MAX_SIZE, canonical: bool = True) -> Any:
    """Decode exactly one canonical CBOR item of at most ``max_size`` bytes.

    ``canonical=False`` leaves the canonical-form check to the caller, for containers
    that re-assemble their encoding from parts they encode anyway (blocks); the caller
    must then compare that encoding with ``data``.

    Raises:
        CodecError: oversized input, trailing bytes, invalid CBOR, disallowed types
            (floats, tags, non-text keys, undefined) or a non-canonical encoding.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise CodecError("input is not bytes")
    data = bytes(data)
    if len(data) > max_size:
        raise CodecError(f"object of {len(data)} bytes exceeds {max_size}")
    if not data:
        raise CodecError("empty input")
    try:
        value = cbor2.loads(
            data,
            semantic_decoders=_NO_TAGS,
            tag_hook=_reject_tag,
            max_depth=MAX_DEPTH + 1,
            allow_indefinite=False,
            allow_duplicate_keys=False,
            strict_hashable_types=True,
        )
    except CodecError:
        raise
    except Exception as e:  # cbor2 raises CBORDecodeError and, for some inputs, others
        if isinstance(e.__cause__, CodecError):  # a tag, refused by _NO_TAGS
            raise CodecError(str(e.__cause__)) from e
        raise CodecError(f"invalid CBOR: {e}") from e
    _check(value, 0)  # floats, undefined and other types are refused here
    if canonical and encode(value, check=False) != data:
        raise CodecError("not canonical CBOR (or trailing bytes)")
    return value


def decode_record(data: bytes) -> Any:
    """Decode a record that this node encoded itself and keeps in its own store, such as
    a state record: no canonical-form or type walk (the bytes were checked before they
    were written, and the state root check on opening catches a corrupted store).
    Never for bytes from outside: use :func:`decode`.

    Raises:
        CodecError: the bytes are not CBOR at all.
    """
    try:
        return cbor2.loads(data)
    except Exception as e:
        raise CodecError(f"invalid CBOR record: {e}") from e


class _NoTags(Mapping[int, Any]):
    """cbor2's table of semantic tag decoders, refusing every tag.

    cbor2 6 looks a tag up here before its own decoders (dates, bignums, regular
    expressions, sets, ...), so no decoder of a tag ever runs on a peer's bytes: the
    tag is refused where it stands, whatever it is.
    """

    def __getitem__(self, tag: int) -> Any:
        raise CodecError(f"CBOR tag {tag} not allowed")

    def __contains__(self, tag: object) -> bool:
        return True

    def __iter__(self) -> Iterator[int]:
        return iter(())

    def __len__(self) -> int:
        return 0


_NO_TAGS = _NoTags()


def _reject_tag(decoder: Any, *tag: Any) -> Any:
    """cbor2's hook for tags it has no decoder for (never reached: :data:`_NO_TAGS`
    claims them all); refuses, whatever it is passed."""
    raise CodecError("CBOR tags are not allowed")
