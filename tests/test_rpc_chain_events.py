"""``GET /v1/events``: the chain as it grows, through a real Hypercorn server, with the SDK's
``stream_chain`` and with raw requests."""

from __future__ import annotations

from contextlib import aclosing
from typing import Any

import httpx
import trio

from aitbc_p2p.rpc import RpcClient
from aitbc_p2p.testing import make_key
from aitbc_p2p.testing.market import make_offer
from aitbc_p2p.types import aitbc
from conftest import RPC_TOKEN

AUTH = {"Authorization": f"Bearer {RPC_TOKEN}"}
CLIENT, DEST = make_key("client"), make_key("dest")


async def take(stream: Any, count: int, timeout: float = 20) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    with trio.fail_after(timeout):
        async for event in stream:
            got.append(event)
            if len(got) == count:
                return got
    raise AssertionError(f"the stream ended after {got}")


async def test_each_block_arrives_in_order_and_a_client_resumes_after_the_last_it_saw(rpc_server: Any) -> None:
    node, url = rpc_server
    async with RpcClient(url, token=RPC_TOKEN) as rpc:
        async with aclosing(rpc.stream_chain()) as stream:
            events = await take(stream, 3)
        assert [e["event"] for e in events] == ["block"] * 3
        first, *rest = [e["data"] for e in events]
        assert first["height"] >= node.store.head.height - 3  # starts at the head it found
        for before, block in zip([first, *rest], rest, strict=False):
            assert block["height"] == before["height"] + 1 and block["parent"] == before["hash"]
        for block in (first, *rest):
            stored = node.store.block(block["height"])
            assert stored is not None and stored.header.hash.hex() == block["hash"]
            assert block["txs"] == len(stored.txs) and block["final_height"] <= block["height"]
        # Resumed after a height: the blocks above it, from there on, none missed.
        async with aclosing(rpc.stream_chain(after=first["height"])) as stream:
            again = await take(stream, 2)
        assert [e["data"]["hash"] for e in again] == [b["hash"] for b in rest]
        assert [e["id"] for e in again] == [b["height"] for b in rest]
        # From genesis: a client far behind gets the last 100 at most, then the new ones.
        async with aclosing(rpc.stream_chain(after=0)) as stream:
            caught_up = await take(stream, 1)
        assert caught_up[0]["data"]["height"] in (1, max(1, node.store.head.height - 99))


async def test_a_revert_is_announced_and_the_replacing_blocks_follow(rpc_server: Any) -> None:
    """A client that applies the events in turn (a ``reorg`` drops the blocks above its
    height, a ``block`` adds one) holds the node's chain once the replacements came."""
    node, url = rpc_server
    async with RpcClient(url, token=RPC_TOKEN) as rpc:
        with trio.fail_after(20):
            await node.wait_height(3)
        async with aclosing(rpc.stream_chain()) as stream:
            [head] = await take(stream, 1)
            top = head["data"]["height"]
            seen = {top: head["data"]["hash"]}
            async with node.chain._lock:  # as a fork choice would: the two top blocks leave
                while node.store.head.height > top - 2:
                    await node.chain._revert_head()
            reorgs, expected = [], top + 1
            with trio.fail_after(20):
                async for event in stream:
                    data = event["data"]
                    if event["event"] == "reorg":
                        reorgs.append(data["height"])
                        seen = {h: v for h, v in seen.items() if h <= data["height"]}
                        expected = data["height"] + 1
                    else:
                        assert data["height"] == expected, (data, expected)  # no gap, no repeat
                        seen[data["height"]], expected = data["hash"], expected + 1
                        if data["height"] > top:
                            break
    assert reorgs and min(reorgs) >= top - 2 and reorgs == sorted(reorgs, reverse=True), reorgs
    assert seen and all(node.store.block(h).header.hash.hex() == v for h, v in seen.items())
    assert sorted(seen) == list(range(min(seen), max(seen) + 1))


async def test_a_bad_resume_point_is_refused_and_the_stream_needs_the_token(rpc_server: Any) -> None:
    _node, url = rpc_server
    async with httpx.AsyncClient(base_url=url) as http:
        assert (await http.get("/v1/events")).status_code == 401
        for bad in ("-1", "x", "1" * 13):
            answer = await http.get("/v1/events", params={"after": bad}, headers=AUTH)
            assert answer.status_code == 400 and answer.json()["error"]["code"] == "BAD_REQUEST", bad
        answer = await http.get("/v1/events", headers={**AUTH, "Last-Event-ID": "nope"})
        assert answer.status_code == 400


async def test_a_transaction_sent_here_and_each_change_of_a_job_come_as_events(rpc_server: Any) -> None:
    """``tx`` once a transaction submitted through this peer is committed (at its height
    and index), ``job`` at each change of a job this peer tracks: nothing needs to poll."""
    node, url = rpc_server
    async with RpcClient(url, token=RPC_TOKEN) as rpc, aclosing(rpc.stream_chain()) as stream:
        await take(stream, 1)  # connected: the head block
        tx_hash = await rpc.transfer(CLIENT, DEST.address, aitbc(1))
        offer = make_offer(node, CLIENT, "echo", {"message": "events"})
        body = {"offer": offer.encode().hex(), "workload": "echo", "params": {"message": "events"}}
        job_id = (await rpc._call("POST", "/v1/jobs", body))["job_id"]
        await rpc.cancel_job(job_id)
        seen: dict[str, list[dict[str, Any]]] = {"tx": [], "job": []}
        with trio.fail_after(20):
            async for event in stream:
                if event["event"] in seen:
                    seen[event["event"]].append(event["data"])
                if seen["tx"] and any(j["status"] == "cancelled" for j in seen["job"]):
                    break
    [tx] = seen["tx"]
    committed = node.tx_status(bytes.fromhex(tx_hash))
    assert tx == {"hash": tx_hash, "status": "committed", "height": committed.height, "index": committed.index}
    statuses = [j["status"] for j in seen["job"]]
    assert all(j["job_id"] == job_id for j in seen["job"]) and statuses[0] == "bidding" and statuses[-1] == "cancelled"
