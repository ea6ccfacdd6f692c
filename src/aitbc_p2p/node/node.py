"""The composition root: :func:`open_node` wires store, consensus, mempool, network,
compute and market together and owns every task they need.

Services (all children of the node's nursery):

* block producer: proposes when the engine's schedule names this peer;
* gossip handlers for the tx, block, job and provider topics;
* peer manager: dials bootstrap peers, exchanges status (chain id, genesis hash,
  head) with every connected peer, disconnects peers of another chain, and syncs
  blocks by height range from peers that are ahead;
* provider: announces its capability record, bids on offers it can run, serves the
  job stream, posts the receipt and settles.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from collections.abc import Set as AbstractSet
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from functools import partial
from typing import Any

import trio

from aitbc_p2p.chain.batch import Checked, CheckedBlock
from aitbc_p2p.chain.blocks import AppliedBlock, build_block, validate_block
from aitbc_p2p.chain.models import Block, BlockHeader, Transaction
from aitbc_p2p.chain.state import account_key, supply_of
from aitbc_p2p.chain.transition import ChainRules
from aitbc_p2p.chain.votes import Vote
from aitbc_p2p.codec import decode, encode
from aitbc_p2p.codec import head as cbor_head
from aitbc_p2p.compute import open_executor
from aitbc_p2p.consensus import engine_for
from aitbc_p2p.consensus.tendermint import decode_certificate, encode_certificate, verify_certificate
from aitbc_p2p.exceptions import (
    CodecError,
    ConsensusError,
    HandshakeRefused,
    NetworkError,
    TxRejected,
    ValidationError,
)
from aitbc_p2p.mempool import Mempool
from aitbc_p2p.network import (
    CONSENSUS_PROTOCOL,
    JOB_PROTOCOL,
    MAX_SYNC_FRAME,
    PEERS_PROTOCOL,
    STATUS_PROTOCOL,
    SYNC_PROTOCOL,
    GossipMessage,
    Network,
    ValidationResult,
    open_libp2p_network,
    topic,
)
from aitbc_p2p.node.bft import BftDriver
from aitbc_p2p.node.bundles import decode_bundle, split_bundles
from aitbc_p2p.node.config import NodeConfig
from aitbc_p2p.node.market import MarketService
from aitbc_p2p.node.offload import blocking
from aitbc_p2p.node.peers import Backoff, PeerBook
from aitbc_p2p.node.verify import (
    BLOCKS_AHEAD,
    decode_and_verify,
    decode_block,
    decode_block_message,
    pipelined,
    use_worker_processes,
    verify_signatures,
    warm_up,
)
from aitbc_p2p.node.views import block_view, jsonable, tx_view
from aitbc_p2p.store import ChainStore, LevelDBKV, MemoryKV
from aitbc_p2p.store.abc import KeyValueStore
from aitbc_p2p.types import Address, Hash32, JobId, format_aitbc

logger = logging.getLogger(__name__)

SYNC_BATCH = 64
"""Most blocks in one sync response (fewer when they would pass MAX_SYNC_FRAME)."""
EXCHANGE_EVERY_S = 10.0
"""How often, while under the peer floor, each connected peer is asked for more peers."""
MAX_FUTURE_MS = 5_000
MAX_PENDING_CHECKS = 256
"""Stateless results of accepted bundles kept for the stateful stage (oldest dropped first)."""
MAX_PENDING_BLOCK_CHECKS = 16
"""Gossiped blocks whose gate result waits for delivery (a full one decoded is about
1.2 MB); blocks are delivered one by one right after their check, so few ever wait."""
MAX_REORG_FETCH = 256
FINALITY_WINDOW = 256
"""Blocks below the head whose proposers the engine is shown to decide finality: a block
deeper than this is final whatever they were (the most a reorg ever reverts)."""
JOB_STREAMS_PER_PEER = 256
"""Job requests one client peer may have in service at once (each waits for its escrow
and runs in the executor's slots; the rate limit still applies to opening them)."""


def encode_block_message(block: Block, certificate: bytes = b"\x80") -> bytes:
    """``[block, certificate]`` as canonical CBOR, reusing the block's cached encoding.

    The certificate is the CBOR list of precommits (empty for engines without votes).
    """
    return cbor_head(4, 2) + block.encode() + certificate


def encode_sync_item(encoded_block: bytes, certificate: bytes = b"\x80") -> bytes:
    """``[block bytes, certificate]``: one block of a sync response, the block as a byte
    string so that the receiver decodes it in a worker process."""
    return cbor_head(4, 2) + cbor_head(2, len(encoded_block)) + encoded_block + certificate


def decode_sync_item(obj: object) -> tuple[bytes, tuple[Vote, ...]]:
    """Parse a decoded ``[block bytes, certificate]``. Raises ValidationError."""
    if not isinstance(obj, list) or len(obj) != 2 or not isinstance(obj[0], bytes):
        raise ValidationError("a sync item is [block bytes, certificate]")
    return obj[0], decode_certificate(obj[1])


class _Forked(Exception):
    """The first block of a sync batch does not extend our head."""


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class Node:
    """A running peer. Create it with :func:`open_node`; every method runs on the Trio thread."""

    def __init__(
        self,
        config: NodeConfig,
        store: ChainStore,
        network: Network,
        nursery: trio.Nursery,
        clock_ms: Callable[[], int] = wall_clock_ms,
    ) -> None:
        self.config = config
        self.key = config.key
        self.genesis = config.genesis
        self._genesis_hash = config.genesis.hash  # in every status exchange
        self.rules = ChainRules.of(config.genesis)
        self.engine = engine_for(config.genesis)
        self.store = store
        self.network = network
        self.mempool = Mempool(self.rules)
        self.clock_ms = clock_ms
        self._nursery = nursery
        self._import_lock = trio.Lock()
        self._head_changed = trio.Event()
        self._peer_heads: dict[str, int] = {}
        """Heads that connected peers told us (pruned to the connected ones each round)."""
        self.peers = PeerBook(network.peer_id)
        self._backoff = Backoff(trio.current_time)
        self._dialing: set[str] = set()
        self._exchanged: dict[str, float] = {}
        self._topics = {
            name: topic(self.genesis.chain_id, name) for name in ("tx", "block", "job", "provider", "consensus")
        }
        self.market = MarketService(self)
        self.bft: Any = None
        self._outbox: list[bytes] = []
        self._outbox_ready = trio.Event()
        self._proposers: dict[int, Address] = {}
        """Proposers of the main chain's recent blocks by height (for finality), pruned
        below the finality window; a reverted height is dropped."""
        self._bundle_checks: dict[bytes, Checked] = {}
        self._block_checks: dict[bytes, tuple[Block, tuple[Vote, ...], AbstractSet[Hash32]]] = {}

    # ----------------------------------------------------------------- chain
    @property
    def head(self) -> BlockHeader:
        return self.store.head

    async def wait_head_change(self) -> None:
        await self._head_changed.wait()

    async def wait_height(self, height: int) -> None:
        while self.store.head.height < height:
            await self.wait_head_change()

    def _advanced(self) -> None:
        self._head_changed.set()
        self._head_changed = trio.Event()
        self.market.on_head(self.store.head.height)

    async def import_block(
        self, block: Block, certificate: tuple[Vote, ...] = (), *, verified: AbstractSet[Hash32] = frozenset()
    ) -> bool:
        """Validate and commit ``block`` if it extends the head, or take it as a better tip.

        BFT engines need the block's commit certificate. ``verified``: hashes of its
        transactions whose signatures were checked already. Returns True if committed.

        Raises:
            ValidationError / ConsensusError: the block is invalid (its sender is at fault).
        """
        async with self._import_lock:
            head = self.store.head
            if block.height == head.height and block.hash != head.hash and not self.engine.bft:
                if block.header.parent == head.parent and self._better(block.header, head):
                    return await self._reorg(head.height - 1, [block], verified)
                return False
            if block.height != head.height + 1 or block.header.parent != head.hash:
                return False
            applied = await self._validate(block, head, certificate, verified=verified)
            await self._commit(applied, certificate)
        # DEBUG: a syncing peer imports thousands; sync_from logs each batch at INFO.
        logger.debug("imported block %d (%d txs) from %s", block.height, len(block.txs), block.header.proposer)
        return True

    def topic(self, name: str) -> str:
        return self._topics[name]

    async def commit_decided(
        self, block: Block, certificate: tuple[Vote, ...], applied: AppliedBlock | None = None
    ) -> bool:
        """Commit a block that BFT consensus decided (``applied``: its validated state, if known)."""
        async with self._import_lock:
            head = self.store.head
            if block.height != head.height + 1 or block.header.parent != head.hash:
                return False
            if applied is None or applied.state.base is not self.store.state:
                applied = await self._validate(block, head, certificate)
            else:
                verify_certificate(self.engine, block.hash, block.height, certificate)  # type: ignore[arg-type]
            await self._commit(applied, certificate)
        await self.publish_block(block, certificate)
        return True

    def final_depth(self) -> int:
        """How many blocks at the top of the main chain are not final (at most
        FINALITY_WINDOW): the engine decides from their proposers."""
        head = self.store.head.height
        if self.engine.bft or head == 0:
            return 0
        low = max(1, head - FINALITY_WINDOW + 1)
        for h in [h for h in self._proposers if h < low or h > head]:
            del self._proposers[h]
        proposers: list[Address] = []
        for h in range(head, low - 1, -1):
            proposer = self._proposers.get(h)
            if proposer is None:
                block = self.store.block(h)
                if block is None:
                    break
                proposer = self._proposers[h] = block.header.proposer
            proposers.append(proposer)
            if self.engine.final_depth(proposers) < len(proposers):
                break  # the engine found a final block: deeper ones are final too
        return min(self.engine.final_depth(proposers), head)

    def final_height(self) -> int:
        """The highest block that fork choice can no longer revert."""
        return self.store.head.height - self.final_depth()

    def _better(self, tip: BlockHeader, than: BlockHeader) -> bool:
        return self.engine.fork_score(tip) > self.engine.fork_score(than)

    async def _validate(
        self,
        block: Block,
        parent: BlockHeader,
        certificate: tuple[Vote, ...] = (),
        *,
        check_certificate: bool = True,
        verified: AbstractSet[Hash32] = frozenset(),
    ) -> AppliedBlock:
        """Consensus, signature and state checks of ``block`` on top of the head state."""
        if block.header.timestamp_ms > self.clock_ms() + MAX_FUTURE_MS:
            raise ValidationError(f"block {block.height} is too far in the future")
        self.engine.validate_header(block.header, parent)
        if self.engine.bft and check_certificate:
            verify_certificate(self.engine, block.hash, block.height, certificate)  # type: ignore[arg-type]
        # Pooled transactions were verified on admission; verify the rest on all cores.
        unseen = [tx for tx in block.txs if tx.hash not in self.mempool and tx.hash not in verified]
        good, bad = await verify_signatures(unseen)
        if bad:
            raise ValidationError(f"block {block.height} holds a badly signed transaction: {bad[0][1]}")
        good |= {tx.hash for tx in block.txs if tx.hash in self.mempool or tx.hash in verified}
        return await blocking(partial(validate_block, block, parent, self.store.state, self.rules, verified=good))

    async def _commit(self, applied: AppliedBlock, certificate: tuple[Vote, ...] = ()) -> None:
        """Write the block in a worker thread (a synced batch), then publish it."""
        cert = encode_certificate(certificate) if self.engine.bft else None
        await blocking(partial(self.store.write_block, applied, certificate=cert))
        self._publish([applied.block])

    async def _revert_head(self) -> Block:
        self._proposers.pop(self.store.head.height, None)
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
            self._proposers[block.height] = block.header.proposer
        if len(self._proposers) > 2 * FINALITY_WINDOW:  # bounded whether or not anyone asks for finality
            low = self.store.head.height - FINALITY_WINDOW
            self._proposers = {h: p for h, p in self._proposers.items() if h > low}
        self._advanced()

    async def _reorg(self, ancestor: int, blocks: list[Block], verified: AbstractSet[Hash32] = frozenset()) -> bool:
        """Switch the main chain to ``blocks`` (which extend block ``ancestor``); import lock held.

        Reverts no final block (:meth:`final_depth`); if a new block is invalid, the old chain
        is restored. Transactions of reverted blocks go back to the pool and are re-announced.
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
        for tx in back:
            self._nursery.start_soon(self._announce_tx, tx)
        return True

    async def _announce_tx(self, tx: Transaction) -> None:
        self._queue_for_gossip([tx])

    def _queue_for_gossip(self, txs: list[Transaction]) -> None:
        self._outbox.extend(tx.encode() for tx in txs)
        self._outbox_ready.set()

    async def _gossip_bundles(self) -> None:
        """Publish queued transactions in bundles: one message per ``bundle_interval_s``
        (or per MAX_BUNDLE transactions), since gossip costs per message, not per byte."""
        while True:
            await self._outbox_ready.wait()
            await trio.sleep(self.config.bundle_interval_s)
            self._outbox_ready = trio.Event()
            pending, self._outbox = self._outbox, []
            for bundle in split_bundles(pending):
                try:
                    await self.network.publish(self._topics["tx"], bundle)
                except NetworkError as e:
                    logger.warning("could not gossip a bundle of transactions: %s", e)

    async def _reannounce(self) -> None:
        """Gossip what is still pending again: a peer that missed it (down, partitioned,
        joined late) gets it; peers that saw the same bundle drop it as seen."""
        while True:
            await trio.sleep(self.config.reannounce_s)
            pending = list(self.mempool.candidates())
            if pending:
                logger.debug("re-announcing %d pending transactions", len(pending))
                self._queue_for_gossip(pending)

    async def _produce_blocks(self) -> None:
        """Non-BFT engines: propose when a round of the next height is ours and due.

        Round 0 is the primary's; when it is late, backup rounds fall due one after another.
        """
        rounds = len(getattr(self.engine, "authorities", (None,)))
        while True:
            head = self.store.head
            height = head.height + 1
            mine = [r for r in range(rounds) if self.engine.proposer(height, r) == self.key.address]
            if not mine:
                with trio.move_on_after(1.0):
                    await self.wait_head_change()
                continue
            now = self.clock_ms()
            due = [(self.engine.due_ms(head, r), r) for r in mine]
            ready = [(t, r) for t, r in due if t <= now]
            if not ready:
                with trio.move_on_after((min(due)[0] - now) / 1000):
                    await self.wait_head_change()
                continue
            await self._propose(height, round=min(ready, key=lambda tr: tr[1])[1])

    async def _propose(self, height: int, *, round: int = 0) -> None:
        async with self._import_lock:
            head = self.store.head
            if head.height + 1 != height:
                return
            applied, dropped = await self._build(head, round)
            await self._commit(applied)
        block = applied.block
        self.mempool.remove([tx for tx, _ in dropped])
        for tx, err in dropped:
            logger.info("dropped tx %s: %s", tx.hash.hex()[:16], err)
        logger.info("proposed block %d (round %d) with %d txs", block.height, round, len(block.txs))
        await self.publish_block(block)

    async def _build(self, head: BlockHeader, round: int) -> tuple[AppliedBlock, list[Any]]:
        # The candidates are taken here, on the event loop that admits into the pool:
        # iterating it in the worker thread would race admissions. Twice the block leaves
        # room for candidates that no longer apply without walking a pool of ten thousand.
        candidates = list(self.mempool.candidates(limit=2 * self.config.max_block_txs))
        build = partial(
            build_block,
            self.key,
            head,
            self.store.state,
            candidates,
            self.rules,
            timestamp_ms=max(self.clock_ms(), self.engine.due_ms(head, round)),
            max_txs=self.config.max_block_txs,
            verified=self.mempool,  # every pooled transaction was verified on admission
            round=round,
        )
        return await blocking(build)

    async def publish_block(self, block: Block, certificate: tuple[Vote, ...] = ()) -> None:
        try:
            await self.network.publish(
                self._topics["block"], encode_block_message(block, encode_certificate(certificate))
            )
        except NetworkError as e:
            logger.warning("could not gossip block %d: %s", block.height, e)

    # ------------------------------------------------------------ transactions
    async def submit_tx(self, tx: Transaction) -> Hash32:
        if self.store.find_tx(tx.hash) is not None:
            raise TxRejected("Duplicate", "transaction is already committed")
        self.mempool.add(tx, self.store.state, height=self.store.head.height)
        self._queue_for_gossip([tx])
        return tx.hash

    async def send_own_tx(self, kind: str, payload: dict[str, Any]) -> Hash32:
        """Sign a transaction with the node's key at its next pending nonce and submit it."""
        tx = Transaction.create(
            self.key,
            chain_id=self.genesis.chain_id,
            kind=kind,
            nonce=self.mempool.pending_nonce(self.key.address, self.store.state),
            fee=self.genesis.min_fee,
            payload=payload,
        )
        return await self.submit_tx(tx)

    # -------------------------------------------------------------- gossip in
    async def _check_bundle(self, data: bytes) -> Checked:
        """The stateless stage for a tx-topic message. Raises CodecError for a malformed bundle."""
        return await decode_and_verify(decode_bundle(data), self.rules)

    async def _valid_bundle(self, data: bytes) -> ValidationResult:
        """Stateless gate of the tx topic: a well-formed bundle whose every transaction
        decodes, is for this chain, pays the fee floor and is signed by its sender
        (decoding and signatures in worker processes). Honest peers relay only bundles they checked, so
        one bad transaction makes the whole bundle a REJECT. The result is kept for
        :meth:`_on_tx`."""
        try:
            verified = await self._check_bundle(data)
        except CodecError as e:
            logger.debug("rejected tx bundle: %s", e)
            return ValidationResult.REJECT
        if verified.rejected:
            i, reason = verified.rejected[0]
            logger.debug("rejected tx bundle: tx %d: %s", i, reason)
            return ValidationResult.REJECT
        if len(self._bundle_checks) >= MAX_PENDING_CHECKS:
            self._bundle_checks.pop(next(iter(self._bundle_checks)))
        self._bundle_checks[hashlib.sha256(data).digest()] = verified
        return ValidationResult.ACCEPT

    async def _check_block(self, data: bytes) -> tuple[Block, tuple[Vote, ...], AbstractSet[Hash32]]:
        """A block-topic message decoded, its header's and transactions' signatures
        checked, in a worker process (the event loop only unpickles the result):
        (block, certificate, hashes of its transactions). Raises ValidationError."""
        checked, certificate = await decode_block_message(data)
        if checked.block is None:
            raise ValidationError(checked.error)
        if checked.bad:
            raise ValidationError(f"block {checked.block.height} holds a badly signed transaction: {checked.bad[0][1]}")
        return checked.block, decode_certificate(certificate), checked.verified()

    async def _valid_block(self, data: bytes) -> ValidationResult:
        """Stateless gate of the block topic: a well-formed block for this chain, signed by
        its proposer, every transaction signed by its sender. The result is kept for
        :meth:`_on_block`, so the block is decoded once."""
        try:
            checked = await self._check_block(data)
        except ValidationError as e:
            logger.debug("rejected block message: %s", e)
            return ValidationResult.REJECT
        block = checked[0]
        if block.header.chain_id != self.genesis.chain_id:
            return ValidationResult.REJECT
        if block.header.proposer != self.engine.proposer(block.height, block.header.round):
            # Signed by its proposer, but that is not who the schedule names for its
            # height and round (an outsider, or an authority out of turn): no one
            # honest could have made it, so no one honest relays it (specs/topics.md).
            logger.debug("rejected block %d: %s is not its scheduled proposer", block.height, block.header.proposer)
            return ValidationResult.REJECT
        if self.store.height_of(block.hash) is not None:
            return ValidationResult.IGNORE  # already have it
        if len(self._block_checks) >= MAX_PENDING_BLOCK_CHECKS:
            self._block_checks.pop(next(iter(self._block_checks)))
        self._block_checks[hashlib.sha256(data).digest()] = checked
        return ValidationResult.ACCEPT

    async def _on_tx(self, inbox: trio.MemoryReceiveChannel[GossipMessage]) -> None:
        """The stateful stage: admit each transaction of an accepted bundle. A refusal
        here (a used nonce, a short balance) is not the sender's fault: it is dropped."""
        async for msg in inbox:
            if msg.origin == self.network.peer_id:
                continue  # our own bundle: its transactions are pooled already
            verified = self._bundle_checks.pop(hashlib.sha256(msg.data).digest(), None)
            if verified is None:  # our own bundle, or its check fell out of the cache
                try:
                    verified = await self._check_bundle(msg.data)
                except CodecError:
                    continue
            for tx in verified.txs:
                if tx.hash in self.mempool or self.store.find_tx(tx.hash) is not None:
                    continue
                try:
                    self.mempool.add(tx, self.store.state, height=self.store.head.height, verified=True)
                except TxRejected as e:
                    logger.debug("gossiped tx ignored: %s", e)

    async def _on_block(self, inbox: trio.MemoryReceiveChannel[GossipMessage]) -> None:
        async for msg in inbox:
            try:
                checked = self._block_checks.pop(hashlib.sha256(msg.data).digest(), None)
                if checked is None:  # our own block, or its check fell out of the cache
                    checked = await self._check_block(msg.data)
                block, certificate, verified = checked
                if block.height > self.store.head.height + 1:
                    if msg.origin in self._peer_heads:  # a peer we handshook with, not any name on a message
                        self._peer_heads[msg.origin] = max(self._peer_heads[msg.origin], block.height)
                    continue  # the peer manager syncs the gap
                await self.import_block(block, certificate, verified=verified)
            except (ValidationError, ConsensusError, CodecError) as e:
                logger.warning("rejected block from %s: %s", msg.origin, e)
                if msg.origin and msg.origin != self.network.peer_id:
                    # The publisher made a block the chain refuses; the peers that relayed
                    # it checked only what the gate can, so they are not at fault.
                    self.network.penalize(msg.origin, f"an invalid block ({e})")

    # ------------------------------------------------------------------ peers
    def status_message(self) -> dict[str, Any]:
        head = self.store.head
        return {
            "chain_id": self.genesis.chain_id,
            "genesis": self._genesis_hash,
            "height": head.height,
            "head": head.hash,
            "listen": self._advertised(),
        }

    def _advertised(self) -> list[str]:
        me = self.network.peer_id
        if not self.config.announce:
            return self.network.listen_addrs()
        return [a if "/p2p/" in a else f"{a}/p2p/{me}" for a in self.config.announce]

    def _check_status(self, peer: str, status: Any) -> int:
        if not isinstance(status, dict) or not isinstance(status.get("height"), int):
            raise HandshakeRefused("malformed status")
        if status.get("chain_id") != self.genesis.chain_id or status.get("genesis") != self._genesis_hash:
            raise HandshakeRefused(f"peer {peer} is on another chain ({status.get('chain_id')!r})")
        height: int = status["height"]
        self.peers.verified(peer, status.get("listen"))
        return height

    def _refuse(self, peer: str, reason: str) -> None:
        self.network.ban(peer, reason)
        self.peers.forget(peer)
        self._peer_heads.pop(peer, None)

    async def _serve_status(self, peer: str, request: bytes) -> bytes:
        try:
            self._peer_heads[peer] = self._check_status(peer, decode(request))
        except (CodecError, HandshakeRefused) as e:
            logger.warning("refusing peer %s: %s", peer, e)
            self._refuse(peer, str(e))
        return encode(self.status_message())

    async def _serve_peers(self, peer: str, request: bytes) -> bytes:
        """Peer exchange: verified peers of this chain, for a peer that passed the handshake."""
        if peer not in self._peer_heads:
            raise NetworkError("peer exchange before a status handshake")
        return encode(self.peers.share(exclude=peer))

    async def _exchange_peers(self, peer: str) -> None:
        self._exchanged[peer] = trio.current_time()
        try:
            raw = await self.network.request(peer, PEERS_PROTOCOL, encode({}), timeout=5)
            learnt = self.peers.heard_all(decode(raw))
            logger.debug("peer exchange with %s: %d new", peer, learnt)
        except (NetworkError, CodecError) as e:
            logger.debug("peer exchange with %s failed: %s", peer, e)

    async def _serve_sync(self, peer: str, request: bytes) -> bytes:
        try:
            req = decode(request)
            start, end = int(req["from"]), int(req["to"])
        except (CodecError, KeyError, TypeError, ValueError) as e:
            raise NetworkError(f"bad sync request: {e}") from e
        end = min(end, start + SYNC_BATCH - 1)
        room = MAX_SYNC_FRAME - 16  # the array's head
        encoded = await blocking(partial(self.store.encoded_blocks, start, end, max_bytes=room))
        parts: list[bytes] = []
        for height, raw in enumerate(encoded, max(start, 0)):
            item = encode_sync_item(raw, self.store.certificate(height) or b"\x80")
            room -= len(item)
            if parts and room < 0:
                break
            parts.append(item)
        return cbor_head(4, len(parts)) + b"".join(parts)

    async def _exchange_status(self, peer: str) -> None:
        try:
            raw = await self.network.request(peer, STATUS_PROTOCOL, encode(self.status_message()), timeout=5)
            self._peer_heads[peer] = self._check_status(peer, decode(raw))
        except (CodecError, HandshakeRefused) as e:
            logger.warning("disconnecting %s: %s", peer, e)
            self._refuse(peer, str(e))
        except NetworkError as e:  # unreachable or slow: try again next round
            logger.debug("status with %s failed: %s", peer, e)

    async def _fetch(self, peer: str, start: int, end: int) -> list[tuple[bytes, tuple[Vote, ...]]]:
        """Blocks ``start..end`` from ``peer``, each still encoded, with its certificate."""
        raw = await self.network.request(peer, SYNC_PROTOCOL, encode({"from": start, "to": end}), timeout=30)
        try:
            items = decode(raw, max_size=MAX_SYNC_FRAME)
            if not isinstance(items, list):
                raise ValidationError("sync response must be a list")
            return [decode_sync_item(item) for item in items]
        except (CodecError, ValidationError) as e:
            raise NetworkError(f"bad sync response from {peer}: {e}") from e

    @staticmethod
    def _served_block(peer: str, checked: CheckedBlock) -> Block:
        if checked.block is None:
            raise NetworkError(f"bad sync response from {peer}: {checked.error}")
        return checked.block

    async def sync_from(self, peer: str, target: int) -> None:
        """Fetch and import blocks from ``peer`` up to ``target``, a batch at a time; each
        block is decoded and its signatures checked in a worker while the ones before it
        are applied.

        If the peer's chain forks from ours below our head and its tip is better, switch.
        """

        async def import_one(item: tuple[bytes, tuple[Vote, ...]], checked: CheckedBlock) -> None:
            block = self._served_block(peer, checked)
            head = self.store.head
            if item is batch[0] and block.height == head.height + 1 and block.header.parent != head.hash:
                raise _Forked
            imported = await self.import_block(block, item[1], verified=checked.verified())
            if not imported and block.height > self.store.head.height:
                raise NetworkError(f"sync block {block.height} from {peer} does not extend our head")

        while self.store.head.height < target:
            start = self.store.head.height + 1
            batch = await self._fetch(peer, start, min(target, start + SYNC_BATCH - 1))
            if not batch:
                return
            try:
                await pipelined(batch, lambda item: decode_block(item[0]), import_one, ahead=BLOCKS_AHEAD)
            except _Forked:
                await self._sync_fork(peer, target)
                return
            logger.info("synced to %d from %s", self.store.head.height, peer)

    async def _sync_fork(self, peer: str, target: int) -> None:
        """The peer's chain forks from ours: find the common block, compare tips, maybe switch."""
        if self.engine.bft:
            raise NetworkError(f"{peer} serves a chain that conflicts with our final blocks")
        low = self.final_height()
        theirs: list[Block] = []
        verified: set[Hash32] = set()

        def collect(_: object, checked: CheckedBlock) -> None:
            theirs.append(self._served_block(peer, checked))
            verified.update(checked.verified())

        height = low
        while height <= min(target, low + MAX_REORG_FETCH):
            batch = await self._fetch(peer, height, min(target, height + SYNC_BATCH - 1))
            if not batch:
                break
            await pipelined(batch, lambda item: decode_block(item[0]), collect, ahead=BLOCKS_AHEAD)
            height = theirs[-1].height + 1
        ancestor = None
        for block in theirs:
            ours = self.store.block(block.height)
            if ours is None or ours.hash != block.hash:
                break
            ancestor = block.height
        if ancestor is None:
            raise NetworkError(f"{peer}'s chain shares no block with ours above the final height {low}")
        fork = [b for b in theirs if b.height > ancestor]
        if not fork or not self._better(fork[-1].header, self.store.head):
            return
        async with self._import_lock:
            await self._reorg(ancestor, fork, verified)

    async def _dial(self, peer: str, addrs: list[str]) -> None:
        """Dial ``peer`` at its first address that answers; failures back off (1 s .. 60 s)."""
        self._dialing.add(peer)
        try:
            for addr in addrs:
                if not self._backoff.ready(addr):
                    continue
                try:
                    await self.network.connect(addr)
                    self._backoff.succeeded(addr)
                    return
                except NetworkError as e:
                    delay = self._backoff.failed(addr)
                    logger.debug("dial %s failed (next try in %.0f s): %s", addr, delay, e)
        finally:
            self._dialing.discard(peer)

    def _dial_more(self, connected: set[str]) -> None:
        """Bootstrap peers always; below the floor, peers learnt by exchange and mDNS too.
        Dials run concurrently, so an address that hangs does not stall the others."""
        skip = connected | self._dialing
        for addr in self.config.bootstrap:
            peer = addr.rsplit("/p2p/", 1)[-1]
            if peer not in skip and not self.network.banned(peer) and self._backoff.ready(addr):
                skip.add(peer)
                self._nursery.start_soon(self._dial, peer, [addr])
        room = min(self.config.peer_floor, self.config.peer_ceiling) - len(connected) - len(self._dialing)
        if room <= 0:
            return
        for peer, addrs in self.network.discovered().items():
            self.peers.heard(peer, addrs)
        for peer, addrs in self.peers.to_dial(skip):
            if room <= 0:
                break
            if not self.network.banned(peer) and any(self._backoff.ready(a) for a in addrs):
                self._nursery.start_soon(self._dial, peer, addrs)
                room -= 1

    async def _manage_peers(self) -> None:
        while True:
            connected = set(self.network.connected_peers())
            for gone in [p for p in self._peer_heads if p not in connected]:
                del self._peer_heads[gone]
            self._exchanged = {p: t for p, t in self._exchanged.items() if p in connected}
            self._dial_more(connected)
            now = trio.current_time()
            for peer in connected:
                if self.network.banned(peer):
                    await self.network.disconnect(peer)
                    continue
                await self._exchange_status(peer)
                due = peer not in self._exchanged or now - self._exchanged[peer] >= EXCHANGE_EVERY_S
                if due and len(connected) < self.config.peer_floor and peer in self._peer_heads:
                    await self._exchange_peers(peer)
            ahead = [
                (h, p) for p, h in self._peer_heads.items() if h > self.store.head.height and not self.network.banned(p)
            ]
            if ahead:
                target, peer = max(ahead)
                try:
                    await self.sync_from(peer, target)
                except (NetworkError, ValidationError, ConsensusError) as e:
                    logger.warning("sync from %s failed: %s", peer, e)
                    self._peer_heads.pop(peer, None)
            await trio.sleep(self.config.peer_interval_s)

    # ------------------------------------------------------------- NodeAPI
    def status(self) -> dict[str, Any]:
        head = self.store.head
        return {
            "chain_id": self.genesis.chain_id,
            "genesis_hash": self.genesis.hash.hex(),
            "height": head.height,
            "head_hash": head.hash.hex(),
            "head_timestamp_ms": head.timestamp_ms,
            "consensus": self.engine.name,
            "next_proposer": self.engine.proposer(head.height + 1, 0),
            "final_height": self.final_height(),
            "address": self.key.address,
            "peer_id": self.network.peer_id,
            "listen": self.network.listen_addrs(),
            "peers": sorted(self.network.connected_peers()),
            "mempool": len(self.mempool),
            "min_fee": self.genesis.min_fee,
            "provider": self.market.provider_status(),
        }

    def supply(self) -> dict[str, Any]:
        """Where every unit is: balances + escrow + burned must equal the genesis total."""
        return supply_of(self.store.state, self.genesis.total_supply)

    def account(self, address: Address) -> dict[str, Any]:
        acct = self.store.state.account(address)
        return {
            "address": address,
            "balance": acct.balance,
            "balance_aitbc": format_aitbc(acct.balance),
            "nonce": acct.nonce,
            "pending_nonce": self.mempool.pending_nonce(address, self.store.state),
            "stake": acct.stake,
            "unbonding": [{"amount": a, "release_height": h} for a, h in acct.unbonding],
            "provider": acct.provider,
            "active_jobs": acct.active_jobs,
        }

    def tx_proof(self, tx_hash: Hash32) -> dict[str, Any] | None:
        proof = self.store.receipt_proof(tx_hash)
        return None if proof is None else jsonable(proof.to_wire())

    def account_proof(self, address: Address) -> dict[str, Any] | None:
        proof = self.store.state_proof(account_key(address))
        if proof is None:
            return None
        head = self.store.head
        view: dict[str, Any] = jsonable({"height": head.height, "state_root": head.state_root, **proof.to_wire()})
        return view

    def history(self, address: Address, limit: int) -> list[dict[str, Any]]:
        return [
            {"height": loc.height, "index": loc.index, **tx_view(loc.tx)}
            for loc in self.store.history(address, limit=limit)
        ]

    def tx_status(self, tx_hash: Hash32) -> dict[str, Any] | None:
        loc = self.store.find_tx(tx_hash)
        if loc is not None:
            return {"status": "committed", "height": loc.height, "index": loc.index, "tx": tx_view(loc.tx)}
        for tx in self.mempool.pending():
            if tx.hash == tx_hash:
                return {"status": "pending", "tx": tx_view(tx)}
        return None

    def block(self, height: int) -> dict[str, Any] | None:
        block = self.store.block(height)
        if block is None:
            return None
        view = block_view(block)
        raw = self.store.certificate(height)
        if raw is not None:
            votes = decode_certificate(decode(raw))
            view["certificate"] = {
                "round": votes[0].round if votes else None,
                "validators": sorted(v.validator for v in votes),
            }
        return view

    async def submit_job(self, offer: Any, workload: str, params: dict[str, Any]) -> JobId:
        return await self.market.submit(offer, workload, params)

    def job_status(self, job_id: JobId) -> dict[str, Any] | None:
        return self.market.job_status(job_id)

    def job_result(self, job_id: JobId) -> dict[str, Any] | None:
        return self.market.job_result(job_id)

    def providers(self) -> list[dict[str, Any]]:
        return [jsonable(dict(rec.body)) for rec in self.market.providers.values()]


def _valid_consensus(data: bytes) -> bool:
    """Stateless gate for the consensus topic: a one-key map of a vote or a proposal."""
    try:
        obj = decode(data, max_size=8 << 20)
    except CodecError:
        return False
    return isinstance(obj, dict) and len(obj) == 1 and ("vote" in obj or "proposal" in obj)


def _open_kv(config: NodeConfig) -> KeyValueStore:
    if config.data_dir is None:
        return MemoryKV()
    return LevelDBKV(config.data_dir / "chain")


NetworkFactory = Callable[[NodeConfig], AbstractAsyncContextManager[Network]]
"""Opens the network a node runs on: libp2p by default (:func:`libp2p_network`); tests
and ``bench/sim.py`` pass a :class:`~aitbc_p2p.network.memory.MemoryHub`'s networks."""


def libp2p_network(config: NodeConfig) -> AbstractAsyncContextManager[Network]:
    """The real network: a libp2p host on the config's listen addresses."""
    return open_libp2p_network(
        config.key,
        list(config.listen),
        max_peers=config.peer_ceiling,
        # Peers of one chain share an mDNS service name: its genesis hash.
        mdns=config.genesis.hash.hex()[:10] if config.mdns else None,
    )


@asynccontextmanager
async def open_node(
    config: NodeConfig, *, clock_ms: Callable[[], int] = wall_clock_ms, network: NetworkFactory = libp2p_network
) -> AsyncIterator[Node]:
    """Start a peer and yield it once it listens; stop every task and close the store on exit.

    Raises:
        StoreError: the data directory cannot be opened or holds another chain.
        NetworkError: the listen addresses cannot be bound.
        ConsensusError: the genesis names an unknown engine.
    """
    kv = await blocking(_open_kv, config)
    try:
        store = await blocking(ChainStore, kv, config.genesis)
        async with AsyncExitStack() as stack:
            provider = config.provider
            executor = None
            if provider is not None:
                executor = await stack.enter_async_context(
                    open_executor(
                        accel_mode=provider.accel_mode,
                        slots=provider.max_concurrency,
                        models=provider.models,
                        ollama_url=provider.ollama_url,
                        cache=config.data_dir / "compute-cache.json" if config.data_dir else None,
                    )
                )
            net = await stack.enter_async_context(network(config))
            nursery = await stack.enter_async_context(trio.open_nursery())
            node = Node(config, store, net, nursery, clock_ms)
            if provider is not None and executor is not None:
                device = await executor.info(benchmark=provider.benchmark)
                node.market.enable_provider(provider, device, executor)
            net.set_request_handler(STATUS_PROTOCOL, node._serve_status)
            net.set_request_handler(SYNC_PROTOCOL, node._serve_sync)
            net.set_request_handler(PEERS_PROTOCOL, node._serve_peers)
            # A job's request lasts as long as the job runs; an agent may run many at once.
            net.set_request_handler(JOB_PROTOCOL, node.market.serve_job, concurrent=JOB_STREAMS_PER_PEER)
            t = node._topics
            use_worker_processes(config.verify_in_workers)
            nursery.start_soon(warm_up)  # the verifying worker processes, before the first big bundle
            nursery.start_soon(node._on_tx, await net.subscribe(t["tx"], node._valid_bundle))
            nursery.start_soon(node._gossip_bundles)
            nursery.start_soon(node._reannounce)
            nursery.start_soon(node._on_block, await net.subscribe(t["block"], node._valid_block))
            nursery.start_soon(node.market.on_job_topic, await net.subscribe(t["job"], node.market.valid_job_message))
            nursery.start_soon(
                node.market.on_provider_topic, await net.subscribe(t["provider"], node.market.valid_capability)
            )
            if node.engine.bft:
                driver = BftDriver(node, node.engine)  # type: ignore[arg-type]
                node.bft = driver
                net.set_request_handler(CONSENSUS_PROTOCOL, driver.serve_round_state)
                nursery.start_soon(driver.run, await net.subscribe(t["consensus"], _valid_consensus))
            else:
                nursery.start_soon(node._produce_blocks)
            nursery.start_soon(node._manage_peers)
            node.market.start(nursery)
            logger.info("node %s up at %s, head %d", node.key.address, net.listen_addrs(), store.head.height)
            try:
                yield node
            finally:
                nursery.cancel_scope.cancel()
    finally:
        # Shielded: a node stopped by cancellation (its caller's scope) must still close
        # its store, or a restart in the same process finds the LevelDB lock held.
        with trio.CancelScope(shield=True):
            await blocking(kv.close)
