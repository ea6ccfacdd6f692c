"""Finality policies: what the chain service asks instead of branching on the engine.

A policy answers four questions about the main chain: is a new block's certificate good
(:meth:`check`), what to store with it (:meth:`certificate_bytes`), does a competing tip
win (:meth:`better`), and how many blocks at the top can still be reverted
(:meth:`final_depth`). It is told of every commit and revert so that it can answer the
last without reading the store. Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from aitbc_p2p.chain.models import Block, BlockHeader
from aitbc_p2p.chain.votes import Vote
from aitbc_p2p.consensus.abc import BftEngine, ConsensusEngine, ForkChoiceEngine
from aitbc_p2p.consensus.tendermint import encode_certificate, verify_certificate
from aitbc_p2p.types import Address

FINALITY_WINDOW = 256
"""Blocks below the head whose proposers a fork-choice engine is shown to decide
finality: a block deeper than this is final whatever they were (the most a reorg ever
reverts)."""


class FinalityPolicy(Protocol):
    def check(self, block: Block, certificate: Sequence[Vote]) -> None:
        """Raise :class:`~aitbc_p2p.exceptions.ConsensusError` if ``certificate`` does
        not commit ``block``."""
        ...

    def certificate_bytes(self, certificate: Sequence[Vote]) -> bytes | None:
        """What the store keeps beside a committed block (None: nothing)."""
        ...

    def better(self, tip: BlockHeader, than: BlockHeader) -> bool:
        """Whether fork choice takes ``tip`` over ``than``."""
        ...

    def committed(self, block: Block) -> None: ...

    def reverted(self, height: int) -> None: ...

    def check_proposer(self, header: BlockHeader, proposer_at: Callable[[int], Address | None]) -> None:
        """Raise :class:`~aitbc_p2p.exceptions.ConsensusError` unless the main chain, of
        which ``header`` is the head's child, schedules its proposer (signer recency)."""
        ...

    def recent(self, head: int, proposer_at: Callable[[int], Address | None]) -> list[Address]:
        """The proposers of the blocks from the head (at ``head``) down that the engine's
        schedule of the head's child depends on (none for BFT)."""
        ...

    def final_depth(self, head: int, proposer_at: Callable[[int], Address | None]) -> int:
        """How many blocks at the top of the main chain (head at ``head``) are not final.
        ``proposer_at``: the proposer of a main-chain block the policy was not told of."""
        ...


class ForkChoiceFinality:
    """Fork-choice engines: the better-scored tip wins; a block is final as deep as the
    engine says from the proposers above it, and always below :data:`FINALITY_WINDOW`."""

    def __init__(self, engine: ForkChoiceEngine, window: int = FINALITY_WINDOW) -> None:
        self.engine = engine
        self.window = window
        self._proposers: dict[int, Address] = {}
        """Proposers of the main chain's recent blocks by height, at most twice the window."""

    def __len__(self) -> int:
        return len(self._proposers)

    def check(self, block: Block, certificate: Sequence[Vote]) -> None:
        return None  # fork choice needs no votes; a certificate sent along is not read

    def certificate_bytes(self, certificate: Sequence[Vote]) -> bytes | None:
        return None

    def better(self, tip: BlockHeader, than: BlockHeader) -> bool:
        return self.engine.fork_score(tip) > self.engine.fork_score(than)

    def committed(self, block: Block) -> None:
        self._proposers[block.height] = block.header.proposer
        if len(self._proposers) > 2 * self.window:  # bounded whether or not anyone asks
            low = block.height - self.window
            self._proposers = {h: p for h, p in self._proposers.items() if h > low}

    def reverted(self, height: int) -> None:
        self._proposers.pop(height, None)

    def recent(self, head: int, proposer_at: Callable[[int], Address | None]) -> list[Address]:
        recent: list[Address] = []
        for h in range(head, max(0, head - self.engine.recency), -1):
            proposer = self._proposers.get(h)
            if proposer is None:  # read once (a stored block decoded), then kept like the others
                proposer = proposer_at(h)
                if proposer is None:
                    break
                self._proposers[h] = proposer
            recent.append(proposer)
        return recent

    def check_proposer(self, header: BlockHeader, proposer_at: Callable[[int], Address | None]) -> None:
        self.engine.check_recency(header, self.recent(header.height - 1, proposer_at))

    def final_depth(self, head: int, proposer_at: Callable[[int], Address | None]) -> int:
        if head == 0:
            return 0
        low = max(1, head - self.window + 1)
        for h in [h for h in self._proposers if h < low or h > head]:
            del self._proposers[h]
        proposers: list[Address] = []
        for h in range(head, low - 1, -1):
            proposer = self._proposers.get(h)
            if proposer is None:
                proposer = proposer_at(h)
                if proposer is None:
                    break
                self._proposers[h] = proposer
            proposers.append(proposer)
            if self.engine.final_depth(proposers) < len(proposers):
                break  # the engine found a final block: deeper ones are final too
        return min(self.engine.final_depth(proposers), head)


class CertifiedFinality:
    """BFT engines: a block commits only with a certificate of more than 2/3 of the
    stake, so it is final at once and no tip is ever better than the head."""

    def __init__(self, engine: BftEngine) -> None:
        self.engine = engine

    def check(self, block: Block, certificate: Sequence[Vote]) -> None:
        verify_certificate(self.engine, block.hash, block.height, certificate)

    def certificate_bytes(self, certificate: Sequence[Vote]) -> bytes | None:
        return encode_certificate(certificate)

    def better(self, tip: BlockHeader, than: BlockHeader) -> bool:
        return False

    def committed(self, block: Block) -> None:
        return None

    def reverted(self, height: int) -> None:
        return None

    def check_proposer(self, header: BlockHeader, proposer_at: Callable[[int], Address | None]) -> None:
        return None  # the certificate is what commits a block, whoever proposed the ones below

    def recent(self, head: int, proposer_at: Callable[[int], Address | None]) -> list[Address]:
        return []

    def final_depth(self, head: int, proposer_at: Callable[[int], Address | None]) -> int:
        return 0


def finality_for(engine: ConsensusEngine) -> FinalityPolicy:
    """The policy of the engine's kind."""
    if engine.kind == "bft":
        return CertifiedFinality(engine)
    return ForkChoiceFinality(engine)


__all__ = ["FINALITY_WINDOW", "CertifiedFinality", "FinalityPolicy", "ForkChoiceFinality", "finality_for"]
