"""Binary Merkle trees in the RFC 6962 style: leaves hashed with 0x00, nodes with 0x01.

An odd node is promoted unchanged (no duplication), so no two different leaf lists share
a root (specs/transactions.md, "Commitments").
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from aitbc_p2p.types import Hash32

EMPTY_ROOT = Hash32(hashlib.sha256(b"").digest())


def leaf_hash(data: bytes) -> Hash32:
    return Hash32(hashlib.sha256(b"\x00" + data).digest())


def node_hash(left: bytes, right: bytes) -> Hash32:
    return Hash32(hashlib.sha256(b"\x01" + left + right).digest())


def merkle_root(leaves: Sequence[bytes]) -> Hash32:
    """Root over the leaf *data* (each hashed with :func:`leaf_hash`)."""
    if not leaves:
        return EMPTY_ROOT
    # leaf_hash inlined: two roots of a thousand leaves each per block.
    sha256 = hashlib.sha256
    return root_of([sha256(b"\x00" + leaf).digest() for leaf in leaves])


def root_of(hashes: Sequence[bytes]) -> Hash32:
    """Root over the leaves' hashes (:func:`leaf_hashes`)."""
    if not hashes:
        return EMPTY_ROOT
    sha256 = hashlib.sha256
    level = list(hashes)
    while len(level) > 1:
        nxt = [sha256(b"\x01" + level[i] + level[i + 1]).digest() for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return Hash32(level[0])


def merkle_proof(leaves: Sequence[bytes], index: int) -> list[tuple[bool, Hash32]]:
    """Sibling path of leaf ``index``: ``(sibling_is_left, sibling_hash)`` from the bottom up."""
    if not 0 <= index < len(leaves):
        raise IndexError("leaf index out of range")
    level = [leaf_hash(leaf) for leaf in leaves]
    path: list[tuple[bool, Hash32]] = []
    while len(level) > 1:
        sibling = index ^ 1
        if sibling < len(level):
            path.append((sibling < index, level[sibling]))
        nxt = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level, index = nxt, index // 2
    return path


def leaf_hashes(leaves: Sequence[bytes]) -> list[bytes]:
    """Each leaf's :func:`leaf_hash`: what :func:`merkle_proofs` builds a tree from."""
    sha256 = hashlib.sha256
    return [sha256(b"\x00" + leaf).digest() for leaf in leaves]


def merkle_proofs(hashes: Sequence[bytes], indices: Sequence[int]) -> list[list[tuple[bool, Hash32]]]:
    """:func:`merkle_proof` of each of ``indices``, from the leaves' hashes
    (:func:`leaf_hashes`), the tree built once."""
    if any(not 0 <= i < len(hashes) for i in indices):
        raise IndexError("leaf index out of range")
    sha256 = hashlib.sha256
    level = list(hashes)
    at = list(indices)
    paths: list[list[tuple[bool, Hash32]]] = [[] for _ in at]
    while len(level) > 1:
        for path, index in zip(paths, at, strict=True):
            sibling = index ^ 1
            if sibling < len(level):
                path.append((sibling < index, Hash32(level[sibling])))
        nxt = [sha256(b"\x01" + level[i] + level[i + 1]).digest() for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level, at = nxt, [i // 2 for i in at]
    return paths


def verify_proof(root: bytes, leaf: bytes, path: Sequence[tuple[bool, bytes]]) -> bool:
    """Whether ``leaf`` with sibling ``path`` (from :func:`merkle_proof`) hashes to ``root``."""
    node: bytes = leaf_hash(leaf)
    for is_left, sibling in path:
        node = node_hash(sibling, node) if is_left else node_hash(node, sibling)
    return node == root
