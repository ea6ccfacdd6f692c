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

import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from functools import partial
from typing import Any

import trio

from aitbc_p2p.chain.blocks import build_block, validate_block
from aitbc_p2p.chain.models import Block, BlockHeader, Transaction
from aitbc_p2p.chain.state import ACCOUNT_PREFIX, JOB_PREFIX, Account, Job, JobStatus, StateView
from aitbc_p2p.chain.transition import ChainRules, check_stateless
from aitbc_p2p.codec import decode, encode
from aitbc_p2p.compute import open_executor
from aitbc_p2p.consensus import engine_for
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
    JOB_PROTOCOL,
    STATUS_PROTOCOL,
    SYNC_PROTOCOL,
    GossipMessage,
    Network,
    open_libp2p_network,
    topic,
)
from aitbc_p2p.node.config import NodeConfig
from aitbc_p2p.node.market import MarketService
from aitbc_p2p.node.verify import verify_signatures
from aitbc_p2p.node.views import block_view, jsonable, tx_view
from aitbc_p2p.store import ChainStore, LevelDBKV, MemoryKV
from aitbc_p2p.store.abc import KeyValueStore
from aitbc_p2p.types import Address, Hash32, JobId, format_aitbc

logger = logging.getLogger(__name__)

SYNC_BATCH = 64
MAX_FUTURE_MS = 5_000


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
        self._banned: set[str] = set()
        self._topics = {name: topic(self.genesis.chain_id, name) for name in ("tx", "block", "job", "provider")}
        self.market = MarketService(self)

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

    async def import_block(self, block: Block) -> bool:
        """Validate and commit ``block`` if it extends the head. Returns True if committed.

        Raises:
            ValidationError / ConsensusError: the block is invalid (its sender is at fault).
        """
        async with self._import_lock:
            head = self.store.head
            if block.height <= head.height:
                return False
            if block.height != head.height + 1 or block.header.parent != head.hash:
                return False
            if block.header.timestamp_ms > self.clock_ms() + MAX_FUTURE_MS:
                raise ValidationError(f"block {block.height} is too far in the future")
            self.engine.validate_header(block.header, head)
            # Pooled transactions were verified on admission; verify the rest on all cores.
            unseen = [tx for tx in block.txs if tx.hash not in self.mempool]
            verified, bad = await verify_signatures(unseen)
            if bad:
                raise ValidationError(f"block {block.height} holds a badly signed transaction: {bad[0][1]}")
            verified |= {tx.hash for tx in block.txs if tx.hash in self.mempool}
            applied = await trio.to_thread.run_sync(
                partial(validate_block, block, head, self.store.state, self.rules, verified=verified)
            )
            await trio.to_thread.run_sync(self.store.commit, applied)
        self.mempool.remove(list(block.txs))
        self.mempool.prune(self.store.state)
        logger.info("imported block %d (%d txs) from %s", block.height, len(block.txs), block.header.proposer)
        self._advanced()
        return True

    async def _produce_blocks(self) -> None:
        while True:
            head = self.store.head
            height = head.height + 1
            if self.engine.proposer(height) != self.key.address:
                with trio.move_on_after(1.0):
                    await self.wait_head_change()
                continue
            delay_ms = self.engine.due_ms(head) - self.clock_ms()
            if delay_ms > 0:
                with trio.move_on_after(delay_ms / 1000):
                    await self.wait_head_change()
                continue
            await self._propose(height)

    async def _propose(self, height: int) -> None:
        async with self._import_lock:
            head = self.store.head
            if head.height + 1 != height:
                return
            applied, dropped = await trio.to_thread.run_sync(
                lambda: build_block(
                    self.key,
                    head,
                    self.store.state,
                    list(self.mempool.candidates()),
                    self.rules,
                    timestamp_ms=max(self.clock_ms(), self.engine.due_ms(head)),
                    max_txs=self.config.max_block_txs,
                    verified=self.mempool,  # every pooled transaction was verified on admission
                )
            )
            await trio.to_thread.run_sync(self.store.commit, applied)
        block = applied.block
        self.mempool.remove(list(block.txs) + [tx for tx, _ in dropped])
        self.mempool.prune(self.store.state)
        for tx, err in dropped:
            logger.info("dropped tx %s: %s", tx.hash.hex()[:16], err)
        logger.info("proposed block %d with %d txs", block.height, len(block.txs))
        self._advanced()
        try:
            await self.network.publish(self._topics["block"], block.encode())
        except NetworkError as e:
            logger.warning("could not gossip block %d: %s", block.height, e)

    # ------------------------------------------------------------ transactions
    async def submit_tx(self, tx: Transaction) -> Hash32:
        if self.store.find_tx(tx.hash) is not None:
            raise TxRejected("Duplicate", "transaction is already committed")
        self.mempool.add(tx, self.store.state, height=self.store.head.height)
        try:
            await self.network.publish(self._topics["tx"], tx.encode())
        except NetworkError as e:
            logger.warning("could not gossip tx %s: %s", tx.hash.hex()[:16], e)
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
    def _valid_tx(self, data: bytes) -> bool:
        try:
            check_stateless(Transaction.decode(data), self.rules)
        except TxRejected:
            return False
        return True

    def _valid_block(self, data: bytes) -> bool:
        try:
            block = Block.decode(data)
            block.header.verify_signature()
        except ValidationError:
            return False
        return block.header.chain_id == self.genesis.chain_id

    async def _on_tx(self, inbox: trio.MemoryReceiveChannel[GossipMessage]) -> None:
        async for msg in inbox:
            try:
                tx = Transaction.decode(msg.data)
                if tx.hash not in self.mempool and self.store.find_tx(tx.hash) is None:
                    self.mempool.add(tx, self.store.state, height=self.store.head.height)
            except TxRejected as e:
                logger.debug("gossiped tx ignored: %s", e)

    async def _on_block(self, inbox: trio.MemoryReceiveChannel[GossipMessage]) -> None:
        async for msg in inbox:
            try:
                block = Block.decode(msg.data)
                if block.height > self.store.head.height + 1:
                    self._peer_heads[msg.origin] = max(self._peer_heads.get(msg.origin, 0), block.height)
                    continue  # the peer manager syncs the gap
                await self.import_block(block)
            except (ValidationError, ConsensusError) as e:
                logger.warning("rejected block from %s: %s", msg.origin, e)

    # ------------------------------------------------------------------ peers
    def status_message(self) -> dict[str, Any]:
        head = self.store.head
        return {
            "chain_id": self.genesis.chain_id,
            "genesis": self.genesis.hash,
            "height": head.height,
            "head": head.hash,
        }

    def _check_status(self, peer: str, status: Any) -> int:
        if not isinstance(status, dict) or not isinstance(status.get("height"), int):
            raise HandshakeRefused("malformed status")
        if status.get("chain_id") != self.genesis.chain_id or status.get("genesis") != self.genesis.hash:
            raise HandshakeRefused(f"peer {peer} is on another chain ({status.get('chain_id')!r})")
        height: int = status["height"]
        return height

    async def _serve_status(self, peer: str, request: bytes) -> bytes:
        try:
            self._peer_heads[peer] = self._check_status(peer, decode(request))
        except (CodecError, HandshakeRefused) as e:
            logger.warning("refusing peer %s: %s", peer, e)
            self._banned.add(peer)
            self._nursery.start_soon(self.network.disconnect, peer)
        return encode(self.status_message())

    async def _serve_sync(self, peer: str, request: bytes) -> bytes:
        try:
            req = decode(request)
            start, end = int(req["from"]), int(req["to"])
        except (CodecError, KeyError, TypeError, ValueError) as e:
            raise NetworkError(f"bad sync request: {e}") from e
        end = min(end, start + SYNC_BATCH - 1)
        blocks = await trio.to_thread.run_sync(self.store.blocks, start, end)
        return encode([b.to_wire() for b in blocks])

    async def _exchange_status(self, peer: str) -> None:
        try:
            raw = await self.network.request(peer, STATUS_PROTOCOL, encode(self.status_message()), timeout=5)
            self._peer_heads[peer] = self._check_status(peer, decode(raw))
        except (CodecError, HandshakeRefused) as e:
            logger.warning("disconnecting %s: %s", peer, e)
            self._banned.add(peer)
            await self.network.disconnect(peer)
        except NetworkError as e:  # unreachable or slow: try again next round
            logger.debug("status with %s failed: %s", peer, e)

    async def sync_from(self, peer: str, target: int) -> None:
        """Fetch and import blocks from ``peer`` up to ``target``, a batch at a time."""
        while self.store.head.height < target:
            start = self.store.head.height + 1
            raw = await self.network.request(
                peer, SYNC_PROTOCOL, encode({"from": start, "to": min(target, start + SYNC_BATCH - 1)}), timeout=30
            )
            try:
                blocks = [Block.from_wire(w) for w in decode(raw, max_size=16 << 20)]
            except (CodecError, ValidationError) as e:
                raise NetworkError(f"bad sync response from {peer}: {e}") from e
            if not blocks:
                return
            for block in blocks:
                if not await self.import_block(block) and block.height > self.store.head.height:
                    raise NetworkError(f"sync block {block.height} from {peer} does not extend our head")
            logger.info("synced to %d from %s", self.store.head.height, peer)

    async def _manage_peers(self) -> None:
        backoff: dict[str, float] = {}
        while True:
            connected = set(self.network.connected_peers())
            for addr in self.config.bootstrap:
                peer = addr.rsplit("/p2p/", 1)[-1]
                if peer in connected or peer in self._banned or trio.current_time() < backoff.get(addr, 0):
                    continue
                try:
                    await self.network.connect(addr)
                    backoff.pop(addr, None)
                except NetworkError as e:
                    logger.debug("bootstrap %s: %s", addr, e)
                    backoff[addr] = trio.current_time() + 2.0
            for peer in self.network.connected_peers():
                if peer in self._banned:
                    await self.network.disconnect(peer)
                    continue
                await self._exchange_status(peer)
            ahead = [
                (h, p) for p, h in self._peer_heads.items() if h > self.store.head.height and p not in self._banned
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
            "next_proposer": self.engine.proposer(head.height + 1),
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
        }

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
        return None if block is None else block_view(block)

    async def submit_job(self, offer: Any, workload: str, params: dict[str, Any]) -> JobId:
        return await self.market.submit(offer, workload, params)

    def job_status(self, job_id: JobId) -> dict[str, Any] | None:
        return self.market.job_status(job_id)

    def job_result(self, job_id: JobId) -> dict[str, Any] | None:
        return self.market.job_result(job_id)

    def providers(self) -> list[dict[str, Any]]:
        return [jsonable(dict(rec.body)) for rec in self.market.providers.values()]


def supply_of(state: StateView, genesis_total: int) -> dict[str, Any]:
    balances = escrowed = 0
    for key, value in state.leaves():
        if key.startswith(ACCOUNT_PREFIX):
            balances += Account.decode(value).balance
        elif key.startswith(JOB_PREFIX):
            job = Job.decode(value)
            if job.status in (JobStatus.OPEN, JobStatus.RECEIPTED):
                escrowed += job.amount
    burned = state.burned()
    return {
        "balances": balances,
        "escrowed": escrowed,
        "burned": burned,
        "total": balances + escrowed + burned,
        "genesis_total": genesis_total,
    }


def _open_kv(config: NodeConfig) -> KeyValueStore:
    if config.data_dir is None:
        return MemoryKV()
    return LevelDBKV(config.data_dir / "chain")


@asynccontextmanager
async def open_node(config: NodeConfig, *, clock_ms: Callable[[], int] = wall_clock_ms) -> AsyncIterator[Node]:
    """Start a peer and yield it once it listens; stop every task and close the store on exit.

    Raises:
        StoreError: the data directory cannot be opened or holds another chain.
        NetworkError: the listen addresses cannot be bound.
        ConsensusError: the genesis names an unknown engine.
    """
    kv = await trio.to_thread.run_sync(_open_kv, config)
    try:
        store = await trio.to_thread.run_sync(ChainStore, kv, config.genesis)
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
            network = await stack.enter_async_context(open_libp2p_network(config.key, list(config.listen)))
            nursery = await stack.enter_async_context(trio.open_nursery())
            node = Node(config, store, network, nursery, clock_ms)
            if provider is not None and executor is not None:
                device = await executor.info(benchmark=provider.benchmark)
                node.market.enable_provider(provider, device, executor)
            network.set_request_handler(STATUS_PROTOCOL, node._serve_status)
            network.set_request_handler(SYNC_PROTOCOL, node._serve_sync)
            network.set_request_handler(JOB_PROTOCOL, node.market.serve_job)
            t = node._topics
            nursery.start_soon(node._on_tx, await network.subscribe(t["tx"], node._valid_tx))
            nursery.start_soon(node._on_block, await network.subscribe(t["block"], node._valid_block))
            nursery.start_soon(
                node.market.on_job_topic, await network.subscribe(t["job"], node.market.valid_job_message)
            )
            nursery.start_soon(
                node.market.on_provider_topic, await network.subscribe(t["provider"], node.market.valid_capability)
            )
            nursery.start_soon(node._produce_blocks)
            nursery.start_soon(node._manage_peers)
            node.market.start(nursery)
            logger.info("node %s up at %s, head %d", node.key.address, network.listen_addrs(), store.head.height)
            try:
                yield node
            finally:
                nursery.cancel_scope.cancel()
    finally:
        await trio.to_thread.run_sync(kv.close)
