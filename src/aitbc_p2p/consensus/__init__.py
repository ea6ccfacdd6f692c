"""L2: pluggable consensus engines, registered by name and chosen by the genesis."""

from aitbc_p2p.consensus.abc import ConsensusEngine
from aitbc_p2p.consensus.engines import ENGINES, PoaEngine, PosEngine, SoloEngine, engine_for, register_engine

__all__ = ["ENGINES", "ConsensusEngine", "PoaEngine", "PosEngine", "SoloEngine", "engine_for", "register_engine"]
