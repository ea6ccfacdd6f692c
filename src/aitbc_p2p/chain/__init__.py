"""L1: chain models, state, the pure transition, block building and validation."""

from aitbc_p2p.chain.blocks import AppliedBlock, build_block, genesis_block, validate_block
from aitbc_p2p.chain.commitment import StateProof, StateTree
from aitbc_p2p.chain.genesis import genesis_from_json, genesis_to_json
from aitbc_p2p.chain.models import Block, BlockHeader, Genesis, Transaction, TxKind, Verdict
from aitbc_p2p.chain.state import Account, Job, JobStatus, Overlay, StateView
from aitbc_p2p.chain.transition import ChainRules, Receipt, apply_tx, check_stateless
from aitbc_p2p.chain.votes import Vote, VoteStep

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
    "Receipt",
    "StateProof",
    "StateTree",
    "StateView",
    "Transaction",
    "TxKind",
    "Verdict",
    "Vote",
    "VoteStep",
    "apply_tx",
    "build_block",
    "check_stateless",
    "genesis_block",
    "genesis_from_json",
    "genesis_to_json",
    "validate_block",
]
