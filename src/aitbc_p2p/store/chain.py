"""The chain store: blocks, state, receipts and indexes over a :class:`KeyValueStore`.

A block, its state changes, its receipts, its undo record and its indexes commit in one
synced write batch, so a reopened store is always at the last whole block; on opening,
the recomputed state root must equal the head's (specs/wire.md, "Storage"). The undo
record lets fork choice revert blocks that are not final.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from aitbc_p2p.chain.blocks import AppliedBlock, encode_receipts, genesis_block
from aitbc_p2p.chain.commitment import StateProof, StateTree, bucket_of, bucket_root, prove
from aitbc_p2p.chain.merkle import merkle_proof
from aitbc_p2p.chain.models import Block, BlockHeader, Genesis, Transaction
from aitbc_p2p.chain.payloads import EscrowPayload
from aitbc_p2p.chain.state import Account, Job, StateView, read_account, read_burned, read_job
from aitbc_p2p.chain.transition import Receipt
from aitbc_p2p.codec import decode, encode
from aitbc_p2p.exceptions import StoreError
from aitbc_p2p.store import schema
from aitbc_p2p.store.abc import KeyValueStore
from aitbc_p2p.store.crash import crash_point
from aitbc_p2p.types import Address, Hash32

logger = logging.getLogger(__name__)


_UNCACHED = object()


@dataclass(frozen=True, slots=True)
class _Written:
    """A block written but not yet published: what :meth:`ChainStore.publish` moves."""

    header: BlockHeader
    tree: StateTree
    records: Mapping[bytes, bytes] | None = None
    """Every state record written, or None (a revert): the read caches are dropped then."""
    accounts: Mapping[Address, Account] | None = None
    buckets: Mapping[int, list[tuple[bytes, bytes]]] | None = None
    """The new contents of buckets the block changed, as its state tree computed them."""


class StoreStateView:
    """The committed state as a :class:`~aitbc_p2p.chain.state.StateView`.

    It shows the state of the *published* head. A block is written (in a worker thread)
    before it is published (on the event loop, in one step with everything that must move
    with it, such as the mempool): while the batch is written and until it is published,
    the records it changes are read from a *shadow* of their old values, so a reader on
    the event loop never sees half a block or a state ahead of ``ChainStore.head``.

    Records read are cached, raw, and accounts also decoded, and so are the contents of
    commitment buckets; a publish updates the caches with what the block wrote (a revert
    empties them), so a block's reads, the buckets its state root re-hashes and the old
    values its write keeps in the undo record and the shadow rarely reach LevelDB.
    Readers may run in worker threads while a write runs in another, so a read stores
    its result only if no publish came meanwhile (a generation number, checked and the
    result stored under the same lock that a publish takes to move it).
    """

    MAX_CACHED = 1 << 16
    """Records, and decoded accounts, kept each (when full, the older half goes)."""
    MAX_CACHED_BUCKET_RECORDS = 1 << 17
    """Records kept in cached buckets, about 25 MB: a state of up to about 100,000
    accounts is held whole, so a block's state root rarely reads a bucket from LevelDB
    (measured with 50,000 accounts, those reads cost 9 µs a transaction when a quarter of
    the buckets was kept and the cache emptied when full)."""

    def __init__(self, kv: KeyValueStore, tree: StateTree | None = None) -> None:
        self._kv = kv
        self._tree = tree
        self._records: dict[bytes, bytes | None] = {}
        self._accounts: dict[Address, Account] = {}
        self._buckets: dict[int, list[tuple[bytes, bytes]]] = {}
        self._bucket_records = 0  # records in self._buckets
        self._generation = 0
        self._lock = threading.Lock()  # a publish against a reader's store of what it read
        self._shadow: dict[bytes, bytes | None] = {}
        self._shadow_buckets: dict[int, dict[bytes, bytes | None]] = {}

    def changed(
        self,
        records: Mapping[bytes, bytes] | None = None,
        accounts: Mapping[Address, Account] | None = None,
        buckets: Mapping[int, list[tuple[bytes, bytes]]] | None = None,
    ) -> None:
        """Call when written state records become visible: drops the shadow, and the
        caches unless ``records`` holds every record written, ``accounts`` the new value
        of every account among them and ``buckets`` the new contents of buckets (a
        bucket of a written record that is missing there is dropped from the cache)."""
        with self._lock:
            self._generation += 1
            self._shadow, self._shadow_buckets = {}, {}
            if records is None or accounts is None:
                self.clear_cache()
                return
            _make_room(self._records, len(records), self.MAX_CACHED)
            self._records.update(records)
            _make_room(self._accounts, len(accounts), self.MAX_CACHED)
            self._accounts.update(accounts)
            fresh = buckets or {}
            self._drop_buckets({bucket_of(key) for key in records} - fresh.keys())
            self._cache_buckets(fresh)

    def clear_cache(self) -> None:
        """Forget every cached record and bucket: the next reads go to the store."""
        self._records.clear()
        self._accounts.clear()
        self._buckets.clear()
        self._bucket_records = 0

    def _drop_buckets(self, buckets: Iterable[int]) -> None:
        for bucket in buckets:
            gone = self._buckets.pop(bucket, None)
            if gone is not None:
                self._bucket_records -= len(gone)

    def _cache_buckets(self, found: Mapping[int, list[tuple[bytes, bytes]]]) -> None:
        """Keep ``found`` (as the newest entries); when the records would pass the bound,
        the older half of the buckets goes first (hold the lock)."""
        self._drop_buckets(found)
        incoming = sum(map(len, found.values()))
        if self._bucket_records + incoming > self.MAX_CACHED_BUCKET_RECORDS:
            self._drop_buckets(list(itertools.islice(self._buckets, (len(self._buckets) + 1) // 2)))
        if self._bucket_records + incoming <= self.MAX_CACHED_BUCKET_RECORDS:
            self._buckets.update(found)
            self._bucket_records += incoming

    def shadow(self, old: dict[bytes, bytes | None]) -> None:
        """Keep showing these values (None: absent) until :meth:`changed`. Call before
        writing new values for the same keys (the writer's thread also groups them by
        bucket here, so a bucket read does not hash every shadowed key)."""
        by_bucket: dict[int, dict[bytes, bytes | None]] = {}
        for key, value in old.items():
            by_bucket.setdefault(bucket_of(key), {})[key] = value
        self._shadow_buckets = by_bucket
        self._shadow = old

    def get(self, key: bytes) -> bytes | None:
        cached = self._records.get(key, _UNCACHED)
        if cached is not _UNCACHED:
            return cached  # type: ignore[return-value]
        generation = self._generation
        # The store first, the shadow second: a writer sets the shadow before it writes,
        # so a value read here that is already new is always covered by the shadow.
        value = self._shadow.get(key, self._kv.get(schema.state_key(key)))
        with self._lock:
            if generation == self._generation:
                _make_room(self._records, 1, self.MAX_CACHED)
                self._records[key] = value
        return value

    def bucket_records(self, buckets: Iterable[int]) -> dict[int, list[tuple[bytes, bytes]]]:
        """The lists returned are shared with the cache: read them, never change them."""
        out: dict[int, list[tuple[bytes, bytes]]] = {}
        missing: list[int] = []
        for bucket in buckets:
            cached = self._buckets.get(bucket)
            if cached is None:
                missing.append(bucket)
            else:
                out[bucket] = cached
        if missing:
            generation = self._generation
            stored = self.stored_bucket_records(missing)  # one snapshot, then the shadow
            found = {bucket: _overlaid(items, self._shadow_buckets.get(bucket)) for bucket, items in stored.items()}
            with self._lock:
                if generation == self._generation:
                    self._cache_buckets(found)
            out.update(found)
        return out

    def leaves(self) -> Iterator[tuple[bytes, bytes]]:
        stored = list(_strip(self._kv.iterate(schema.STATE)))
        return iter(_overlaid(stored, self._shadow))

    def stored_bucket_records(self, buckets: Iterable[int]) -> dict[int, list[tuple[bytes, bytes]]]:
        """What the store holds now, written but unpublished records included."""
        wanted = list(buckets)
        found = self._kv.scan([schema.state_bucket_prefix(bucket) for bucket in wanted])
        return {bucket: list(_strip(items)) for bucket, items in zip(wanted, found, strict=True)}

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
            with self._lock:
                if generation == self._generation:
                    _make_room(self._accounts, 1, self.MAX_CACHED)
                    self._accounts[address] = found
        return found

    def job(self, job_id: bytes) -> Job | None:
        return read_job(self, job_id)

    def burned(self) -> int:
        return read_burned(self)  # through the record cache


def _make_room(cache: dict[Any, Any], incoming: int, limit: int) -> None:
    """Before ``incoming`` entries go into ``cache``: if they would pass ``limit``, the
    older half of it goes (the order of insertion), or all of it if that is not enough."""
    if len(cache) + incoming > limit:
        for key in list(itertools.islice(cache, (len(cache) + 1) // 2)):
            del cache[key]
        if len(cache) + incoming > limit:
            cache.clear()


def _overlaid(stored: list[tuple[bytes, bytes]], shadow: dict[bytes, bytes | None] | None) -> list[tuple[bytes, bytes]]:
    """``stored`` records (in key order) with the shadowed ones shown at their old values."""
    if not shadow:
        return stored
    merged = dict(stored)
    for key, old in shadow.items():
        if old is None:
            merged.pop(key, None)
        else:
            merged[key] = old
    return sorted(merged.items())


def _strip(items: Iterable[tuple[bytes, bytes]]) -> Iterator[tuple[bytes, bytes]]:
    """State records without their ``s:`` + bucket prefix: ``(record key, value)``."""
    n = len(schema.STATE) + 2
    for key, value in items:
        yield key[n:], value


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
        if isinstance(tx.payload, EscrowPayload):
            job = view.job(tx.payload.job_id)
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
        self._unpublished: _Written | None = None
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
        block = self._stored_block(int.from_bytes(raw[:8], "big"))
        if block is None or block.hash != raw[8:]:
            raise StoreError("store head points at a missing block")
        return block.header

    @property
    def head(self) -> BlockHeader:
        return self._head

    def commit(self, applied: AppliedBlock, *, certificate: bytes | None = None) -> None:
        """:meth:`write_block` and :meth:`publish` at once."""
        self.write_block(applied, certificate=certificate)
        self.publish()

    def write_block(self, applied: AppliedBlock, *, certificate: bytes | None = None) -> None:
        """Write the block, its state changes, receipts, undo record and indexes in one
        synced batch. Readers keep seeing the old head and state until :meth:`publish`.

        ``applied`` must extend the head (height 0: the genesis) and sit on this store's state.
        """
        block = applied.block
        h = block.height
        self._check_published()
        if h and (block.header.parent != self._head.hash or h != self._head.height + 1):
            raise StoreError(f"block {h} does not extend the head {self._head.height}")
        changes = applied.state.changes
        old = {k: self.state.get(k) for k in changes}
        undo = [[k] if (v := old[k]) is None else [k, v] for k in sorted(changes)]
        puts: list[tuple[bytes, bytes]] = [
            (schema.block_key(h), block.encode()),
            (schema.hash_key(block.hash), schema.u64(h)),
            (schema.HEAD, schema.u64(h) + block.hash),
            (schema.receipts_key(h), encode_receipts(applied.receipts)),
            (schema.undo_key(h), encode(undo)),
        ]
        if certificate is not None:
            puts.append((schema.cert_key(h), certificate))
        puts += [(schema.state_key(k), v) for k, v in changes.items()]
        puts += [(schema.tx_key(tx.hash), schema.u64(h) + schema.u32(i)) for i, tx in enumerate(block.txs)]
        puts += [(key, block.txs[i].hash) for key, i in _history_keys(block, applied.state)]
        crash_point("commit.before_batch")
        self._write(old, puts, [schema.fork_key(block.hash)])
        state = applied.state
        self._unpublished = _Written(block.header, applied.tree, changes, state.accounts, state.bucket_contents)
        crash_point("commit.after_batch")

    def publish(self) -> None:
        """Make the last write visible: head, state and state tree move together, in one
        step on the caller's thread (call it on the event loop, with whatever must move
        with the state, such as the mempool, and no checkpoint in between)."""
        if self._unpublished is None:
            return
        written, self._unpublished = self._unpublished, None
        self.state.changed(written.records, written.accounts, written.buckets)
        self.state._tree = written.tree
        self._head = written.header
        crash_point("commit.after_head")

    def _check_published(self) -> None:
        if self._unpublished is not None:
            raise StoreError(f"block {self._unpublished.header.height} is written but not yet published")

    def _write(self, old: dict[bytes, bytes | None], puts: list[tuple[bytes, bytes]], deletes: list[bytes]) -> None:
        self.state.shadow(old)
        try:
            self.kv.write(puts, deletes, sync=True)
        except BaseException:
            self.state.shadow({})  # the batch is all or nothing: nothing changed
            raise

    def revert_head(self) -> Block:
        """:meth:`write_revert` and :meth:`publish` at once."""
        block = self.write_revert()
        self.publish()
        return block

    def write_revert(self) -> Block:
        """Undo the head block (not the genesis) in one synced batch; keep it as a side block.
        Readers see the parent as the head only after :meth:`publish`."""
        self._check_published()
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
        old: dict[bytes, bytes | None] = {}
        for entry in decode(raw_undo):
            touched.add(bucket_of(entry[0]))
            old[entry[0]] = self.state.get(entry[0])
            if len(entry) == 1:
                deletes.append(schema.state_key(entry[0]))
            else:
                puts.append((schema.state_key(entry[0]), entry[1]))
        deletes += [schema.tx_key(tx.hash) for tx in block.txs]
        deletes += [key for key, _ in _history_keys(block, self.state)]  # the state is still the block's
        self._write(old, puts, deletes)
        stored = self.state.stored_bucket_records(sorted(touched))
        tree = self.state.tree().updated({b: bucket_root(records) for b, records in stored.items()})
        self._unpublished = _Written(parent.header, tree)
        if tree.root != parent.header.state_root:
            self.publish()  # what is on disk now
            raise StoreError(f"state after reverting block {h} does not match block {h - 1}")
        return block

    # Readers see the published chain only: a block written by write_block, its
    # transactions, receipts and certificate show once publish moves the head (and the
    # state) to it. Otherwise a transaction could read as committed while the balances
    # it changed still read as before.
    def block(self, height: int) -> Block | None:
        return self._stored_block(height) if height <= self._head.height else None

    def _stored_block(self, height: int) -> Block | None:
        raw = self.kv.get(schema.block_key(height))
        return None if raw is None else Block.decode(raw)

    def side_block(self, block_hash: bytes) -> Block | None:
        raw = self.kv.get(schema.fork_key(block_hash))
        return None if raw is None else Block.decode(raw)

    def put_side_block(self, block: Block) -> None:
        self.kv.write([(schema.fork_key(block.hash), block.encode())], sync=False)

    def certificate(self, height: int) -> bytes | None:
        return self.kv.get(schema.cert_key(height)) if height <= self._head.height else None

    def height_of(self, block_hash: bytes) -> int | None:
        """The height of a block on the chain, written but unpublished included (it is
        ours already: gossip of it is a duplicate)."""
        raw = self.kv.get(schema.hash_key(block_hash))
        return None if raw is None else int.from_bytes(raw, "big")

    def blocks(self, start: int, end: int) -> list[Block]:
        """Blocks ``start..end`` inclusive that exist, in order."""
        return [Block.decode(raw) for raw in self.encoded_blocks(start, end)]

    def encoded_blocks(self, start: int, end: int, *, max_bytes: int | None = None) -> list[bytes]:
        """The canonical encodings of blocks ``start..end`` inclusive that exist, in order,
        as stored (nothing decoded); with ``max_bytes``, only as many as fit in it (and at
        least the first)."""
        out: list[bytes] = []
        size = 0
        for height in range(max(start, 0), min(end, self._head.height) + 1):
            raw = self.kv.get(schema.block_key(height))
            if raw is None:
                break
            size += len(raw)
            if out and max_bytes is not None and size > max_bytes:
                break
            out.append(raw)
        return out

    def receipts(self, height: int) -> list[Receipt]:
        raw = self.kv.get(schema.receipts_key(height)) if height <= self._head.height else None
        return [] if raw is None else [Receipt.from_wire(r) for r in decode(raw)]

    def find_tx(self, tx_hash: bytes) -> TxLocation | None:
        raw = self.kv.get(schema.tx_key(tx_hash))
        if raw is None:
            return None
        height, index = int.from_bytes(raw[:8], "big"), int.from_bytes(raw[8:], "big")
        if height > self._head.height:
            return None  # written, not yet published
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
        bucket = bucket_of(key)
        return prove(self.state.tree(), self.state.bucket_records([bucket])[bucket], key)

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
