"""A wallet's side of a job against a test node, in the steps the SDK takes: offer it
through the client's peer, wait for bids, open escrow for the cheapest with that peer
as the client's agent. Tests drive each step themselves to cut in between."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import trio

from aitbc_p2p.chain.models import Transaction
from aitbc_p2p.chain.payloads import JobOpen
from aitbc_p2p.crypto import PrivateKey
from aitbc_p2p.market import Bid, JobOffer, params_hash, select_bid
from aitbc_p2p.node.facade import Node
from aitbc_p2p.types import JobId, aitbc


async def wait_for(predicate: Callable[[], Any], timeout: float = 60.0) -> None:
    """Poll ``predicate`` every 50 ms until it is true; TooSlowError after ``timeout``."""
    with trio.fail_after(timeout):
        while True:
            if predicate():
                return
            await trio.sleep(0.05)


def make_offer(
    node: Node,
    key: PrivateKey,
    workload: str,
    params: dict[str, Any],
    *,
    max_price: int = aitbc(5),
    max_runtime_s: int = 30,
    verification: str = "none",
) -> JobOffer:
    return JobOffer.create(
        key, node.genesis.chain_id, workload=workload, params_hash=params_hash(workload, params),
        max_price=max_price, max_runtime_s=max_runtime_s, verification=verification, timestamp_ms=node.clock_ms(),
    )  # fmt: skip


async def offer_job(
    node: Node, key: PrivateKey, workload: str, params: dict[str, Any], *, bids: int = 1, **offer: Any
) -> tuple[JobId, JobOffer]:
    """Offer a job through ``node`` and wait until bidding closed with at least ``bids``."""
    job = make_offer(node, key, workload, params, **offer)
    job_id = await node.submit_job(job, workload, params)
    tracked = node.market.client_jobs[job_id]
    await wait_for(lambda: len(tracked.bids) >= bids and tracked.phase == "bids_ready")
    return job_id, job


async def open_escrow(
    node: Node, key: PrivateKey, job_id: JobId, offer: JobOffer, *, blocks: int = 100, reserve: int = 0
) -> Bid:
    """The wallet's choice and escrow: the cheapest bid, a deadline ``blocks`` ahead, and
    ``node`` (the peer the job was offered through) as the client's agent. The escrow holds
    the bid's price and ``reserve`` more (as the SDK reserves for a failover's dearer bid)."""
    bid = select_bid(offer, list(node.market.client_jobs[job_id].bids.values()))
    assert bid is not None, "no acceptable bid"
    amount = bid.body["price"] + reserve
    escrow = JobOpen(job_id, bid.signer, amount, node.head.height + blocks, node.key.address)
    tx = Transaction.create(
        key, chain_id=node.genesis.chain_id, payload=escrow, fee=node.genesis.min_fee,
        nonce=node.mempool.pending_nonce(key.address, node.store.state),
    )  # fmt: skip
    await node.submit_tx(tx)
    return bid
