"""The node side of BFT consensus: runs :class:`HeightMachine` rounds over gossip.

Proposals and votes travel on ``/aitbc/<chain>/consensus/1`` as ``{"proposal": ...}`` or
``{"vote": ...}``. Every signature this validator gives goes through the store's
:class:`VoteGuard` first (persisted, synced), so it never signs two conflicting messages,
also across a crash. A decided block is committed with its certificate and gossiped on
the block topic; peers that missed the rounds import it (or sync it) by certificate.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import trio

from aitbc_p2p.chain.blocks import AppliedBlock
from aitbc_p2p.chain.models import Block
from aitbc_p2p.chain.payloads import Slash
from aitbc_p2p.chain.votes import Vote
from aitbc_p2p.codec import decode, encode, fields, head
from aitbc_p2p.consensus import BftEngine
from aitbc_p2p.consensus.tendermint import (
    ArmTimeout,
    BuildAndPropose,
    CastVote,
    Commit,
    HeightMachine,
    Proposal,
    Propose,
    Step,
)
from aitbc_p2p.exceptions import CodecError, ConsensusError, NetworkError, TxRejected, ValidationError
from aitbc_p2p.network.abc import REJECT, GossipMessage, Network, Verdict, accept
from aitbc_p2p.network.protocols import CONSENSUS_PROTOCOL, MAX_FRAME
from aitbc_p2p.node.abc import BlockAuthor, OwnAccount
from aitbc_p2p.node.offload import blocking
from aitbc_p2p.node.wire import consensus_envelope, decode_consensus_message
from aitbc_p2p.store.crash import crash_point
from aitbc_p2p.store.votes import VoteGuard
from aitbc_p2p.types import Address

logger = logging.getLogger(__name__)

MAX_BUFFERED = 4096
"""Consensus messages kept for the next heights while this peer finishes the current one."""
MAX_HELD = 4096
"""Verified consensus messages of the current height kept to answer round-state requests."""
MAX_ROUND_STATE_ITEMS = 1024
"""Most messages in one round-state answer."""
MAX_CATCH_UP_PEERS = 8
"""Peers asked at once when this validator is stuck at a height."""


class BftDriver:
    def __init__(
        self,
        chain: BlockAuthor,
        account: OwnAccount,
        engine: BftEngine,
        network: Network,
        topic: str,
        guard: VoteGuard,
        clock_ms: Callable[[], int],
        *,
        publish_block: Callable[[Block, Sequence[Vote]], Awaitable[None]],
    ) -> None:
        self.chain = chain
        self.account = account
        self.engine = engine
        self.network = network
        self.topic = topic
        self.guard = guard
        self.clock_ms = clock_ms
        self._publish_block = publish_block
        self.machine: HeightMachine | None = None
        self._applied: dict[bytes, AppliedBlock] = {}
        self._buffer: deque[tuple[int, dict[str, Any]]] = deque(maxlen=MAX_BUFFERED)
        self._slashed: set[bytes] = set()
        self._nursery: trio.Nursery | None = None
        self._held: dict[bytes, dict[str, Any]] = {}
        """The current height's verified proposals and votes (ours too), by encoding:
        what a peer that lost some of them asks for (:meth:`serve_round_state`)."""
        # The guard's synced writes run in a worker thread, one signature at a time.
        self._sign_lock = trio.Lock()

    @property
    def me(self) -> Address | None:
        address = self.account.key.address
        return address if address in self.engine.weights else None

    # ------------------------------------------------------------ run loop
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self.network.set_request_handler(CONSENSUS_PROTOCOL, self.serve_round_state)
        inbox = await self.network.subscribe(self.topic, self.gate)
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._receive, inbox)
            nursery.start_soon(self._catch_up)
            task_status.started()
            while True:
                height = self.chain.head.height + 1
                self._start_height(height)
                while self.chain.head.height < height:
                    await self.chain.wait_head_change()

    def _start_height(self, height: int) -> None:
        self._applied.clear()
        self._held.clear()
        self.machine = HeightMachine(self.engine, height, self.me)
        self._restore_lock()
        self.machine.start(0)
        for h, msg in list(self._buffer):
            if h == height:
                self._nursery_start(self._handle, msg)
        self._buffer = deque(((h, m) for h, m in self._buffer if h > height), maxlen=MAX_BUFFERED)
        self._pump()

    def _restore_lock(self) -> None:
        """After a restart mid-height, keep the lock that our last precommit implies."""
        assert self.machine is not None
        last = self.guard.last("precommit")
        if last is None or last[0] != self.machine.height or not last[2]:
            return
        block = self.chain.proposal(last[2])
        if block is not None:
            self.machine.locked, self.machine.locked_round = block, last[1]
            self.machine.valid, self.machine.valid_round = block, last[1]

    def _nursery_start(self, fn: Any, *args: Any) -> None:
        assert self._nursery is not None
        self._nursery.start_soon(fn, *args)

    # ------------------------------------------------------------ inbound
    async def gate(self, data: bytes) -> Verdict[dict[str, Any]]:
        """Stateless gate of the consensus topic: a one-key map of a vote or a proposal
        (the driver checks what it holds against the height it is deciding)."""
        try:
            return accept(decode_consensus_message(data))
        except CodecError as e:
            logger.debug("bad consensus message: %s", e)
            return REJECT

    async def _receive(self, inbox: trio.MemoryReceiveChannel[GossipMessage[dict[str, Any]]]) -> None:
        async for msg in inbox:
            if msg.value is None:
                continue  # our own: handled when it was made
            try:
                await self._handle(msg.value)
            except Exception:  # a task edge: one message must not end consensus
                logger.exception("consensus message from %s not handled", msg.origin)

    async def _handle(self, obj: dict[str, Any]) -> None:
        machine = self.machine
        if machine is None:
            return
        try:
            if "vote" in obj:
                vote = Vote.from_wire(obj["vote"])
                if vote.chain_id != self.engine.chain_id:
                    return
                if vote.height > machine.height:
                    self._buffer.append((vote.height, obj))
                    return
                if vote.height < machine.height:
                    return
                vote.verify()
                self._hold(obj)
                machine.on_vote(vote)
                self._report_equivocation()
            elif "proposal" in obj:
                proposal = Proposal.from_wire(obj["proposal"])
                if proposal.chain_id != self.engine.chain_id:
                    return
                if proposal.height > machine.height:
                    self._buffer.append((proposal.height, obj))
                    return
                if proposal.height < machine.height:
                    return
                proposal.verify(self.engine)
                valid = await self._check_block(proposal.block)
                if valid:
                    self._hold(obj)
                if self.machine is machine:
                    machine.on_proposal(proposal, valid=valid)
        except (ValidationError, ConsensusError) as e:
            logger.debug("consensus message refused: %s", e)
            return
        self._pump()

    async def _check_block(self, block: Block) -> bool:
        """Whether ``block`` is a valid child of the head (state and all), remembered by id."""
        head = self.chain.head
        if block.hash in self._applied:
            return True
        if block.header.parent != head.hash or block.height != head.height + 1:
            return False
        try:
            applied = await self.chain.validate_proposal(block)
        except (ValidationError, ConsensusError) as e:
            logger.info("proposal for %d is invalid: %s", block.height, e)
            return False
        self._applied[block.hash] = applied
        await self.chain.remember_proposal(block)  # to restore a lock after a crash
        return True

    # ------------------------------------------------------- round-state catch-up
    def _hold(self, obj: dict[str, Any]) -> None:
        if len(self._held) < MAX_HELD:
            self._held.setdefault(encode(obj), obj)

    async def serve_round_state(self, peer: str, request: bytes) -> bytes:
        """``/aitbc/consensus/1``: the verified proposals and votes of the asked height
        that this peer holds (none unless it is the height this peer is deciding), votes
        first, within one frame (specs/consensus.md, "Catching up")."""
        try:
            height = fields.uint(fields.record(decode(request), ("height",), "a round-state request"), "height")
        except CodecError as e:
            raise ValidationError(f"bad round-state request: {e}") from e
        machine = self.machine
        if machine is None or machine.height != height:
            return encode([])
        votes = [raw for raw, obj in self._held.items() if "vote" in obj]
        proposals = [raw for raw, obj in self._held.items() if "proposal" in obj]
        room, parts = MAX_FRAME - 16, []
        for raw in (votes + proposals)[:MAX_ROUND_STATE_ITEMS]:
            if len(raw) > room:
                continue
            room -= len(raw)
            parts.append(raw)
        return head(4, len(parts)) + b"".join(parts)

    async def _catch_up(self) -> None:
        """A validator that stays at a height longer than a round asks its peers for that
        height's proposals and votes: gossip can lose them (a restart, a full queue, a
        partition), and without them no quorum forms (specs/consensus.md)."""
        while True:
            height = self.chain.head.height
            await trio.sleep(self.engine.round_timeout_ms / 1000)
            if self.chain.head.height != height or self.machine is None:
                continue
            async with trio.open_nursery() as nursery:
                for peer in self.network.connected_peers()[:MAX_CATCH_UP_PEERS]:
                    nursery.start_soon(self._ask_round_state, peer, height + 1)

    async def _ask_round_state(self, peer: str, height: int) -> None:
        try:
            raw = await self.network.request(peer, CONSENSUS_PROTOCOL, encode({"height": height}), timeout=5)
            items = decode(raw, max_size=MAX_FRAME)
        except (NetworkError, CodecError) as e:
            logger.debug("round state from %s: %s", peer, e)
            return
        if not isinstance(items, list) or len(items) > MAX_ROUND_STATE_ITEMS:
            self.network.penalize(peer, "a malformed round-state answer")
            return
        for obj in items:
            if self.machine is None or self.machine.height != height:
                return
            try:
                envelope = consensus_envelope(obj)
            except CodecError:
                continue
            if encode(envelope) in self._held:
                continue
            try:
                await self._handle(envelope)
            except Exception:  # a task edge, as in _receive
                logger.exception("round-state message from %s not handled", peer)

    # ------------------------------------------------------------ actions
    def _pump(self) -> None:
        machine = self.machine
        if machine is None:
            return
        for action in machine.take_actions():
            if isinstance(action, ArmTimeout):
                self._nursery_start(self._timeout, machine, action)
            elif isinstance(action, CastVote):
                self._nursery_start(self._cast, machine, action)
            elif isinstance(action, BuildAndPropose):
                self._nursery_start(self._build_and_propose, machine, action.round)
            elif isinstance(action, Propose):
                self._nursery_start(self._propose, machine, action.round, action.block, action.valid_round)
            elif isinstance(action, Commit):
                self._nursery_start(self._commit, machine, action)

    async def _timeout(self, machine: HeightMachine, action: ArmTimeout) -> None:
        await trio.sleep(action.delay_ms / 1000)
        if self.machine is machine:
            machine.on_timeout(action.step, action.round)
            self._pump()

    async def _cast(self, machine: HeightMachine, action: CastVote) -> None:
        try:
            async with self._sign_lock:
                vote = await blocking(
                    self.guard.sign_vote, machine.height, action.round, action.step, action.block
                )
        except ConsensusError as e:
            logger.warning("not voting: %s", e)
            return
        obj = {"vote": vote.to_wire()}
        if self.machine is machine:
            self._hold(obj)
            machine.on_vote(vote)
            self._pump()
        await self._publish(obj, "vote.after_release")

    async def _publish(self, obj: dict[str, Any], crash: str | None = None) -> None:
        try:
            await self.network.publish(self.topic, encode(obj))
        except NetworkError as e:
            logger.debug("could not gossip consensus message: %s", e)
        if crash:
            crash_point(crash)

    async def _build_and_propose(self, machine: HeightMachine, round: int) -> None:
        head = self.chain.head
        delay = self.engine.due_ms(head, round) - self.clock_ms()
        if delay > 0:
            await trio.sleep(delay / 1000)
        if self.machine is not machine or self.chain.head.hash != head.hash:
            return
        applied = await self.chain.build(round)
        self._applied[applied.block.hash] = applied
        await self._propose(machine, round, applied.block, -1)

    async def _propose(self, machine: HeightMachine, round: int, block: Block, valid_round: int) -> None:
        if self.machine is not machine:
            return
        proposal = Proposal(self.engine.chain_id, machine.height, round, valid_round, block, self.account.key.address)
        try:
            async with self._sign_lock:
                sig = await blocking(
                    self.guard.sign_proposal,
                    machine.height,
                    round,
                    block.hash,
                    lambda: proposal.signed(self.account.key).signature,
                )
        except ConsensusError as e:
            logger.warning("not proposing: %s", e)
            return
        signed = Proposal(proposal.chain_id, proposal.height, round, valid_round, block, proposal.proposer, sig)
        await self.chain.remember_proposal(block)
        if self.machine is not machine:
            return
        obj = {"proposal": signed.to_wire()}
        self._hold(obj)
        machine.on_proposal(signed, valid=True)
        self._pump()
        await self._publish(obj)

    async def _commit(self, machine: HeightMachine, action: Commit) -> None:
        applied = self._applied.get(action.block.hash)
        try:
            committed = await self.chain.commit_decided(action.block, action.certificate, applied)
        except (ValidationError, ConsensusError) as e:
            logger.error("could not commit decided block %d: %s", action.block.height, e)
            return
        if committed:
            await self._publish_block(action.block, action.certificate)
            logger.info(
                "committed block %d round %d (%d txs, %d precommits)",
                action.block.height, action.round, len(action.block.txs), len(action.certificate),
            )  # fmt: skip

    # ------------------------------------------------------------ evidence
    def _report_equivocation(self) -> None:
        machine = self.machine
        if machine is None:
            return
        while machine.evidence:
            a, b = machine.evidence.pop()
            offence = (a.validator, a.height, a.round, str(a.step))
            key = encode(list(offence))
            if key in self._slashed:
                continue
            self._slashed.add(key)
            logger.warning("validator %s double-signed at %d/%d; posting slash evidence", *offence[:3])
            self._nursery_start(self._post_slash, [a.to_wire(), b.to_wire()])

    async def _post_slash(self, evidence: list[dict[str, Any]]) -> None:
        try:
            await self.account.send_own_tx(Slash((evidence[0], evidence[1])))
        except TxRejected as e:
            if e.reason == "Duplicate":  # another validator's evidence for the offence came first
                logger.info("slash evidence not posted: %s", e)
            else:  # most often no balance for the fee: the offence goes unpunished by this validator
                logger.warning("slash evidence not posted (this validator's account pays its fee): %s", e)


__all__ = ["BftDriver", "Step"]
