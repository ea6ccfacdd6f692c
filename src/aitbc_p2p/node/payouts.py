"""Paying external miners: each job a miner proved earns it ``payout_percent`` of what
its settle paid this peer, as one transfer to the wallet its heartbeat named, sent
exactly once across restarts and crashes (specs/rpc.md, "Miner API").

A payout is journaled (``j:m:<job id>``, store/journal.py) when the proof is accepted,
before the market receipts the job; the transfer is signed, journaled with the record and
only then submitted. The record goes once the transfer is committed. A signed transfer
is replaced by a new one only when it can never be committed: refused by this peer's own
pool before it left, or its nonce taken by another committed transaction. So a transfer
is never sent twice, whatever the peer was doing when it stopped.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import trio

from aitbc_p2p.chain.models import Transaction
from aitbc_p2p.chain.payloads import Transfer
from aitbc_p2p.chain.state import JobStatus
from aitbc_p2p.codec import decode, encode, fields
from aitbc_p2p.exceptions import CodecError, TxRejected
from aitbc_p2p.node.abc import ChainView, OwnWallet
from aitbc_p2p.node.offload import blocking
from aitbc_p2p.store.crash import crash_point
from aitbc_p2p.store.journal import MarketJournal, Side
from aitbc_p2p.types import Address, Hash32, JobId, format_aitbc

logger = logging.getLogger(__name__)

MAX_OWED = 100_000
"""Payouts kept waiting for their jobs to settle (a job is proved at most once; past this
the oldest unsettled ones are given up, logged)."""
PAYOUT_KEYS = frozenset({"miner", "wallet", "tx"})
ENDED_UNPAID = (JobStatus.REFUNDED,)


@dataclass
class Payout:
    miner: str
    wallet: str
    tx: Transaction | None = None

    def to_record(self) -> bytes:
        return encode({"miner": self.miner, "wallet": self.wallet, "tx": b"" if self.tx is None else self.tx.encode()})

    @classmethod
    def from_record(cls, data: bytes) -> Payout:
        try:
            w = fields.record(decode(data, max_size=1 << 16), PAYOUT_KEYS, "a payout record")
            raw = fields.blob(w, "tx", max_len=1 << 15)
            return cls(fields.text(w, "miner"), fields.text(w, "wallet"), Transaction.decode(raw) if raw else None)
        except CodecError as e:
            raise CodecError(f"unreadable payout record: {e}") from e


class MinerPayouts:
    """Owed payouts, journaled, paid as their jobs settle."""

    def __init__(self, chain: ChainView, wallet: OwnWallet, journal: MarketJournal | None, *, percent: int) -> None:
        self.chain, self.wallet, self.journal, self.percent = chain, wallet, journal, percent
        self.owed: dict[JobId, Payout] = {}
        self.paid_jobs = 0
        self.paid_total = 0
        """Base units transferred to miners since start."""
        self._lock = trio.Lock()

    async def _write(self, job_id: JobId, payout: Payout | None) -> None:
        if self.journal is not None:
            puts = [] if payout is None else [(Side.PAYOUT, job_id, payout.to_record())]
            await blocking(self.journal.write, puts, [] if payout is not None else [(Side.PAYOUT, job_id)])

    async def proven(self, job_id: bytes, miner: str, wallet: str) -> None:
        """A miner proved ``job_id``: it is owed its share once the job settles. Returns
        once that is on disk (raises StoreError if it cannot be)."""
        if self.percent == 0:
            return
        payout = Payout(miner, wallet)
        key = JobId(Hash32(job_id))
        await self._write(key, payout)
        self.owed[key] = payout
        while len(self.owed) > MAX_OWED:
            old = next(iter(self.owed))
            logger.error("payout for job %s to %s given up: too many unsettled", old.hex()[:16], self.owed[old].miner)
            del self.owed[old]
            await self._write(old, None)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        if self.journal is not None:
            records = await blocking(lambda: list(self.journal.records(Side.PAYOUT)) if self.journal else [])
            for job_id, data in records:
                try:
                    self.owed[job_id] = Payout.from_record(data)
                except CodecError as e:
                    logger.error("payout of job %s dropped: %s", job_id.hex()[:16], e)
            if self.owed:
                logger.info("journal: %d miner payouts still owed", len(self.owed))
        task_status.started()
        while True:
            try:
                await self.pay_settled()
            except Exception:  # a task edge: one bad record must not end the node
                logger.exception("miner payouts not checked")
            await self.chain.wait_head_change()

    async def pay_settled(self) -> None:
        """Act on every owed payout as the chain now stands."""
        async with self._lock:
            for job_id, payout in list(self.owed.items()):
                await self._settle_one(job_id, payout)

    async def _settle_one(self, job_id: JobId, payout: Payout) -> None:
        me = self.wallet.key.address
        if payout.tx is not None and self.chain.find_tx(payout.tx.hash) is not None:
            amount = payout.tx.payload.amount if isinstance(payout.tx.payload, Transfer) else 0
            self.paid_jobs += 1
            self.paid_total += amount
            del self.owed[job_id]
            await self._write(job_id, None)
            logger.info("miner %s paid %s AITBC for job %s", payout.miner, format_aitbc(amount), job_id.hex()[:16])
            return
        escrow = self.chain.state.job(job_id)
        if escrow is None:
            return  # not yet seen, or a reorg took its block back
        if escrow.provider != me or escrow.status in ENDED_UNPAID:
            del self.owed[job_id]  # moved to another provider, or refunded: nothing earned
            await self._write(job_id, None)
            logger.info("job %s paid this peer nothing: its miner %s is owed nothing", job_id.hex()[:16], payout.miner)
            return
        if escrow.status is not JobStatus.SETTLED:
            return
        amount = escrow.cost * self.percent // 100
        if amount <= 0:
            del self.owed[job_id]
            await self._write(job_id, None)
            return
        if payout.tx is not None:
            committed_nonce = self.chain.state.account(me).nonce
            if payout.tx.nonce >= committed_nonce:
                if not self.wallet.pending(payout.tx.hash):  # dropped from the pool (or a restart): the same bytes
                    await self._submit(job_id, payout, payout.tx, fresh=False)
                return
            # its nonce went to another committed transaction: this one can never be committed
        tx = self.wallet.sign_own_tx(Transfer(Address(payout.wallet), amount))
        payout.tx = tx
        await self._write(job_id, payout)  # the transfer is on disk before it can leave
        crash_point("payouts.signed")
        await self._submit(job_id, payout, tx, fresh=True)

    async def _submit(self, job_id: JobId, payout: Payout, tx: Transaction, *, fresh: bool) -> None:
        """Submit the payout's transfer. A fresh one that this peer's pool refuses never
        left: it is signed again at the next head. One that may have left (submitted
        before this run or this restart) is kept and tried again until it is committed
        or its nonce is taken."""
        try:
            await self.wallet.submit_tx(tx)
        except TxRejected as e:
            if not fresh or e.reason == "Duplicate":
                logger.debug("payout of job %s not resubmitted: %s", job_id.hex()[:16], e)
                return
            logger.warning("payout to miner %s for job %s refused (%s); signed again next block",
                           payout.miner, job_id.hex()[:16], e)  # fmt: skip
            payout.tx = None
            await self._write(job_id, payout)

    def summary(self) -> dict[str, int]:
        return {"owed": len(self.owed), "paid_jobs": self.paid_jobs, "paid_total": self.paid_total}


__all__ = ["MinerPayouts", "Payout"]
