"""Stateless checks of many transactions at once: the work of a verifying worker.

Pure functions whose arguments and results pickle cheaply, so that the node can run them
in worker processes (:mod:`aitbc_p2p.node.verify`), where decoding and signature checks
use every core without contending for the main process's GIL, or in a thread.

Positions in results are offsets into the caller's whole batch (``start`` + the index in
the chunk), so the caller concatenates chunk results in order without renumbering.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aitbc_p2p.chain.models import Block, Transaction, check_tx_signature
from aitbc_p2p.chain.transition import ChainRules, check_stateless
from aitbc_p2p.codec import decode
from aitbc_p2p.exceptions import CodecError, TxRejected, ValidationError
from aitbc_p2p.types import Address, Hash32

SignatureItem = tuple[Hash32, bytes, Address]
"""What checking one signature needs: (signing digest, signature, claimed sender)."""


@dataclass(slots=True)
class Checked:
    """The stateless verdict on a run of encoded transactions, both lists in input order."""

    txs: list[Transaction] = field(default_factory=list)
    """Decoded, on the right chain, paying the fee floor, signed by their sender."""
    rejected: list[tuple[int, TxRejected]] = field(default_factory=list)
    """(position, reason) of each one refused."""


def check_encoded(encoded: Sequence[bytes], rules: ChainRules, start: int = 0) -> Checked:
    """Decode each transaction and apply every stateless rule, its signature included.

    Never raises for bad input: each refusal is reported with its position and reason.
    """
    out = Checked()
    for i, data in enumerate(encoded, start):
        try:
            tx = Transaction.decode(data)
            check_stateless(tx, rules)
        except TxRejected as e:
            out.rejected.append((i, e))
        else:
            out.txs.append(tx)
    return out


def signature_item(tx: Transaction) -> SignatureItem:
    return (tx.signing_digest(), tx.signature, tx.sender)


def check_signatures(items: Sequence[SignatureItem], start: int = 0) -> list[tuple[int, TxRejected]]:
    """(position, BadSignature) for each item whose signature does not recover to its sender."""
    bad: list[tuple[int, TxRejected]] = []
    for i, item in enumerate(items, start):
        try:
            check_tx_signature(*item)
        except TxRejected as e:
            bad.append((i, e))
    return bad


@dataclass(slots=True)
class CheckedBlock:
    """A block decoded from its canonical bytes, with its transactions' signatures checked."""

    block: Block | None = None
    """None: the bytes are not a canonical block (``error`` says why)."""
    error: str = ""
    bad: list[tuple[int, TxRejected]] = field(default_factory=list)
    """(position, BadSignature) of each transaction whose signature fails."""

    def verified(self) -> set[Hash32]:
        """Hashes of the block's transactions whose signatures hold."""
        if self.block is None:
            return set()
        bad = {i for i, _ in self.bad}
        return {tx.hash for i, tx in enumerate(self.block.txs) if i not in bad}


def check_block(data: bytes) -> CheckedBlock:
    """Decode a block and check every transaction's signature; never raises for bad input.

    The stateless part of importing a block (what a syncing peer does for each one it is
    sent); its header, consensus and state are checked in order, on the node's side.
    """
    try:
        block = Block.decode(data)
    except ValidationError as e:
        return CheckedBlock(error=str(e))
    return CheckedBlock(block, bad=check_signatures([signature_item(tx) for tx in block.txs]))


def split_block_message(obj: object) -> tuple[Block, Any]:
    """A decoded block-topic message ``[block, certificate]`` (specs/topics.md): the block
    parsed, the certificate as it was decoded (the consensus layer parses it). Raises
    ValidationError."""
    if not isinstance(obj, list) or len(obj) != 2:
        raise ValidationError("a block message is [block, certificate]")
    return Block.from_wire(obj[0]), obj[1]


def check_block_message(data: bytes, max_size: int = 8 << 20) -> tuple[CheckedBlock, Any]:
    """A gossiped block message decoded, its header's signature and every transaction's
    signature checked: (the block, the certificate as decoded CBOR). Never raises for bad
    input: a malformed message or a header not signed by its proposer is a CheckedBlock
    with no block and the reason in ``error``."""
    try:
        block, certificate = split_block_message(decode(data, max_size=max_size))
        block.header.verify_signature()
    except (ValidationError, CodecError) as e:
        return CheckedBlock(error=str(e)), None
    return CheckedBlock(block, bad=check_signatures([signature_item(tx) for tx in block.txs])), certificate
