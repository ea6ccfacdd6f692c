"""The chain store: blocks, state, receipts and indexes over a :class:`KeyValueStore`.

A block, its state changes, its receipts, its undo record and its indexes commit in one
synced write batch, so a reopened store is always at the last whole block; on opening,
the recomputed state root must equal the head's (specs/wire.md, "Storage"). The undo
record lets fork choice revert blocks that are not final.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from aitbc_p2p.chain.blocks import AppliedBlock, genesis_block
from aitbc_p2p.chain.commitment import StateProof, StateTree, bucket_of, bucket_root, prove
from aitbc_p2p.chain.merkle import merkle_proof
from aitbc_p2p.chain.models import Block, BlockHeader, Genesis, Transaction
from aitbc_p2p.chain.state import Account, Job, StateView, read_account, read_burned, read_job
from aitbc_p2p.chain.transition import Receipt
from aitbc_p2p.codec import decode, encode
from aitbc_p2p.exceptions import StoreError
from aitbc_p2p.store import schema
from aitbc_p2p.store.abc import KeyValueStore
from aitbc_p2p.store.crash import crash_point
from aitbc_p2p.types import Address, Hash32

logger = logging.getLogger(__name__)


class StoreStateView:
    """The committed state as a :class:`~aitbc_p2p.chain.state.StateView`.

    Decoded accounts are cached until the next commit or revert. Readers may run in
    worker threads while a commit runs in another, so a read stores its result only if no
    commit started meanwhile (a generation number), and a commit bumps the generation
    before it clears the cache.
    """

    MAX_CACHED = 1 << 16

    def __init__(self, kv: KeyValueStore, tree: StateTree | None = None) -> None:
        self._kv = kv
        self._tree = tree
        self._accounts: dict[Address, Account] = {}
        self._generation = 0

    def changed(self) -> None:
        """Call after every write to the state records."""
        self._generation += 1
        self._accounts.clear()

    def get(self, key: bytes) -> bytes | None:
        return self._kv.get(schema.state_key(key))

    def bucket_items(self, bucket: int) -> Iterator[tuple[bytes, bytes]]:
        n = len(schema.state_bucket_prefix(bucket))
        for key, value in self._kv.iterate(schema.state_bucket_prefix(bucket)):
            yield key[n:], value

    def leaves(self) -> Iterator[tuple[bytes, bytes]]:
        n = len(schema.STATE) + 2
        for key, value in self._kv.iterate(schema.STATE):
            yield key[n:], value

    def tree(self) -> StateTree:
        if self._tree is None:
            self._tree = StateTree.from_records(self.leaves())
        return self._tree

    # typed readers
    def account(self, address: Address) -> Account:
        found = self._accounts.get(address)
        if found is None:
            generation = self._generation
            found = read_account(self, address)
            if generation == self._generation and len(self._accounts) < self.MAX_CACHED:
                self._accounts[address] = found
        return found

    def job(self, job_id: bytes) -> Job | None:
        return read_job(self, job_id)

    def burned(self) -> int:
        return read_burned(self)


@dataclass(frozen=True, slots=True)
class TxLocation:
    tx: Transaction
    height: int
    index: int


@dataclass(frozen=True, slots=True)
class ReceiptProof:
    """That a receipt is in a block: verify it offline against the block's header."""

    header: BlockHeader
    receipt: Receipt
    path: list[tuple[bool, Hash32]]

    def to_wire(self) -> dict[str, Any]:
        return {
            "header": self.header.body(),
            "sig": self.header.signature,
            "receipt": self.receipt.to_wire(),
            "path": [[left, h] for left, h in self.path],
        }


def _history_keys(block: Block, view: StateView) -> list[tuple[bytes, int]]:
    """``(history key, tx index)`` for every party of every transaction in ``block``.

    ``view`` is the state after the block: a job transaction also belongs to the job's
    client and provider.
    """
    out: list[tuple[bytes, int]] = []
    for i, tx in enumerate(block.txs):
        parties: set[str] = set(tx.parties())
        if "job_id" in tx.payload:
            job = view.job(tx.payload["job_id"])
            if job is not None:
                parties |= {job.client, job.provider}
        out += [(schema.history_key(a, block.height, i), i) for a in sorted(parties)]
    return out


class ChainStore:
    """Blocks and state of one chain. Synchronous: call blocking methods off the event loop."""

    def __init__(self, kv: KeyValueStore, genesis: Genesis) -> None:
        self.kv = kv
        self.genesis = genesis
        self.state = StoreStateView(kv)
        stored = kv.get(schema.GENESIS)
        if stored is None:
            self.kv.write([(schema.SCHEMA, bytes([schema.SCHEMA_VERSION])), (schema.GENESIS, genesis.hash)])
            applied = genesis_block(genesis)
            self._head = applied.block.header  # commit() checks the parent against this
            self.state._tree = StateTree.empty()
            self.commit(applied)
        elif stored != genesis.hash:
            raise StoreError("the data directory holds another chain (genesis hash differs)")
        elif kv.get(schema.SCHEMA) != bytes([schema.SCHEMA_VERSION]):
            raise StoreError("the data directory uses an unknown store schema version")
        self._head = self._load_head()
        if self.state.tree().root != self._head.state_root:
            raise StoreError(f"stored state does not match the state root of head block {self._head.height}")

    def _load_head(self) -> BlockHeader:
        raw = self.kv.get(schema.HEAD)
        if raw is None:
            raise StoreError("store has no head block")
        block = self.block(int.from_bytes(raw[:8], "big"))
        if block is None or block.hash != raw[8:]:
            raise StoreError("store head points at a missing block")
        return block.header

    @property
    def head(self) -> BlockHeader:
        return self._head

    def commit(self, applied: AppliedBlock, *, certificate: bytes | None = None) -> None:
        """Write the block, its state changes, receipts, undo record and indexes in one synced batch.

        ``applied`` must extend the head (height 0: the genesis) and sit on this store's state.
        """
        block = applied.block
        h = block.height
        if h and (block.header.parent != self._head.hash or h != self._head.height + 1):
            raise StoreError(f"block {h} does not extend the head {self._head.height}")
        changes = applied.state.changes
        undo = [[k] if (old := self.state.get(k)) is None else [k, old] for k in sorted(changes)]
        puts: list[tuple[bytes, bytes]] = [
            (schema.block_key(h), block.encode()),
            (schema.hash_key(block.hash), schema.u64(h)),
            (schema.HEAD, schema.u64(h) + block.hash),
            (schema.receipts_key(h), encode([r.to_wire() for r in applied.receipts])),
            (schema.undo_key(h), encode(undo)),
        ]
        if certificate is not None:
            puts.append((schema.cert_key(h), certificate))
        puts += [(schema.state_key(k), v) for k, v in changes.items()]
        puts += [(schema.tx_key(tx.hash), schema.u64(h) + schema.u32(i)) for i, tx in enumerate(block.txs)]
        puts += [(key, block.txs[i].hash) for key, i in _history_keys(block, applied.state)]
        crash_point("commit.before_batch")
        self.kv.write(puts, [schema.fork_key(block.hash)], sync=True)
        self.state.changed()
        crash_point("commit.after_batch")
        self.state._tree = applied.tree
        self._head = block.header
        crash_point("commit.after_head")

    def revert_head(self) -> Block:
        """Undo the head block (not the genesis) in one synced batch; keep it as a side block."""
        h = self._head.height
        if h == 0:
            raise StoreError("the genesis cannot be reverted")
        block = self.block(h)
        raw_undo = self.kv.get(schema.undo_key(h))
        parent = self.block(h - 1)
        if block is None or raw_undo is None or parent is None:
            raise StoreError(f"block {h} has no undo record")
        puts: list[tuple[bytes, bytes]] = [
            (schema.HEAD, schema.u64(h - 1) + parent.hash),
            (schema.fork_key(block.hash), block.encode()),
        ]
        deletes: list[bytes] = [
            schema.block_key(h),
            schema.hash_key(block.hash),
            schema.receipts_key(h),
            schema.undo_key(h),
            schema.cert_key(h),
        ]
        touched: set[int] = set()
        for entry in decode(raw_undo):
            touched.add(bucket_of(entry[0]))
            if len(entry) == 1:
                deletes.append(schema.state_key(entry[0]))
            else:
                puts.append((schema.state_key(entry[0]), entry[1]))
        deletes += [schema.tx_key(tx.hash) for tx in block.txs]
        deletes += [key for key, _ in _history_keys(block, self.state)]  # the state is still the block's
        self.kv.write(puts, deletes, sync=True)
        self.state.changed()
        tree = self.state.tree().updated({b: bucket_root(self.state.bucket_items(b)) for b in touched})
        self.state._tree = tree
        self._head = parent.header
        if tree.root != parent.header.state_root:
            raise StoreError(f"state after reverting block {h} does not match block {h - 1}")
        return block

    def block(self, height: int) -> Block | None:
        raw = self.kv.get(schema.block_key(height))
        return None if raw is None else Block.decode(raw)

    def side_block(self, block_hash: bytes) -> Block | None:
        raw = self.kv.get(schema.fork_key(block_hash))
        return None if raw is None else Block.decode(raw)

    def put_side_block(self, block: Block) -> None:
        self.kv.write([(schema.fork_key(block.hash), block.encode())], sync=False)

    def certificate(self, height: int) -> bytes | None:
        return self.kv.get(schema.cert_key(height))

    def height_of(self, block_hash: bytes) -> int | None:
        raw = self.kv.get(schema.hash_key(block_hash))
        return None if raw is None else int.from_bytes(raw, "big")

    def blocks(self, start: int, end: int) -> list[Block]:
        """Blocks ``start..end`` inclusive that exist, in order."""
        out: list[Block] = []
        for height in range(max(start, 0), min(end, self._head.height) + 1):
            block = self.block(height)
            if block is None:
                break
            out.append(block)
        return out

    def receipts(self, height: int) -> list[Receipt]:
        raw = self.kv.get(schema.receipts_key(height))
        return [] if raw is None else [Receipt.from_wire(r) for r in decode(raw)]

    def find_tx(self, tx_hash: bytes) -> TxLocation | None:
        raw = self.kv.get(schema.tx_key(tx_hash))
        if raw is None:
            return None
        height, index = int.from_bytes(raw[:8], "big"), int.from_bytes(raw[8:], "big")
        block = self.block(height)
        if block is None:
            raise StoreError(f"tx index points at missing block {height}")
        return TxLocation(block.txs[index], height, index)

    def receipt_proof(self, tx_hash: bytes) -> ReceiptProof | None:
        """The receipt of a committed transaction with its path to the header's receipts_root."""
        loc = self.find_tx(tx_hash)
        if loc is None:
            return None
        receipts = self.receipts(loc.height)
        block = self.block(loc.height)
        if block is None or loc.index >= len(receipts):
            raise StoreError(f"receipts of block {loc.height} are missing")
        path = merkle_proof([r.encode() for r in receipts], loc.index)
        return ReceiptProof(block.header, receipts[loc.index], path)

    def state_proof(self, key: bytes) -> StateProof | None:
        """A proof that a state record is under the head's state_root, or None if absent."""
        return prove(self.state.tree(), list(self.state.bucket_items(bucket_of(key))), key)

    def history(self, address: Address, *, limit: int = 100) -> list[TxLocation]:
        """The newest ``limit`` committed transactions touching ``address``, newest first."""
        out: list[TxLocation] = []
        for _, tx_hash in self.kv.iterate(schema.history_prefix(address), reverse=True):
            loc = self.find_tx(tx_hash)
            if loc is not None:
                out.append(loc)
            if len(out) >= limit:
                break
        return out

    def close(self) -> None:
        self.kv.close()
