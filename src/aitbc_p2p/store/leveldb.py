"""The LevelDB adapter (the only module that imports plyvel)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import plyvel

from aitbc_p2p.exceptions import StoreError

WRITE_BUFFER_SIZE = 32 << 20
"""Bytes of writes LevelDB gathers in memory before it sorts them into a table (its
default is 4 MiB): fewer, larger tables to merge later."""


class LevelDBKV:
    """One LevelDB per data directory. Writes go through one write batch each.

    Tables are stored without compression. Nearly everything the chain writes is hashes,
    signatures and addresses, which snappy shrinks by about a third, and LevelDB's
    background compactions spent most of their CPU compressing and decompressing it:
    about 35 us a committed transaction with 62,500 accounts (bench/ledger.py,
    250,000 transactions), a core's share that the signature checks need. The data
    directory is about 1.5 times larger for it. A directory written with compression
    still opens: LevelDB records per table block how it is stored.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            self._db = plyvel.DB(
                str(self.path), create_if_missing=True, compression=None, write_buffer_size=WRITE_BUFFER_SIZE
            )
        except (plyvel.Error, OSError) as e:
            raise StoreError(f"cannot open LevelDB at {self.path}: {e}") from e

    def get(self, key: bytes) -> bytes | None:
        try:
            value = self._db.get(key)
        except (plyvel.Error, RuntimeError) as e:
            raise StoreError(f"read failed: {e}") from e
        return None if value is None else bytes(value)

    def iterate(self, prefix: bytes, *, reverse: bool = False) -> Iterator[tuple[bytes, bytes]]:
        try:
            with self._db.iterator(prefix=prefix, reverse=reverse) as it:
                for key, value in it:
                    yield bytes(key), bytes(value)
        except (plyvel.Error, RuntimeError) as e:
            raise StoreError(f"iteration failed: {e}") from e

    def scan(self, prefixes: Sequence[bytes]) -> list[list[tuple[bytes, bytes]]]:
        out: list[list[tuple[bytes, bytes]]] = []
        try:
            with self._db.snapshot() as snapshot, snapshot.iterator() as it:
                for prefix in prefixes:
                    it.seek(prefix)
                    items: list[tuple[bytes, bytes]] = []
                    for key, value in it:
                        if not key.startswith(prefix):
                            break
                        items.append((bytes(key), bytes(value)))
                    out.append(items)
        except (plyvel.Error, RuntimeError) as e:
            raise StoreError(f"iteration failed: {e}") from e
        return out

    def write(self, puts: Iterable[tuple[bytes, bytes]], deletes: Iterable[bytes] = (), *, sync: bool = True) -> None:
        try:
            with self._db.write_batch(sync=sync) as batch:
                for key, value in puts:
                    batch.put(key, value)
                for key in deletes:
                    batch.delete(key)
        except (plyvel.Error, RuntimeError) as e:
            raise StoreError(f"write failed: {e}") from e

    def close(self) -> None:
        if not self._db.closed:
            self._db.close()
