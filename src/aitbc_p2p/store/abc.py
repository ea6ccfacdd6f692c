"""The storage seam: an ordered key-value store with atomic batch writes."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Protocol


class KeyValueStore(Protocol):
    def get(self, key: bytes) -> bytes | None: ...

    def iterate(self, prefix: bytes, *, reverse: bool = False) -> Iterator[tuple[bytes, bytes]]:
        """Items whose key starts with ``prefix``, in key order (or reversed)."""
        ...

    def scan(self, prefixes: Sequence[bytes]) -> list[list[tuple[bytes, bytes]]]:
        """The items under each prefix, in key order, all read from one snapshot: many
        small prefix reads for the price of one iterator and a seek each."""
        ...

    def write(self, puts: Iterable[tuple[bytes, bytes]], deletes: Iterable[bytes] = (), *, sync: bool = True) -> None:
        """Apply all puts and deletes atomically; with ``sync`` they are on disk on return."""
        ...

    def close(self) -> None: ...
