"""The consensus engine seam (specs/consensus.md): two kinds of engine, told apart by
their ``kind`` (a tagged union, so the type checker follows each branch).

Every engine decides who may propose a block at ``(height, round)`` and from when, and
accepts or refuses headers on consensus grounds. Engines are pure: time is a parameter.

* A **fork-choice** engine (``solo``, ``poa``) lets any scheduled proposer extend the
  chain: competing tips are ranked by :meth:`ForkChoiceEngine.fork_score`, and a block is
  final once :meth:`ForkChoiceEngine.final_depth` says the chain above it cannot be
  outvoted. The node's block producer proposes when a round is due.
* A **BFT** engine (``pos``) commits only blocks that carry a commit certificate (more
  than 2/3 of the stake's precommits), so it never forks and every committed block is
  final. The node's BFT driver runs its rounds.

The node holds one finality policy per kind (:mod:`aitbc_p2p.consensus.finality`) and
branches on the kind in one place, where it wires the driver.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal, Protocol

from aitbc_p2p.chain.models import BlockHeader
from aitbc_p2p.types import Address


class _Engine(Protocol):
    name: str
    block_time_ms: int

    def proposer(self, height: int, round: int = 0) -> Address:
        """The validator expected to propose at ``height`` in ``round`` (round 0 first)."""
        ...

    def due_ms(self, parent: BlockHeader, round: int = 0) -> int:
        """The earliest timestamp (ms) of a child of ``parent`` proposed in ``round``."""
        ...

    def validate_header(self, header: BlockHeader, parent: BlockHeader) -> None:
        """Raise :class:`~aitbc_p2p.exceptions.ConsensusError` if consensus refuses ``header``."""
        ...

    def may_have_proposed(self, header: BlockHeader) -> bool:
        """Whether ``header``'s proposer could be scheduled at its height and round on some
        branch: the check a relay makes without the chain below the header."""
        ...


class ForkChoiceEngine(_Engine, Protocol):
    kind: Literal["fork_choice"]

    @property
    def rounds(self) -> int:
        """How many rounds of a height have a proposer (round 0's, then the backups')."""
        ...

    @property
    def recency(self) -> int:
        """How many blocks below a new block its proposer must not have proposed (0: none)."""
        ...

    def proposer(self, height: int, round: int = 0, recent: Sequence[Address] = ()) -> Address:
        """The authority scheduled at ``height`` in ``round`` on a branch whose latest
        proposers are ``recent`` (the parent's first): those within :attr:`recency` are
        skipped."""
        ...

    def check_recency(self, header: BlockHeader, recent: Sequence[Address]) -> None:
        """Raise :class:`~aitbc_p2p.exceptions.ConsensusError` unless ``header``'s branch,
        whose latest proposers are ``recent`` (the parent's first), schedules its proposer
        at its height and round."""
        ...

    def fork_score(self, header: BlockHeader) -> tuple[int, ...]:
        """Fork choice: of two tips, the one with the higher score is the head."""
        ...

    def final_depth(self, proposers: Sequence[Address]) -> int:
        """How many blocks at the top of a chain are not final yet, given the proposers of
        its blocks from the head down (the head's first; as many as the node holds, up to
        its reorg window). Fork choice never reverts a final block. ``len(proposers)``:
        none of them is final."""
        ...


class BftEngine(_Engine, Protocol):
    kind: Literal["bft"]
    chain_id: str
    total: int
    round_timeout_ms: int

    @property
    def weights(self) -> Mapping[Address, int]:
        """Each validator's voting weight (its stake)."""
        ...

    @property
    def validators(self) -> tuple[Address, ...]: ...

    def quorum(self) -> int:
        """The least weight that commits: more than 2/3 of the total."""
        ...


ConsensusEngine = ForkChoiceEngine | BftEngine
"""Any engine; ``engine.kind`` tells which."""
