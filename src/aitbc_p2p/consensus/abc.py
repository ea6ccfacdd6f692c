"""The consensus engine seam (specs/consensus.md).

An engine decides who may propose a block at ``(height, round)`` and from when, accepts or
refuses headers on consensus grounds, ranks competing tips for fork choice, and says how
far below the head a block is final (it can never be reverted). Engines are pure: time is a
parameter. BFT engines (``bft = True``) only commit blocks that carry a commit
certificate, so they never fork; the node drives their rounds.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from aitbc_p2p.chain.models import BlockHeader
from aitbc_p2p.types import Address


class ConsensusEngine(Protocol):
    name: str
    bft: bool
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

    def fork_score(self, header: BlockHeader) -> tuple[int, ...]:
        """Fork choice: of two tips, the one with the higher score is the head."""
        ...

    def final_depth(self, proposers: Sequence[Address]) -> int:
        """How many blocks at the top of a chain are not final yet, given the proposers of
        its blocks from the head down (the head's first; as many as the node holds, up to
        its reorg window). Fork choice never reverts a final block. ``len(proposers)``:
        none of them is final."""
        ...
