"""Tendermint-style BFT rounds for one height, as a pure state machine (specs/consensus.md).

The node feeds it proposals (already checked: signature, proposer, block validity),
votes (signature checked) and timeouts; it answers with actions for the node to carry
out: propose, cast a vote, arm a timeout, or commit a decided block with its commit
certificate. The rules are those of Buchman, Kwon and Milosevic, "The latest gossip on
BFT consensus" (2018), with stake weights: a quorum is more than 2/3 of the stake, and
more than 1/3 makes a round skip. Locks make a validator that precommitted a block
prevote for it (or nil) until a later quorum of prevotes frees it.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aitbc_p2p.chain.models import MAX_ROUND, Block
from aitbc_p2p.chain.votes import NIL, Vote, VoteStep
from aitbc_p2p.codec import encode, fields
from aitbc_p2p.consensus.abc import BftEngine
from aitbc_p2p.crypto import Domain, PrivateKey, recover_address, signing_digest
from aitbc_p2p.crypto.keys import validate_address
from aitbc_p2p.exceptions import BadSignature, CodecError, ConsensusError, CryptoError, ValidationError
from aitbc_p2p.types import MAX_CHAIN_ID, Address


class Step(enum.IntEnum):
    PROPOSE = 0
    PREVOTE = 1
    PRECOMMIT = 2


@dataclass(frozen=True, slots=True)
class Proposal:
    """The round's proposer offering ``block`` (new, or the one it saw a quorum prevote in ``valid_round``)."""

    chain_id: str
    height: int
    round: int
    valid_round: int
    block: Block
    proposer: Address
    signature: bytes = b""

    def body(self) -> dict[str, Any]:
        return {
            "chain_id": self.chain_id,
            "height": self.height,
            "round": self.round,
            "valid_round": self.valid_round,
            "block": self.block.hash,
            "proposer": self.proposer,
        }

    def signed(self, key: PrivateKey) -> Proposal:
        sig = key.sign(Domain.PROPOSAL, self.chain_id, self.body())
        return Proposal(self.chain_id, self.height, self.round, self.valid_round, self.block, self.proposer, sig)

    def verify(self, engine: BftEngine) -> None:
        """Raise :class:`ConsensusError` unless the round's proposer signed it for this block."""
        if self.block.height != self.height or not -1 <= self.valid_round < self.round:
            raise ConsensusError("proposal fields disagree with its block")
        if self.proposer != engine.proposer(self.height, self.round):
            raise ConsensusError(f"{self.proposer} is not the proposer of {self.height}/{self.round}")
        try:
            signer = recover_address(signing_digest(Domain.PROPOSAL, self.chain_id, self.body()), self.signature)
        except BadSignature as e:
            raise ConsensusError(f"proposal signature: {e}") from e
        if signer != self.proposer:
            raise ConsensusError("proposal is not signed by its proposer")

    def to_wire(self) -> dict[str, Any]:
        return {
            "chain_id": self.chain_id,
            "height": self.height,
            "round": self.round,
            "valid_round": self.valid_round,
            "block": self.block.to_wire(),
            "proposer": self.proposer,
            "sig": self.signature,
        }

    @classmethod
    def from_wire(cls, obj: Any) -> Proposal:
        """Parse shape and bounds (not the signature). Raises :class:`ValidationError`."""
        try:
            w = fields.record(obj, _PROPOSAL_KEYS, "a proposal")
            height = fields.uint(w, "height")
            round_ = fields.uint(w, "round", high=MAX_ROUND)
            valid_round = fields.uint(w, "valid_round", low=-1, high=MAX_ROUND)
            return cls(
                chain_id=fields.text(w, "chain_id", max_len=MAX_CHAIN_ID),
                height=height,
                round=round_,
                valid_round=valid_round,
                block=Block.from_wire(w["block"]),
                proposer=validate_address(fields.text(w, "proposer", max_len=128)),
                signature=fields.blob(w, "sig", max_len=65),
            )
        except (CodecError, CryptoError) as e:
            raise ValidationError(f"malformed proposal: {e}") from e


_PROPOSAL_KEYS = ("chain_id", "height", "round", "valid_round", "block", "proposer", "sig")


# ------------------------------------------------------------------ actions
@dataclass(frozen=True, slots=True)
class BuildAndPropose:
    """We propose in ``round`` and have no valid block: build one, then :meth:`propose` it."""

    round: int


@dataclass(frozen=True, slots=True)
class Propose:
    round: int
    block: Block
    valid_round: int


@dataclass(frozen=True, slots=True)
class CastVote:
    step: VoteStep
    round: int
    block: bytes


@dataclass(frozen=True, slots=True)
class ArmTimeout:
    step: Step
    round: int
    delay_ms: int


@dataclass(frozen=True, slots=True)
class Commit:
    block: Block
    round: int
    certificate: tuple[Vote, ...]


Action = BuildAndPropose | Propose | CastVote | ArmTimeout | Commit


@dataclass
class HeightMachine:
    """The rounds of one height. Call ``start()``, then feed it; read ``take_actions()``."""

    engine: BftEngine
    height: int
    me: Address | None
    round: int = -1
    step: Step = Step.PROPOSE
    locked: Block | None = None
    locked_round: int = -1
    valid: Block | None = None
    valid_round: int = -1
    decided: Block | None = None
    proposals: dict[int, Proposal] = field(default_factory=dict)
    valid_blocks: dict[bytes, bool] = field(default_factory=dict)
    votes: dict[tuple[int, VoteStep], dict[Address, Vote]] = field(default_factory=dict)
    evidence: list[tuple[Vote, Vote]] = field(default_factory=list)
    _fired: set[tuple[str, int]] = field(default_factory=set)
    _actions: list[Action] = field(default_factory=list)

    # ------------------------------------------------------------ inputs
    def start(self, round: int = 0) -> None:
        self._start_round(round)
        self._check()

    def on_proposal(self, proposal: Proposal, *, valid: bool) -> None:
        """A proposal whose signature and proposer the node checked, with its block's validity."""
        if proposal.height != self.height or proposal.round in self.proposals:
            return
        self.proposals[proposal.round] = proposal
        self.valid_blocks.setdefault(proposal.block.hash, valid)
        self._check()

    def on_vote(self, vote: Vote) -> None:
        """A vote whose signature the node checked."""
        if vote.height != self.height or vote.validator not in self.engine.weights:
            return
        box = self.votes.setdefault((vote.round, vote.step), {})
        prior = box.get(vote.validator)
        if prior is not None:
            if prior.block != vote.block:
                self.evidence.append((prior, vote))
            return
        box[vote.validator] = vote
        self._check()

    def on_timeout(self, step: Step, round: int) -> None:
        if round != self.round or self.decided is not None:
            return
        if step is Step.PROPOSE and self.step is Step.PROPOSE:
            self._vote(VoteStep.PREVOTE, NIL)
            self.step = Step.PREVOTE
        elif step is Step.PREVOTE and self.step is Step.PREVOTE:
            self._vote(VoteStep.PRECOMMIT, NIL)
            self.step = Step.PRECOMMIT
        elif step is Step.PRECOMMIT:
            self._start_round(round + 1)
        self._check()

    def take_actions(self) -> list[Action]:
        out, self._actions = self._actions, []
        return out

    # ------------------------------------------------------------ helpers
    def timeout_ms(self, step: Step, round: int) -> int:
        base = self.engine.round_timeout_ms
        extra = self.engine.block_time_ms if step is Step.PROPOSE else 0
        return extra + base + round * base // 2

    def _start_round(self, round: int) -> None:
        self.round = round
        self.step = Step.PROPOSE
        if self.me is not None and self.engine.proposer(self.height, round) == self.me:
            if self.valid is not None:
                self._actions.append(Propose(round, self.valid, self.valid_round))
            else:
                self._actions.append(BuildAndPropose(round))
        self._actions.append(ArmTimeout(Step.PROPOSE, round, self.timeout_ms(Step.PROPOSE, round)))

    def _vote(self, step: VoteStep, block: bytes) -> None:
        if self.me is not None and self.me in self.engine.weights:
            self._actions.append(CastVote(step, self.round, block))

    def _weight(self, round: int, step: VoteStep, block: bytes | None = None) -> int:
        box = self.votes.get((round, step), {})
        return sum(self.engine.weights[v] for v, vote in box.items() if block is None or vote.block == block)

    def _quorum(self, round: int, step: VoteStep, block: bytes | None = None) -> bool:
        return self._weight(round, step, block) >= self.engine.quorum()

    def _once(self, rule: str, round: int) -> bool:
        if (rule, round) in self._fired:
            return False
        self._fired.add((rule, round))
        return True

    def _may_vote_for(self, block: Block, vr: int) -> bool:
        return self.valid_blocks.get(block.hash, False) and (
            self.locked_round <= vr or (self.locked is not None and self.locked.hash == block.hash)
        )

    def _check(self) -> None:
        changed = True
        while changed and self.decided is None:
            changed = False
            r = self.round
            proposal = self.proposals.get(r)
            # L22 / L28: prevote on the round's proposal
            if proposal is not None and self.step is Step.PROPOSE:
                vr = proposal.valid_round
                if vr == -1:
                    ok = self._may_vote_for(proposal.block, -1)
                    self._vote(VoteStep.PREVOTE, proposal.block.hash if ok else NIL)
                    self.step = Step.PREVOTE
                    changed = True
                elif vr < r and self._quorum(vr, VoteStep.PREVOTE, proposal.block.hash):
                    ok = self._may_vote_for(proposal.block, vr)
                    self._vote(VoteStep.PREVOTE, proposal.block.hash if ok else NIL)
                    self.step = Step.PREVOTE
                    changed = True
            # L34: any quorum of prevotes: arm the prevote timeout
            if self.step is Step.PREVOTE and self._quorum(r, VoteStep.PREVOTE) and self._once("L34", r):
                self._actions.append(ArmTimeout(Step.PREVOTE, r, self.timeout_ms(Step.PREVOTE, r)))
            # L36: a quorum prevoted the proposal: lock and precommit it
            if (
                proposal is not None
                and self.step >= Step.PREVOTE
                and self.valid_blocks.get(proposal.block.hash, False)
                and self._quorum(r, VoteStep.PREVOTE, proposal.block.hash)
                and self._once("L36", r)
            ):
                if self.step is Step.PREVOTE:
                    self.locked, self.locked_round = proposal.block, r
                    self._vote(VoteStep.PRECOMMIT, proposal.block.hash)
                    self.step = Step.PRECOMMIT
                self.valid, self.valid_round = proposal.block, r
                changed = True
            # L44: a quorum prevoted nil
            if self.step is Step.PREVOTE and self._quorum(r, VoteStep.PREVOTE, NIL):
                self._vote(VoteStep.PRECOMMIT, NIL)
                self.step = Step.PRECOMMIT
                changed = True
            # L47: any quorum of precommits: arm the precommit timeout
            if self._quorum(r, VoteStep.PRECOMMIT) and self._once("L47", r):
                self._actions.append(ArmTimeout(Step.PRECOMMIT, r, self.timeout_ms(Step.PRECOMMIT, r)))
            # L49: a quorum precommitted a proposed, valid block in any round: decide
            for pr, p in self.proposals.items():
                block_id = p.block.hash
                if self.valid_blocks.get(block_id, False) and self._quorum(pr, VoteStep.PRECOMMIT, block_id):
                    self.decided = p.block
                    cert = tuple(v for v in self.votes[(pr, VoteStep.PRECOMMIT)].values() if v.block == block_id)
                    self._actions.append(Commit(p.block, pr, cert))
                    return
            # L55: more than 1/3 of the stake is in a later round: skip to it
            later = {rr for (rr, _) in self.votes if rr > r}
            for rr in sorted(later, reverse=True):
                voters = set()
                for step in VoteStep:
                    voters |= set(self.votes.get((rr, step), {}))
                if sum(self.engine.weights[v] for v in voters) > self.engine.total // 3:
                    self._start_round(rr)
                    changed = True
                    break


def verify_certificate(engine: BftEngine, block_hash: bytes, height: int, votes: Sequence[Vote]) -> int:
    """Check a commit certificate for a block; return its round.

    Raises:
        ConsensusError: votes for something else, unknown or repeated validators, bad
            signatures, or less than a quorum of stake.
    """
    if not votes:
        raise ConsensusError(f"block {height} has no commit certificate")
    rounds = {v.round for v in votes}
    if len(rounds) != 1:
        raise ConsensusError("certificate votes are from different rounds")
    seen: set[Address] = set()
    weight = 0
    for vote in votes:
        if (
            vote.step is not VoteStep.PRECOMMIT
            or vote.height != height
            or vote.block != block_hash
            or vote.chain_id != engine.chain_id
        ):
            raise ConsensusError("certificate holds a vote for something else")
        if vote.validator not in engine.weights or vote.validator in seen:
            raise ConsensusError("certificate holds an unknown or repeated validator")
        try:
            vote.verify()
        except ValidationError as e:
            raise ConsensusError(f"certificate: {e}") from e
        seen.add(vote.validator)
        weight += engine.weights[vote.validator]
    if weight < engine.quorum():
        raise ConsensusError(f"certificate has {weight} of {engine.total} stake, below the quorum")
    return rounds.pop()


def encode_certificate(votes: Sequence[Vote]) -> bytes:
    return encode([v.to_wire() for v in votes])


def decode_certificate(obj: Any) -> tuple[Vote, ...]:
    if not isinstance(obj, list) or len(obj) > 1024:
        raise ValidationError("certificate must be a list of votes")
    return tuple(Vote.from_wire(v) for v in obj)


__all__ = [
    "Action",
    "ArmTimeout",
    "BuildAndPropose",
    "CastVote",
    "Commit",
    "HeightMachine",
    "Proposal",
    "Propose",
    "Step",
    "decode_certificate",
    "encode_certificate",
    "verify_certificate",
]
