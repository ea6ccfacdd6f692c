"""A job's event stream (``GET /v1/jobs/<id>/events``, server-sent events) through a real
Hypercorn server, read raw with httpx and through the SDK's ``stream_job``."""

from __future__ import annotations

import json
from contextlib import aclosing
from typing import Any

import httpx
import pytest
import trio

from aitbc_p2p.exceptions import RpcError
from aitbc_p2p.rpc import RpcClient
from aitbc_p2p.testing import make_key
from aitbc_p2p.testing.market import make_offer
from conftest import RPC_TOKEN

CLIENT = make_key("client")
AUTH = {"Authorization": f"Bearer {RPC_TOKEN}"}


def parse(lines: list[str]) -> list[dict[str, Any]]:
    """Server-sent events of ``lines`` as {event, id, data} (a test's own reader, to check
    the bytes on the wire rather than trust the SDK's library)."""
    events, fields = [], {}
    for line in lines:
        if not line:
            if fields:
                events.append(fields)
            fields = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(": ")
            fields[name] = json.loads(value) if name == "data" else value
    return events


async def test_a_jobs_stream_sends_each_status_change_and_ends_when_it_is_cancelled(rpc_server: Any) -> None:
    node, url = rpc_server
    offer = make_offer(node, CLIENT, "echo", {"message": "watch me"})
    lines: list[str] = []
    async with httpx.AsyncClient(base_url=url, headers=AUTH, timeout=30) as http:
        body = {"offer": offer.encode().hex(), "workload": "echo", "params": {"message": "watch me"}}
        job_id = (await http.post("/v1/jobs", json=body)).json()["job_id"]
        async with http.stream("GET", f"/v1/jobs/{job_id[:12]}/events") as stream:  # a prefix names it too
            assert stream.status_code == 200 and stream.headers["content-type"].startswith("text/event-stream")
            with trio.fail_after(30):
                async for line in stream.aiter_lines():
                    lines.append(line)
                    if line.startswith("data:") and '"bids_ready"' in line:
                        assert (await http.post(f"/v1/jobs/{job_id}/cancel")).status_code == 200
    events = parse(lines)
    kinds = [e["event"] for e in events]
    phases = [e["data"]["phase"] for e in events]
    # Its status at once, each change (no bids: the window closes, then the client cancels), then the end.
    assert kinds == ["status", "status", "status", "end"], events
    assert phases == ["bidding", "bids_ready", "cancelled", "cancelled"]
    assert all(e["data"]["job_id"] == job_id for e in events)
    assert events[-1]["data"] == json.loads(json.dumps(events[-2]["data"]))  # the end carries the final view


async def test_a_finished_jobs_stream_ends_at_once_and_the_sdk_reads_it(rpc_server: Any) -> None:
    node, url = rpc_server
    async with RpcClient(url, token=RPC_TOKEN) as rpc:
        offer = make_offer(node, CLIENT, "echo", {"message": "x"})
        body = {"offer": offer.encode().hex(), "workload": "echo", "params": {"message": "x"}}
        job_id = (await rpc._call("POST", "/v1/jobs", body))["job_id"]
        await rpc.cancel_job(job_id)
        with trio.fail_after(10):
            async with aclosing(rpc.stream_job(job_id)) as events:
                got = [e async for e in events]
        assert [e["event"] for e in got] == ["status", "end"] and got[-1]["data"]["status"] == "cancelled"
        assert (await rpc.wait_job(job_id, timeout=10))["status"] == "cancelled"
        with pytest.raises(RpcError) as unknown:
            async with aclosing(rpc.stream_job("ab" * 32)) as events:
                [e async for e in events]
        assert unknown.value.status == 404 and unknown.value.code == "NOT_FOUND"
    async with httpx.AsyncClient(base_url=url, headers=AUTH) as http:
        bad = await http.get(f"/v1/jobs/{job_id}/events", params={"after": "-1"})
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "BAD_REQUEST"
        anon = await http.get(f"/v1/jobs/{job_id}/events", headers={"Authorization": ""})
        assert anon.status_code == 401


async def test_a_providers_progress_streams_to_the_client_in_order_and_resumes_after_a_number(nursery: Any) -> None:
    """Real peers on 127.0.0.1: the provider streams echo's chunks over the job protocol,
    the client's peer serves them as progress events, ahead of the result."""
    from aitbc_p2p.rpc import serve_rpc
    from aitbc_p2p.testing import open_test_network
    from aitbc_p2p.types import aitbc

    alloc = {CLIENT.address: aitbc(100), make_key("peer1").address: aitbc(1_000)}
    message = "streamed one chunk at a time"
    params = {"message": message, "chunks": 7, "interval_ms": 30}
    with trio.fail_after(120):
        async with open_test_network(2, providers=[1], alloc=alloc, genesis_params={"dispute_blocks": 1}) as nodes:
            url = await nursery.start(
                lambda task_status: serve_rpc(nodes[0], token=RPC_TOKEN, port=0, task_status=task_status)
            )
            while not nodes[0].market.providers:
                await trio.sleep(0.05)
            async with RpcClient(url, token=RPC_TOKEN) as rpc:
                job_id = await rpc.submit_job(CLIENT, "echo", params, max_price=aitbc(1), max_runtime_s=10)
                async with aclosing(rpc.stream_job(job_id)) as events:
                    got = [e async for e in events]
                progress = [e for e in got if e["event"] == "progress"]
                assert "".join(e["data"]["token"] for e in progress) == message
                assert [e["id"] for e in progress] == list(range(1, 8))
                before_first = [e["data"]["phase"] for e in got[: got.index(progress[0])] if e["event"] == "status"]
                assert before_first and "result_received" not in before_first  # tokens came ahead of the result
                assert got[-1]["event"] == "end" and got[-1]["data"]["status"] == "settled"
                # Again from number 5: the status, then only what came after it.
                async with aclosing(rpc.stream_job(job_id, after=5)) as events:
                    again = [e async for e in events]
                assert [e["id"] for e in again if e["event"] == "progress"] == [6, 7]
                assert (await rpc.job_result(job_id))["output"]["message"] == message


async def test_the_jobs_list_shows_this_peers_jobs_newest_first(rpc_server: Any) -> None:
    node, url = rpc_server
    async with httpx.AsyncClient(base_url=url, headers=AUTH) as http:
        ids = []
        for message in ("first", "second"):
            offer = make_offer(node, CLIENT, "echo", {"message": message})
            body = {"offer": offer.encode().hex(), "workload": "echo", "params": {"message": message}}
            ids.append((await http.post("/v1/jobs", json=body)).json()["job_id"])
        listed = (await http.get("/v1/jobs")).json()["jobs"]
        assert [j["job_id"] for j in listed] == ids[::-1]
        assert all(j["workload"] == "echo" and j["status"] == "bidding" for j in listed)
        assert [j["job_id"] for j in (await http.get("/v1/jobs", params={"limit": 1})).json()["jobs"]] == ids[1:]
        assert (await http.get("/v1/jobs", params={"limit": "x"})).status_code == 400
        network = (await http.get("/v1/network")).json()
        assert network["peers"] == [] and isinstance(network["gossip"], dict)
        assert isinstance(network["mempool_rejected"], dict)
    async with httpx.AsyncClient(base_url=url) as anon:
        assert (await anon.get("/v1/jobs")).status_code == 401
        assert (await anon.get("/v1/network")).status_code == 401
