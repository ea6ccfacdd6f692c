"""L1: chain models, state, the pure transition, block building and validation."""

from aitbc_p2p.chain.blocks import AppliedBlock, build_block, genesis_block, validate_block
from aitbc_p2p.chain.genesis import genesis_from_json, genesis_to_json
from aitbc_p2p.chain.models import Block, BlockHeader, Genesis, Transaction, TxKind
from aitbc_p2p.chain.state import Account, Job, JobStatus, Overlay, StateDiff, StateView
from aitbc_p2p.chain.transition import ChainRules, apply_tx, check_stateless

__all__ = [
    "Account",
    "AppliedBlock",
    "Block",
    "BlockHeader",
    "ChainRules",
    "Genesis",
    "Job",
    "JobStatus",
    "Overlay",
    "StateDiff",
    "StateView",
    "Transaction",
    "TxKind",
    "apply_tx",
    "build_block",
    "check_stateless",
    "genesis_block",
    "genesis_from_json",
    "genesis_to_json",
    "validate_block",
]
