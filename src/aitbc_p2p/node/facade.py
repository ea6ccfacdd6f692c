"""The node as its users see it: :class:`Node` implements NodeAPI over the services and
gives agents and tests one handle on them. It decides nothing and owns no task."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from collections.abc import Set as AbstractSet
from typing import Any

from aitbc_p2p.chain.models import Block, BlockHeader, Genesis, Transaction
from aitbc_p2p.chain.payloads import Payload
from aitbc_p2p.chain.state import account_key, supply_of
from aitbc_p2p.chain.transition import ChainRules
from aitbc_p2p.chain.votes import Vote
from aitbc_p2p.codec import decode
from aitbc_p2p.consensus import ConsensusEngine
from aitbc_p2p.consensus.tendermint import decode_certificate
from aitbc_p2p.crypto.keys import PrivateKey
from aitbc_p2p.market.messages import JobOffer
from aitbc_p2p.mempool import Mempool
from aitbc_p2p.network.abc import Network
from aitbc_p2p.node.abc import Topics
from aitbc_p2p.node.bft import BftDriver
from aitbc_p2p.node.blockrelay import BlockRelay
from aitbc_p2p.node.chain_service import ChainService
from aitbc_p2p.node.config import NodeConfig
from aitbc_p2p.node.market import MarketService
from aitbc_p2p.node.peering import PeeringService
from aitbc_p2p.node.peers import PeerBook
from aitbc_p2p.node.producer import BlockProducer
from aitbc_p2p.node.relay import TxRelay
from aitbc_p2p.node.sync import SyncService
from aitbc_p2p.node.views import block_view, jsonable, tx_view
from aitbc_p2p.store import ChainStore
from aitbc_p2p.types import Address, Hash32, JobId, format_aitbc


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
        self.producer = producer
        self.bft = bft

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

    # ------------------------------------------------------- NodeAPI
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

    async def submit_tx(self, tx: Transaction) -> Hash32:
        return await self.relay.submit_tx(tx)

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

    async def submit_job(self, offer: JobOffer, workload: str, params: dict[str, Any]) -> JobId:
        return await self.market.submit(offer, workload, params)

    def job_status(self, job: JobId | str) -> dict[str, Any] | None:
        return self.market.job_status(job)

    def job_result(self, job: JobId | str) -> dict[str, Any] | None:
        return self.market.job_result(job)

    def providers(self) -> list[dict[str, Any]]:
        return [jsonable(dict(rec.body)) for rec in self.market.providers.values()]
