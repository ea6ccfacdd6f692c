"""The chain store: blocks, state and indexes over a :class:`KeyValueStore`.

A block, its state changes and its indexes commit in one synced write batch, so a
reopened store is always at the last whole block (specs/wire.md, "Storage").
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

from aitbc_p2p.chain.blocks import AppliedBlock, genesis_block
from aitbc_p2p.chain.models import Block, BlockHeader, Genesis, Transaction
from aitbc_p2p.chain.state import BURNED_KEY, Account, Job, account_key, job_key
from aitbc_p2p.codec import decode
from aitbc_p2p.exceptions import StoreError
from aitbc_p2p.store import schema
from aitbc_p2p.store.abc import KeyValueStore
from aitbc_p2p.types import Address, Hash32

logger = logging.getLogger(__name__)


class StoreStateView:
    """The committed state as a :class:`~aitbc_p2p.chain.state.StateView`."""

    def __init__(self, kv: KeyValueStore) -> None:
        self._kv = kv

    def account(self, address: Address) -> Account:
        raw = self._kv.get(schema.state_key(account_key(address)))
        return Account() if raw is None else Account.decode(raw)

    def job(self, job_id: Hash32) -> Job | None:
        raw = self._kv.get(schema.state_key(job_key(job_id)))
        return None if raw is None else Job.decode(raw)

    def burned(self) -> int:
        raw = self._kv.get(schema.state_key(BURNED_KEY))
        return 0 if raw is None else int(decode(raw))

    def leaves(self) -> Iterator[tuple[bytes, bytes]]:
        n = len(schema.STATE)
        for key, value in self._kv.iterate(schema.STATE):
            yield key[n:], value


@dataclass(frozen=True, slots=True)
class TxLocation:
    tx: Transaction
    height: int
    index: int


class ChainStore:
    """Blocks and state of one chain. Synchronous: call blocking methods off the event loop."""

    def __init__(self, kv: KeyValueStore, genesis: Genesis) -> None:
        self.kv = kv
        self.genesis = genesis
        self.state = StoreStateView(kv)
        stored = kv.get(schema.GENESIS)
        if stored is None:
            self.kv.write([(schema.SCHEMA, bytes([schema.SCHEMA_VERSION])), (schema.GENESIS, genesis.hash)])
            self.commit(genesis_block(genesis))
        elif stored != genesis.hash:
            raise StoreError("the data directory holds another chain (genesis hash differs)")
        elif kv.get(schema.SCHEMA) != bytes([schema.SCHEMA_VERSION]):
            raise StoreError("the data directory uses an unknown store schema version")
        self._head = self._load_head()

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

    def commit(self, applied: AppliedBlock) -> None:
        """Write the block, its state changes and indexes in one synced batch."""
        block = applied.block
        h = block.height
        puts: list[tuple[bytes, bytes]] = [
            (schema.block_key(h), block.encode()),
            (schema.hash_key(block.hash), schema.u64(h)),
            (schema.HEAD, schema.u64(h) + block.hash),
        ]
        puts += [(schema.state_key(k), v) for k, v in applied.state.diff.items()]
        for i, tx in enumerate(block.txs):
            puts.append((schema.tx_key(tx.hash), schema.u64(h) + schema.u32(i)))
            parties = set(tx.parties())
            job = applied.state.job(Hash32(tx.payload["job_id"])) if "job_id" in tx.payload else None
            if job is not None:
                parties |= {job.client, job.provider}
            puts += [(schema.history_key(a, h, i), tx.hash) for a in sorted(parties)]
        self.kv.write(puts, sync=True)
        self._head = block.header

    def block(self, height: int) -> Block | None:
        raw = self.kv.get(schema.block_key(height))
        return None if raw is None else Block.decode(raw)

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

    def find_tx(self, tx_hash: bytes) -> TxLocation | None:
        raw = self.kv.get(schema.tx_key(tx_hash))
        if raw is None:
            return None
        height, index = int.from_bytes(raw[:8], "big"), int.from_bytes(raw[8:], "big")
        block = self.block(height)
        if block is None:
            raise StoreError(f"tx index points at missing block {height}")
        return TxLocation(block.txs[index], height, index)

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
