"""The composition root: :func:`open_node` builds the node's services, wires them
together and runs each under one nursery. Nothing here decides anything; each service
(node/chain_service.py, relay.py, blockrelay.py, producer.py, bft.py, peering.py,
sync.py, market.py) owns its task and its state, and :class:`~aitbc_p2p.node.facade.Node`
is the handle users get (specs/architecture in README, "The node's services").
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager

import trio

from aitbc_p2p.chain.transition import ChainRules
from aitbc_p2p.compute import open_executor
from aitbc_p2p.compute.miners import MinerPool
from aitbc_p2p.consensus import engine_for, finality_for
from aitbc_p2p.mempool import Mempool
from aitbc_p2p.network import Network, open_libp2p_network
from aitbc_p2p.node.abc import Topics
from aitbc_p2p.node.audit import AuditService
from aitbc_p2p.node.bft import BftDriver
from aitbc_p2p.node.blockrelay import BlockRelay
from aitbc_p2p.node.chain_service import ChainService
from aitbc_p2p.node.client_wallet import ClientWallet
from aitbc_p2p.node.config import NodeConfig
from aitbc_p2p.node.facade import Node
from aitbc_p2p.node.market import MarketService
from aitbc_p2p.node.offload import blocking
from aitbc_p2p.node.payouts import MinerPayouts
from aitbc_p2p.node.peering import PeeringService
from aitbc_p2p.node.producer import BlockProducer
from aitbc_p2p.node.relay import TxRelay
from aitbc_p2p.node.sync import SyncService
from aitbc_p2p.node.verify import use_worker_processes, warm_up
from aitbc_p2p.store import ChainStore, LevelDBKV, MemoryKV
from aitbc_p2p.store.abc import KeyValueStore
from aitbc_p2p.store.journal import MarketJournal
from aitbc_p2p.store.votes import VoteGuard

logger = logging.getLogger(__name__)


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


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


def _wire(config: NodeConfig, store: ChainStore, net: Network, clock_ms: Callable[[], int]) -> Node:
    """Every service, each given the seams it needs (node/abc.py) and nothing more."""
    genesis, key = config.genesis, config.key
    engine = engine_for(genesis)
    topics = Topics.of(genesis.chain_id)
    chain = ChainService(
        store, genesis, engine, finality_for(engine), Mempool(ChainRules.of(genesis)), key, clock_ms,
        max_block_txs=config.max_block_txs,
    )  # fmt: skip
    relay = TxRelay(
        chain, chain.mempool, net, topics.tx, key,
        bundle_interval_s=config.bundle_interval_s, reannounce_s=config.reannounce_s,
    )  # fmt: skip
    chain.reverted_listeners.append(relay.queue)  # a reorg's orphans are gossiped again
    peering = PeeringService(chain, net, config)
    blocks = BlockRelay(chain, engine, net, topics.block, on_ahead=peering.saw_height)
    producer, bft = None, None
    if engine.kind == "bft":
        guard = VoteGuard(store.kv, key, genesis.chain_id)
        bft = BftDriver(chain, relay, engine, net, topics.consensus, guard, clock_ms, publish_block=blocks.publish)
    else:
        producer = BlockProducer(chain, engine, key.address, clock_ms, propose=chain.propose, publish=blocks.publish)
    market = MarketService(
        chain, relay, net, topics, clock_ms, bid_window_s=config.bid_window_s, journal=MarketJournal(store.kv)
    )
    chain.head_listeners.append(market.on_head)
    models = {**config.models, **(config.provider.models if config.provider is not None else {})}
    audit = market.verifier = AuditService(chain, relay, net, market, models=models, audit_rate=config.audit_rate)
    return Node(
        config=config, store=store, network=net, clock_ms=clock_ms, topics=topics, chain=chain, relay=relay,
        blocks=blocks, peering=peering, sync=SyncService(chain, store, net, peering), market=market,
        audit=audit, producer=producer, bft=bft,
    )  # fmt: skip


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
            if provider is not None and config.miners is None:  # with [miners], they compute
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
            node = _wire(config, store, net, clock_ms)
            if provider is not None and executor is not None:
                device = await executor.info(benchmark=provider.benchmark)
                node.market.enable_provider(provider, device, executor)
            if provider is not None and config.miners is not None:
                miners = config.miners
                node.payouts = MinerPayouts(
                    node.chain, node.relay, MarketJournal(store.kv), percent=miners.payout_percent
                )
                node.miners = MinerPool(
                    miners.keys,
                    workloads=miners.workloads,
                    heartbeat_timeout_s=miners.heartbeat_timeout_s,
                    needs_wallet=miners.payout_percent > 0,
                    on_proven=node.payouts.proven,
                )
                node.market.enable_provider(provider, node.miners.device, node.miners)
            use_worker_processes(config.verify_in_workers)
            nursery.start_soon(warm_up)  # the verifying worker processes, before the first big bundle
            await nursery.start(node.relay.run)
            await nursery.start(node.blocks.run)
            if node.bft is not None:
                await nursery.start(node.bft.run)
            if node.producer is not None:
                await nursery.start(node.producer.run)
            await nursery.start(node.peering.run)
            await nursery.start(node.sync.run)
            await nursery.start(node.market.run)
            await nursery.start(node.audit.run)
            if node.payouts is not None:
                await nursery.start(node.payouts.run)
            if config.wallet is not None:
                node.client_wallet = ClientWallet(
                    config.wallet, chain=node.chain, relay=node.relay, market=node.market, kv=store.kv,
                    pending_nonce=lambda a: node.mempool.pending_nonce(a, node.store.state),
                    agent=node.key.address, clock_ms=clock_ms,
                )  # fmt: skip
                await nursery.start(node.client_wallet.run)
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


__all__ = ["NetworkFactory", "Node", "libp2p_network", "open_node", "wall_clock_ms"]
