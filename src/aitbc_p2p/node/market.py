"""The job market inside a node: client-side job tracking and the provider's side.

Flow (specs/market.md): a client's signed offer is gossiped; providers that can run it
gossip signed bids; the client's wallet picks one and opens escrow on chain naming that
provider; once the escrow is committed, the client's node sends the payload straight
to the provider over ``/aitbc/job/2``; the provider checks the escrow, runs the job,
returns the result on the same stream, posts a receipt transaction and, once the
receipt is committed, settles the escrow, which pays it and refunds the rest.
"""

from __future__ import annotations

import enum
import logging
from collections import OrderedDict
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import trio

from aitbc_p2p.chain.payloads import (
    MAX_ACK_BYTES,
    MAX_ATTEMPTS,
    JobCancel,
    JobDispute,
    JobReassign,
    JobReceipt,
    JobRefund,
    JobSettle,
    ProviderRegister,
    Stake,
    release_digest,
    sign_ack,
    sign_release,
)
from aitbc_p2p.chain.state import Job, JobStatus, read_reputation
from aitbc_p2p.chain.transition import challengeable, last_challenge_height
from aitbc_p2p.codec import decode, encode, fields
from aitbc_p2p.compute import DeviceInfo, Execution, check_params
from aitbc_p2p.crypto import recover_address
from aitbc_p2p.exceptions import CodecError, CryptoError, MarketError, NetworkError, StoreError, TxRejected
from aitbc_p2p.market import (
    Bid,
    CapabilityRecord,
    JobOffer,
    JobPayload,
    JobResult,
    Load,
    job_cost,
    params_hash,
    quote,
    select_bid,
)
from aitbc_p2p.market.audit import Evidence, Facts, Level, check_level
from aitbc_p2p.market.jobs import (
    ACK_REFUSED,
    ACK_TAKEN,
    FetchAnswer,
    Held,
    JobAck,
    JobEvent,
    JobFetch,
    ReleaseRequest,
    decode_job_request,
    decode_release_answer,
    encode_release_answer,
)
from aitbc_p2p.market.messages import MAX_RECORD_MODELS, decode_job_message, is_model_digest
from aitbc_p2p.network.abc import REJECT, Emit, GossipMessage, Network, Verdict, accept
from aitbc_p2p.network.protocols import JOB_PROTOCOL
from aitbc_p2p.node.abc import ChainView, OwnAccount, Topics
from aitbc_p2p.node.api import JobInfo, JobResultInfo, JobUpdate, ProviderStatus
from aitbc_p2p.node.cheats import Cheat, Cheater
from aitbc_p2p.node.config import ProviderConfig
from aitbc_p2p.node.offload import blocking
from aitbc_p2p.store.crash import crash_point
from aitbc_p2p.store.journal import MarketJournal, Side
from aitbc_p2p.types import Address, Hash32, JobId, format_aitbc

logger = logging.getLogger(__name__)

MAX_OFFERS_SEEN = 10_000
MAX_PROVIDERS = 1024
RECORD_TTL_S = 60.0
"""A provider whose capability record this peer has not heard for this long (six of the
default announce intervals) is not listed, not counted, and its bids are not offered for
choice: it may be gone."""
"""Capability records kept (the least recently announced dropped first)."""
ENOUGH_BIDS = 3
"""Bidding on a client's offer closes early once this many bids are in, or one from every
known provider that could take the job if fewer (specs/market.md, "Bids")."""
MAX_BIDS_PER_JOB = 64
"""Bids kept per client job; past it a bid must beat the dearest kept one."""
MAX_CLIENT_JOBS = 10_000
"""Client jobs tracked; past it the oldest finished ones are dropped."""
MIN_JOB_PREFIX = 4
"""Hex digits a job id prefix needs to name a job (as git takes a commit's)."""
JOB_ID_HEX = 64
ENDED = (JobStatus.SETTLED, JobStatus.REFUNDED)
ESCROW_WAIT_S = 20.0
ESCROW_GONE_BLOCKS = 20
"""Blocks a provider waits for an escrow a reorg took back to be committed again."""
RECEIPT_RETRY_BLOCKS = 3
"""Blocks after which a receipt still not committed (its escrow open) is posted again."""
FETCH_INTERVAL_S = 1.0
"""How often the client's peer asks a provider again for a result it has not got."""
FETCH_TIMEOUT_S = 10.0
SILENT_S = 20.0
"""A provider that no fetch has reached for this long, its escrow still unreceipted, is
silent: the attempt fails and the job moves on (a receipted one is fetched until the
dispute window closes: it has claimed pay, and the agent disputes what it never got)."""
ACK_ATTEMPTS = 3
RELEASE_TIMEOUT_S = 5.0
REASSIGN_WAIT_BLOCKS = 2
DISPUTE_MARGIN_BLOCKS = 2
"""The client's agent disputes a receipt it has no result for this many blocks before the
dispute window closes (time for the dispute to be included)."""
MAX_JOB_EVENTS = 4096
"""Progress events a client's peer keeps per job (the oldest go first)."""
ABANDONED_S = 600.0
"""A client job still without an escrow this long after this peer took it up has been given
up by its client: it fails (nothing was locked) instead of staying in bidding for good."""
KEEPALIVE_S = 15.0
"""A job's event stream says it is alive after this long without an event."""
MAX_RECORD = 4 << 20
"""The largest journal record read back: a result (up to 1 MiB) with its offer and bids."""


class Phase(enum.StrEnum):
    """Where a client's job is on this peer (specs/market.md); rendered as its value."""

    BIDDING = "bidding"
    BIDS_READY = "bids_ready"
    RUNNING = "running"
    FETCHING = "fetching"
    """The stream ended without the result; asking the provider for it again."""
    FAILING_OVER = "failing_over"
    """The provider failed; the escrow is being moved to the next bidder."""
    RESULT_RECEIVED = "result_received"
    FAILED = "failed"
    CANCELLED = "cancelled"
    """The client cancelled it; any escrow goes back (at once with the provider's release)."""


CLIENT_RECORD_KEYS = (
    "offer", "workload", "params", "phase", "bids", "bids_wanted", "result", "error", "refund_sent", "acted", "peer",
    "tried", "next_bid",
)  # fmt: skip


@dataclass
class ClientJob:
    offer: JobOffer
    workload: str
    params: dict[str, Any]
    phase: Phase = Phase.BIDDING
    bids: dict[Address, Bid] = field(default_factory=dict)
    bids_wanted: int = 0
    """Bidding closes as soon as this many bids are in (0: only when the window ends)."""
    result: JobResult | None = None
    error: str = ""
    refund_sent: bool = False
    """Nothing more to do about the escrow of a failed job, or of one whose receipt missed
    its deadline: this peer posted its refund, or it ended otherwise."""
    acted: bool = False
    """Nothing more to check about the receipt: this peer (the client's agent) let it stand
    (it holds that result), disputed it, or has no right to act on it."""
    peer: str = ""
    """The peer id of the provider the job was last sent to."""
    tried: set[Address] = field(default_factory=set)
    """Providers that failed this job (never chosen again for it)."""
    next_bid: Bid | None = None
    """While failing over: the bid the escrow is being moved to."""
    chain_action: bool = False
    """A cancel or reassign of this job's escrow is on its way (one at a time)."""
    ack_sent: bool = False
    """Its delivery ack is on its way (not journaled: after a restart it is sent again)."""
    reassign_sent: bool = False
    """The reassignment of its cancelled escrow, once the grace is over, is posted (a
    pending cancel's ``chain_action`` is still set when that cancel is committed)."""
    events: list[dict[str, Any]] = field(default_factory=list)
    """The workload's progress events the provider streamed (not journaled)."""
    since: float | None = None
    """When this peer first saw a block with the job bidding (after taking it up, or after
    a restart; not journaled): an offer's own timestamp is the client's clock."""
    events_dropped: int = 0
    """Progress events dropped from the front of ``events`` (the first kept is number this + 1)."""
    provider_seq: int = 0
    """The number of the last event taken from the provider now running it."""
    twin: JobId | None = None
    """At verification ``replicate``: the other job of the pair (the same parameters, run
    by another provider) whose result this one's is compared with."""
    job_id: JobId = field(init=False)
    """Its offer's hash: its id here, on the job stream and on chain (the escrow's)."""

    def __post_init__(self) -> None:
        self.job_id = self.offer.job_id

    def to_record(self) -> bytes:
        """Its journal record: all it needs to go on after a restart (a cancel or reassign
        in flight is not kept; the chain's escrow says where that got to)."""
        return encode(
            {
                "offer": self.offer.to_wire(),
                "workload": self.workload,
                "params": self.params,
                "phase": str(self.phase),
                "bids": [b.to_wire() for b in self.bids.values()],
                "bids_wanted": self.bids_wanted,
                "result": None if self.result is None else self.result.encode(),
                "error": self.error[: fields.MAX_TEXT],
                "refund_sent": self.refund_sent,
                "acted": self.acted,
                "peer": self.peer,
                "tried": sorted(self.tried),
                "next_bid": None if self.next_bid is None else self.next_bid.to_wire(),
                **({} if self.twin is None else {"twin": self.twin.hex()}),
            }
        )

    def fingerprint(self) -> tuple[Any, ...]:
        """What on_head may change about it: compared before and after to know when to journal it."""
        return (self.phase, self.refund_sent, self.acted, self.error, self.next_bid, len(self.tried), self.result)

    @classmethod
    def from_record(cls, data: bytes) -> ClientJob:
        """Read a journal record back (MarketError if it is not one); a job caught bidding
        by a restart has its window over."""
        try:
            w = fields.record(
                decode(data, max_size=MAX_RECORD), CLIENT_RECORD_KEYS, "a client job record", optional=("twin",)
            )
            result, nxt = w["result"], w["next_bid"]
            job = cls(
                JobOffer.from_wire(w["offer"]),
                fields.text(w, "workload"),
                fields.mapping(w, "params"),
                phase=Phase(fields.text(w, "phase")),
                bids_wanted=fields.uint(w, "bids_wanted"),
                result=None if result is None else JobResult.decode(fields.blob(w, "result", max_len=MAX_RECORD)),
                error=fields.text(w, "error"),
                refund_sent=fields.boolean(w, "refund_sent"),
                acted=fields.boolean(w, "acted"),
                peer=fields.text(w, "peer"),
                tried={Address(a) for a in fields.listing(w, "tried", max_items=MAX_ATTEMPTS + 1) if type(a) is str},
                next_bid=None if nxt is None else Bid.from_wire(nxt),
                twin=JobId(Hash32(fields.hex_hash32(w, "twin"))) if "twin" in w else None,
            )
            for wire in fields.listing(w, "bids", max_items=MAX_BIDS_PER_JOB):
                bid = Bid.from_wire(wire)
                job.bids[bid.signer] = bid
        except (CodecError, ValueError) as e:
            raise MarketError(f"unreadable client job record: {e}") from e
        if job.phase is Phase.BIDDING:
            job.phase = Phase.BIDS_READY
        return job


HELD_RECORD_KEYS = ("peer", "done", "result", "ack", "cost")
HELD_JOB_KEYS = ("offer", "workload", "params")
"""Kept since verification: what an audit of the job is answered from (older records lack them)."""


@dataclass
class HeldJob:
    """A job this provider accepted, and its result once there is one: kept for the
    client's peer (``peer``) to fetch again until the escrow ends."""

    job_id: JobId
    peer: str
    result: JobResult | None = None
    done: trio.Event = field(default_factory=trio.Event)
    ack: bytes = b""
    """The client's delivery ack, once its peer sent one: settles at once."""

    cost: int = 0
    """What its receipt asks (set with an ok result, before the receipt is posted)."""
    events: list[dict[str, Any]] = field(default_factory=list)
    """The workload's progress events, streamed to the client's peer (not journaled)."""
    events_dropped: int = 0
    changed: trio.Event = field(default_factory=trio.Event)
    """Set when an event is added or the job is done (and replaced by whoever waits)."""
    offer: JobOffer | None = None
    workload: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    """The job as its client sent it: audits of its result are answered from these."""
    kept: bytes = b""
    """What the workload kept for audits (a product's rows; in memory only, bounded by MAX_KEPT)."""

    def add_event(self, event: dict[str, Any]) -> None:
        """The executor's callback for each progress event of the job (bounded: the oldest go)."""
        self.events.append(event)
        if len(self.events) > MAX_JOB_EVENTS:
            del self.events[0]
            self.events_dropped += 1
        self.changed.set()

    def finish(self) -> None:
        self.done.set()
        self.changed.set()

    def answer(self) -> JobResult:
        return self.result or JobResult(self.job_id, False, error="the job was interrupted on the provider")

    def to_record(self) -> bytes:
        result = self.result.encode() if self.result is not None else None
        done = self.done.is_set()
        offer = None if self.offer is None else self.offer.to_wire()
        return encode(
            {"peer": self.peer, "done": done, "result": result, "ack": self.ack, "cost": self.cost, "offer": offer,
             "workload": self.workload, "params": self.params}
        )  # fmt: skip

    @classmethod
    def from_record(cls, job_id: JobId, data: bytes) -> HeldJob:
        """Read a journal record back (MarketError if it is not one). A job that was running
        when the provider stopped is done now: interrupted, with no result."""
        try:
            w = fields.record(
                decode(data, max_size=MAX_RECORD), HELD_RECORD_KEYS, "a held job record", optional=HELD_JOB_KEYS
            )
            raw, offer = w["result"], w.get("offer")
            held = cls(
                job_id,
                fields.text(w, "peer"),
                result=None if raw is None else JobResult.decode(fields.blob(w, "result", max_len=MAX_RECORD)),
                ack=fields.blob(w, "ack", max_len=MAX_ACK_BYTES),
                cost=fields.uint(w, "cost"),
                offer=None if offer is None else JobOffer.from_wire(offer),
                workload=fields.text(w, "workload") if "workload" in w else "",
                params=fields.mapping(w, "params") if "params" in w else {},
            )
        except CodecError as e:
            raise MarketError(f"unreadable held job record: {e}") from e
        if held.result is not None and held.result.job_id != job_id:
            raise MarketError("a held job record names another job")
        held.done.set()
        return held


class Verifier(Protocol):
    """Checks a delivered result before the client's agent acks it (node/audit.py)."""

    def spot_check(self, job: ClientJob, escrow: Job) -> None: ...

    async def cannot_check(self, workload: str, params: dict[str, Any]) -> str:
        """Why this peer could not check such a job at level spot or audit (empty: it can)."""

    def disputed(self, job_id: JobId, why: str) -> None:
        """This peer disputed the job's receipt as the client's agent, for ``why``."""

    def check_of(self, job_id: JobId) -> tuple[str, str] | None:
        """This peer's ruling on the job's result, ``(verdict, why)``, if it reached one."""


MAX_KEPT = 256 << 20
"""Bytes of kept products a provider holds for audits, all jobs together; past it the
oldest go (an audit of those recomputes the product)."""
MAX_HELD = 4096
"""Jobs whose results a provider holds (each needed an escrow naming it); past it the
oldest finished ones are dropped."""

PROMISE_S = 5.0
"""How long a bid counts toward a provider's quoted wait if its job does not come."""
ANNOUNCE_MIN_S = 1.0
"""A provider re-announces its capability record when its load changes, at most this often."""
RUN_MS_GUESS = 250
"""A provider's guess of how long a job holds a slot, until it has run one."""

JOB_STREAMS_PER_PEER = 256
"""Job requests one client peer may have in service at once (each waits for its escrow
and runs in the executor's slots; the rate limit still applies to opening them)."""


class ComputeBackend(Protocol):
    """What runs a provider's jobs: the executor's worker processes (compute/executor.py)
    or its external miners (compute/miners.py)."""

    checkable: bool
    """Whether its results can answer a spot check or an audit (else: bids on ``none`` only)."""
    models: tuple[str, ...]
    """The content hashes of the models it runs (llm_gen, sd_infer): its capability record lists them."""

    def statistics(self) -> dict[str, int]: ...

    async def run(
        self,
        workload: str,
        params: dict[str, Any],
        *,
        max_runtime_s: float,
        max_ram_mb: int | None = None,
        on_event: Callable[[dict[str, Any]], None] | None = None,
        job_id: bytes = b"",
    ) -> Execution: ...


class MarketService:
    def __init__(
        self,
        chain: ChainView,
        account: OwnAccount,
        network: Network,
        topics: Topics,
        clock_ms: Callable[[], int],
        *,
        bid_window_s: float,
        journal: MarketJournal | None = None,
    ) -> None:
        self.chain = chain
        self.account = account
        self.network = network
        self.clock_ms = clock_ms
        self._bid_window_s = bid_window_s
        self.providers: OrderedDict[Address, CapabilityRecord] = OrderedDict()
        self._heard: dict[Address, float] = {}
        """When each provider's latest record came (trio's clock)."""
        self.client_jobs: OrderedDict[JobId, ClientJob] = OrderedDict()
        self._held: OrderedDict[JobId, HeldJob] = OrderedDict()
        self._hold_until: dict[JobId, int] = {}
        """Settled held jobs, by the height after which they can no longer be challenged."""
        self._offers_seen: OrderedDict[JobId, JobOffer] = OrderedDict()
        self._provider: ProviderConfig | None = None
        self._device_of: Callable[[], DeviceInfo] | None = None
        self._executor: ComputeBackend | None = None
        self._nursery: trio.Nursery | None = None
        self._topic_job = topics.job
        self._topic_provider = topics.provider
        self._journal = journal
        self._dirty: dict[tuple[Side, JobId], None] = {}
        """Jobs whose record is to be (re)written, or deleted if the job is gone."""
        self._marked = 0
        self._written = 0
        self._watched: dict[JobId, trio.Event] = {}
        self._any_job_changed = trio.Event()
        self._accepted = 0
        self._promised: OrderedDict[JobId, float] = OrderedDict()
        """Jobs bid on in the last PROMISE_S that have not come (yet): they count toward the
        wait quoted to the next offers (a burst of offers sees the queue it will make)."""
        """Jobs this provider accepted and has not finished (waiting for escrow or a slot, or running)."""
        self._slot_ms = RUN_MS_GUESS
        """A moving average of how long its jobs hold a slot."""
        self._load_changed = trio.Event()
        """Jobs whose events someone streams: each set (and dropped) when the job changes."""
        self._journal_wake = trio.Event()
        self._journal_wrote = trio.Event()
        self.cheater: Cheater | None = None
        """A cheating provider's fixture (tests and bench only: node/cheats.py)."""
        self.verifier: Verifier | None = None
        """Checks a ``spot`` job's result before it is acked (node/audit.py)."""

    # -------------------------------------------------------------- set-up
    @property
    def held_jobs(self) -> int:
        """Jobs this provider holds a result or run for, until their escrows end."""
        return len(self._held)

    def executor_statistics(self) -> dict[str, int]:
        """The executor's counters (empty unless this peer sells compute)."""
        return {} if self._executor is None else self._executor.statistics()

    @property
    def _device(self) -> DeviceInfo | None:
        """What this provider sells now (fixed for an executor, its live miners' for a pool)."""
        return None if self._device_of is None else self._device_of()

    def enable_provider(
        self, config: ProviderConfig, device: DeviceInfo | Callable[[], DeviceInfo], executor: ComputeBackend
    ) -> None:
        """Sell compute: ``executor`` runs the jobs, ``device`` is what it offers (or a
        function that says, when that changes: the miner pool's live miners)."""
        self._provider, self._executor = config, executor
        self._device_of = device if callable(device) else (lambda: device)
        if config.cheat:
            self.cheater = Cheater(Cheat(config.cheat))
            logger.warning("THIS PROVIDER CHEATS (%s): a test fixture, never for a real host", config.cheat)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        # A job's request lasts as long as the job runs; an agent may run many at once.
        self.network.set_stream_handler(JOB_PROTOCOL, self.serve_job, concurrent=JOB_STREAMS_PER_PEER)
        jobs = await self.network.subscribe(self._topic_job, self.job_gate)
        providers = await self.network.subscribe(self._topic_provider, self.capability_gate)
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            if self._journal is not None:
                await self._load_journal(self._journal)
                nursery.start_soon(self._journal_loop, self._journal)
                self._resume()
            nursery.start_soon(self.on_job_topic, jobs)
            nursery.start_soon(self.on_provider_topic, providers)
            if self._provider is not None:
                nursery.start_soon(self._announce_loop)
                nursery.start_soon(self._ensure_registered)
            task_status.started()

    def registered(self) -> bool:
        return self.chain.state.account(self.account.key.address).provider

    # ------------------------------------------------------------- journal
    def _mark(self, side: Side, job_id: JobId) -> None:
        """Journal this job's current record (or its deletion, once it is no longer kept)
        with the next batch."""
        if side is Side.CLIENT:
            self._poke(job_id)
        if self._journal is None:
            return
        self._dirty[(side, job_id)] = None
        self._marked += 1
        self._journal_wake.set()

    def _poke(self, job_id: JobId) -> None:
        """Wake whoever streams this job's events, and whoever streams every job's."""
        changed = self._watched.pop(job_id, None)
        if changed is not None:
            changed.set()
        self._any_job_changed.set()
        self._any_job_changed = trio.Event()

    def next_job_change(self) -> trio.Event:
        """The event set when any job this peer tracks as a client next changes."""
        return self._any_job_changed

    async def watch(self, job_id: JobId, *, after: int = 0) -> AsyncGenerator[JobUpdate, None]:
        """The job's event stream (specs/rpc.md, "Job events"): its status now and each
        time it changes, the progress events numbered above ``after``, a keepalive after
        KEEPALIVE_S of quiet; it ends with the status that finished the job."""
        last: JobInfo | None = None
        sent = after
        while True:
            changed = self._watched.setdefault(job_id, trio.Event())
            tracked = self.client_jobs.get(job_id)
            if tracked is not None:
                first = tracked.events_dropped + 1
                for seq in range(max(sent + 1, first), first + len(tracked.events)):
                    yield JobUpdate("progress", seq=seq, progress=tracked.events[seq - first])
                    sent = seq
            info = self.job_status(job_id)
            if info is not None and info != last:
                last = info
                yield JobUpdate("status", job=info)
            if info is None or info.finished:
                if info is not None:
                    yield JobUpdate("end", job=info)
                return
            with trio.move_on_after(KEEPALIVE_S) as quiet:
                await changed.wait()
            if quiet.cancelled_caught:
                yield JobUpdate("keepalive")

    async def _flush(self) -> None:
        """Return once everything marked so far is on disk (synced)."""
        target = self._marked
        while self._journal is not None and self._written < target:
            wrote = self._journal_wrote
            await wrote.wait()

    async def _journal_loop(self, journal: MarketJournal) -> None:
        """The one writer of the journal, so records land in the order they were marked.
        Each batch encodes the jobs' state as it is now, on the Trio thread, and writes it
        synced in a worker thread."""
        while True:
            await self._journal_wake.wait()
            self._journal_wake = trio.Event()
            upto, dirty, self._dirty = self._marked, self._dirty, {}
            puts: list[tuple[Side, JobId, bytes]] = []
            deletes: list[tuple[Side, JobId]] = []
            for side, job_id in dirty:
                job = self.client_jobs.get(job_id) if side is Side.CLIENT else self._held.get(job_id)
                if job is None:
                    deletes.append((side, job_id))
                else:
                    puts.append((side, job_id, job.to_record()))
            try:
                await blocking(journal.write, puts, deletes)
            except StoreError:  # the disk is failing: say so, keep the node serving
                logger.exception("market journal not written (%d records)", len(puts) + len(deletes))
            self._written = upto
            self._journal_wrote.set()
            self._journal_wrote = trio.Event()

    async def _load_journal(self, journal: MarketJournal) -> None:
        """Read back the jobs this peer was answerable for when it stopped."""

        def read() -> tuple[list[tuple[JobId, bytes]], list[tuple[JobId, bytes]]]:
            return list(journal.records(Side.CLIENT)), list(journal.records(Side.PROVIDER))

        clients, held = await blocking(read)
        for job_id, data in clients:
            try:
                job = ClientJob.from_record(data)
                if job.job_id != job_id:
                    raise MarketError("the record names another job")
            except MarketError as e:
                logger.error("journal: client job %s skipped: %s", job_id.hex()[:16], e)
                continue
            self.client_jobs[job_id] = job
        for job_id, data in held:
            try:
                self._held[job_id] = HeldJob.from_record(job_id, data)
            except MarketError as e:
                logger.error("journal: held job %s skipped: %s", job_id.hex()[:16], e)
        if clients or held:
            logger.info("journal: resuming %d client jobs, %d held jobs", len(self.client_jobs), len(self._held))

    def _resume(self) -> None:
        """Go on with what the journal holds, as the chain now stands (specs/market.md,
        "Persistence"): dispatch again jobs that were running (a provider holding one
        answers with what it holds; it never runs a job twice), ack again results that were
        delivered, take failovers up where they stopped; and, as a provider, receipt and
        settle the results it holds, and drop what the chain has ended."""
        assert self._nursery is not None
        nursery = self._nursery
        for job in self.client_jobs.values():
            escrow = self.chain.state.job(job.job_id)
            live = escrow is not None and escrow.status in (JobStatus.OPEN, JobStatus.RECEIPTED)
            if escrow is None or not live:
                continue
            if job.phase in (Phase.RUNNING, Phase.FETCHING):
                bid = job.bids.get(escrow.provider)
                if bid is not None:
                    job.phase = Phase.RUNNING
                    nursery.start_soon(self._dispatch, job.job_id, job, bid)
                else:
                    job.phase, job.error = Phase.FAILED, "resumed with no bid from the escrow's provider"
                    self._mark(Side.CLIENT, job.job_id)
            elif job.phase is Phase.RESULT_RECEIVED and job.result is not None and job.result.ok:
                job.acted = False  # its ack may not have left: the receipt is checked (and acked) again
                self._check_receipt(job, self.chain.head.height)
            elif (
                job.phase is Phase.FAILING_OVER
                and escrow.status is JobStatus.OPEN
                and (job.next_bid is None or escrow.provider != job.next_bid.signer)
            ):
                nursery.start_soon(self._attempt_failed, job, job.error or "resumed while failing over")
        me = self.account.key.address
        for job_id, held in list(self._held.items()):
            escrow = self.chain.state.job(job_id)
            if escrow is None or escrow.provider != me or self._done_with(escrow):
                del self._held[job_id]  # refunded, settled past its challenges, or moved to another provider
                self._mark(Side.PROVIDER, job_id)
                continue
            self._mark(Side.PROVIDER, job_id)  # a job that was running is now recorded as interrupted
            result = held.result
            if result is None or not result.ok:
                continue
            if escrow.status is JobStatus.OPEN:
                nursery.start_soon(self._post_receipt, escrow, held, result)
            elif escrow.status is not JobStatus.CANCELLED and escrow.result_hash == result.result_hash:
                nursery.start_soon(self._settle_when_receipted, job_id)  # settles, or holds it for challenges

    def _done_with(self, escrow: Job) -> bool:
        """Whether a provider may drop a held job: refunded, or settled and no longer open to
        a challenge (``challenge_blocks``; until then it answers audits of it)."""
        if escrow.status is JobStatus.REFUNDED:
            return True
        settled = escrow.status is JobStatus.SETTLED
        return settled and not challengeable(escrow, self.chain.rules, self.chain.head.height)

    async def _ensure_registered(self) -> None:
        """Stake ``min_provider_stake`` and register on chain if this provider is not yet."""
        if self.registered():
            return
        me = self.chain.state.account(self.account.key.address)
        need = self.chain.rules.min_provider_stake - me.stake
        try:
            if need > 0:
                await self.account.send_own_tx(Stake(need))
            await self.account.send_own_tx(ProviderRegister())
            logger.info("registering as a provider (stake %s AITBC)", format_aitbc(max(need, 0) + me.stake))
        except TxRejected as e:
            logger.warning("cannot register as a provider: %s; no bids until registered", e)

    def provider_status(self) -> ProviderStatus | None:
        if self._provider is None or self._device is None or self._executor is None:
            return None
        return ProviderStatus(
            miner_id=self._provider.miner_id,
            mode=self._device.mode,
            device=self._device.name,
            gflops=self._device.gflops,
            gflops_by_dtype=dict(self._device.gflops_by_dtype),
            workloads=list(self._device.workloads),
            price_per_s=self._provider.price_per_s,
            executor=self._executor.statistics(),
        )

    # ----------------------------------------------------- gossip validation
    async def job_gate(self, data: bytes) -> Verdict[JobOffer | Bid]:
        """Stateless gate of the job topic: a signed offer or bid for this chain."""
        try:
            return accept(self._parse_job_message(data))
        except MarketError as e:
            logger.debug("job message refused: %s", e)
            return REJECT

    def _parse_job_message(self, data: bytes) -> JobOffer | Bid:
        msg = decode_job_message(data, max_size=64 * 1024)
        if msg.chain_id != self.chain.genesis.chain_id:
            raise MarketError("job message for another chain")
        return msg

    async def capability_gate(self, data: bytes) -> Verdict[CapabilityRecord]:
        """Stateless gate of the provider topic: a signed capability record for this chain."""
        try:
            rec = CapabilityRecord.decode(data)
        except MarketError as e:
            logger.debug("capability record refused: %s", e)
            return REJECT
        return accept(rec) if rec.chain_id == self.chain.genesis.chain_id else REJECT

    # ------------------------------------------------------------ gossip in
    async def on_provider_topic(self, inbox: trio.MemoryReceiveChannel[GossipMessage[CapabilityRecord]]) -> None:
        async for msg in inbox:
            if msg.value is not None:  # ours is remembered when it is published
                self._remember_provider(msg.value)

    def _remember_provider(self, rec: CapabilityRecord) -> None:
        known = self.providers.get(rec.signer)
        if known is not None and rec.body["timestamp_ms"] < known.body["timestamp_ms"]:
            return
        self.providers[rec.signer] = rec
        self.providers.move_to_end(rec.signer)
        self._heard[rec.signer] = trio.current_time()
        while len(self.providers) > MAX_PROVIDERS:
            gone, _ = self.providers.popitem(last=False)
            self._heard.pop(gone, None)

    def recent(self, address: Address) -> bool:
        """Whether this peer heard the provider's capability record within RECORD_TTL_S
        (by its own clock: a provider's skewed clock does not make it stale)."""
        heard = self._heard.get(address)
        return heard is not None and trio.current_time() - heard <= RECORD_TTL_S

    def serves(self, address: Address, job: ClientJob) -> bool:
        """Whether a bidder may be chosen for a job: its record was heard lately and, for a
        job that names its model by content hash, lists that model (a provider sees only
        the parameters' hash when it bids: one without the model would fail the job)."""
        if not self.recent(address):
            return False
        model = job.params.get("model")
        if not is_model_digest(model):
            return True
        rec = self.providers.get(address)
        return rec is not None and rec.holds(str(model))

    def live_providers(self) -> list[CapabilityRecord]:
        """The capability records heard within RECORD_TTL_S."""
        return [rec for address, rec in self.providers.items() if self.recent(address)]

    async def on_job_topic(self, inbox: trio.MemoryReceiveChannel[GossipMessage[JobOffer | Bid]]) -> None:
        async for msg in inbox:
            parsed = msg.value
            if parsed is None:
                continue  # ours: an offer this node made or a bid it gave
            try:
                if isinstance(parsed, JobOffer):
                    await self._consider_offer(parsed)
                else:
                    self._take_bid(parsed)
            except Exception:  # a task edge: one message must not end the market
                logger.exception("job message from %s not handled", msg.origin)

    def _take_bid(self, bid: Bid) -> None:
        job = self.client_jobs.get(bid.job_id)
        if job is None or job.phase not in (Phase.BIDDING, Phase.BIDS_READY):
            return
        if bid.body["price"] > job.offer.body["max_price"]:
            return
        if not self._for_hire(bid.signer):
            return  # an escrow cannot name it: never registered, or ruled against and struck off
        if bid.signer not in job.bids and len(job.bids) >= MAX_BIDS_PER_JOB:
            dearest = max(job.bids.values(), key=lambda b: b.body["price"])
            if bid.body["price"] >= dearest.body["price"]:
                return
            del job.bids[dearest.signer]
        job.bids[bid.signer] = bid
        if job.phase is Phase.BIDDING and job.bids_wanted and len(job.bids) >= job.bids_wanted:
            job.phase = Phase.BIDS_READY  # enough to choose from: no need to wait out the window
        self._mark(Side.CLIENT, job.job_id)

    def _for_hire(self, address: Address) -> bool:
        """Whether an escrow may name ``address``: a registered provider on chain."""
        return self.chain.state.account(address).provider

    def _suitable_providers(self, offer: JobOffer) -> int:
        """Known providers whose capability record says they would bid on ``offer``."""
        body = offer.body
        runtime = body["max_runtime_s"]
        count = 0
        for rec in self.live_providers():
            cap, load = rec.body["limits"].get("max_runtime_s"), rec.load()
            if (
                not load.full
                and load.wait_ms <= runtime * 1000
                and body["workload"] in rec.body["workloads"]
                and type(cap) is int
                and cap >= runtime
                and quote(rec.body["price_per_s"], runtime) <= body["max_price"]
            ):
                count += 1
        return count

    # -------------------------------------------------------------- client
    async def submit(
        self, offer: JobOffer, workload: str, params: dict[str, Any], *, replica_of: JobId | None = None
    ) -> JobId:
        """Track a client's offer, keep its payload and gossip the offer. ``replica_of``:
        at verification ``replicate``, the job this one repeats (tracked here, offered by
        the same client with the same parameters at that level, not yet paired); the two
        results are compared once both are in (specs/market.md, "Replicate").

        Raises:
            MarketError: wrong chain, the payload does not match the offer's params hash,
                or no job it can be the replica of.
            ComputeError: the workload is unknown or refuses these parameters.
        """
        offer.check()
        if offer.chain_id != self.chain.genesis.chain_id:
            raise MarketError("offer is for another chain")
        if workload != offer.body["workload"] or params_hash(workload, params) != offer.body["params_hash"]:
            raise MarketError("workload or params do not match the offer's params_hash")
        if offer.body["max_runtime_s"] < 1:
            raise MarketError("max_runtime_s must be at least 1")
        check_level(workload, offer.body["verification"], params)
        check_params(workload, params)  # ComputeError: refused here, before any escrow opens
        if offer.body["verification"] in (Level.SPOT, Level.AUDIT) and self.verifier is not None:
            why = await self.verifier.cannot_check(workload, params)
            if why:
                raise MarketError(why)
        job_id = offer.job_id
        twin = None if replica_of is None else self._pair_with(offer, replica_of)
        if job_id not in self.client_jobs:
            wanted = min(ENOUGH_BIDS, self._suitable_providers(offer))
            self.client_jobs[job_id] = ClientJob(offer, workload, params, bids_wanted=wanted)
            if twin is not None:
                self.client_jobs[job_id].twin, twin.twin = twin.job_id, job_id
                self._mark(Side.CLIENT, twin.job_id)
            self._mark(Side.CLIENT, job_id)
            self._forget_old_jobs()
            await self._publish_job({"offer": offer.to_wire()})
            if self._nursery is not None:
                self._nursery.start_soon(self._close_bidding, job_id)
        return job_id

    def _pair_with(self, offer: JobOffer, replica_of: JobId) -> ClientJob:
        """The job ``offer`` may be the replica of (MarketError: none)."""
        if offer.body["verification"] != Level.REPLICATE:
            raise MarketError(f"only an offer at replicate has a replica_of, not one at {offer.body['verification']}")
        twin = self.client_jobs.get(replica_of)
        if twin is None or twin.job_id == offer.job_id:
            raise MarketError(f"replica_of: this peer tracks no other job {replica_of.hex()}")
        mine, theirs = offer.body, twin.offer.body
        if twin.offer.signer != offer.signer or (mine["workload"], mine["params_hash"]) != (
            theirs["workload"],
            theirs["params_hash"],
        ):
            raise MarketError("replica_of: that job is another client's, or has other parameters")
        if theirs["verification"] != Level.REPLICATE:
            raise MarketError("replica_of: that job is not at verification replicate")
        if twin.twin is not None and twin.twin != offer.job_id:
            raise MarketError("replica_of: that job has a replica already")
        return twin

    def _forget_old_jobs(self) -> None:
        if len(self.client_jobs) <= MAX_CLIENT_JOBS:
            return
        done = [j for j, job in self.client_jobs.items() if job.phase in (Phase.RESULT_RECEIVED, Phase.FAILED)]
        for job_id in done[: len(self.client_jobs) - MAX_CLIENT_JOBS]:
            del self.client_jobs[job_id]
            self._mark(Side.CLIENT, job_id)

    async def _close_bidding(self, job_id: JobId) -> None:
        await trio.sleep(self._bid_window_s)
        job = self.client_jobs.get(job_id)
        if job is not None and job.phase == Phase.BIDDING:
            job.phase = Phase.BIDS_READY
            self._mark(Side.CLIENT, job_id)

    def on_head(self, height: int) -> None:
        """After each new block: dispatch client jobs whose escrow is now committed, carry
        failovers and cancels on, dispute receipts for results this peer was not delivered
        (as the client's agent), and refund escrows whose deadline or grace is over."""
        for job_id, job in self.client_jobs.items():
            before = job.fingerprint()
            self._on_head_job(job_id, job, height)
            if job.fingerprint() != before:
                self._mark(Side.CLIENT, job_id)
        for job_id in list(self._watched):  # their escrow may have moved on chain
            self._poke(job_id)
        for job_id, until in list(self._hold_until.items()):
            if height > until:  # its challenge window is over: dropped once no challenge is pending
                escrow = self.chain.state.job(job_id)
                if escrow is None or self._done_with(escrow):
                    del self._hold_until[job_id]
                    if self._held.pop(job_id, None) is not None:
                        self._mark(Side.PROVIDER, job_id)

    def _on_head_job(self, job_id: JobId, job: ClientJob, height: int) -> None:
        if job.phase in (Phase.FAILED, Phase.CANCELLED) and not job.refund_sent:
            self._maybe_refund(job, height)
        elif job.phase in (Phase.RUNNING, Phase.FETCHING, Phase.RESULT_RECEIVED) and not job.refund_sent:
            # A receipt never committed by the deadline (lost in gossip, a provider gone):
            # the escrow would stay locked for good, result delivered or not. Take it back.
            escrow = self.chain.state.job(job_id)
            if escrow is not None and escrow.status is JobStatus.OPEN and height + 1 > escrow.deadline:
                self._maybe_refund(job, height)
        if job.phase is Phase.FAILING_OVER:
            self._continue_failover(job, height)
            return
        if job.phase is Phase.CANCELLED and not job.chain_action and self._nursery is not None:
            escrow = self.chain.state.job(job_id)
            if escrow is not None and escrow.status is JobStatus.OPEN and self._acts_for(escrow):
                job.chain_action = True  # opened after the client cancelled: take it back
                self._nursery.start_soon(self._cancel_escrow, job, escrow)
        if job.phase not in (Phase.BIDDING, Phase.BIDS_READY):
            if not job.acted:
                self._check_receipt(job, height)
            return
        escrow = self.chain.state.job(job.job_id)
        if job.since is None:
            job.since = trio.current_time()
        if escrow is None and trio.current_time() - job.since > ABANDONED_S:
            # The client chooses a bid and opens the escrow (the SDK's submit_job); one that
            # never did (it stopped, or this peer restarted under it) has given the job up.
            job.phase, job.error = Phase.FAILED, f"no escrow opened within {ABANDONED_S / 60:g} min of the offer"
            return
        if escrow is None or escrow.status is not JobStatus.OPEN or escrow.client != job.offer.signer:
            return
        bid = job.bids.get(escrow.provider)
        if bid is None:
            job.phase, job.error = Phase.FAILED, "escrow names a provider that did not bid"
            return
        job.phase = Phase.RUNNING
        if self._nursery is not None:
            self._nursery.start_soon(self._dispatch, job_id, job, bid)

    def _maybe_refund(self, job: ClientJob, height: int) -> None:
        """A failed job's escrow goes back to its client once its deadline has passed: this
        peer posts the refund itself (anyone may; specs/transactions.md), paying the fee."""
        escrow = self.chain.state.job(job.job_id)
        if escrow is None:
            return
        if escrow.status not in (JobStatus.OPEN, JobStatus.CANCELLED) or escrow.client != job.offer.signer:
            job.refund_sent = True  # settled, refunded or not ours: nothing left to do
            return
        if escrow.status is JobStatus.CANCELLED:
            due = escrow.cancelled_at + self.chain.rules.dispute_blocks  # the provider's grace
        else:
            due = escrow.deadline
        if height + 1 <= due or self._nursery is None:
            return
        job.refund_sent = True
        self._nursery.start_soon(self._refund, job, escrow.job_id)

    def _check_receipt(self, job: ClientJob, height: int) -> None:
        """Delivery before payment (specs/market.md, "Delivery"): once a receipt is
        committed, the client's agent acks it if it holds the very result the receipt
        names at a cost within the provider's bid (the provider then settles at once), and
        disputes it if it charges more, names another result or a failure, or, as the
        dispute window closes, a result that never came."""
        escrow = self.chain.state.job(job.job_id)
        if escrow is None or escrow.status is not JobStatus.RECEIPTED or self._nursery is None:
            return
        if self.account.key.address not in (escrow.agent, escrow.client):
            job.acted = True  # the wallet kept these rights to itself
            return
        result = job.result
        delivered = result is not None and result.ok and result.result_hash == escrow.result_hash
        quoted = self._quoted(job, escrow)
        if result is not None and delivered and escrow.cost <= quoted:
            job.acted = True  # delivered at its price: acked, and the provider settles at once
            if job.offer.body["verification"] != Level.NONE and self.verifier is not None:
                self.verifier.spot_check(job, escrow)  # it acks, or disputes with its evidence
            else:
                self._ack_once(job, result)
            return
        # While the stream or a fetch is under way the result may still come (a busy peer
        # can see the receipt's block first): dispute only in the window's last block.
        margin = 0 if job.phase in (Phase.RUNNING, Phase.FETCHING) else DISPUTE_MARGIN_BLOCKS
        if delivered:  # the escrow may hold more than this provider's bid (a failover reserve)
            why = f"charged {escrow.cost} units, more than its bid of {quoted}"
        elif result is not None or job.phase is Phase.FAILED:
            why = "receipted a result other than the one delivered"
        elif height + 1 >= escrow.receipt_height + self.chain.rules.dispute_blocks - margin:
            why = "receipted, never delivered"
        else:
            return  # not delivered yet: the stream or a fetch may still bring it
        job.acted = True
        bid = job.bids.get(escrow.provider)
        evidence = Evidence(
            why, None if result is None or not delivered else Facts(job.offer, job.params, result), bid=bid
        )
        self._nursery.start_soon(self.dispute, job, why, evidence.encode())

    def ack_checked(self, job: ClientJob) -> None:
        """The verifier found the delivered result right: ack it (the provider settles)."""
        if job.result is not None:
            self._ack_once(job, job.result)

    async def dispute(self, job: ClientJob, why: str, evidence: bytes = b"") -> None:
        """Dispute the job's receipt as the client's agent, with ``evidence`` for the arbiters."""
        try:
            await self.account.send_own_tx(JobDispute(job.job_id, evidence))
            if self.verifier is not None:
                self.verifier.disputed(job.job_id, why)
            logger.warning("job %s %s: the client's agent disputes it", job.job_id.hex()[:16], why)
        except TxRejected as e:
            if e.reason in ("InsufficientFunds", "PoolFull", "NonceTooHigh"):  # may pass on a later block
                job.acted = False
                self._mark(Side.CLIENT, job.job_id)
            logger.warning("job %s %s; dispute refused: %s", job.job_id.hex()[:16], why, e)

    async def _send_ack(self, job: ClientJob, result: JobResult, peer: str) -> None:
        """Tell the provider this peer holds ``result``: a delivery ack it settles with at
        once. Only the client or its agent can sign one; best effort (without it the
        provider settles after the dispute window)."""
        escrow = self.chain.state.job(job.job_id)
        key = self.account.key
        if escrow is None or key.address not in (escrow.agent, escrow.client):
            return
        sig = sign_ack(key, self.chain.genesis.chain_id, job.job_id, result.result_hash)
        request = JobAck(job.job_id, sig).encode()
        for _ in range(ACK_ATTEMPTS):
            try:
                if await self.network.request(peer, JOB_PROTOCOL, request, timeout=FETCH_TIMEOUT_S) == ACK_TAKEN:
                    return
            except NetworkError as e:
                logger.debug("ack of job %s not delivered: %s", job.job_id.hex()[:16], e)
            await trio.sleep(FETCH_INTERVAL_S)

    async def _refund(self, job: ClientJob, job_id: JobId) -> None:
        try:
            await self.account.send_own_tx(JobRefund(job_id))
            logger.info("job %s failed; its escrow is refunded to the client", job_id.hex()[:16])
        except TxRejected as e:  # e.g. no balance for the fee yet: try again on a later block
            job.refund_sent = False
            self._mark(Side.CLIENT, job_id)
            logger.info("refund of failed job %s not posted yet: %s", job_id.hex()[:16], e)

    async def _dispatch(self, job_id: JobId, job: ClientJob, bid: Bid) -> None:
        try:
            await self._dispatch_unguarded(job_id, job, bid)
        except Exception as e:  # a task edge in the node's nursery: fail the job, not the node
            logger.exception("job %s dispatch failed", job_id.hex()[:16])
            job.phase, job.error = Phase.FAILED, f"internal error: {type(e).__name__}"
            self._mark(Side.CLIENT, job_id)

    async def _dispatch_unguarded(self, job_id: JobId, job: ClientJob, bid: Bid) -> None:
        payload = JobPayload(job_id, job.workload, job.params)
        peer = job.peer = bid.body["peer_id"]
        job.provider_seq = 0
        self._mark(Side.CLIENT, job_id)
        timeout = job.offer.body["max_runtime_s"] + ESCROW_WAIT_S + 10
        result: JobResult | None
        try:
            raw = await self.network.request(
                peer, JOB_PROTOCOL, payload.encode(), timeout=timeout, on_frame=lambda f: self._take_event(job, f)
            )
            result = JobResult.decode(raw)
        except MarketError as e:
            await self._attempt_failed(job, str(e))
            return
        except NetworkError as e:  # the stream dropped, or the job waited long for a slot
            logger.info("job %s: no result on the stream (%s); fetching it", job_id.hex()[:16], e)
            job.phase = Phase.FETCHING
            self._mark(Side.CLIENT, job_id)
            result = await self._fetch(job_id, peer)
            if result is None:
                await self._attempt_failed(job, f"the provider did not deliver a result ({e})")
                return
        if result.job_id != job_id:
            await self._attempt_failed(job, "provider answered for another job")
            return
        await self._take_result(job, result)

    def _take_event(self, job: ClientJob, frame: bytes) -> None:
        """A progress event the provider streamed: kept (bounded) for the job's event stream."""
        try:
            event = JobEvent.decode(frame)
        except MarketError as e:
            logger.debug("job %s: event refused: %s", job.job_id.hex()[:16], e)
            return
        if event.job_id != job.job_id or event.seq <= job.provider_seq:
            return  # another job's, or one it already has (a job sent again streams from its start)
        job.provider_seq = event.seq
        job.events.append(event.event)
        if len(job.events) > MAX_JOB_EVENTS:
            del job.events[0]
            job.events_dropped += 1
        self._poke(job.job_id)

    async def _take_result(self, job: ClientJob, result: JobResult) -> None:
        job.result = result
        if not result.ok:
            await self._attempt_failed(job, result.error)
            return
        job.error = ""
        if job.phase is not Phase.CANCELLED:  # a result that came in its grace is still the client's
            job.phase = Phase.RESULT_RECEIVED
        # On disk before the ack leaves: once acked, the provider is paid for this result.
        self._mark(Side.CLIENT, job.job_id)
        await self._flush()
        crash_point("market.result_saved")
        logger.info("job %s result received", job.job_id.hex()[:16])
        # An escrow that holds more than this provider's bid (a failover reserve) could be
        # overbilled: then the ack waits for the receipt's cost. Else it leaves at once.
        escrow = self.chain.state.job(job.job_id)
        checked = job.offer.body["verification"] != Level.NONE
        if escrow is not None and escrow.amount <= self._quoted(job, escrow) and not checked:
            self._ack_once(job, result)
        if not job.acted:
            self._check_receipt(job, self.chain.head.height)

    @staticmethod
    def _quoted(job: ClientJob, escrow: Job) -> int:
        """What the escrow's provider bid for the job (the escrow's amount if this peer
        holds no bid from it): the most its receipt may claim unchallenged."""
        bid = job.bids.get(escrow.provider)
        return int(bid.body["price"]) if bid is not None else escrow.amount

    def _ack_once(self, job: ClientJob, result: JobResult) -> None:
        """Send the delivery ack of ``result`` to the job's provider, once."""
        if not job.ack_sent and self._nursery is not None:
            job.ack_sent = True
            self._nursery.start_soon(self._send_ack, job, result, job.peer)

    # ------------------------------------------------------- failover, cancel
    async def _attempt_failed(self, job: ClientJob, why: str) -> None:
        """This provider failed the job (an error, a bad answer, no result): ask it for a
        release, then move the escrow to the next bidder (at most MAX_ATTEMPTS providers),
        or give the escrow back when none is left. Without a release, the escrow is
        cancelled first and moved (or refunded) once the provider's grace has passed
        (specs/market.md, "Failover")."""
        try:
            await self._fail_over(job, why)
        finally:
            self._mark(Side.CLIENT, job.job_id)

    async def _fail_over(self, job: ClientJob, why: str) -> None:
        job.error = why
        logger.warning("job %s failed at %s: %s", job.job_id.hex()[:16], job.peer[:16] or "?", why)
        if job.phase is Phase.CANCELLED:
            return
        escrow = self.chain.state.job(job.job_id)
        if escrow is None or escrow.status is not JobStatus.OPEN or not self._acts_for(escrow):
            job.phase = Phase.FAILED  # the deadline refund covers it
            return
        job.tried.add(escrow.provider)
        release = await self._ask_release(job, escrow)
        nxt = self._next_bid(job, escrow)
        if nxt is None:
            job.phase = Phase.FAILED
            job.error = f"{why}; no other bid to fail over to" if escrow.attempts < MAX_ATTEMPTS else why
            await self._post(job, JobCancel(job.job_id, release))
            return
        job.phase, job.next_bid = Phase.FAILING_OVER, nxt
        if release:
            await self._post(job, JobReassign(job.job_id, nxt.signer, self._deadline(job), release))
        else:
            await self._post(job, JobCancel(job.job_id, b""))

    def _acts_for(self, escrow: Job) -> bool:
        return self.account.key.address in (escrow.agent, escrow.client)

    def _next_bid(self, job: ClientJob, escrow: Job) -> Bid | None:
        if escrow.attempts >= MAX_ATTEMPTS:
            return None
        left = [b for a, b in job.bids.items() if a not in job.tried and a != escrow.provider and self.serves(a, job)]
        other = self.replica_provider(job)
        left = [b for b in left if b.signer != other]  # a replica's provider must be another
        left = [b for b in left if b.body["price"] <= escrow.amount and self._for_hire(b.signer)]
        return select_bid(job.offer, left, self.trust(left))

    def replica_result(self, job: ClientJob) -> tuple[JobResult | None, str]:
        """The result delivered for the job's replica, else None with why none will come
        ("" while one still may)."""
        twin = None if job.twin is None else self.client_jobs.get(job.twin)
        if twin is None:
            return None, "its replica is not tracked here"
        if twin.result is not None and twin.result.ok:
            return twin.result, ""
        if twin.phase in (Phase.FAILED, Phase.CANCELLED):
            return None, f"its replica {twin.job_id.hex()[:16]} {twin.phase}: {twin.error or 'no result'}"
        return None, ""

    def replica_provider(self, job: ClientJob) -> Address | None:
        """The provider the job's replica was last escrowed to (at level replicate)."""
        escrow = None if job.twin is None else self.chain.state.job(job.twin)
        return None if escrow is None else escrow.provider

    def trust(self, bids: list[Bid]) -> dict[str, int]:
        """Each bidder's record on chain as a score in thousandths (rank_bids weighs by it)."""
        state = self.chain.state
        return {b.signer: read_reputation(state, b.signer).score_milli() for b in bids}

    def _deadline(self, job: ClientJob) -> int:
        """A fresh deadline for the next attempt, as the SDK sets the first one."""
        runtime: int = job.offer.body["max_runtime_s"]
        return self.chain.head.height + max(30, 4 * runtime)

    async def _ask_release(self, job: ClientJob, escrow: Job) -> bytes:
        """The provider's release of the escrow's current attempt, or b"" (unreachable,
        running it, or unwilling). Checked here, so a bad one is never posted."""
        bid = job.bids.get(escrow.provider)
        if bid is None:
            return b""
        chain_id = self.chain.genesis.chain_id
        ask = sign_release(self.account.key, chain_id, escrow.job_id, escrow.attempts)
        try:
            raw = await self.network.request(
                bid.body["peer_id"], JOB_PROTOCOL, ReleaseRequest(job.job_id, ask).encode(), timeout=RELEASE_TIMEOUT_S
            )
            release = decode_release_answer(raw)
            digest = release_digest(chain_id, escrow.job_id, escrow.attempts)
            if release and recover_address(digest, release) == escrow.provider:
                return release
        except (NetworkError, MarketError, CryptoError) as e:
            logger.debug("no release of job %s: %s", job.job_id.hex()[:16], e)
        return b""

    async def _post(self, job: ClientJob, payload: JobCancel | JobReassign) -> None:
        job.chain_action = True
        try:
            await self.account.send_own_tx(payload)
            logger.info("job %s: %s posted", job.job_id.hex()[:16], payload.KIND)
        except TxRejected as e:
            job.chain_action = job.reassign_sent = False  # tried again on a later block
            logger.warning("job %s: %s refused: %s", job.job_id.hex()[:16], payload.KIND, e)

    def _continue_failover(self, job: ClientJob, height: int) -> None:
        """On each block while failing over: dispatch once the escrow names the next
        bidder; reassign a cancelled escrow once its grace is over; fetch a result the
        failed provider receipted in its grace after all."""
        escrow = self.chain.state.job(job.job_id)
        nxt = job.next_bid
        if escrow is None or nxt is None or self._nursery is None:
            return
        if escrow.status is JobStatus.OPEN and escrow.provider == nxt.signer:
            job.phase, job.next_bid, job.result, job.chain_action = Phase.RUNNING, None, None, False
            job.reassign_sent = False
            logger.info("job %s: failing over to %s (attempt %d)", job.job_id.hex()[:16], nxt.signer, escrow.attempts)
            self._nursery.start_soon(self._dispatch, job.job_id, job, nxt)
        elif escrow.status is JobStatus.CANCELLED:  # its cancel is committed: reassign after the grace
            if height + 1 > escrow.cancelled_at + self.chain.rules.dispute_blocks and not job.reassign_sent:
                job.reassign_sent = True
                self._nursery.start_soon(self._post, job, JobReassign(job.job_id, nxt.signer, self._deadline(job)))
        elif escrow.status is JobStatus.RECEIPTED:
            job.phase, job.next_bid = Phase.FETCHING, None
            self._nursery.start_soon(self._fetch_late, job)
        elif escrow.status is JobStatus.OPEN and job.chain_action and height <= escrow.deadline:
            return  # its reassign or cancel is posted and not in a block yet
        else:
            job.phase = Phase.FAILED

    async def _fetch_late(self, job: ClientJob) -> None:
        result = await self._fetch(job.job_id, job.peer)
        if result is not None and result.job_id == job.job_id and result.ok:
            await self._take_result(job, result)
        else:
            job.phase = Phase.FAILED
            self._mark(Side.CLIENT, job.job_id)

    async def cancel(self, job: JobId | str) -> JobInfo | None:
        """The client cancels a job this peer tracks (None if it tracks no such job):
        before its escrow, nothing is sent (an escrow opened later is cancelled when it
        appears); with an open escrow, this peer (its agent) asks the provider for a release
        and posts ``job_cancel``: the whole escrow back at once with a release, after the
        provider's grace without.

        Raises:
            MarketError: an ambiguous prefix, a job already ended, or this peer is not the
                escrow's agent (the wallet must cancel it itself).
        """
        job_id = self.resolve(job)
        tracked = self.client_jobs.get(job_id) if job_id is not None else None
        if job_id is None or tracked is None:
            return None
        escrow = self.chain.state.job(job_id)
        if escrow is not None and escrow.status is not JobStatus.OPEN:
            raise MarketError(f"the job's escrow is {escrow.status}: there is nothing to cancel")
        if tracked.phase in (Phase.RESULT_RECEIVED, Phase.CANCELLED):
            raise MarketError(f"the job is {tracked.phase}: there is nothing to cancel")
        if escrow is not None and not self._acts_for(escrow):
            raise MarketError("this peer is not the escrow's agent: the client's wallet cancels it")
        tracked.phase, tracked.error, tracked.next_bid = Phase.CANCELLED, "cancelled by the client", None
        self._mark(Side.CLIENT, job_id)
        if escrow is not None and not tracked.chain_action:
            await self._cancel_escrow(tracked, escrow)
        info = self.job_status(job_id)
        assert info is not None
        return info

    async def _cancel_escrow(self, job: ClientJob, escrow: Job) -> None:
        release = await self._ask_release(job, escrow)
        await self._post(job, JobCancel(job.job_id, release))

    async def _fetch(self, job_id: JobId, peer: str) -> JobResult | None:
        """Ask the provider for a job's held result until it has one, or until it no
        longer could be paid for it (escrow past its deadline unreceipted, or ended)."""
        request = JobFetch(job_id).encode()
        reached = trio.current_time()
        while True:
            escrow = self.chain.state.job(job_id)
            if escrow is None or escrow.status not in (JobStatus.OPEN, JobStatus.RECEIPTED):
                return None
            if escrow.status is JobStatus.OPEN and self.chain.head.height > escrow.deadline:
                return None
            try:
                answer = FetchAnswer.decode(
                    await self.network.request(peer, JOB_PROTOCOL, request, timeout=FETCH_TIMEOUT_S)
                )
            except NetworkError as e:
                logger.debug("fetch of job %s: %s", job_id.hex()[:16], e)
                silent = trio.current_time() - reached
                if escrow.status is JobStatus.OPEN and silent >= SILENT_S:
                    logger.info("job %s: provider unreachable for %.0f s: silent", job_id.hex()[:16], silent)
                    return None
            except MarketError as e:
                reached = trio.current_time()
                logger.debug("fetch of job %s: %s", job_id.hex()[:16], e)
            else:
                reached = trio.current_time()
                if answer.state is Held.DONE:
                    return answer.result
                if answer.state is Held.UNKNOWN:
                    return None
            await trio.sleep(FETCH_INTERVAL_S)

    def resolve(self, job: JobId | str) -> JobId | None:
        """The job ``job`` names: a JobId itself; in hex, any job by its 64 digits and a
        tracked one by any unique prefix of at least 4 (as git takes commits); None if it
        names none.

        Raises:
            MarketError: the prefix names more than one tracked job.
        """
        if isinstance(job, bytes):
            return JobId(Hash32(job)) if len(job) == 32 else None
        text = job.lower()
        if len(text) == JOB_ID_HEX:
            try:
                return JobId(Hash32(bytes.fromhex(text)))
            except ValueError:
                return None
        if not MIN_JOB_PREFIX <= len(text) < JOB_ID_HEX:
            return None
        matches = [j for j in self.client_jobs if j.hex().startswith(text)]
        if len(matches) > 1:
            raise MarketError(f"job id {text} is ambiguous: {len(matches)} jobs start with it")
        return matches[0] if matches else None

    def job_status(self, job: JobId | str) -> JobInfo | None:
        job_id = self.resolve(job)
        if job_id is None:
            return None
        tracked = self.client_jobs.get(job_id)
        escrow: Job | None = self.chain.state.job(job_id)
        if tracked is None and escrow is None:
            return None
        if escrow is not None and escrow.status is not JobStatus.OPEN:
            status = str(escrow.status)
        elif tracked is not None:
            status = str(tracked.phase)
        else:
            status = "open"
        # Once the chain has ended the job (settled, refunded), that is its phase too.
        ended = escrow is not None and escrow.status in ENDED
        if tracked is None:
            check = None if self.verifier is None else self.verifier.check_of(job_id)  # as an arbiter
            return JobInfo(job_id, status, status if ended else None, "", escrow, result_available=False, check=check)
        phase = status if ended else str(tracked.phase)
        bids = [b for b in tracked.bids.values() if self.serves(b.signer, tracked)]  # offered for choice
        return JobInfo(
            job_id,
            status,
            phase,
            tracked.error,
            escrow,
            result_available=bool(tracked.result and tracked.result.ok),
            workload=tracked.workload,
            offer=tracked.offer,
            bids=bids,
            trust=self.trust(bids),
            check=None if self.verifier is None else self.verifier.check_of(job_id),
            replica=tracked.twin,
        )

    def recent_jobs(self, limit: int) -> list[JobInfo]:
        """Up to ``limit`` jobs this peer takes part in, newest first: those it submitted
        as a client, then those it holds as a provider."""
        ids = list(reversed(self.client_jobs)) + [j for j in reversed(self._held) if j not in self.client_jobs]
        found = (self.job_status(job_id) for job_id in ids[: max(limit, 0)])
        return [info for info in found if info is not None]

    def job_result(self, job: JobId | str) -> JobResultInfo | None:
        job_id = self.resolve(job)
        tracked = self.client_jobs.get(job_id) if job_id is not None else None
        if tracked is None or tracked.result is None:
            return None
        escrow = self.chain.state.job(tracked.job_id)
        matches = escrow is not None and escrow.result_hash == tracked.result.result_hash
        return JobResultInfo(tracked.job_id, tracked.result, matches)

    # ------------------------------------------------------------ provider
    def _capability(self) -> CapabilityRecord:
        assert self._provider is not None and self._device is not None
        cfg, dev = self._provider, self._device
        return CapabilityRecord.create(
            self.account.key,
            self.chain.genesis.chain_id,
            miner_id=cfg.miner_id,
            peer_id=self.network.peer_id,
            mode=dev.mode,
            gpu=dev.gpu,
            device=dev.name[:200],
            concurrency=cfg.max_concurrency,
            workloads=list(dev.workloads),
            limits={"vram_mb": dev.vram_mb, "ram_mb": dev.ram_mb, "max_runtime_s": cfg.max_runtime_s},
            gflops=dev.gflops,
            gflops_by_dtype=dict(dev.gflops_by_dtype),
            versions={"torch": dev.torch_version, "cuda": dev.cuda_version, "driver": dev.driver_version},
            price_per_s=cfg.price_per_s,
            load=self.load().to_wire(),
            models=sorted(self._executor.models)[:MAX_RECORD_MODELS] if self._executor is not None else [],
            timestamp_ms=self.clock_ms(),
        )

    def load(self) -> Load:
        """This provider's live load (specs/market.md, "Load"): the jobs it accepted, and
        those it recently bid on that may still come (``promised``). A job that comes now
        waits for every slot to turn over once per ``slots`` jobs ahead of it."""
        assert self._provider is not None
        now = trio.current_time()
        while self._promised and next(iter(self._promised.values())) <= now:
            self._promised.popitem(last=False)
        slots, accepted = self._provider.max_concurrency, self._accepted
        ahead = accepted + -(-len(self._promised) // ENOUGH_BIDS)  # a client takes one bid of up to 3
        turns = ((ahead - slots) // slots + 1) if ahead >= slots else 0
        queued = max(0, accepted - slots)
        return Load(slots, max(0, slots - ahead), queued, self._provider.max_queue, turns * self._slot_ms)

    def _accept(self, delta: int) -> None:
        self._accepted += delta
        self._load_changed.set()

    async def _announce_loop(self) -> None:
        """Gossip the capability record every ``announce_interval_s``, and soon after the
        load changes (at most every ANNOUNCE_MIN_S)."""
        assert self._provider is not None
        while True:
            self._load_changed = trio.Event()
            rec = self._capability()
            self._remember_provider(rec)
            try:
                await self.network.publish(self._topic_provider, rec.encode())
            except NetworkError as e:
                logger.debug("capability announce failed: %s", e)
            await trio.sleep(min(ANNOUNCE_MIN_S, self._provider.announce_interval_s))
            with trio.move_on_after(max(0.0, self._provider.announce_interval_s - ANNOUNCE_MIN_S)):
                await self._load_changed.wait()

    async def _consider_offer(self, offer: JobOffer) -> None:
        cfg, dev, executor = self._provider, self._device, self._executor
        if cfg is None or dev is None or executor is None or offer.signer == self.account.key.address:
            return
        body = offer.body
        price = quote(cfg.price_per_s, body["max_runtime_s"])
        if (
            body["workload"] not in dev.workloads
            or (body["verification"] != Level.NONE and not executor.checkable)
            or body["max_runtime_s"] > cfg.max_runtime_s
            or price > body["max_price"]
            or not self.registered()  # an escrow can only name a registered provider
        ):
            return
        load = self.load()
        if load.full:
            return  # no capacity: no bid
        self._offers_seen[offer.job_id] = offer
        while len(self._offers_seen) > MAX_OFFERS_SEEN:
            self._offers_seen.popitem(last=False)
        bid = Bid.for_offer(
            self.account.key,
            offer,
            peer_id=self.network.peer_id,
            price=price,
            price_per_s=cfg.price_per_s,
            gflops=dev.gflops,
            wait_ms=load.wait_ms,
        )
        self._promised[offer.job_id] = trio.current_time() + PROMISE_S
        self._promised.move_to_end(offer.job_id)
        while len(self._promised) > MAX_OFFERS_SEEN:
            self._promised.popitem(last=False)
        await self._publish_job({"bid": bid.to_wire()})

    async def _publish_job(self, envelope: dict[str, Any]) -> None:
        try:
            await self.network.publish(self._topic_job, encode(envelope))
        except NetworkError as e:
            logger.warning("job message not gossiped: %s", e)

    async def _wait_escrow(self, job_id: JobId) -> Job | None:
        """The job's escrow once this peer sees it open and naming this provider: waits
        for it to appear, and a few blocks more while it names another (a reassignment to
        this provider may be in a block this peer has not imported yet)."""
        me = self.account.key.address
        escrow: Job | None = None
        with trio.move_on_after(ESCROW_WAIT_S):
            others = 0
            while True:
                escrow = self.chain.state.job(job_id)
                if escrow is not None:
                    if (escrow.provider == me and escrow.status is JobStatus.OPEN) or others >= REASSIGN_WAIT_BLOCKS:
                        return escrow
                    others += 1
                await self.chain.wait_head_change()
        return escrow

    async def serve_job(self, peer: str, request: bytes, emit: Emit | None = None) -> bytes:
        """``/aitbc/job/2`` on the provider: run a job (check the offer and escrow, run,
        hold the result, receipt it, answer; its progress events go ahead of the answer as
        interim frames), or answer a fetch, an ack or a release request."""
        msg = decode_job_request(request)  # MarketError here resets the stream
        if isinstance(msg, JobFetch):
            return self._answer_fetch(peer, msg.job_id).encode()
        if isinstance(msg, JobAck):
            return self._take_ack(peer, msg)
        if isinstance(msg, ReleaseRequest):
            return encode_release_answer(await self._give_release(peer, msg))
        held = self._held.get(msg.job_id)
        if held is not None:  # asked again to run a job it holds: never run twice
            if held.peer != peer:
                return JobResult(msg.job_id, False, error="this job was sent by another peer").encode()
            await self._stream_events(held, emit)
            return held.answer().encode()
        return (await self._run_job(msg, peer, emit)).encode()

    async def _stream_events(self, held: HeldJob, emit: Emit | None) -> None:
        """Send the held job's progress events as they come until it is done (all of them,
        from the first kept, to a peer that sends the job again); return once it is done.
        A requester that went away stops the events, not the job."""
        sent = 0
        while True:
            changed = held.changed = trio.Event() if held.changed.is_set() else held.changed
            first = held.events_dropped + 1
            try:
                for seq in range(max(sent + 1, first), first + len(held.events)):
                    if emit is not None:
                        await emit(JobEvent(held.job_id, seq, held.events[seq - first]).encode())
                    sent = seq
            except (NetworkError, CodecError) as e:
                logger.debug("events of job %s not streamed: %s", held.job_id.hex()[:16], e)
                emit = None
            if held.done.is_set() and sent >= first + len(held.events) - 1:
                return
            await changed.wait()

    def _answer_fetch(self, peer: str, job_id: JobId) -> FetchAnswer:
        held = self._held.get(job_id)
        if held is None or held.peer != peer:  # a result goes only to the peer that sent the job
            return FetchAnswer(Held.UNKNOWN)
        if not held.done.is_set():
            return FetchAnswer(Held.RUNNING)
        return FetchAnswer(Held.DONE, held.answer())

    async def _give_release(self, peer: str, request: ReleaseRequest) -> bytes:
        """Release the current attempt of a job this provider is not running and has not
        delivered, when its client or the client's agent asks (it failed here, or the
        client cancels): the client is refunded or fails over at once. Once released, the
        job is never run here. Empty when it will not."""
        with trio.move_on_after(RELEASE_TIMEOUT_S / 2):  # the escrow's block may reach us a moment later
            while self.chain.state.job(request.job_id) is None:
                await self.chain.wait_head_change()
        escrow = self.chain.state.job(request.job_id)
        me = self.account.key
        if escrow is None or escrow.status is not JobStatus.OPEN or escrow.provider != me.address:
            return b""
        chain_id = self.chain.genesis.chain_id
        try:
            asker = recover_address(release_digest(chain_id, escrow.job_id, escrow.attempts), request.sig)
        except CryptoError:
            return b""
        if asker not in (escrow.client, escrow.agent):
            return b""
        held = self._held.get(request.job_id)
        if held is not None and (not held.done.is_set() or (held.result is not None and held.result.ok)):
            return b""  # running, or done and receipted: it is owed its receipt's pay, not a release
        if held is None:
            held = self._hold(request.job_id, peer)
            held.finish()
        held.result = JobResult(request.job_id, False, error="this provider released the job")
        self._mark(Side.PROVIDER, request.job_id)
        await self._flush()  # released for good, a restart included, before the release leaves
        logger.info("job %s released to its client (attempt %d)", request.job_id.hex()[:16], escrow.attempts)
        return sign_release(me, chain_id, escrow.job_id, escrow.attempts)

    def _take_ack(self, peer: str, ack: JobAck) -> bytes:
        """Keep a delivery ack for the settle transaction (the chain checks its signature)."""
        held = self._held.get(ack.job_id)
        if held is None or held.peer != peer or not held.done.is_set():
            return ACK_REFUSED
        held.ack = ack.sig
        self._mark(Side.PROVIDER, ack.job_id)
        return ACK_TAKEN

    def _hold(self, job_id: JobId, peer: str) -> HeldJob:
        """Start holding a job this provider accepted: its result stays retrievable by its
        client's peer until the escrow ends (specs/market.md, "Delivery")."""
        held = self._held[job_id] = HeldJob(job_id, peer)
        self._mark(Side.PROVIDER, job_id)
        if len(self._held) > MAX_HELD:  # the oldest finished ones go first; running ones stay
            for old in [j for j, h in self._held.items() if h.done.is_set()][: len(self._held) - MAX_HELD]:
                del self._held[old]
                self._mark(Side.PROVIDER, old)
        return held

    async def _run_job(self, payload: JobPayload, peer: str = "", emit: Emit | None = None) -> JobResult:
        job_id = payload.job_id

        def fail(why: str) -> JobResult:
            return JobResult(job_id, False, error=why)

        offer = self._offers_seen.get(job_id)
        if self._provider is None or self._executor is None or offer is None:
            return fail("this provider holds no bid for that job")
        if (
            payload.workload != offer.body["workload"]
            or params_hash(payload.workload, payload.params) != offer.body["params_hash"]
        ):
            return fail("payload does not match the offer")
        held = self._hold(job_id, peer)
        held.offer, held.workload, held.params = offer, payload.workload, payload.params
        self._promised.pop(job_id, None)
        outcome: list[JobResult] = []

        async def run() -> None:
            self._accept(1)
            try:
                outcome.append(await self._run_held(payload, offer, held))
            finally:
                self._accept(-1)
                held.finish()
                self._mark(Side.PROVIDER, job_id)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(run)
            await self._stream_events(held, emit)
        return outcome[0]

    async def _run_held(self, payload: JobPayload, offer: JobOffer, held: HeldJob) -> JobResult:
        """Run an accepted job; the result is held (``held.result``) before it is receipted,
        so the client's peer can fetch it whatever becomes of this stream."""
        assert self._provider is not None and self._executor is not None
        job_id = payload.job_id

        def fail(why: str) -> JobResult:
            held.result = JobResult(job_id, False, error=why)
            return held.result

        await self._flush()  # accepted: a restart finds it (interrupted) and answers for it

        escrow = await self._wait_escrow(job_id)
        if escrow is None or escrow.provider != self.account.key.address or escrow.status is not JobStatus.OPEN:
            return fail("no open escrow names this provider")
        if escrow.amount < quote(self._provider.price_per_s, offer.body["max_runtime_s"]):
            return fail("the escrow holds less than this provider's bid")
        params = payload.params
        if self.cheater is not None:  # a test fixture: it may run something other than asked
            params = await blocking(self.cheater.run_params, payload.workload, params, self._provider.models)
        run = await self._executor.run(
            payload.workload,
            params,
            max_runtime_s=min(offer.body["max_runtime_s"], self._provider.max_runtime_s),
            max_ram_mb=self._provider.max_ram_mb,
            on_event=held.add_event,
            job_id=job_id,
        )
        result = JobResult(job_id, run.ok, run.output, run.error, run.metrics)
        if run.kept:
            self._keep(held, run.kept)
        if self.cheater is not None:
            result = await self._cheat(payload, params, result, held)
        held.result = result
        if run.ok:  # a slot is held for about the compute time (the worker's own overhead is small)
            self._slot_ms = max(1, (3 * self._slot_ms + run.metrics.get("compute_ms", self._slot_ms)) // 4)
        if not run.ok:
            logger.info("job %s failed: %s (no receipt, no payment)", job_id.hex()[:16], run.error)
            return result
        held.cost = job_cost(self._provider.price_per_s, result.metrics["compute_ms"], escrow.amount)
        self._mark(Side.PROVIDER, job_id)
        await self._flush()  # held (and its cost) on disk before the receipt claims pay for it
        crash_point("market.result_held")
        await self._post_receipt(escrow, held, result)
        return result

    async def _cheat(self, payload: JobPayload, ran: dict[str, Any], result: JobResult, held: HeldJob) -> JobResult:
        """The cheating fixture's result in place of the real one (node/cheats.py); ``ran``:
        the parameters it really ran."""
        assert self.cheater is not None and self._device is not None
        clean = check_params(payload.workload, payload.params)
        rows = None
        if self.cheater.cheat is Cheat.WRONG_ROWS and payload.workload == "torch_bench" and result.ok:
            from aitbc_p2p.compute.workloads import product_rows

            rows = await blocking(product_rows, clean, self._device.device)
        if payload.workload == "sd_infer" and result.ok:  # the latents it commits to, kept for audits
            from aitbc_p2p.compute.diffusion import split_leaves

            kept = split_leaves(held.kept, check_params("sd_infer", ran)["steps"])
            rows = self.cheater.leaves(clean, kept) if kept is not None else None
            self._keep(held, b"".join(rows or ()))
        return await blocking(self.cheater.result, payload.workload, clean, result, rows)

    def _keep(self, held: HeldJob, data: bytes) -> None:
        held.kept = data
        total = sum(len(h.kept) for h in self._held.values())
        for other in self._held.values():  # oldest first
            if total <= MAX_KEPT:
                break
            total -= len(other.kept)
            other.kept = b""

    def held_product(self, job_id: JobId, n: int) -> tuple[list[bytes], list[bytes]] | None:
        """The kept rows of a held torch_bench product of ``n`` rows and their leaf hashes
        (compute/workloads.py, KEEP_N), None if not kept."""
        held = self._held.get(job_id)
        width, size = 4 * n, 4 * n * n
        if held is None or len(held.kept) != size + 32 * n:
            return None
        kept = held.kept
        rows = [kept[i : i + width] for i in range(0, size, width)]
        return rows, [kept[i : i + 32] for i in range(size, len(kept), 32)]

    def held_kept(self, job_id: JobId) -> bytes:
        """What the workload of a held job kept for audits (empty: nothing, or dropped)."""
        held = self._held.get(job_id)
        return held.kept if held is not None else b""

    def provider_models(self) -> dict[str, str]:
        """The models this provider serves (name -> directory; none if it is no provider)."""
        return dict(self._provider.models) if self._provider is not None else {}

    def held_facts(self, job_id: JobId) -> tuple[Facts | None, str]:
        """A held job's offer, parameters and ok result (what an audit is answered from),
        and the device it ran on."""
        held = self._held.get(job_id)
        device = self._device.device if self._device is not None else "cpu"
        if held is None or held.offer is None or held.result is None or not held.result.ok:
            return None, device
        return Facts(held.offer, held.params, held.result), device

    def provider_peer(self, address: Address) -> str:
        """The peer id a provider's latest capability record names ("" if none is known)."""
        rec = self.providers.get(address)
        return str(rec.body["peer_id"]) if rec is not None else ""

    async def _post_receipt(self, escrow: Job, held: HeldJob, result: JobResult) -> None:
        """Receipt a held result, then settle it once the receipt is committed."""
        job_id = escrow.job_id
        try:
            await self.account.send_own_tx(JobReceipt(job_id, result.result_hash, held.cost, result.metrics))
        except TxRejected as e:  # after a restart, the first receipt may be committed already
            logger.warning("receipt for job %s refused: %s", job_id.hex()[:16], e)
        else:
            crash_point("market.receipt_posted")
            logger.info("job %s done; receipt posted, cost %s AITBC", job_id.hex()[:16], format_aitbc(held.cost))
        if self._nursery is not None:
            self._nursery.start_soon(self._settle_when_receipted, job_id)

    async def _settle_when_receipted(self, job_id: JobId) -> None:
        """Settle once the receipt is committed: at once with the client's delivery ack,
        else after the client's dispute window. The result is held (and journaled) until
        the escrow ends; a receipt never committed by the escrow's deadline is given up."""
        sent = False
        missing = 0
        receipted_at = self.chain.head.height
        while True:
            escrow = self.chain.state.job(job_id)
            if escrow is None:  # a reorg took the escrow's block back: its job_open comes again
                missing += 1
                if missing > ESCROW_GONE_BLOCKS:
                    logger.warning("escrow of %s gone for %d blocks; not settled", job_id.hex()[:16], missing)
                    return
                await self.chain.wait_head_change()
                continue
            missing = 0
            held = self._held.get(job_id)
            if (
                escrow.status is JobStatus.OPEN
                and held is not None
                and held.result is not None
                and held.result.ok
                and self.chain.head.height >= receipted_at + RECEIPT_RETRY_BLOCKS
            ):  # the receipt was lost (a reorg, an eviction): post it again; a pending one makes this one refused
                receipted_at = self.chain.head.height
                try:
                    result = held.result
                    await self.account.send_own_tx(JobReceipt(job_id, result.result_hash, held.cost, result.metrics))
                    logger.info("job %s: receipt posted again", job_id.hex()[:16])
                except TxRejected as e:
                    logger.debug("receipt for %s not posted again: %s", job_id.hex()[:16], e)
            if self._done_with(escrow):
                self._held.pop(job_id, None)  # paid and refunded: nothing left to deliver or answer for
                self._mark(Side.PROVIDER, job_id)
                return
            if escrow.status is JobStatus.SETTLED:  # paid: held to answer audits while it may be challenged
                self._hold_until[job_id] = last_challenge_height(escrow, self.chain.rules)
                return
            if escrow.status is JobStatus.OPEN and self.chain.head.height > escrow.deadline:
                logger.warning("receipt for %s not committed by the deadline; not settled", job_id.hex()[:16])
                return
            if escrow.status is not JobStatus.OPEN and not sent:
                if escrow.status is not JobStatus.RECEIPTED:
                    await self.chain.wait_head_change()  # disputed: held for the arbiters' audit until ruled
                    continue
                held = self._held.get(job_id)
                ack = held.ack if held is not None else b""
                window_over = self.chain.head.height + 1 > escrow.receipt_height + self.chain.rules.dispute_blocks
                if ack or window_over:
                    try:
                        await self.account.send_own_tx(JobSettle(job_id, ack))
                        sent = True
                    except TxRejected as e:
                        if not (ack and held is not None):
                            logger.warning("settle of %s refused: %s", job_id.hex()[:16], e)
                            return
                        logger.warning("ack for %s refused (%s); settling after the window", job_id.hex()[:16], e)
                        held.ack = b""
                        self._mark(Side.PROVIDER, job_id)
                        continue
            await self.chain.wait_head_change()
