"""The transaction pool (pure; the node owns it and passes state views in).

Per sender, transactions wait in two queues: *ready* (nonces contiguous from the
committed nonce, each checked to apply after the ones before it) and *future* (a capped
queue of nonces beyond a gap, checked only for shape, signature and fee). Block building
takes ready transactions by fee, each sender's in nonce order. A transaction at a nonce
already pending replaces it if its fee is at least ``replace_bump_pct`` higher. A full
pool evicts its cheapest tail transaction for a better-paying one. Every refusal is a
named :class:`TxRejected` (specs/transactions.md, "Mempool").
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from aitbc_p2p.chain.models import Block, Transaction
from aitbc_p2p.chain.state import Overlay, StateView
from aitbc_p2p.chain.transition import ChainRules, apply_tx, check_stateless
from aitbc_p2p.exceptions import TxRejected
from aitbc_p2p.types import Address, Hash32

DEFAULT_MAX_SIZE = 10_000
DEFAULT_MAX_PER_SENDER = 64
DEFAULT_MAX_FUTURE_PER_SENDER = DEFAULT_MAX_PER_SENDER
"""As many as a sender may have pending: peers check gossiped bundles concurrently and
admit them in the order the checks end, so a burst (a provider's receipts for 50 jobs)
can arrive last nonce first. With a smaller cap the overflow was dropped, the gap behind
it lasted until the sender's re-announce, and receipts missed their escrows' deadlines."""
DEFAULT_REPLACE_BUMP_PCT = 10
DEFAULT_MAX_FUTURE = DEFAULT_MAX_SIZE // 4
"""Future transactions in all: they pay nothing until their gap fills, so they may hold
at most a quarter of the pool (specs/transactions.md, "Mempool")."""
DEFAULT_FUTURE_TTL_BLOCKS = 300
"""Blocks a future transaction waits for its gap to fill before it is dropped."""


@dataclass(frozen=True, slots=True)
class PoolStats:
    size: int
    senders: int
    future: int
    admitted: int
    rejected: int
    evicted: int
    replaced: int
    expired: int


class Mempool:
    def __init__(
        self,
        rules: ChainRules,
        *,
        max_size: int = DEFAULT_MAX_SIZE,
        max_per_sender: int = DEFAULT_MAX_PER_SENDER,
        max_future_per_sender: int = DEFAULT_MAX_FUTURE_PER_SENDER,
        replace_bump_pct: int = DEFAULT_REPLACE_BUMP_PCT,
        max_future: int = DEFAULT_MAX_FUTURE,
        future_ttl_blocks: int = DEFAULT_FUTURE_TTL_BLOCKS,
    ) -> None:
        self.rules = rules
        self.max_size = max_size
        self.max_per_sender = max_per_sender
        self.max_future_per_sender = max_future_per_sender
        self.replace_bump_pct = replace_bump_pct
        self.max_future = max_future
        self.future_ttl_blocks = future_ttl_blocks
        self._ready: dict[Address, dict[int, Transaction]] = {}
        self._future: dict[Address, dict[int, Transaction]] = {}
        self._by_hash: dict[Hash32, Transaction] = {}
        self._future_since: dict[Hash32, int] = {}
        """Height at which each future transaction was admitted (for its expiry)."""
        self.rejected_by_reason: dict[str, int] = {}
        """Refusals since start by reason (a closed set: exceptions.REJECTION_REASONS), for metrics."""
        self._height = 0
        """The latest committed height this pool has heard of."""
        # Per sender: the view with its ready queue applied, so admitting the next nonce
        # costs one apply. Dropped when the sender's queue changes other than by appending,
        # or when the committed state moves.
        self._projected: dict[Address, Overlay] = {}
        self._counts = {"admitted": 0, "rejected": 0, "evicted": 0, "replaced": 0, "expired": 0}

    def __len__(self) -> int:
        return len(self._by_hash)

    def __contains__(self, tx_hash: object) -> bool:
        return tx_hash in self._by_hash

    def statistics(self) -> PoolStats:
        senders = len(set(self._ready) | set(self._future))
        c = self._counts
        return PoolStats(
            len(self), senders, len(self._future_since), c["admitted"], c["rejected"], c["evicted"], c["replaced"],
            c["expired"],
        )  # fmt: skip

    # ------------------------------------------------------------- admission
    def add(self, tx: Transaction, view: StateView, *, height: int, verified: bool = False) -> list[Transaction]:
        """Admit ``tx`` or raise :class:`TxRejected` with a named reason; nothing changes then.

        ``verified``: its signature was already checked (e.g. in a parallel batch). Every
        pooled transaction has a verified signature, so the pool doubles as the set of
        hashes that block building and validation need not verify again.

        Returns the transactions that left the pool to make room (replaced or evicted).
        """
        try:
            out = self._admit(tx, view, height, verified)
        except TxRejected as e:
            self._counts["rejected"] += 1
            self.rejected_by_reason[e.reason] = self.rejected_by_reason.get(e.reason, 0) + 1
            raise
        self._counts["admitted"] += 1
        return out

    def _admit(self, tx: Transaction, view: StateView, height: int, verified: bool) -> list[Transaction]:
        self._height = max(self._height, height)
        if tx.hash in self._by_hash:
            raise TxRejected("Duplicate", "transaction is already pending")
        check_stateless(tx, self.rules, verified=verified)
        committed = view.account(tx.sender).nonce
        if tx.nonce < committed:
            raise TxRejected("NonceTooLow", f"nonce {tx.nonce} already used", expected=committed)
        ready = self._ready.get(tx.sender, {})
        future = self._future.get(tx.sender, {})
        following = committed + len(ready)
        old = ready.get(tx.nonce) or future.get(tx.nonce)
        if old is not None:
            return self._replace(old, tx, view, height)
        if len(ready) + len(future) >= self.max_per_sender:
            raise TxRejected("PoolFull", f"this sender has {self.max_per_sender} pending transactions")
        if tx.nonce >= committed + self.max_per_sender:
            raise TxRejected(
                "NonceTooHigh",
                f"nonce {tx.nonce} is more than {self.max_per_sender - 1} past the next one",
                expected=following,
            )
        if tx.nonce > following:
            if len(self._future_since) >= self.max_future:
                raise TxRejected("PoolFull", f"the pool holds {self.max_future} future-nonce transactions")
            if len(future) >= self.max_future_per_sender:
                raise TxRejected(
                    "PoolFull", f"at most {self.max_future_per_sender} future-nonce transactions per sender"
                )
            if view.account(tx.sender).balance < tx.fee:
                raise TxRejected("InsufficientFunds", "the balance does not cover the fee")
        if tx.nonce > following:
            evicted = self._make_room(tx)  # evicts another sender's transaction, if any
            self._future.setdefault(tx.sender, {})[tx.nonce] = tx
            self._future_since[tx.hash] = height
        else:
            projected = self._projection(tx.sender, view, height)
            if len(self._by_hash) < self.max_size:
                # A refused transaction changes nothing, so it may go straight on top.
                apply_tx(projected, tx, height=height + 1, rules=self.rules)  # raises a named reason
                evicted = []
            else:  # its own reason before PoolFull, and the projection untouched by either
                trial = Overlay(projected)
                apply_tx(trial, tx, height=height + 1, rules=self.rules)
                evicted = self._make_room(tx)
                projected.absorb(trial)
            self._ready.setdefault(tx.sender, {})[tx.nonce] = tx
            self._promote(tx.sender, view, height)
        self._by_hash[tx.hash] = tx
        return evicted

    def _projection(self, sender: Address, view: StateView, height: int) -> Overlay:
        projected = self._projected.get(sender)
        if projected is None or projected.base is not view:
            projected = Overlay(view)
            for nonce in sorted(self._ready.get(sender, {})):
                apply_tx(projected, self._ready[sender][nonce], height=height + 1, rules=self.rules)
            self._projected[sender] = projected
        return projected

    def _promote(self, sender: Address, view: StateView, height: int) -> None:
        """Move future transactions that the new ready tail makes contiguous."""
        future = self._future.get(sender)
        while future:
            following = view.account(sender).nonce + len(self._ready[sender])
            tx = future.pop(following, None)
            if tx is None:
                break
            self._future_since.pop(tx.hash, None)
            try:
                apply_tx(self._projection(sender, view, height), tx, height=height + 1, rules=self.rules)
            except TxRejected:  # the projection is unchanged
                self._forget(tx)
                continue
            self._ready[sender][tx.nonce] = tx
        if not future:
            self._future.pop(sender, None)

    def _replace(self, old: Transaction, tx: Transaction, view: StateView, height: int) -> list[Transaction]:
        floor = old.fee + max(1, old.fee * self.replace_bump_pct // 100)
        if tx.fee < floor:
            raise TxRejected(
                "ReplacementUnderpriced", f"replacing nonce {tx.nonce} needs a fee of at least {floor}", min_fee=floor
            )
        ready = self._ready.get(tx.sender, {})
        if tx.nonce not in ready:  # a future transaction: no state to check yet
            self._future[tx.sender][tx.nonce] = tx
            self._forget(old, keep_slot=True)
            self._by_hash[tx.hash] = tx
            self._future_since[tx.hash] = height
            self._counts["replaced"] += 1
            return [old]
        # Replay the ready queue with the replacement; later ones that no longer apply leave.
        trial = Overlay(view)
        kept: dict[int, Transaction] = {}
        left: list[Transaction] = [old]
        for nonce in sorted(ready):
            candidate = tx if nonce == tx.nonce else ready[nonce]
            try:
                apply_tx(trial, candidate, height=height + 1, rules=self.rules)
            except TxRejected:
                if candidate is tx:
                    raise
                left += [ready[n] for n in sorted(ready) if n >= nonce]
                break
            kept[nonce] = candidate
        for gone in left:
            self._forget(gone)
        self._ready[tx.sender] = kept
        self._by_hash[tx.hash] = tx
        self._projected[tx.sender] = trial
        self._counts["replaced"] += 1
        return left

    def _make_room(self, incoming: Transaction) -> list[Transaction]:
        """Evict the cheapest tail transaction if the pool is full and ``incoming`` pays more."""
        if len(self._by_hash) < self.max_size:
            return []
        tails = [max(q.items())[1] for q in self._future.values() if q]
        tails += [max(q.items())[1] for s, q in self._ready.items() if q and not self._future.get(s)]
        cheapest = min(tails, key=lambda t: t.fee, default=None)
        if cheapest is None or cheapest.fee >= incoming.fee or cheapest.sender == incoming.sender:
            raise TxRejected("PoolFull", f"the pool holds {self.max_size} transactions that pay at least as much")
        self._forget(cheapest)
        self._counts["evicted"] += 1
        return [cheapest]

    def _forget(self, tx: Transaction, *, keep_slot: bool = False) -> None:
        self._by_hash.pop(tx.hash, None)
        self._future_since.pop(tx.hash, None)
        self._projected.pop(tx.sender, None)
        if keep_slot:
            return
        for queues in (self._ready, self._future):
            queue = queues.get(tx.sender)
            if queue is not None and queue.get(tx.nonce) is tx:
                del queue[tx.nonce]
                if not queue:
                    del queues[tx.sender]

    # ---------------------------------------------------------------- queries
    def pending_nonce(self, address: Address, view: StateView) -> int:
        """The next nonce for ``address``, counting its ready transactions."""
        return view.account(address).nonce + len(self._ready.get(address, {}))

    def candidates(self, limit: int | None = None) -> Iterator[Transaction]:
        """Ready transactions, highest fee first, each sender's in nonce order (the first
        ``limit`` of them). Iterate on the thread that changes the pool, or take a list."""
        if limit is not None:
            yield from itertools.islice(self.candidates(), limit)
            return
        order = itertools.count()
        heads: list[tuple[int, int, Iterator[Transaction]]] = []
        firsts: dict[int, Transaction] = {}
        for queue in self._ready.values():
            it = iter([queue[n] for n in sorted(queue)])
            first = next(it, None)
            if first is not None:
                seq = next(order)
                firsts[seq] = first
                heads.append((-first.fee, seq, it))
        heapq.heapify(heads)
        while heads:
            _, seq, it = heapq.heappop(heads)
            yield firsts.pop(seq)
            following = next(it, None)
            if following is not None:
                seq = next(order)
                firsts[seq] = following
                heapq.heappush(heads, (-following.fee, seq, it))

    def pending(self) -> list[Transaction]:
        return list(self._by_hash.values())

    def is_ready(self, tx_hash: Hash32) -> bool:
        tx = self._by_hash.get(tx_hash)
        return tx is not None and self._ready.get(tx.sender, {}).get(tx.nonce) is tx

    # ------------------------------------------------------------ maintenance
    def remove(self, txs: Iterable[Transaction]) -> None:
        for tx in txs:
            if tx.hash in self._by_hash:
                self._forget(tx)
        self._projected.clear()

    def prune(self, view: StateView, senders: Iterable[Address] | None = None) -> None:
        """After the committed state moved: drop used nonces, re-queue the rest.

        ``senders``: only theirs can have moved (the senders of the committed block's
        transactions: a nonce moves only with its own account's transactions); default all.
        """
        self._projected.clear()
        for sender in list(set(self._ready) | set(self._future)) if senders is None else set(senders):
            committed = view.account(sender).nonce
            queue = self._ready.get(sender)
            if queue and sender not in self._future and next(iter(queue)) == committed:
                continue  # the usual case: the block took a prefix of the ready queue
            waiting = {**self._future.pop(sender, {}), **self._ready.pop(sender, {})}
            ready: dict[int, Transaction] = {}
            future: dict[int, Transaction] = {}
            for nonce in sorted(waiting):
                tx = waiting[nonce]
                if nonce < committed:
                    self._by_hash.pop(tx.hash, None)
                    self._future_since.pop(tx.hash, None)
                elif nonce == committed + len(ready):
                    ready[nonce] = tx
                    self._future_since.pop(tx.hash, None)
                else:
                    future[nonce] = tx
                    self._future_since.setdefault(tx.hash, self._height)
            if ready:
                self._ready[sender] = ready
            if future:
                self._future[sender] = future

    def settle(self, view: StateView, committed: Iterable[Block]) -> None:
        """After the committed state moved to ``view``: drop the committed blocks'
        transactions and prune their senders; with no block (a revert), every sender."""
        blocks = list(committed)
        for block in blocks:
            self.remove(block.txs)
        if blocks:
            self._height = blocks[-1].height
        self.prune(view, {tx.sender for block in blocks for tx in block.txs} if blocks else None)
        if blocks:
            self.expire(self._height)

    def expire(self, height: int) -> list[Transaction]:
        """Drop future transactions that waited more than ``future_ttl_blocks`` blocks for
        their gap to fill (they pay nothing while they wait); returns them."""
        cutoff = height - self.future_ttl_blocks
        stale: list[Transaction] = []
        for h in [h for h, since in self._future_since.items() if since < cutoff]:
            tx = self._by_hash.get(h)
            if tx is None:  # never expected: _forget keeps the two maps together
                del self._future_since[h]
                continue
            self._forget(tx)
            stale.append(tx)
        self._counts["expired"] += len(stale)
        return stale

    def reinject(self, txs: Iterable[Transaction], view: StateView, *, height: int) -> list[Transaction]:
        """Re-admit transactions of reverted blocks; return those now pending again."""
        back: list[Transaction] = []
        for tx in sorted(txs, key=lambda t: (t.sender, t.nonce)):
            try:
                self.add(tx, view, height=height, verified=True)
            except TxRejected:
                continue
            back.append(tx)
        return back
