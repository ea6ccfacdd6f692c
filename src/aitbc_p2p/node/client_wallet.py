"""A wallet the peer holds for local clients (the seeds' wallet daemon): a client that
sends ``X-Api-Key`` submits a job in the seed's shape and the peer does the wallet's
part for it, with its own key: it signs the offer, waits for bids, picks one and opens
the escrow, as the SDK does on the client's side (specs/rpc.md, "Client API").

Each API key has a spending cap: what its jobs' escrows may lock, in all. A job's
``max_price`` is held against the cap when it is submitted, and replaced by its escrow's
amount once that opens (or released if none does); what a key has escrowed is kept in
the store (``w:s:<name>``), so a restart does not reset a cap. The job's owner is kept
too (``w:j:<job id>``): a key sees only its own jobs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any, Protocol

import trio

from aitbc_p2p.chain.models import Transaction
from aitbc_p2p.chain.payloads import MAX_ATTEMPTS, JobOpen
from aitbc_p2p.crypto.keys import holder_of
from aitbc_p2p.exceptions import MarketError, TxRejected
from aitbc_p2p.market import Bid, JobOffer, escrow_amount, params_hash, select_bid
from aitbc_p2p.node.abc import ChainView
from aitbc_p2p.node.config import WalletConfig
from aitbc_p2p.node.offload import blocking
from aitbc_p2p.store import schema
from aitbc_p2p.store.abc import KeyValueStore
from aitbc_p2p.types import Address, Hash32, JobId

logger = logging.getLogger(__name__)

BID_WAIT_S = 15.0
"""How long a job waits for an acceptable bid before it fails (the SDK's bid timeout)."""
SPENT = schema.WALLET + b"s:"
OWNER = schema.WALLET + b"j:"


class TxSubmitter(Protocol):
    async def submit_tx(self, tx: Transaction) -> Hash32: ...


class ClientJobs(Protocol):
    """The market as the wallet sees it (node/market.py)."""

    @property
    def client_jobs(self) -> Mapping[JobId, Any]:
        """Each tracked job, with its ``phase`` and ``bids`` (address -> Bid)."""
        ...

    async def submit(self, offer: JobOffer, workload: str, params: dict[str, Any]) -> JobId: ...

    async def cancel(self, job: JobId | str) -> Any: ...

    def trust(self, bids: list[Bid]) -> dict[str, int]: ...

    def next_job_change(self) -> trio.Event: ...


class CapExceeded(MarketError):
    """The job's ``max_price`` would take the key past its spending cap."""


class ClientWallet:
    def __init__(
        self,
        config: WalletConfig,
        *,
        chain: ChainView,
        relay: TxSubmitter,
        market: ClientJobs,
        kv: KeyValueStore,
        pending_nonce: Callable[[Address], int],
        agent: Address,
        clock_ms: Callable[[], int],
    ) -> None:
        self.config, self.chain, self.relay, self.market, self.kv = config, chain, relay, market, kv
        self.key = config.key
        self._pending_nonce, self._agent, self._clock_ms = pending_nonce, agent, clock_ms
        self._keys = {name: c.api_key for name, c in config.clients.items()}
        self.spent: dict[str, int] = {}
        """Base units each client's jobs hold or have locked (escrows, and submitted jobs' max_price)."""
        self._lock = trio.Lock()
        self._nursery: trio.Nursery | None = None

    def authenticate(self, api_key: str) -> str | None:
        """The client whose key ``api_key`` is, else None (compared in constant time)."""
        return holder_of(api_key, self._keys)

    def owner(self, job_id: JobId) -> str | None:
        raw = self.kv.get(OWNER + job_id)
        return None if raw is None else raw.decode()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        for name in self.config.clients:
            raw = await blocking(self.kv.get, SPENT + name.encode())
            self.spent[name] = int.from_bytes(raw, "big") if raw else 0
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    async def _record(self, name: str, job_id: JobId | None = None) -> None:
        puts = [(SPENT + name.encode(), self.spent[name].to_bytes(16, "big"))]
        if job_id is not None:
            puts.append((OWNER + job_id, name.encode()))
        await blocking(partial(self.kv.write, puts, [], sync=True))

    async def submit(
        self, name: str, workload: str, params: dict[str, Any], *, max_price: int | None, max_runtime_s: int | None
    ) -> JobId:
        """Offer a job for client ``name``; its bids and escrow follow in the background.

        Raises:
            CapExceeded: its max_price would take the client past its cap.
            MarketError, ComputeError: the job cannot be offered (as ``POST /v1/jobs``).
        """
        price = self.config.max_price if max_price is None else max_price
        runtime = self.config.max_runtime_s if max_runtime_s is None else max_runtime_s
        cap = self.config.clients[name].max_spend
        offer = JobOffer.create(
            self.key, self.chain.genesis.chain_id, workload=workload, params_hash=params_hash(workload, params),
            max_price=price, max_runtime_s=runtime, verification="none", timestamp_ms=self._clock_ms(),
        )  # fmt: skip
        async with self._lock:
            if self.spent.get(name, 0) + price > cap:
                left = max(0, cap - self.spent.get(name, 0))
                raise CapExceeded(f"this key may lock {left} more base units, and the job may cost {price}")
            job_id = await self.market.submit(offer, workload, params)
            self.spent[name] = self.spent.get(name, 0) + price
            await self._record(name, job_id)  # held against the cap before anything can be escrowed
        assert self._nursery is not None
        self._nursery.start_soon(self._open_escrow, name, offer, price)
        return job_id

    async def _open_escrow(self, name: str, offer: JobOffer, held: int) -> None:
        """Wait for bids, pick one, open the escrow; the cap keeps the escrow's amount."""
        job_id = offer.job_id
        locked = 0
        try:
            with trio.move_on_after(BID_WAIT_S):  # until bidding has closed with a bid (each bid is a change)
                while True:
                    changed = self.market.next_job_change()
                    job = self.market.client_jobs.get(job_id)
                    if job is None or (job.phase != "bidding" and job.bids):
                        break
                    await changed.wait()
            job = self.market.client_jobs.get(job_id)
            bids = list(job.bids.values()) if job is not None else []
            trust = self.market.trust(bids)
            bid = select_bid(offer, bids, trust)
            if bid is None:
                logger.info("job %s of client %s: no acceptable bid; cancelled", job_id.hex()[:16], name)
                await self._give_up(job_id)
                return
            amount = escrow_amount(offer, bids, MAX_ATTEMPTS, trust)
            agent = self._agent if self._agent != bid.signer else self.key.address
            deadline = self.chain.head.height + max(30, 4 * offer.body["max_runtime_s"])  # as the SDK sets it
            payload = JobOpen(job_id, bid.signer, amount, deadline, agent)
            tx = Transaction.create(
                self.key, chain_id=self.chain.genesis.chain_id, nonce=self._pending_nonce(self.key.address),
                fee=self.chain.genesis.min_fee, payload=payload,
            )  # fmt: skip
            await self.relay.submit_tx(tx)
            locked = amount
            logger.info("job %s of client %s: escrow of %d opened for %s", job_id.hex()[:16], name, amount, bid.signer)
        except (TxRejected, MarketError) as e:
            logger.warning("job %s of client %s: escrow not opened: %s", job_id.hex()[:16], name, e)
            await self._give_up(job_id)
        except Exception:  # a task edge: one client's job must not end the peer
            logger.exception("job %s of client %s: escrow not opened", job_id.hex()[:16], name)
            await self._give_up(job_id)
        finally:
            with trio.CancelScope(shield=True):
                async with self._lock:
                    self.spent[name] = max(0, self.spent[name] - held + locked)
                    await self._record(name)


    async def _give_up(self, job_id: JobId) -> None:
        """Cancel a job no escrow was opened for (nothing was locked)."""
        try:
            await self.market.cancel(job_id)
        except MarketError as e:
            logger.debug("job %s not cancelled: %s", job_id.hex()[:16], e)


__all__ = ["CapExceeded", "ClientWallet"]
