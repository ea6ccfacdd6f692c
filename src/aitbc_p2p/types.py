"""Domain types shared by every layer: ids as NewTypes, amounts as integers.

Amounts are always integers in base units: 1 AITBC = 10**9 units (specs/transactions.md).
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import NewType

try:
    VERSION = version("aitbc-p2p")
    """The installed package's version (its metadata, from pyproject.toml)."""
except PackageNotFoundError:  # a source tree that was never installed
    VERSION = "0.0.0+unknown"

Address = NewType("Address", str)
"""A bech32m account address, ``aitbc1...`` (specs/wire.md, "Addresses")."""

Hash32 = NewType("Hash32", bytes)
"""A 32-byte SHA-256 digest."""

JobId = NewType("JobId", Hash32)
"""A job's one id: the 32-byte hash of its signed offer, which is also its escrow's id on
chain. Spelled in hex only where text carries it (job stream fields, bids, RPC JSON, logs)."""

UNITS_PER_AITBC = 10**9
MAX_AMOUNT = 2**64 - 1
"""Upper bound of any amount, balance, fee or nonce on the wire (uint64)."""
MAX_CHAIN_ID = 64
"""The longest chain id (characters): every wire parser and the genesis loader agree."""

ZERO_HASH = Hash32(b"\x00" * 32)


def aitbc(amount: int | str) -> int:
    """Base units for a whole or decimal AITBC amount given as int or string.

    >>> aitbc(2)
    2000000000
    >>> aitbc("0.25")
    250000000
    """
    text = str(amount).strip()
    whole, _, frac = text.partition(".")
    if (not whole.lstrip("-").isdigit() and whole not in ("", "-")) or (frac and not frac.isdigit()):
        raise ValueError(f"not an AITBC amount: {amount!r}")
    if len(frac) > 9:
        raise ValueError(f"more than 9 decimals: {amount!r}")
    sign = -1 if whole.startswith("-") else 1
    units = abs(int(whole or "0")) * UNITS_PER_AITBC + int(frac.ljust(9, "0") or "0")
    return sign * units


def format_aitbc(units: int) -> str:
    """Render base units as a decimal AITBC string without trailing zeros."""
    sign = "-" if units < 0 else ""
    whole, frac = divmod(abs(units), UNITS_PER_AITBC)
    text = f"{whole}.{frac:09d}".rstrip("0").rstrip(".")
    return f"{sign}{text}"
