"""The consensus engine seam (specs/consensus.md).

An engine decides who may propose at a height and when, accepts or refuses headers on
consensus grounds, and says when a block is final. Engines are pure: time is a parameter.
"""

from __future__ import annotations

from typing import Protocol

from aitbc_p2p.chain.models import BlockHeader
from aitbc_p2p.types import Address


class ConsensusEngine(Protocol):
    name: str

    def proposer(self, height: int) -> Address:
        """The authority expected to propose the block at ``height``."""
        ...

    def due_ms(self, parent: BlockHeader) -> int:
        """The earliest timestamp (ms) at which the child of ``parent`` may be proposed."""
        ...

    def validate_header(self, header: BlockHeader, parent: BlockHeader) -> None:
        """Raise :class:`~aitbc_p2p.exceptions.ConsensusError` if consensus refuses ``header``."""
        ...

    def is_final(self, height: int, head_height: int) -> bool:
        """Whether the block at ``height`` can no longer be reverted given the head."""
        ...
