"""The market service (node/market.py) against strangers, over the in-memory network.

A real provider peer (its executor a real worker process, so the clock is real) and a
stranger that is a bare network on the same hub: a flood of capability records, a
malformed job frame, and a well-formed job whose escrow names another provider.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio

from aitbc_p2p.chain.models import TxKind
from aitbc_p2p.codec import encode
from aitbc_p2p.exceptions import NetworkError
from aitbc_p2p.market import CapabilityRecord, JobOffer, JobPayload, JobResult, params_hash
from aitbc_p2p.network import JOB_PROTOCOL
from aitbc_p2p.network.memory import MemoryHub
from aitbc_p2p.node import market as market_module
from aitbc_p2p.testing import make_key, make_tx, open_test_network
from aitbc_p2p.types import aitbc

CLIENT = make_key("client")
STRANGER = make_key("stranger")


async def wait_for(predicate: Any, timeout: float = 30) -> None:
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.05)


def record(key: Any, chain_id: str, i: int) -> CapabilityRecord:
    return CapabilityRecord.create(
        key, chain_id, miner_id=f"m{i}", peer_id="p", mode="cpu", gpu=False, device="d", concurrency=1,
        workloads=["echo"], limits={}, gflops=1, gflops_by_dtype={}, versions={}, price_per_s=1, timestamp_ms=i,
        load={"slots": 1, "free_slots": 1, "queued": 0, "max_queue": 8, "wait_ms": 0}, models=[],
    )  # fmt: skip


async def test_a_flood_of_capability_records_is_bounded_and_forged_ones_cost_the_sender(monkeypatch: Any) -> None:
    monkeypatch.setattr(market_module, "MAX_PROVIDERS", 40)
    hub = MemoryHub()
    async with open_test_network(1, hub=hub) as (node,), hub.open_network(STRANGER) as stranger:
        topic = node.topics.provider
        await stranger.connect(node.network.listen_addrs()[0])
        chain = node.genesis.chain_id
        for i in range(100):  # a hundred providers, each signed by its own key
            await stranger.publish(topic, record(make_key(f"flood{i}"), chain, i).encode())
        await wait_for(lambda: node.network.verdicts["accept"] == 100)
        await trio.sleep(0.5)  # the inbox drains into the market
        assert len(node.market.providers) == 40  # the latest delivered are kept, no more
        assert node.network.scores.score(stranger.peer_id) == 0  # well-formed records: no fault
        await stranger.publish(topic, record(make_key("elsewhere"), "ait-elsewhere", 1).encode())
        await stranger.publish(topic, b"\xa1\x63sig\x40")  # not a record at all
        await wait_for(lambda: node.network.scores.score(stranger.peer_id) < 0)
        assert "ait-elsewhere" not in {r.chain_id for r in node.market.providers.values()}
        height = node.head.height
        await node.wait_height(height + 1)  # the node goes on


async def test_a_provider_refuses_a_job_whose_escrow_names_another_provider() -> None:
    """The offer was seen and bid on, the payload matches it, an escrow is open: but it
    names the other registered provider, so this one must not run the job (that escrow
    would never pay it)."""
    hub = MemoryHub()
    async with (
        open_test_network(2, providers=[0, 1], alloc={CLIENT.address: aitbc(100)}, hub=hub) as (provider, other),
        hub.open_network(STRANGER) as stranger,
    ):
        await stranger.connect(provider.network.listen_addrs()[0])
        await wait_for(lambda: provider.market.registered() and other.market.registered())
        params = {"message": "x"}
        offer = JobOffer.create(
            CLIENT, provider.genesis.chain_id, workload="echo", params_hash=params_hash("echo", params),
            max_price=aitbc(5), max_runtime_s=30, verification="none", timestamp_ms=provider.clock_ms(),
        )  # fmt: skip
        await stranger.publish(provider.topics.job, encode({"offer": offer.to_wire()}))
        await wait_for(lambda: offer.job_id in provider.market._offers_seen)  # it bid
        escrow = make_tx(
            CLIENT, TxKind.JOB_OPEN, chain_id=provider.genesis.chain_id, job_id=offer.job_id,
            provider=other.key.address, amount=aitbc(5), deadline=provider.head.height + 100, agent=CLIENT.address,
        )  # fmt: skip
        await provider.submit_tx(escrow)
        await wait_for(lambda: provider.store.state.job(offer.job_id) is not None)
        ran: list[Any] = []
        executor = provider.market._executor
        real_run = executor.run

        async def spy(*args: Any, **kwargs: Any) -> Any:
            ran.append(args)
            return await real_run(*args, **kwargs)

        executor.run = spy
        payload = JobPayload(offer.job_id, "echo", params).encode()
        answer = JobResult.decode(await stranger.request(provider.network.peer_id, JOB_PROTOCOL, payload, timeout=30))
        assert not answer.ok and "no open escrow names this provider" in answer.error
        assert ran == []  # the executor never saw it


async def test_a_provider_survives_a_malformed_job_frame_over_the_memory_network() -> None:
    hub = MemoryHub()
    async with open_test_network(1, providers=[0], hub=hub) as (provider,), hub.open_network(STRANGER) as stranger:
        await stranger.connect(provider.network.listen_addrs()[0])
        for bad in (b"\x04\xff\xff\xff\xff", encode({"job_id": -1}), encode({"job_id": "ab" * 32, "workload": 7})):
            with pytest.raises(NetworkError):  # the stream is reset
                await stranger.request(provider.network.peer_id, JOB_PROTOCOL, bad, timeout=10)
        assert provider.network.scores.score(stranger.peer_id) < 0  # each cost the stranger
        height = provider.head.height
        await provider.wait_height(height + 1)
