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

from aitbc_p2p.chain.models import Transaction, check_tx_signature
from aitbc_p2p.chain.transition import ChainRules, check_stateless
from aitbc_p2p.exceptions import TxRejected
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
