"""Engines: ``solo``, ``poa`` (round-robin with backup proposers) and ``pos`` (stake-weighted
proposers, BFT finality). Registered by name; the genesis picks one (specs/consensus.md).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

from aitbc_p2p.chain.models import BlockHeader, Genesis
from aitbc_p2p.codec import encode
from aitbc_p2p.consensus.abc import ConsensusEngine
from aitbc_p2p.crypto import sha256
from aitbc_p2p.crypto.keys import validate_address
from aitbc_p2p.exceptions import ConsensusError, CryptoError
from aitbc_p2p.types import Address

DEFAULT_BLOCK_TIME_MS = 1000
MAX_BACKUP_ROUNDS = 64


class PoaEngine:
    """Round-robin proof of authority with backup proposers and signer recency.

    Signer recency (Clique's rule, EIP-225): an authority proposes at most one of any
    ``floor(n/2) + 1`` consecutive blocks, so a chain grows only while a majority of the
    authorities signs it, and a minority cut off by a partition stalls instead of growing
    a fork. The schedule therefore depends on the branch: of the authorities in rotation
    order from ``height % n``, those that proposed one of the last ``floor(n/2)`` blocks
    (``recent``) are skipped, and round ``r`` belongs to the ``r``-th of the rest. Round 0
    is due one block time after the parent; round ``r`` a further ``r * backup_ms``
    later, so when a proposer is down the next one steps in, and a backup's block costs
    the heights after it nothing (the authority it bars is skipped, not waited for).
    Fork choice prefers the longer chain, then the tip proposed in the lower round, then
    the lower block id.
    """

    name = "poa"
    kind: Literal["fork_choice"] = "fork_choice"

    def __init__(
        self,
        authorities: Sequence[Address],
        block_time_ms: int = DEFAULT_BLOCK_TIME_MS,
        backup_ms: int | None = None,
    ) -> None:
        if not authorities:
            raise ConsensusError(f"{self.name} needs at least one authority")
        if len(set(authorities)) != len(authorities):
            raise ConsensusError("authorities must be distinct")
        if block_time_ms <= 0:
            raise ConsensusError("block_time_ms must be positive")
        self.authorities = tuple(authorities)
        self.block_time_ms = block_time_ms
        self.backup_ms = backup_ms if backup_ms is not None else 2 * block_time_ms
        if self.backup_ms <= 0:
            raise ConsensusError("backup_ms must be positive")

    @property
    def rounds(self) -> int:
        return len(self.authorities)

    @property
    def recency(self) -> int:
        """How many blocks below a new block its proposer must not have proposed."""
        return len(self.authorities) // 2

    def proposer(self, height: int, round: int = 0, recent: Sequence[Address] = ()) -> Address:
        n = len(self.authorities)
        barred = set(recent[: self.recency])
        eligible = [a for i in range(n) if (a := self.authorities[(height + i) % n]) not in barred]
        return eligible[round % len(eligible)]  # at most floor(n/2) of n are barred: never empty

    def due_ms(self, parent: BlockHeader, round: int = 0) -> int:
        return parent.timestamp_ms + self.block_time_ms + round * self.backup_ms

    def validate_header(self, header: BlockHeader, parent: BlockHeader) -> None:
        """What the header alone shows; who may propose it depends on its branch
        (:meth:`check_recency`)."""
        if header.round >= max(MAX_BACKUP_ROUNDS, len(self.authorities)):
            raise ConsensusError(f"block {header.height} claims round {header.round}")
        if header.proposer not in self.authorities:
            raise ConsensusError(f"block {header.height} is proposed by {header.proposer}, not an authority")
        if header.timestamp_ms < self.due_ms(parent, header.round):
            raise ConsensusError(f"block {header.height} proposed before its slot")

    def may_have_proposed(self, header: BlockHeader) -> bool:
        """Whether some branch schedules ``header``'s proposer at its height and round (the
        stateless check a relay can make)."""
        return header.proposer in self.authorities and header.round < max(MAX_BACKUP_ROUNDS, len(self.authorities))

    def check_recency(self, header: BlockHeader, recent: Sequence[Address]) -> None:
        """Refuse ``header`` unless its branch schedules its proposer at its height and
        round; ``recent``: the proposers of the blocks below it on that branch, its
        parent's first (at least :attr:`recency` of them, fewer near the genesis)."""
        if header.proposer in recent[: self.recency]:
            raise ConsensusError(
                f"block {header.height}: {header.proposer} proposed one of the {self.recency} blocks below it"
            )
        expected = self.proposer(header.height, header.round, recent)
        if header.proposer != expected:
            raise ConsensusError(f"block {header.height} round {header.round} must be proposed by {expected}")

    def fork_score(self, header: BlockHeader) -> tuple[int, ...]:
        return (header.height, -header.round, -int.from_bytes(header.hash, "big"))

    def final_depth(self, proposers: Sequence[Address]) -> int:
        """A block is final once it is ``n`` blocks deep (n authorities) *and* it and the
        blocks above it were proposed by a majority of the authorities, each counted once.

        The depth absorbs ordinary races at the tip (two authorities proposing at once
        while blocks are in flight), as it always did. The majority is what a partition
        cannot fake: a minority cut off keeps proposing on its turns and as everyone's
        backup, and soon passes any depth alone, but it never makes a block final, so when
        the network heals it reverts onto the majority's longer chain (specs/consensus.md).
        """
        n = len(self.authorities)
        need = n // 2 + 1
        signers: set[Address] = set()
        for depth, proposer in enumerate(proposers):
            signers.add(proposer)
            if len(signers) >= need:
                return min(len(proposers), max(depth, n))
        return len(proposers)


class SoloEngine(PoaEngine):
    """A single authority; for a one-peer devnet."""

    name = "solo"

    def __init__(self, authorities: Sequence[Address], block_time_ms: int = DEFAULT_BLOCK_TIME_MS) -> None:
        if len(authorities) != 1:
            raise ConsensusError("solo takes exactly one authority")
        super().__init__(authorities, block_time_ms)

    def final_depth(self, proposers: Sequence[Address]) -> int:
        return 0


class PosEngine:
    """Stake-weighted proof of stake with Tendermint-style BFT finality.

    The validators and their weights are the genesis stakes of the listed validators.
    The proposer of ``(height, round)`` is drawn by stake from SHA-256 of the chain id,
    height and round. A block is committed only with precommits from validators holding
    more than 2/3 of the stake, so it is final at once; the rounds are run by the node
    (:mod:`aitbc_p2p.consensus.tendermint`).
    """

    name = "pos"
    kind: Literal["bft"] = "bft"

    def __init__(
        self,
        chain_id: str,
        stakes: Mapping[Address, int],
        block_time_ms: int = DEFAULT_BLOCK_TIME_MS,
        round_timeout_ms: int | None = None,
    ) -> None:
        if not stakes or any(w <= 0 for w in stakes.values()):
            raise ConsensusError("pos needs validators with positive genesis stake")
        self.chain_id = chain_id
        self.weights = dict(sorted(stakes.items()))
        self.total = sum(self.weights.values())
        self.block_time_ms = block_time_ms
        self.round_timeout_ms = round_timeout_ms if round_timeout_ms is not None else max(1000, 2 * block_time_ms)

    @property
    def validators(self) -> tuple[Address, ...]:
        return tuple(self.weights)

    def quorum(self) -> int:
        """The least stake that is more than 2/3 of the total."""
        return self.total * 2 // 3 + 1

    def proposer(self, height: int, round: int = 0) -> Address:
        draw = int.from_bytes(sha256(encode(["proposer", self.chain_id, height, round])), "big") % self.total
        for address, weight in self.weights.items():
            if draw < weight:
                return address
            draw -= weight
        raise AssertionError("unreachable: draw < total")

    def due_ms(self, parent: BlockHeader, round: int = 0) -> int:
        return parent.timestamp_ms + self.block_time_ms

    def may_have_proposed(self, header: BlockHeader) -> bool:
        return header.proposer == self.proposer(header.height, header.round)

    def validate_header(self, header: BlockHeader, parent: BlockHeader) -> None:
        if header.round > 2**32 - 1:
            raise ConsensusError("round out of range")
        expected = self.proposer(header.height, header.round)
        if header.proposer != expected:
            raise ConsensusError(f"block {header.height} round {header.round} must be proposed by {expected}")
        if header.timestamp_ms < self.due_ms(parent):
            raise ConsensusError(f"block {header.height} proposed before its slot")


def _authorities(params: Mapping[str, Any], key: str = "authorities") -> list[Address]:
    try:
        return [validate_address(a) for a in params.get(key, [])]
    except CryptoError as e:
        raise ConsensusError(f"bad {key}: {e}") from e


def _int(params: Mapping[str, Any], key: str, default: int | None) -> int | None:
    value = params.get(key, default)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ConsensusError(f"{key} must be a positive integer")
    return value


def _block_time(p: Mapping[str, Any]) -> int:
    value = _int(p, "block_time_ms", DEFAULT_BLOCK_TIME_MS)
    assert value is not None
    return value


def _pos(genesis: Genesis) -> ConsensusEngine:
    p = genesis.consensus
    validators = _authorities(p, "validators")
    stakes = {a: genesis.stake_of(a) for a in validators}
    if len(stakes) != len(validators):
        raise ConsensusError("validators must be distinct")
    return PosEngine(genesis.chain_id, stakes, _block_time(p), _int(p, "round_timeout_ms", None))


ENGINES: dict[str, Callable[[Genesis], ConsensusEngine]] = {
    "solo": lambda g: SoloEngine(_authorities(g.consensus), _block_time(g.consensus)),
    "poa": lambda g: PoaEngine(
        _authorities(g.consensus), _block_time(g.consensus), _int(g.consensus, "backup_ms", None)
    ),
    "pos": _pos,
}


def register_engine(name: str, factory: Callable[[Genesis], ConsensusEngine]) -> None:
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
    return factory(genesis)
