"""L2: pluggable consensus engines, registered by name and chosen by the genesis."""

from aitbc_p2p.consensus.abc import BftEngine, ConsensusEngine, ForkChoiceEngine
from aitbc_p2p.consensus.engines import ENGINES, PoaEngine, PosEngine, SoloEngine, engine_for, register_engine
from aitbc_p2p.consensus.finality import (
    FINALITY_WINDOW,
    CertifiedFinality,
    FinalityPolicy,
    ForkChoiceFinality,
    finality_for,
)

__all__ = [
    "ENGINES",
    "FINALITY_WINDOW",
    "BftEngine",
    "CertifiedFinality",
    "ConsensusEngine",
    "FinalityPolicy",
    "ForkChoiceEngine",
    "ForkChoiceFinality",
    "PoaEngine",
    "PosEngine",
    "SoloEngine",
    "engine_for",
    "finality_for",
    "register_engine",
]
