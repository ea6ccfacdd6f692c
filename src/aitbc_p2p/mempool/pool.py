"""A nonce-ordered transaction pool (pure; the node owns it and passes state views in).

Admission runs the stateless checks and the account checks against the committed state
plus the sender's queued transactions, so a transaction accepted here would apply in
the next block unless something ahead of it changes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from aitbc_p2p.chain.models import Transaction
from aitbc_p2p.chain.state import Overlay, StateView
from aitbc_p2p.chain.transition import ChainRules, apply_tx, check_stateless
from aitbc_p2p.exceptions import TxRejected
from aitbc_p2p.types import Address, Hash32

DEFAULT_MAX_SIZE = 10_000
DEFAULT_MAX_PER_SENDER = 64


@dataclass(frozen=True, slots=True)
class PoolStats:
    size: int
    senders: int
    admitted: int
    rejected: int


class Mempool:
    def __init__(
        self,
        rules: ChainRules,
        *,
        max_size: int = DEFAULT_MAX_SIZE,
        max_per_sender: int = DEFAULT_MAX_PER_SENDER,
    ) -> None:
        self.rules = rules
        self.max_size = max_size
        self.max_per_sender = max_per_sender
        self._by_sender: dict[Address, dict[int, Transaction]] = {}
        self._by_hash: dict[Hash32, Transaction] = {}
        # Per sender: committed state with its queue applied, so that admitting the next
        # nonce costs one apply instead of replaying the queue. Dropped whenever the pool
        # loses transactions or the committed state moves (remove / prune).
        self._projected: dict[Address, Overlay] = {}
        self._admitted = 0
        self._rejected = 0

    def __len__(self) -> int:
        return len(self._by_hash)

    def __contains__(self, tx_hash: object) -> bool:
        return tx_hash in self._by_hash

    def statistics(self) -> PoolStats:
        return PoolStats(len(self._by_hash), len(self._by_sender), self._admitted, self._rejected)

    def add(self, tx: Transaction, view: StateView, *, height: int, verified: bool = False) -> None:
        """Admit ``tx`` or raise :class:`TxRejected` with a named reason; nothing changes then.

        ``verified``: its signature was already checked (e.g. in a parallel batch).
        Every pooled transaction has a verified signature, so the pool doubles as the
        set of hashes that block building and validation need not verify again.
        """
        try:
            self._admit(tx, view, height, verified)
        except TxRejected:
            self._rejected += 1
            raise
        self._admitted += 1

    def _admit(self, tx: Transaction, view: StateView, height: int, verified: bool) -> None:
        if tx.hash in self._by_hash:
            raise TxRejected("Duplicate", "transaction is already pending")
        check_stateless(tx, self.rules, verified=verified)
        queue = self._by_sender.get(tx.sender, {})
        if len(self._by_hash) >= self.max_size or len(queue) >= self.max_per_sender:
            raise TxRejected("PoolFull", "the pool or this sender's queue is full")
        if tx.nonce in queue:
            raise TxRejected("Duplicate", f"nonce {tx.nonce} is already pending", nonce=tx.nonce)
        projected = self._projected.get(tx.sender)
        if projected is None or projected.base is not view:
            projected = Overlay(view)
            for nonce in sorted(queue):
                apply_tx(projected, queue[nonce], height=height + 1)
        trial = Overlay(projected)
        apply_tx(trial, tx, height=height + 1)  # raises with a named reason; nothing changed
        for address, account in trial.diff.accounts.items():
            projected.set_account(address, account)
        for job in trial.diff.jobs.values():
            projected.set_job(job)
        if trial.diff.burned is not None:
            projected.set_burned(trial.diff.burned)
        self._projected[tx.sender] = projected
        self._by_sender.setdefault(tx.sender, {})[tx.nonce] = tx
        self._by_hash[tx.hash] = tx

    def pending_nonce(self, address: Address, view: StateView) -> int:
        """The next nonce for ``address``, counting its queued transactions."""
        nonce = view.account(address).nonce
        queue = self._by_sender.get(address, {})
        while nonce in queue:
            nonce += 1
        return nonce

    def candidates(self) -> Iterator[Transaction]:
        """Queued transactions, each sender's in nonce order, senders round-robin."""
        queues = [sorted(q.items()) for q in self._by_sender.values()]
        depth = max((len(q) for q in queues), default=0)
        for i in range(depth):
            for q in queues:
                if i < len(q):
                    yield q[i][1]

    def remove(self, txs: list[Transaction]) -> None:
        self._projected.clear()
        for tx in txs:
            self._drop(tx)

    def _drop(self, tx: Transaction) -> None:
        if self._by_hash.pop(tx.hash, None) is None:
            return
        queue = self._by_sender.get(tx.sender)
        if queue is not None:
            queue.pop(tx.nonce, None)
            if not queue:
                del self._by_sender[tx.sender]

    def prune(self, view: StateView) -> None:
        """Drop transactions whose nonce the committed state has passed."""
        self._projected.clear()
        for sender, queue in list(self._by_sender.items()):
            committed = view.account(sender).nonce
            for nonce in [n for n in queue if n < committed]:
                self._drop(queue[nonce])

    def pending(self) -> list[Transaction]:
        return list(self._by_hash.values())
