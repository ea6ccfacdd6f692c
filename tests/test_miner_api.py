"""The v1 miner API on a real peer (Hypercorn, httpx as the miner) selling an external
miner's compute to a client peer over real libp2p: heartbeat, next, proof, the result,
the receipt, the settle and the miner's payout; and every way a miner's request can be
wrong. The seed's own miner.sh against real peer processes is tests/test_devnet_miner.py.
"""

import hashlib

import httpx
import pytest
import trio
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from aitbc_p2p.chain.state import JobStatus
from aitbc_p2p.codec import decode
from aitbc_p2p.node.config import MinersConfig
from aitbc_p2p.node.metrics import node_registry
from aitbc_p2p.rpc.server import serve_rpc
from aitbc_p2p.testing import make_key, open_test_network
from aitbc_p2p.testing.market import offer_job, open_escrow, wait_for
from aitbc_p2p.types import aitbc
from conftest import RPC_TOKEN

CLIENT = make_key("client")
WALLET = make_key("miner-wallet").address
KEY, OTHER_KEY = "rig-1-key-0123456789", "rig-2-key-0123456789"
MINERS = MinersConfig(
    keys={"rig-1": KEY, "rig-2": OTHER_KEY}, workloads=("echo",), heartbeat_timeout_s=3.0, payout_percent=90
)
BEAT = {"miner_id": "rig-1", "wallet": WALLET, "mode": "cpu", "gpu": 0}


@pytest.fixture
async def market(nursery):
    """``(client peer, miners' peer, the miners' peer's RPC url)``."""
    async with open_test_network(
        2, providers=[1], alloc={CLIENT.address: aitbc(100)}, authorities=1, miners=MINERS
    ) as nodes:
        url = await nursery.start(
            lambda task_status: serve_rpc(nodes[1], token=RPC_TOKEN, port=0, task_status=task_status)
        )
        yield nodes[0], nodes[1], url
        nursery.cancel_scope.cancel()


def as_miner(url: str, key: str = KEY) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key}"})


def refused(resp: httpx.Response, status: int, code: str) -> None:
    assert resp.status_code == status, resp.text
    assert resp.json()["error"]["code"] == code, resp.text


async def test_a_miner_earns_for_a_job_it_proves(market):
    client, seller, url = market
    async with as_miner(url) as miner:
        assert (await miner.get("/v1/miner/next", params={"miner": "rig-1"})).status_code == 409  # heartbeat first
        beat = await miner.post("/v1/miner/heartbeat", json=BEAT)
        assert beat.status_code == 200 and beat.json()["offered"] and beat.json()["workloads"] == ["echo"]
        assert (await miner.get("/v1/miner/next", params={"miner": "rig-1", "slots": 1})).status_code == 204
        await wait_for(lambda: "echo" in client.market.providers.get(seller.key.address, {}).body["workloads"]
                       if seller.key.address in client.market.providers else False)  # fmt: skip

        job_id, offer = await offer_job(client, CLIENT, "echo", {"message": "hi"})
        await open_escrow(client, CLIENT, job_id, offer)
        with trio.fail_after(20):
            while (resp := await miner.get("/v1/miner/next", params={"miner": "rig-1"})).status_code == 204:
                await trio.sleep(0.1)
        job = resp.json()
        assert job["id"] == job_id.hex() and job["workload"] == "echo" and job["params"] == {"message": "hi"}
        assert (await miner.get("/v1/miner/next", params={"miner": "rig-1", "slots": 1})).status_code == 204  # busy

        output = "ran it: hi\n"
        sha = hashlib.sha256(output.encode()).hexdigest()
        proof = {"id": job["id"], "mode": "cpu", "output_sha": sha, "metrics": {"tokens": 3}, "output": output}
        first = await miner.post("/v1/miner/proof", json=proof, headers={"Idempotency-Key": "p-1"})
        assert first.status_code == 200 and first.json()["status"] == "accepted", first.text
        again = await miner.post("/v1/miner/proof", json=proof)  # a retry without a key: the same answer
        assert again.json() == first.json()

    tracked = client.market.client_jobs[job_id]
    await wait_for(lambda: client.store.state.job(job_id).status is JobStatus.SETTLED, timeout=60)
    result = tracked.result
    assert result is not None and result.ok
    assert decode(result.output) == {"miner": "rig-1", "mode": "cpu", "output_sha": sha, "output": output}
    assert result.metrics["tokens"] == 3 and result.metrics["compute_ms"] >= 1
    cost = client.store.state.job(job_id).cost
    await wait_for(lambda: client.store.state.account(WALLET).balance == cost * 90 // 100, timeout=30)
    await trio.sleep(1.5)  # blocks later, still paid once
    assert seller.store.state.account(WALLET).balance == cost * 90 // 100
    scraped = {
        sample.name: sample.value
        for family in text_string_to_metric_families(generate_latest(node_registry(seller)).decode())
        for sample in family.samples
    }  # parsed, not matched as text: Prometheus writes 1188000 as 1.188e+06
    assert "aitbc_miners_live" in scraped and scraped["aitbc_miner_payouts_total"] == 1
    assert scraped["aitbc_miner_paid_base_units_total"] == cost * 90 // 100
    assert seller.payouts is not None and seller.payouts.summary() == {
        "owed": 0, "paid_jobs": 1, "paid_total": cost * 90 // 100
    }  # fmt: skip


async def test_what_a_miner_may_not_do(market):
    client, seller, url = market
    async with as_miner(url) as miner, as_miner(url, OTHER_KEY) as other, as_miner(url, "x" * 20) as stranger:
        refused(await stranger.post("/v1/miner/heartbeat", json=BEAT), 401, "UNAUTHORIZED")
        async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {RPC_TOKEN}"}) as operator:
            refused(
                await operator.post("/v1/miner/heartbeat", json=BEAT), 401, "UNAUTHORIZED"
            )  # the token is no miner key
            listed = (await operator.get("/v1/miners")).json()
            assert [m["miner_id"] for m in listed["miners"]] == ["rig-1", "rig-2"] and not listed["miners"][0]["live"]
        refused(await miner.get("/v1/status"), 401, "UNAUTHORIZED")  # a miner key is no token
        refused(await other.post("/v1/miner/heartbeat", json=BEAT), 403, "MINER_MISMATCH")
        refused(await miner.post("/v1/miner/heartbeat", json={**BEAT, "wallet": "wallet_demo"}), 422, "BAD_WALLET")
        refused(await miner.post("/v1/miner/heartbeat", json={**BEAT, "gpu": "yes"}), 400, "BAD_REQUEST")
        refused(await miner.post("/v1/miner/heartbeat", json={**BEAT, "extra": 1}), 400, "BAD_REQUEST")
        refused(await miner.post("/v1/miner/heartbeat", content=b"{"), 400, "BAD_JSON")
        assert (await miner.post("/v1/miner/heartbeat", json=BEAT)).status_code == 200
        assert (await other.post("/v1/miner/heartbeat", json={**BEAT, "miner_id": "rig-2"})).status_code == 200
        refused(await miner.get("/v1/miner/next", params={"miner": "rig-2"}), 403, "MINER_MISMATCH")
        refused(await miner.get("/v1/miner/next", params={"miner": "rig-1", "slots": "0"}), 400, "BAD_REQUEST")

        job_id, offer = await offer_job(client, CLIENT, "echo", {"message": "x"})
        await open_escrow(client, CLIENT, job_id, offer)
        with trio.fail_after(20):
            while (resp := await miner.get("/v1/miner/next", params={"miner": "rig-1"})).status_code == 204:
                await trio.sleep(0.1)
        assert resp.json()["id"] == job_id.hex()
        good = {"id": job_id.hex(), "mode": "cpu", "output_sha": "0" * 64, "metrics": {}}
        refused(await other.post("/v1/miner/proof", json=good), 404, "JOB_NOT_HELD")  # not rig-2's job
        refused(await miner.post("/v1/miner/proof", json={**good, "output_sha": "xyz"}), 400, "BAD_REQUEST")
        refused(await miner.post("/v1/miner/proof", json={**good, "output": "not it"}), 422, "OUTPUT_MISMATCH")
        refused(await miner.post("/v1/miner/proof", json={**good, "metrics": {"s": 1.5}}), 400, "BAD_METRICS")
        refused(await miner.post("/v1/miner/proof", json={**good, "id": "zz"}), 400, "BAD_REQUEST")
        big = "é" * (300 << 10)  # 600 KiB of UTF-8 in 300 Ki characters
        sha = hashlib.sha256(big.encode()).hexdigest()
        too_long = {**good, "output_sha": sha, "output": big}
        refused(await miner.post("/v1/miner/proof", json=too_long), 400, "BAD_REQUEST")
        huge = {**good, "output": "x" * (1 << 20)}
        refused(await miner.post("/v1/miner/proof", json=huge), 413, "BODY_TOO_LARGE")
        assert seller.miners is not None and seller.miners.statistics()["running"] == 1  # nothing taken so far
        failed = await miner.post("/v1/miner/proof", json={"id": job_id.hex(), "error": "out of memory"})
        assert failed.json()["status"] == "failed"
    await wait_for(lambda: client.market.client_jobs[job_id].phase in ("failed", "failing_over"), timeout=30)
    assert seller.market.held_jobs == 1 and not seller.market._held[job_id].result.ok  # no receipt, no pay
    assert client.store.state.job(job_id).result_hash == b""


async def test_a_silent_miner_is_not_offered_and_its_job_fails(market):
    client, seller, url = market
    async with as_miner(url) as miner:
        assert (await miner.post("/v1/miner/heartbeat", json=BEAT)).status_code == 200
        await wait_for(lambda: seller.market.provider_status().workloads == ["echo"])
        job_id, offer = await offer_job(client, CLIENT, "echo", {"message": "x"}, max_runtime_s=4)
        await open_escrow(client, CLIENT, job_id, offer)
        with trio.fail_after(20):
            while (resp := await miner.get("/v1/miner/next", params={"miner": "rig-1"})).status_code == 204:
                await trio.sleep(0.1)
        assert resp.json()["id"] == job_id.hex()
    # The miner goes quiet holding the job: past the runtime cap the job fails, and past
    # the heartbeat timeout the peer stops selling (no workloads, so no bids).
    await wait_for(lambda: client.market.client_jobs[job_id].phase in ("failed", "failing_over"), timeout=30)
    assert "posted no proof" in client.market.client_jobs[job_id].error
    assert seller.miners is not None and seller.miners.miners["rig-1"].failed == 1
    await wait_for(lambda: seller.market.provider_status().workloads == [], timeout=10)
    assert seller.miners is not None and seller.miners.statistics()["miners"] == 0
    late, _ = await offer_job(client, CLIENT, "echo", {"message": "y"}, bids=0)
    await trio.sleep(2)
    assert client.market.client_jobs[late].bids == {}


async def test_spot_checked_offers_get_no_bid_from_miners(market):
    client, _seller, url = market
    async with as_miner(url) as miner:
        assert (await miner.post("/v1/miner/heartbeat", json=BEAT)).status_code == 200
        plain, _ = await offer_job(client, CLIENT, "echo", {"message": "x"})  # a bid comes
        checked, _ = await offer_job(client, CLIENT, "echo", {"message": "x"}, verification="spot", bids=0)
        await trio.sleep(2)
    assert client.market.client_jobs[plain].bids and not client.market.client_jobs[checked].bids
