"""Strict field readers for decoded wire objects (specs/wire.md, "Field rules").

A decoded CBOR map from a peer is read through these and nothing else: each reader
checks presence, exact type (a bool is not an int), and a bound on size or value, and
raises :class:`~aitbc_p2p.exceptions.CodecError` naming the field. Nothing is coerced:
``bytes(-1)``, ``int("7")`` or ``dict(pairs)`` on a stranger's value are the faults
these exist to prevent (a negative length, a 128 MiB allocation from five bytes).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from aitbc_p2p.exceptions import CodecError

MAX_TEXT = 4096
U64 = 2**64 - 1


class FieldOutOfRange(CodecError):
    """A number of the right type outside its bounds (callers may report it apart:
    a transaction's amount out of range is not a malformed transaction)."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


def record(obj: Any, keys: Collection[str], what: str, *, optional: Collection[str] = ()) -> Mapping[str, Any]:
    """``obj`` as a map holding exactly ``keys`` (and any of ``optional``)."""
    if not isinstance(obj, dict):
        raise CodecError(f"{what} must be a map")
    missing = set(keys) - set(obj)
    extra = set(obj) - set(keys) - set(optional)
    if missing or extra:
        raise CodecError(f"{what} must hold {sorted(keys)}; missing {sorted(missing)}, unknown {sorted(extra)}")
    return obj


def _get(obj: Mapping[str, Any], name: str, kind: type) -> Any:
    if name not in obj:
        raise CodecError(f"missing field {name!r}")
    value = obj[name]
    if type(value) is not kind:  # exact: bool is not int, a str subclass is not str
        raise CodecError(f"field {name!r} must be {kind.__name__}, not {type(value).__name__}")
    return value


def text(obj: Mapping[str, Any], name: str, *, max_len: int = MAX_TEXT) -> str:
    value: str = _get(obj, name, str)
    if len(value) > max_len:
        raise CodecError(f"field {name!r} longer than {max_len} characters")
    return value


def blob(obj: Mapping[str, Any], name: str, *, max_len: int) -> bytes:
    value: bytes = _get(obj, name, bytes)
    if len(value) > max_len:
        raise CodecError(f"field {name!r} longer than {max_len} bytes")
    return value


def uint(obj: Mapping[str, Any], name: str, *, low: int = 0, high: int = U64) -> int:
    """An integer in ``[low, high]`` (unsigned unless ``low`` says otherwise)."""
    value: int = _get(obj, name, int)
    if not low <= value <= high:
        raise FieldOutOfRange(f"field {name!r} must be in [{low}, {high}]", name)
    return value


def hash32(obj: Mapping[str, Any], name: str) -> bytes:
    """Exactly 32 bytes (a hash, an id)."""
    value: bytes = _get(obj, name, bytes)
    if len(value) != 32:
        raise CodecError(f"field {name!r} must be 32 bytes")
    return value


_HEX_DIGITS = frozenset("0123456789abcdef")


def hex_hash32(obj: Mapping[str, Any], name: str) -> bytes:
    """32 bytes spelled as text: exactly 64 lowercase hex digits (one spelling per id)."""
    value = text(obj, name, max_len=64)
    if len(value) != 64 or not _HEX_DIGITS.issuperset(value):
        raise CodecError(f"field {name!r} must be 64 lowercase hex digits")
    return bytes.fromhex(value)


def listing(obj: Mapping[str, Any], name: str, *, max_items: int) -> list[Any]:
    value: list[Any] = _get(obj, name, list)
    if len(value) > max_items:
        raise CodecError(f"field {name!r} holds more than {max_items} items")
    return value


def boolean(obj: Mapping[str, Any], name: str) -> bool:
    value: bool = _get(obj, name, bool)
    return value


def mapping(obj: Mapping[str, Any], name: str, *, max_items: int = 256) -> dict[str, Any]:
    value: dict[str, Any] = _get(obj, name, dict)
    if len(value) > max_items:
        raise CodecError(f"field {name!r} holds more than {max_items} entries")
    return value


def uint_map(obj: Mapping[str, Any], name: str, *, max_items: int, max_key_len: int = 64) -> dict[str, int]:
    """A map of short text keys to unsigned 64-bit integers (metrics, limits)."""
    value = mapping(obj, name, max_items=max_items)
    for key, item in value.items():
        if type(key) is not str or len(key) > max_key_len:
            raise CodecError(f"field {name!r}: keys must be text of at most {max_key_len} characters")
        if type(item) is not int or not 0 <= item <= U64:
            raise CodecError(f"field {name!r}: {key!r} must be an unsigned 64-bit integer")
    return dict(value)
