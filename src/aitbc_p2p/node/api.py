"""The facade the RPC layer speaks to (a Protocol, so tests can give it a twin), and the
views it returns.

Views are frozen dataclasses of domain values (bytes, the chain's own records, signed
market messages), never JSON: :mod:`aitbc_p2p.rpc.render` decides how each one looks on
the wire (specs/rpc.md), and agents that import the node read typed fields.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

from aitbc_p2p.chain.commitment import StateProof
from aitbc_p2p.chain.models import Block, BlockHeader, Transaction
from aitbc_p2p.chain.state import Account, Job, Reputation, Supply
from aitbc_p2p.consensus.proofs import JobProof
from aitbc_p2p.market.jobs import JobResult
from aitbc_p2p.market.messages import Bid, CapabilityRecord, JobOffer
from aitbc_p2p.store.chain import ReceiptProof, TxLocation
from aitbc_p2p.types import Address, Hash32, JobId

if TYPE_CHECKING:
    from aitbc_p2p.compute.miners import MinerPool
    from aitbc_p2p.node.client_wallet import ClientWallet


@dataclass(frozen=True, slots=True)
class ProviderStatus:
    """This peer as a provider: what it sells and how its executor is doing."""

    miner_id: str
    mode: str
    device: str
    gflops: int
    gflops_by_dtype: Mapping[str, int]
    workloads: Sequence[str]
    price_per_s: int
    executor: Mapping[str, int]
    """The executor's counters: slots, free_slots, done, failed, worker_restarts."""


@dataclass(frozen=True, slots=True)
class NodeStatus:
    chain_id: str
    genesis_hash: Hash32
    head: BlockHeader
    consensus: str
    next_proposer: Address
    final_height: int
    address: Address
    peer_id: str
    listen: Sequence[str]
    peers: Sequence[str]
    mempool: int
    min_fee: int
    provider: ProviderStatus | None
    version: str = ""
    """The package's version."""
    uptime_s: float = 0.0
    """Seconds since this node started."""
    sync_target: int = 0
    """The highest head a connected peer claims, or ours if none claims more."""


@dataclass(frozen=True, slots=True)
class PeerScore:
    peer_id: str
    connected: bool
    score: float
    """Gossip score (0 is clean; below the graylist threshold its gossip is dropped)."""
    rejected: int
    """Messages from it the gate or the node rejected."""
    banned: bool


@dataclass(frozen=True, slots=True)
class NetworkInfo:
    """How this peer sees its neighbours (``GET /v1/network``): connected peers and any
    scored one, the gate's verdicts on gossip, and what the pool refused, by reason."""

    peers: Sequence[PeerScore]
    gossip: Mapping[str, int]
    mempool_rejected: Mapping[str, int]


@dataclass(frozen=True, slots=True)
class AccountInfo:
    address: Address
    account: Account
    pending_nonce: int
    """The nonce the account's next transaction takes, counting those in the pool."""


@dataclass(frozen=True, slots=True)
class TxStatus:
    status: Literal["committed", "pending"]
    tx: Transaction
    height: int | None = None
    index: int | None = None
    final: bool = False
    """Committed in a block fork choice can no longer revert (at once under BFT)."""


@dataclass(frozen=True, slots=True)
class CertificateInfo:
    """Who finalised a block (BFT engines): the round and the validators whose votes it holds."""

    round: int | None
    validators: Sequence[Address]


@dataclass(frozen=True, slots=True)
class BlockInfo:
    block: Block
    certificate: CertificateInfo | None = None


@dataclass(frozen=True, slots=True)
class AccountProof:
    """An account record with its path to ``header``'s state root (verify it offline)."""

    header: BlockHeader
    proof: StateProof


@dataclass(frozen=True, slots=True)
class JobInfo:
    """A job as this peer knows it: its own tracking (if it is the client's peer) and the
    escrow on chain (if one is open)."""

    job_id: JobId
    status: str
    """The escrow's status once it left ``open``, else the client's phase (``open`` for a
    job this peer does not track)."""
    phase: str | None
    error: str
    escrow: Job | None
    result_available: bool
    workload: str | None = None
    offer: JobOffer | None = None
    bids: Sequence[Bid] = ()
    trust: Mapping[str, int] = field(default_factory=dict)
    """Each bidder's record on chain as a score in thousandths (Reputation.score_milli)."""
    check: tuple[str, str] | None = None
    """This peer's ruling on the job's result, as the client's agent or an arbiter:
    ``(verdict, why)`` (specs/market.md, "Verification"); None if it checked nothing."""
    replica: JobId | None = None
    """At verification ``replicate``: the other job of the pair."""

    @property
    def finished(self) -> bool:
        """Nothing more will happen to it that a waiting client needs: settled, refunded,
        failed, or cancelled before any escrow."""
        return self.status in FINISHED_JOB_STATUSES or (self.status == "cancelled" and self.escrow is None)


FINISHED_JOB_STATUSES = ("settled", "refunded", "failed")


@dataclass(frozen=True, slots=True)
class JobUpdate:
    """One event of a job's stream (``GET /v1/jobs/<id>/events``, specs/rpc.md): its
    status changed (``job``), the workload reported progress (``progress``, numbered from
    1 by ``seq``), it finished (``job``, and the stream ends), or nothing happened for a
    while (``keepalive``)."""

    kind: str
    job: JobInfo | None = None
    seq: int = 0
    progress: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class ChainUpdate:
    """One event of the peer's stream (``GET /v1/events``, specs/rpc.md): a block joined
    the main chain (``block``), blocks above ``height`` left it (``reorg``: the blocks
    that replace them follow), a transaction submitted through this peer was committed
    (``tx``, at ``height`` and ``index``), a job this peer takes part in changed (``job``),
    or nothing happened for a while (``keepalive``)."""

    kind: str
    block: BlockHeader | None = None
    txs: int = 0
    final_height: int = 0
    height: int = 0
    tx_hash: Hash32 | None = None
    index: int = 0
    job: JobInfo | None = None


@dataclass(frozen=True, slots=True)
class JobResultInfo:
    job_id: JobId
    result: JobResult
    receipt_matches: bool
    """The escrow's receipt carries this result's hash."""


class NodeAPI(Protocol):
    def status(self) -> NodeStatus: ...

    def supply(self) -> Supply: ...

    def network_info(self) -> NetworkInfo: ...

    def watch_chain(self, *, after: int | None = None) -> AsyncGenerator[ChainUpdate, None]:
        """The chain's event stream: each block above ``after`` (the head's parent if None;
        at most the last CHAIN_CATCH_UP), then each block as it joins the main chain."""
        ...

    def account(self, address: Address) -> AccountInfo: ...

    def history(self, address: Address, limit: int) -> list[TxLocation]: ...

    async def submit_tx(self, tx: Transaction) -> Hash32:
        """Admit to the mempool and gossip. Raises TxRejected with a named reason."""
        ...

    def tx_status(self, tx_hash: Hash32) -> TxStatus | None: ...

    def tx_proof(self, tx_hash: Hash32) -> ReceiptProof | None:
        """The receipt of a committed transaction with its Merkle path and block header."""
        ...

    def account_proof(self, address: Address) -> AccountProof | None:
        """An account record with its path to the head's state root."""
        ...

    def block(self, height: int) -> BlockInfo | None: ...

    async def submit_job(
        self, offer: JobOffer, workload: str, params: dict[str, Any], *, replica_of: JobId | None = None
    ) -> JobId:
        """Publish a client's signed offer and keep its payload for the chosen provider;
        ``replica_of``: the job it repeats at verification replicate."""
        ...

    def job_status(self, job: JobId | str) -> JobInfo | None:
        """A job by its JobId, its id in hex, or a unique prefix of at least 4 hex digits
        of a tracked job's. Raises MarketError if the prefix is ambiguous."""
        ...

    def jobs(self, limit: int) -> list[JobInfo]:
        """Up to ``limit`` jobs this peer takes part in (as client, then as provider), newest first."""
        ...

    def job_result(self, job: JobId | str) -> JobResultInfo | None:
        """Same lookup as job_status."""
        ...

    def job_proof(self, job: JobId | str) -> JobProof | None:
        """The offline proof of a job's committed receipt (consensus/proofs.py); None while
        it has none. Same lookup as job_status, and any escrow by its full id."""
        ...

    def watch_job(self, job_id: JobId, *, after: int = 0) -> AsyncGenerator[JobUpdate, None]:
        """The job's events as they happen, from its current status and the progress
        events after ``after``; ends once the job has finished."""
        ...

    async def cancel_job(self, job: JobId | str) -> JobInfo | None:
        """Cancel a job this peer tracks (specs/market.md, "Failover and cancel"); None
        when it tracks no such job. Raises MarketError for an ambiguous prefix, a job that
        has ended, or an escrow that does not name this peer as agent."""
        ...

    def providers(self) -> list[CapabilityRecord]: ...

    def reputation(self, address: Address) -> Reputation:
        """A provider's record on chain (settled, failed, lost disputes, slashed stake)."""
        ...

    def miner_pool(self) -> MinerPool | None:
        """The external miners this peer sells the compute of (None without ``[miners]``)."""
        ...

    def wallet_service(self) -> ClientWallet | None:
        """The wallet this peer holds for ``X-Api-Key`` clients (None without ``[wallet]``)."""
        ...

    def miner_payouts(self) -> dict[str, int]:
        """What this peer owes and has paid its miners: ``owed``, ``paid_jobs``, ``paid_total``."""
        ...
