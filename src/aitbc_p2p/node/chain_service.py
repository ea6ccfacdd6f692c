"""The chain service: the only writer of the chain store.

It holds the import lock and the head event, and does every change of the main chain:
import a block that extends the head, take a better tip (reorg), build and commit this
node's blocks, commit blocks BFT consensus decided. Engines differ only through the
finality policy it is given (:mod:`aitbc_p2p.consensus.finality`), never by a branch here.
Other services read it through :class:`~aitbc_p2p.node.abc.ChainView`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from collections.abc import Set as AbstractSet
from functools import partial

import trio

from aitbc_p2p.chain.blocks import AppliedBlock, build_block, validate_block
from aitbc_p2p.chain.models import Block, BlockHeader, Genesis, Transaction
from aitbc_p2p.chain.votes import Vote
from aitbc_p2p.consensus import ConsensusEngine, FinalityPolicy
from aitbc_p2p.crypto.keys import PrivateKey
from aitbc_p2p.exceptions import ConsensusError, ValidationError
from aitbc_p2p.mempool import Mempool
from aitbc_p2p.node.offload import blocking
from aitbc_p2p.node.verify import verify_signatures
from aitbc_p2p.store import ChainStore
from aitbc_p2p.store.chain import StoreStateView, TxLocation
from aitbc_p2p.types import Address, Hash32

logger = logging.getLogger(__name__)

MAX_FUTURE_MS = 5_000
"""How far ahead of this node's clock a block's timestamp may be."""


class ChainService:
    def __init__(
        self,
        store: ChainStore,
        genesis: Genesis,
        engine: ConsensusEngine,
        finality: FinalityPolicy,
        mempool: Mempool,
        key: PrivateKey,
        clock_ms: Callable[[], int],
        *,
        max_block_txs: int,
    ) -> None:
        self.store = store
        self.genesis = genesis
        self.rules = mempool.rules  # one set of rules for the pool and the chain
        self.engine = engine
        self.finality = finality
        self.mempool = mempool
        self._key = key
        self._clock_ms = clock_ms
        self._max_block_txs = max_block_txs
        self._lock = trio.Lock()
        self._head_changed = trio.Event()
        self.head_listeners: list[Callable[[int], None]] = []
        """Called with the new height after every change of the head, on the event loop."""
        self.reverted_listeners: list[Callable[[list[Transaction]], None]] = []
        """Called with the transactions a reorg put back into the pool."""

    # ----------------------------------------------------------- ChainView
    @property
    def head(self) -> BlockHeader:
        return self.store.head

    @property
    def state(self) -> StoreStateView:
        return self.store.state

    def block(self, height: int) -> Block | None:
        return self.store.block(height)

    def height_of(self, block_hash: bytes) -> int | None:
        return self.store.height_of(block_hash)

    def find_tx(self, tx_hash: bytes) -> TxLocation | None:
        return self.store.find_tx(tx_hash)

    async def wait_head_change(self) -> None:
        await self._head_changed.wait()

    def next_head_change(self) -> trio.Event:
        """The event set at the next head change: taken before reading the head, a waiter
        misses no change that happens while it works."""
        return self._head_changed

    async def wait_height(self, height: int) -> None:
        while self.store.head.height < height:
            await self.wait_head_change()

    def _proposer_at(self, height: int) -> Address | None:
        block = self.store.block(height)
        return None if block is None else block.header.proposer

    def final_depth(self) -> int:
        """How many blocks at the top of the main chain fork choice may still revert."""
        return self.finality.final_depth(self.store.head.height, self._proposer_at)

    def schedules(self, header: BlockHeader) -> bool:
        try:
            self.finality.check_proposer(header, self._proposer_at)
        except ConsensusError:
            return False
        return True

    def recent_proposers(self) -> list[Address]:
        """The proposers of the latest blocks that the schedule of the head's child skips
        (signer recency, poa; none under BFT), the head's first."""
        return self.finality.recent(self.store.head.height, self._proposer_at)

    def final_height(self) -> int:
        """The highest block that can no longer be reverted."""
        return self.store.head.height - self.final_depth()

    def better(self, tip: BlockHeader, than: BlockHeader) -> bool:
        return self.finality.better(tip, than)

    # -------------------------------------------------------------- import
    async def import_block(
        self, block: Block, certificate: Sequence[Vote] = (), *, verified: AbstractSet[Hash32] = frozenset()
    ) -> bool:
        """Validate and commit ``block`` if it extends the head, or take it as a better tip.

        ``certificate``: its commit votes, where the finality policy needs them.
        ``verified``: hashes of its transactions whose signatures were checked already.
        Returns True if committed.

        Raises:
            ValidationError / ConsensusError: the block is invalid (its sender is at fault).
        """
        async with self._lock:
            head = self.store.head
            if block.height == head.height and block.hash != head.hash:
                if block.header.parent == head.parent and self.finality.better(block.header, head):
                    return await self._reorg(head.height - 1, [block], verified)
                return False
            if block.height != head.height + 1 or block.header.parent != head.hash:
                return False
            applied = await self._validate(block, head, certificate, verified=verified)
            await self._commit(applied, certificate)
        # DEBUG: a syncing peer imports thousands; sync logs each batch at INFO.
        logger.debug("imported block %d (%d txs) from %s", block.height, len(block.txs), block.header.proposer)
        return True

    async def reorg(self, ancestor: int, blocks: list[Block], verified: AbstractSet[Hash32] = frozenset()) -> bool:
        """Switch to ``blocks`` (which extend block ``ancestor``) if their tip is better."""
        async with self._lock:
            if not blocks or not self.finality.better(blocks[-1].header, self.store.head):
                return False
            return await self._reorg(ancestor, blocks, verified)

    # ------------------------------------------------------------- authoring
    async def propose(self, height: int, round: int) -> Block | None:
        """Build, commit and return this node's block at ``height`` (None: the head moved)."""
        async with self._lock:
            head = self.store.head
            if head.height + 1 != height:
                return None
            applied = await self._build(head, round)
            await self._commit(applied)
        return applied.block

    async def build(self, round: int) -> AppliedBlock:
        return await self._build(self.store.head, round)

    async def validate_proposal(self, block: Block) -> AppliedBlock:
        head = self.store.head
        if block.header.parent != head.hash or block.height != head.height + 1:
            raise ValidationError(f"block {block.height} does not extend the head {head.height}")
        return await self._validate(block, head, check_certificate=False)

    async def commit_decided(
        self, block: Block, certificate: Sequence[Vote], applied: AppliedBlock | None = None
    ) -> bool:
        """Commit a block that BFT consensus decided (``applied``: its validated state, if known)."""
        async with self._lock:
            head = self.store.head
            if block.height != head.height + 1 or block.header.parent != head.hash:
                return False
            if applied is None or applied.state.base is not self.store.state:
                applied = await self._validate(block, head, certificate)
            else:
                self.finality.check(block, certificate)
            await self._commit(applied, certificate)
        return True

    async def remember_proposal(self, block: Block) -> None:
        await blocking(self.store.put_side_block, block)

    def proposal(self, block_hash: bytes) -> Block | None:
        return self.store.side_block(block_hash)

    # ------------------------------------------------------------ internals
    async def _build(self, head: BlockHeader, round: int) -> AppliedBlock:
        # The candidates are taken here, on the event loop that admits into the pool:
        # iterating it in the worker thread would race admissions. Twice the block leaves
        # room for candidates that no longer apply without walking a pool of ten thousand.
        candidates = list(self.mempool.candidates(limit=2 * self._max_block_txs))
        build = partial(
            build_block,
            self._key,
            head,
            self.store.state,
            candidates,
            self.rules,
            timestamp_ms=max(self._clock_ms(), self.engine.due_ms(head, round)),
            max_txs=self._max_block_txs,
            verified=self.mempool,  # every pooled transaction was verified on admission
            round=round,
        )
        applied, dropped = await blocking(build)
        self.mempool.remove([tx for tx, _ in dropped])
        for tx, err in dropped:
            logger.info("dropped tx %s: %s", tx.hash.hex()[:16], err)
        return applied

    async def _validate(
        self,
        block: Block,
        parent: BlockHeader,
        certificate: Sequence[Vote] = (),
        *,
        check_certificate: bool = True,
        verified: AbstractSet[Hash32] = frozenset(),
    ) -> AppliedBlock:
        """Consensus, signature and state checks of ``block`` on top of the head state."""
        if block.header.timestamp_ms > self._clock_ms() + MAX_FUTURE_MS:
            raise ValidationError(f"block {block.height} is too far in the future")
        self.engine.validate_header(block.header, parent)
        self.finality.check_proposer(block.header, self._proposer_at)
        if check_certificate:
            self.finality.check(block, certificate)
        # Pooled transactions were verified on admission; verify the rest on all cores.
        unseen = [tx for tx in block.txs if tx.hash not in self.mempool and tx.hash not in verified]
        good, bad = await verify_signatures(unseen)
        if bad:
            raise ValidationError(f"block {block.height} holds a badly signed transaction: {bad[0][1]}")
        good |= {tx.hash for tx in block.txs if tx.hash in self.mempool or tx.hash in verified}
        return await blocking(partial(validate_block, block, parent, self.store.state, self.rules, verified=good))

    async def _commit(self, applied: AppliedBlock, certificate: Sequence[Vote] = ()) -> None:
        """Write the block in a worker thread (a synced batch), then publish it."""
        cert = self.finality.certificate_bytes(certificate)
        await blocking(partial(self.store.write_block, applied, certificate=cert))
        self._publish([applied.block])

    async def _revert_head(self) -> Block:
        self.finality.reverted(self.store.head.height)
        block = await blocking(self.store.write_revert)
        self._publish([])
        return block

    def _publish(self, committed: list[Block]) -> None:
        """The written change becomes the state everyone on the event loop sees, and the
        pool moves with it in the same step: no checkpoint in between, so an admission
        never meets a state whose nonces the pool has not caught up with."""
        self.store.publish()
        self.mempool.settle(self.store.state, committed)
        for block in committed:  # finality reads them; decoding stored blocks later would block the loop
            self.finality.committed(block)
        self._head_changed.set()
        self._head_changed = trio.Event()
        height = self.store.head.height
        for listener in self.head_listeners:
            listener(height)

    async def _reorg(self, ancestor: int, blocks: list[Block], verified: AbstractSet[Hash32] = frozenset()) -> bool:
        """Switch the main chain to ``blocks`` (which extend block ``ancestor``); lock held.

        Reverts no final block; if a new block is invalid, the old chain is restored.
        Transactions of reverted blocks go back to the pool (and to the reverted listeners).
        ``verified``: hashes of the new blocks' transactions whose signatures were checked.
        """
        head = self.store.head
        if head.height - ancestor > self.final_depth():
            logger.warning("refusing a reorg of %d blocks: it would revert a final block", head.height - ancestor)
            return False
        reverted: list[Block] = []
        while self.store.head.height > ancestor:
            reverted.append(await self._revert_head())
        try:
            for block in blocks:
                await self._commit(await self._validate(block, self.store.head, verified=verified))
        except (ValidationError, ConsensusError) as e:
            logger.warning("reorg to a fork failed (%s); restoring the old chain", e)
            while self.store.head.height > ancestor:
                await self._revert_head()
            ours = {tx.hash for b in reverted for tx in b.txs}  # checked when first committed
            for block in reversed(reverted):
                await self._commit(await self._validate(block, self.store.head, verified=ours))
            raise
        kept = {tx.hash for b in blocks for tx in b.txs}
        orphans = [tx for b in reverted for tx in b.txs if tx.hash not in kept]
        back = self.mempool.reinject(orphans, self.store.state, height=self.store.head.height)
        logger.warning(
            "reorg: reverted %d blocks to %d, now at %d; %d txs pending again",
            len(reverted), ancestor, self.store.head.height, len(back),
        )  # fmt: skip
        if back:
            for listener in self.reverted_listeners:
                listener(back)
        return True
