"""The node as its users see it: :class:`Node` implements NodeAPI over the services and
gives agents and tests one handle on them. It decides nothing and owns no task."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import AsyncGenerator, Callable, Sequence
from collections.abc import Set as AbstractSet
from typing import Any

import trio

from aitbc_p2p.chain.models import Block, BlockHeader, Genesis, Transaction
from aitbc_p2p.chain.payloads import Payload
from aitbc_p2p.chain.state import Reputation, Supply, account_key, read_reputation, supply_of
from aitbc_p2p.chain.transition import ChainRules
from aitbc_p2p.chain.votes import Vote
from aitbc_p2p.codec import decode
from aitbc_p2p.compute.miners import MinerPool
from aitbc_p2p.consensus import ConsensusEngine
from aitbc_p2p.consensus.proofs import JobProof, job_proof
from aitbc_p2p.consensus.tendermint import decode_certificate
from aitbc_p2p.crypto.keys import PrivateKey
from aitbc_p2p.market.messages import CapabilityRecord, JobOffer
from aitbc_p2p.mempool import Mempool
from aitbc_p2p.network.abc import Network
from aitbc_p2p.node.abc import Topics
from aitbc_p2p.node.api import (
    AccountInfo,
    AccountProof,
    BlockInfo,
    CertificateInfo,
    ChainUpdate,
    JobInfo,
    JobResultInfo,
    JobUpdate,
    NetworkInfo,
    NodeStatus,
    PeerScore,
    TxStatus,
)
from aitbc_p2p.node.audit import AuditService
from aitbc_p2p.node.bft import BftDriver
from aitbc_p2p.node.blockrelay import BlockRelay
from aitbc_p2p.node.chain_service import ChainService
from aitbc_p2p.node.client_wallet import ClientWallet
from aitbc_p2p.node.config import NodeConfig
from aitbc_p2p.node.market import KEEPALIVE_S, MarketService
from aitbc_p2p.node.payouts import MinerPayouts
from aitbc_p2p.node.peering import PeeringService
from aitbc_p2p.node.peers import PeerBook
from aitbc_p2p.node.producer import BlockProducer
from aitbc_p2p.node.relay import TxRelay
from aitbc_p2p.node.sync import SyncService
from aitbc_p2p.store import ChainStore
from aitbc_p2p.store.chain import ReceiptProof, TxLocation
from aitbc_p2p.types import VERSION, Address, Hash32, JobId

CHAIN_CATCH_UP = 100
"""The most blocks ``watch_chain`` sends to catch a client up (older ones: GET /v1/blocks)."""
OWN_TXS = 10_000
"""Transactions submitted through this peer whose commit the event stream announces (the
latest this many)."""


async def _first_of(*events: trio.Event, timeout: float) -> bool:
    """Wait until one of ``events`` is set (True) or ``timeout`` passes (False)."""
    async with trio.open_nursery() as nursery:

        async def wait(event: trio.Event) -> None:
            await event.wait()
            nursery.cancel_scope.cancel()

        for event in events:
            nursery.start_soon(wait, event)
        await trio.sleep(timeout)
        nursery.cancel_scope.cancel()
        return False
    return True


class Node:
    """A running peer. Create it with :func:`~aitbc_p2p.node.open_node`; every method
    runs on the Trio thread."""

    def __init__(
        self,
        *,
        config: NodeConfig,
        store: ChainStore,
        network: Network,
        clock_ms: Callable[[], int],
        topics: Topics,
        chain: ChainService,
        relay: TxRelay,
        blocks: BlockRelay,
        peering: PeeringService,
        sync: SyncService,
        market: MarketService,
        audit: AuditService,
        producer: BlockProducer | None,
        bft: BftDriver | None,
    ) -> None:
        self.config = config
        self.store = store
        self.network = network
        self.clock_ms = clock_ms
        self.topics = topics
        self.chain = chain
        self.relay = relay
        self.blocks = blocks
        self.peering = peering
        self.sync = sync
        self.market = market
        self.audit = audit
        self.producer = producer
        self.bft = bft
        self.miners: MinerPool | None = None
        """External miners' compute, with ``[miners]`` (compute/miners.py)."""
        self.payouts: MinerPayouts | None = None
        self.client_wallet: ClientWallet | None = None
        """The wallet it holds for local clients, with ``[wallet]`` (node/client_wallet.py)."""
        self.started = trio.current_time()
        self._own_txs: OrderedDict[Hash32, None] = OrderedDict()

    # ------------------------------------------------------- handles
    @property
    def key(self) -> PrivateKey:
        return self.config.key

    @property
    def genesis(self) -> Genesis:
        return self.config.genesis

    @property
    def rules(self) -> ChainRules:
        return self.chain.rules

    @property
    def engine(self) -> ConsensusEngine:
        return self.chain.engine

    @property
    def mempool(self) -> Mempool:
        return self.chain.mempool

    @property
    def peers(self) -> PeerBook:
        return self.peering.book

    @property
    def head(self) -> BlockHeader:
        return self.store.head

    async def wait_head_change(self) -> None:
        await self.chain.wait_head_change()

    async def wait_height(self, height: int) -> None:
        await self.chain.wait_height(height)

    def final_height(self) -> int:
        return self.chain.final_height()

    async def import_block(
        self, block: Block, certificate: Sequence[Vote] = (), *, verified: AbstractSet[Hash32] = frozenset()
    ) -> bool:
        return await self.chain.import_block(block, certificate, verified=verified)

    async def send_own_tx(self, payload: Payload) -> Hash32:
        return await self.relay.send_own_tx(payload)

    def _next_proposer(self, height: int) -> Address:
        engine = self.engine
        if engine.kind == "bft":
            return engine.proposer(height, 0)
        return engine.proposer(height, 0, self.chain.recent_proposers())

    # ------------------------------------------------------- NodeAPI
    def status(self) -> NodeStatus:
        head = self.store.head
        return NodeStatus(
            chain_id=self.genesis.chain_id,
            genesis_hash=self.genesis.hash,
            head=head,
            consensus=self.engine.name,
            next_proposer=self._next_proposer(head.height + 1),
            final_height=self.final_height(),
            address=self.key.address,
            peer_id=self.network.peer_id,
            listen=self.network.listen_addrs(),
            peers=sorted(self.network.connected_peers()),
            mempool=len(self.mempool),
            min_fee=self.genesis.min_fee,
            provider=self.market.provider_status(),
            version=VERSION,
            uptime_s=trio.current_time() - self.started,
            sync_target=max([head.height, *self.peering.heads.values()]),
        )

    def supply(self) -> Supply:
        """Where every unit is: balances + escrow + stake + burned must equal the genesis total."""
        return supply_of(self.store.state, self.genesis.total_supply)

    def account(self, address: Address) -> AccountInfo:
        state = self.store.state
        return AccountInfo(address, state.account(address), self.mempool.pending_nonce(address, state))

    def tx_proof(self, tx_hash: Hash32) -> ReceiptProof | None:
        return self.store.receipt_proof(tx_hash)

    def account_proof(self, address: Address) -> AccountProof | None:
        proof = self.store.state_proof(account_key(address))
        return None if proof is None else AccountProof(self.store.head, proof)

    def history(self, address: Address, limit: int) -> list[TxLocation]:
        return self.store.history(address, limit=limit)

    async def submit_tx(self, tx: Transaction) -> Hash32:
        tx_hash = await self.relay.submit_tx(tx)
        self._own_txs[tx_hash] = None  # the event stream says when it is committed
        while len(self._own_txs) > OWN_TXS:
            self._own_txs.popitem(last=False)
        return tx_hash

    def tx_status(self, tx_hash: Hash32) -> TxStatus | None:
        loc = self.store.find_tx(tx_hash)
        if loc is not None:
            return TxStatus("committed", loc.tx, loc.height, loc.index, final=loc.height <= self.final_height())
        for tx in self.mempool.pending():
            if tx.hash == tx_hash:
                return TxStatus("pending", tx)
        return None

    def block(self, height: int) -> BlockInfo | None:
        block = self.store.block(height)
        if block is None:
            return None
        raw = self.store.certificate(height)
        if raw is None:
            return BlockInfo(block)
        votes = decode_certificate(decode(raw))
        certificate = CertificateInfo(votes[0].round if votes else None, sorted(v.validator for v in votes))
        return BlockInfo(block, certificate)

    async def submit_job(
        self, offer: JobOffer, workload: str, params: dict[str, Any], *, replica_of: JobId | None = None
    ) -> JobId:
        return await self.market.submit(offer, workload, params, replica_of=replica_of)

    def job_status(self, job: JobId | str) -> JobInfo | None:
        return self.market.job_status(job)

    async def watch_chain(self, *, after: int | None = None) -> AsyncGenerator[ChainUpdate, None]:
        sent: OrderedDict[int, Hash32] = OrderedDict()
        """Heights sent lately (and the parent of the first) with their hashes: how a
        revert below the head is noticed. A revert deeper than these is announced at the
        lowest height known."""
        last = self.store.head.height - 1 if after is None else max(after, -1)
        jobs = {job_id: self.market.job_status(job_id) for job_id in list(self.market.client_jobs)}
        """Each job's status as last sent (or as found at the start: only changes are sent)."""
        while True:
            head_changed, job_changed = self.chain.next_head_change(), self.market.next_job_change()
            head = self.store.head
            fork = min(last, head.height)
            while fork in sent and self.store.height_of(sent[fork]) != fork:  # an index read, no block decoded
                fork -= 1
            for height in [h for h in sent if h > fork]:
                del sent[height]
            if fork < last:
                yield ChainUpdate("reorg", height=fork)
                last = fork
            final = self.final_height()
            for height in range(max(last + 1, head.height - CHAIN_CATCH_UP + 1), head.height + 1):
                block = self.store.block(height)
                if block is None:  # reverted since the head was read: the next round sees it
                    break
                yield ChainUpdate("block", block=block.header, txs=len(block.txs), final_height=final)
                for index, tx in enumerate(block.txs):
                    if tx.hash in self._own_txs:
                        yield ChainUpdate("tx", height=height, index=index, tx_hash=tx.hash)
                sent.setdefault(height - 1, block.header.parent)  # the client knows its parent too
                sent[height] = block.header.hash
                last = height
                while len(sent) > CHAIN_CATCH_UP:
                    sent.popitem(last=False)
            for job_id in list(self.market.client_jobs):
                before = jobs.get(job_id)
                if before is not None and before.finished:
                    continue
                info = self.market.job_status(job_id)
                if info is not None and info != before:
                    jobs[job_id] = info
                    yield ChainUpdate("job", job=info)
            for gone in [j for j in jobs if j not in self.market.client_jobs]:
                del jobs[gone]
            if not await _first_of(head_changed, job_changed, timeout=KEEPALIVE_S):
                yield ChainUpdate("keepalive")

    def network_info(self) -> NetworkInfo:
        connected = set(self.network.connected_peers())
        scores = getattr(self.network, "scores", None)
        scored = scores.snapshot() if scores is not None else {}
        peers = []
        for peer in sorted(connected | set(scored)):
            seen = scored.get(peer, {})
            score, rejected, banned = seen.get("score", 0.0), seen.get("rejected", 0), seen.get("banned", False)
            peers.append(PeerScore(peer, peer in connected, float(score), int(rejected), bool(banned)))
        return NetworkInfo(peers, dict(getattr(self.network, "verdicts", {})), dict(self.mempool.rejected_by_reason))

    def jobs(self, limit: int) -> list[JobInfo]:
        return self.market.recent_jobs(limit)

    def job_result(self, job: JobId | str) -> JobResultInfo | None:
        return self.market.job_result(job)

    def job_proof(self, job: JobId | str) -> JobProof | None:
        info = self.market.job_status(job)
        job_id = info.job_id if info is not None else _full_id(job)
        escrow = None if job_id is None else self.store.state.job(job_id)
        if job_id is None or escrow is None or not escrow.receipt_tx:
            return None
        found = self.store.receipt_proof(escrow.receipt_tx)
        located = self.store.find_tx(escrow.receipt_tx)
        if found is None or located is None:
            return None
        raw = self.store.certificate(located.height)
        votes = decode_certificate(decode(raw)) if raw else ()
        return job_proof(job_id, located.tx, found.receipt.encode(), found.path, found.header, votes)

    def watch_job(self, job_id: JobId, *, after: int = 0) -> AsyncGenerator[JobUpdate, None]:
        return self.market.watch(job_id, after=after)

    async def cancel_job(self, job: JobId | str) -> JobInfo | None:
        return await self.market.cancel(job)

    def providers(self) -> list[CapabilityRecord]:
        return self.market.live_providers()

    def miner_pool(self) -> MinerPool | None:
        return self.miners

    def wallet_service(self) -> ClientWallet | None:
        return self.client_wallet

    def miner_payouts(self) -> dict[str, int]:
        return {"owed": 0, "paid_jobs": 0, "paid_total": 0} if self.payouts is None else self.payouts.summary()

    def reputation(self, address: Address) -> Reputation:
        return read_reputation(self.store.state, address)


def _full_id(job: JobId | str) -> JobId | None:
    """A job's id from 64 hex digits (a job this peer does not track), else None."""
    if isinstance(job, bytes):
        return job
    try:
        raw = bytes.fromhex(job)
    except ValueError:
        return None
    return JobId(Hash32(raw)) if len(raw) == 32 else None
