"""Building and validating blocks against a parent and a state view (pure)."""

from __future__ import annotations

import logging
from collections.abc import Container, Iterable, Sequence
from dataclasses import dataclass

from aitbc_p2p.chain.commitment import StateTree
from aitbc_p2p.chain.merkle import merkle_root
from aitbc_p2p.chain.models import Block, BlockHeader, Genesis, Transaction, tx_root
from aitbc_p2p.chain.state import Overlay, StateView
from aitbc_p2p.chain.transition import ChainRules, Receipt, apply_tx, apply_txs, check_stateless, genesis_state
from aitbc_p2p.codec import head
from aitbc_p2p.crypto import PrivateKey
from aitbc_p2p.exceptions import TxRejected, ValidationError
from aitbc_p2p.types import ZERO_HASH, Address, Hash32

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class AppliedBlock:
    """A block with the state changes it makes; what a store commits in one batch."""

    block: Block
    state: Overlay
    tree: StateTree
    receipts: tuple[Receipt, ...] = ()


def receipts_root(receipts: Iterable[Receipt]) -> Hash32:
    return merkle_root([r.encode() for r in receipts])


def encode_receipts(receipts: Sequence[Receipt]) -> bytes:
    """The canonical CBOR array of ``receipts``, from each one's cached encoding."""
    return head(4, len(receipts)) + b"".join(r.encode() for r in receipts)


def genesis_block(genesis: Genesis) -> AppliedBlock:
    state = genesis_state(genesis)
    tree = state.tree()
    header = BlockHeader(
        chain_id=genesis.chain_id,
        height=0,
        parent=ZERO_HASH,
        timestamp_ms=genesis.timestamp_ms,
        proposer=Address(""),
        tx_root=tx_root(()),
        state_root=tree.root,
        receipts_root=receipts_root(()),
    )
    return AppliedBlock(Block(header, ()), state, tree)


def build_block(
    key: PrivateKey,
    parent: BlockHeader,
    view: StateView,
    candidates: Iterable[Transaction],
    rules: ChainRules,
    *,
    timestamp_ms: int,
    max_txs: int,
    verified: Container[Hash32] = frozenset(),
    round: int = 0,
) -> tuple[AppliedBlock, list[tuple[Transaction, TxRejected]]]:
    """Build and sign the next block from candidate transactions, in order.

    Candidates that no longer apply are left out and returned with their reason.
    Signatures of candidates whose hash is in ``verified`` are not checked again.
    """
    height = parent.height + 1
    state = Overlay(view)
    included: list[Transaction] = []
    receipts: list[Receipt] = []
    dropped: list[tuple[Transaction, TxRejected]] = []
    for tx in candidates:
        if len(included) >= max_txs:
            break
        try:
            check_stateless(tx, rules, verified=tx.hash in verified)
            # a refusal changes nothing
            receipts.append(apply_tx(state, tx, height=height, rules=rules, index=len(included)))
        except TxRejected as e:
            dropped.append((tx, e))
            continue
        included.append(tx)
    tree = state.tree()
    header = BlockHeader(
        chain_id=rules.chain_id,
        height=height,
        parent=parent.hash,
        timestamp_ms=max(timestamp_ms, parent.timestamp_ms),
        proposer=key.address,
        round=round,
        tx_root=tx_root(included),
        state_root=tree.root,
        receipts_root=receipts_root(receipts),
    ).signed(key)
    return AppliedBlock(Block(header, tuple(included)), state, tree, tuple(receipts)), dropped


def validate_block(
    block: Block,
    parent: BlockHeader,
    view: StateView,
    rules: ChainRules,
    *,
    verified: Container[Hash32] = frozenset(),
) -> AppliedBlock:
    """Check a block against its parent and the parent's state; return its state changes.

    Consensus rules (who may propose, timing) are checked by the engine, not here.
    Signatures of transactions whose hash is in ``verified`` are not checked again.

    Raises:
        ValidationError: any structural, signature, transaction or commitment failure.
    """
    h = block.header
    if h.chain_id != rules.chain_id:
        raise ValidationError(f"block for chain {h.chain_id!r}")
    if h.height != parent.height + 1 or h.parent != parent.hash:
        raise ValidationError(f"block {h.height} does not extend {parent.height}")
    if h.timestamp_ms < parent.timestamp_ms:
        raise ValidationError("block timestamp goes backwards")
    h.verify_signature()
    if tx_root(block.txs) != h.tx_root:
        raise ValidationError("tx_root does not match the transactions")
    try:
        state, receipts = apply_txs(view, block.txs, rules, height=h.height, verified=verified)
    except TxRejected as e:
        raise ValidationError(f"block {h.height} holds an invalid transaction: {e}") from e
    if receipts_root(receipts) != h.receipts_root:
        raise ValidationError(f"block {h.height} receipts_root mismatch")
    tree = state.tree()
    if tree.root != h.state_root:
        raise ValidationError(f"block {h.height} state_root mismatch")
    return AppliedBlock(block, state, tree, tuple(receipts))
