"""The in-memory twin of the LevelDB store, for pure and simulation tests."""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator, Sequence

from aitbc_p2p.exceptions import StoreError


class MemoryKV:
    def __init__(self) -> None:
        self._data: dict[bytes, bytes] = {}
        self._keys: list[bytes] = []
        self._closed = False

    def get(self, key: bytes) -> bytes | None:
        self._check()
        return self._data.get(key)

    def iterate(self, prefix: bytes, *, reverse: bool = False) -> Iterator[tuple[bytes, bytes]]:
        self._check()
        start = bisect.bisect_left(self._keys, prefix)
        keys: list[bytes] = []
        for key in self._keys[start:]:
            if not key.startswith(prefix):
                break
            keys.append(key)
        for key in reversed(keys) if reverse else keys:
            yield key, self._data[key]

    def scan(self, prefixes: Sequence[bytes]) -> list[list[tuple[bytes, bytes]]]:
        return [list(self.iterate(prefix)) for prefix in prefixes]

    def write(self, puts: Iterable[tuple[bytes, bytes]], deletes: Iterable[bytes] = (), *, sync: bool = True) -> None:
        self._check()
        puts, deletes = list(puts), list(deletes)  # materialise first: all or nothing
        for key, value in puts:
            if key not in self._data:
                bisect.insort(self._keys, key)
            self._data[key] = bytes(value)
        for key in deletes:
            if self._data.pop(key, None) is not None:
                self._keys.remove(key)

    def close(self) -> None:
        self._closed = True

    def _check(self) -> None:
        if self._closed:
            raise StoreError("store is closed")
