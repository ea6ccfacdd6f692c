"""The state commitment: a two-level Merkle tree over hashed buckets of state records.

Each state record ``(key, value)`` lives in bucket ``SHA-256(key)[:2]`` (65,536 buckets).
A bucket's root is the RFC 6962 Merkle root (:mod:`aitbc_p2p.chain.merkle`) over
``canonical([key, value])`` of its records in key order; the state root is the root of a
complete binary tree (node hash ``SHA-256(0x01 ‖ left ‖ right)``) whose 65,536 leaves are
the bucket roots, an empty bucket's root being ``SHA-256("")``.

A block touches few buckets, so the new root costs one bucket re-hash per touched bucket
plus 16 node hashes per bucket, not a pass over the whole state. A proof that a record is
in the state is its path inside the bucket plus the bucket's 16 siblings
(specs/transactions.md, "State commitment").
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aitbc_p2p.chain.merkle import EMPTY_ROOT, leaf_hash, merkle_proof, merkle_root, node_hash
from aitbc_p2p.codec import head
from aitbc_p2p.types import Hash32

BUCKET_BITS = 16
N_BUCKETS = 1 << BUCKET_BITS


@functools.lru_cache(maxsize=1 << 16)
def bucket_of(key: bytes) -> int:
    # Cached: the same account keys are read, written and re-hashed block after block.
    return int.from_bytes(hashlib.sha256(key).digest()[:2], "big")


def bucket_prefix(bucket: int) -> bytes:
    return bucket.to_bytes(2, "big")


def leaf_data(key: bytes, value: bytes) -> bytes:
    """``canonical([key, value])``, assembled: an array of two byte strings."""
    return b"\x82" + head(2, len(key)) + key + head(2, len(value)) + value


def bucket_root(records: Iterable[tuple[bytes, bytes]]) -> Hash32:
    """Root of one bucket's records, given in ascending key order."""
    return merkle_root([leaf_data(k, v) for k, v in records])


def _empty_levels() -> list[Hash32]:
    """``levels[d]``: root of an all-empty subtree of depth ``d``."""
    levels = [EMPTY_ROOT]
    for _ in range(BUCKET_BITS):
        levels.append(node_hash(levels[-1], levels[-1]))
    return levels


_EMPTY = _empty_levels()


def _empty_nodes() -> list[bytes]:
    nodes: list[bytes] = [b""]  # index 0 unused; node i has children 2i and 2i+1
    for level in range(BUCKET_BITS + 1):
        nodes.extend([_EMPTY[BUCKET_BITS - level]] * (1 << level))
    return nodes


class StateTree:
    """The upper tree over bucket roots, as an array heap. Immutable: updates copy."""

    __slots__ = ("_nodes",)
    _empty_nodes: list[bytes] | None = None

    def __init__(self, nodes: list[bytes]) -> None:
        self._nodes = nodes

    @classmethod
    def empty(cls) -> StateTree:
        if cls._empty_nodes is None:
            cls._empty_nodes = _empty_nodes()
        return cls(cls._empty_nodes)

    @classmethod
    def from_records(cls, records: Iterable[tuple[bytes, bytes]]) -> StateTree:
        """Build from every state record (any order)."""
        buckets: dict[int, list[tuple[bytes, bytes]]] = {}
        for key, value in records:
            buckets.setdefault(bucket_of(key), []).append((key, value))
        return cls.empty().updated({b: bucket_root(sorted(recs)) for b, recs in buckets.items()})

    @property
    def root(self) -> Hash32:
        return Hash32(self._nodes[1])

    def bucket_root(self, bucket: int) -> Hash32:
        return Hash32(self._nodes[N_BUCKETS + bucket])

    def updated(self, roots: Mapping[int, bytes]) -> StateTree:
        """A new tree with the given bucket roots replaced."""
        if not roots:
            return self
        nodes = list(self._nodes)
        for bucket, root in roots.items():
            nodes[N_BUCKETS + bucket] = root
        # Level by level, bottom up: each level's dirty nodes in ascending order, so their
        # parents come out ascending with repeats side by side. node_hash, inlined: a
        # thousand buckets a block make about 7,000 hashes here.
        sha256 = hashlib.sha256
        level = sorted({(N_BUCKETS + bucket) >> 1 for bucket in roots})
        while True:
            for i in level:
                nodes[i] = sha256(b"\x01" + nodes[2 * i] + nodes[2 * i + 1]).digest()
            if level[0] == 1:
                return StateTree(nodes)
            level = list(dict.fromkeys(i >> 1 for i in level))

    def path(self, bucket: int) -> list[Hash32]:
        """The bucket's 16 sibling hashes, bottom up."""
        out: list[Hash32] = []
        i = N_BUCKETS + bucket
        while i > 1:
            out.append(Hash32(self._nodes[i ^ 1]))
            i >>= 1
        return out


@dataclass(frozen=True, slots=True)
class StateProof:
    """That ``(key, value)`` is a record of the state with a given root."""

    key: bytes
    value: bytes
    in_bucket: list[tuple[bool, Hash32]]
    bucket_path: list[Hash32]

    def to_wire(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "value": self.value,
            "in_bucket": [[left, h] for left, h in self.in_bucket],
            "bucket_path": list(self.bucket_path),
        }

    def verify(self, state_root: bytes) -> bool:
        bucket = bucket_of(self.key)
        node: bytes = _bucket_root_from(self.key, self.value, self.in_bucket)
        i = N_BUCKETS + bucket
        if len(self.bucket_path) != BUCKET_BITS:
            return False
        for sibling in self.bucket_path:
            node = node_hash(sibling, node) if i & 1 else node_hash(node, sibling)
            i >>= 1
        return node == state_root


def _bucket_root_from(key: bytes, value: bytes, path: Sequence[tuple[bool, bytes]]) -> bytes:
    node: bytes = leaf_hash(leaf_data(key, value))
    for is_left, sibling in path:
        node = node_hash(sibling, node) if is_left else node_hash(node, sibling)
    return node


def prove(tree: StateTree, bucket_records: Sequence[tuple[bytes, bytes]], key: bytes) -> StateProof | None:
    """A proof for ``key`` given its bucket's records in key order, or None if absent."""
    for index, (k, v) in enumerate(bucket_records):
        if k == key:
            path = merkle_proof([leaf_data(a, b) for a, b in bucket_records], index)
            return StateProof(k, v, path, tree.path(bucket_of(key)))
    return None
