"""Reference engines: ``solo`` (one authority) and ``poa`` (round-robin authorities).

Both are instant-finality in the skeleton: a peer only ever extends its head with a
block that the engine's schedule allows, so there is nothing to reorganise. Backup
proposers and stake-weighted BFT finality come with the ``pos`` engine (specs/consensus.md).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from aitbc_p2p.chain.models import BlockHeader, Genesis
from aitbc_p2p.consensus.abc import ConsensusEngine
from aitbc_p2p.crypto.keys import validate_address
from aitbc_p2p.exceptions import ConsensusError, CryptoError
from aitbc_p2p.types import Address

DEFAULT_BLOCK_TIME_MS = 1000
MAX_FUTURE_DRIFT_MS = 5000


class PoaEngine:
    """Round-robin proof of authority: authority ``height % n`` proposes block ``height``."""

    name = "poa"

    def __init__(self, authorities: Sequence[Address], block_time_ms: int = DEFAULT_BLOCK_TIME_MS) -> None:
        if not authorities:
            raise ConsensusError(f"{self.name} needs at least one authority")
        if block_time_ms <= 0:
            raise ConsensusError("block_time_ms must be positive")
        self.authorities = tuple(authorities)
        self.block_time_ms = block_time_ms

    def proposer(self, height: int) -> Address:
        return self.authorities[height % len(self.authorities)]

    def due_ms(self, parent: BlockHeader) -> int:
        return parent.timestamp_ms + self.block_time_ms

    def validate_header(self, header: BlockHeader, parent: BlockHeader) -> None:
        expected = self.proposer(header.height)
        if header.proposer != expected:
            raise ConsensusError(f"block {header.height} must be proposed by {expected}")
        if header.timestamp_ms < self.due_ms(parent):
            raise ConsensusError(f"block {header.height} proposed before its slot")

    def is_final(self, height: int, head_height: int) -> bool:
        return height <= head_height


class SoloEngine(PoaEngine):
    """A single authority; for a one-peer devnet."""

    name = "solo"

    def __init__(self, authorities: Sequence[Address], block_time_ms: int = DEFAULT_BLOCK_TIME_MS) -> None:
        if len(authorities) != 1:
            raise ConsensusError("solo takes exactly one authority")
        super().__init__(authorities, block_time_ms)


def _authorities(params: Mapping[str, Any]) -> list[Address]:
    try:
        return [validate_address(a) for a in params.get("authorities", [])]
    except CryptoError as e:
        raise ConsensusError(f"bad authority: {e}") from e


ENGINES: dict[str, Callable[[Mapping[str, Any]], ConsensusEngine]] = {
    "solo": lambda p: SoloEngine(_authorities(p), int(p.get("block_time_ms", DEFAULT_BLOCK_TIME_MS))),
    "poa": lambda p: PoaEngine(_authorities(p), int(p.get("block_time_ms", DEFAULT_BLOCK_TIME_MS))),
}


def register_engine(name: str, factory: Callable[[Mapping[str, Any]], ConsensusEngine]) -> None:
    """Make an engine selectable by name in a genesis document."""
    ENGINES[name] = factory


def engine_for(genesis: Genesis) -> ConsensusEngine:
    """The engine that the genesis fixes for the chain.

    Raises:
        ConsensusError: unknown engine name or bad parameters.
    """
    name = genesis.consensus.get("engine")
    factory = ENGINES.get(str(name))
    if factory is None:
        raise ConsensusError(f"unknown consensus engine {name!r}; known: {sorted(ENGINES)}")
    return factory(genesis.consensus)
