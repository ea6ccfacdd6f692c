"""RPC abuse through a real Hypercorn server: early answers on a kept-alive connection,
nesting and numbers past what the codec takes. Every one is a 4xx envelope, never a
500 or a hang, and the next request on the same connection is answered."""

import json

import httpx
import pytest
import trio

from aitbc_p2p.market import JobOffer, params_hash
from aitbc_p2p.rpc.app import MAX_BODY
from aitbc_p2p.testing import make_key
from aitbc_p2p.types import aitbc
from conftest import RPC_TOKEN

TOKEN = RPC_TOKEN
CLIENT = make_key("client")


@pytest.fixture
def rpc(rpc_server):
    return rpc_server


def _code(resp):
    return resp.json()["error"]["code"]


@pytest.mark.parametrize(
    ("headers", "body", "status"),
    [
        ({}, b'{"tx": "00"}' + b" " * 200_000, 401),  # no token: answered before the body is read
        ({}, b'{"tx": "00"}' + b" " * 900_000, 401),
        ({"Authorization": f"Bearer {TOKEN}", "Idempotency-Key": "k1"}, b'{"tx": "00"}' + b" " * 200_000, 400),
        ({"Authorization": f"Bearer {TOKEN}", "Idempotency-Key": "k2"}, b'{"tx": "00"}' + b" " * 900_000, 400),
        ({"Authorization": f"Bearer {TOKEN}"}, b"x" * (MAX_BODY + 1000), 413),
    ],
    ids=["unauthorized", "unauthorized-big", "idempotent-replay", "idempotent-replay-big", "too-large"],
)
async def test_an_early_answer_leaves_the_connection_usable(rpc, headers, body, status):
    _node, url = rpc
    with trio.fail_after(30):
        async with httpx.AsyncClient(base_url=url, timeout=5, limits=httpx.Limits(max_connections=1)) as http:
            for _ in range(20):  # with an Idempotency-Key the first answer is cached, the rest replayed
                resp = await http.post("/v1/transactions", content=body, headers=headers)
                assert resp.status_code == status, resp.text
                health = await http.get("/v1/health")  # the same connection, or a fresh one
                assert health.json() == {"status": "ok"}


def _nested(depth, leaf="1"):
    return "[" * depth + leaf + "]" * depth


async def test_deep_or_huge_json_is_a_400_not_a_500(rpc):
    node, url = rpc
    offer = JobOffer.create(
        CLIENT, node.genesis.chain_id, workload="echo", params_hash=params_hash("echo", {"m": "x"}),
        max_price=aitbc(1), max_runtime_s=10, verification="none", timestamp_ms=node.clock_ms(),
    )  # fmt: skip
    auth = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    cases = [
        ("/v1/transactions", '{"tx": ' + _nested(10_000) + "}"),
        ("/v1/jobs", json.dumps({"offer": offer.encode().hex(), "workload": "echo"})[:-1] + ', "params": {"a": '
         + _nested(5_000) + "}}"),
        ("/v1/jobs", json.dumps({"offer": offer.encode().hex(), "workload": "echo", "params": {"n": 2**70}})),
        ("/v1/jobs", json.dumps({"offer": offer.encode().hex(), "workload": "echo", "params": {"a": json.loads(
            _nested(40))}})),
    ]  # fmt: skip
    with trio.fail_after(30):
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            for path, body in cases:
                resp = await http.post(path, content=body.encode(), headers=auth)
                assert resp.status_code == 400, (path, body[:80], resp.status_code, resp.text[:200])
                assert _code(resp) in ("BAD_JSON", "BAD_PARAMS"), resp.text


@pytest.mark.parametrize("auth", [False, True], ids=["unauthorized", "idempotent-replay"])
async def test_a_body_sent_after_an_early_answer_is_not_taken_for_the_next_request(rpc, auth):
    """A client that sends its headers, gets the answer, then its body, then its next
    request on the same connection (raw socket, as a slow client would)."""
    _node, url = rpc
    host, port = url.removeprefix("http://").rstrip("/").split(":")
    headers = f"Authorization: Bearer {TOKEN}\r\nIdempotency-Key: slow\r\n" if auth else ""
    body = b'{"tx": "00"}'
    head = (
        f"POST /v1/transactions HTTP/1.1\r\nHost: x\r\n{headers}Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    with trio.fail_after(20):
        if auth:  # the first request with this key is answered (and cached) normally
            async with httpx.AsyncClient(base_url=url) as http:
                hdrs = {"Authorization": f"Bearer {TOKEN}", "Idempotency-Key": "slow"}
                assert (await http.post("/v1/transactions", content=body, headers=hdrs)).status_code == 400
        stream = await trio.open_tcp_stream(host, int(port))
        async with stream:
            await stream.send_all(head)
            answer = b""
            while b"\r\n\r\n" not in answer:
                answer += await stream.receive_some(65536)
            assert answer.split(b" ", 2)[1] in (b"401", b"400"), answer[:100]
            try:
                await stream.send_all(body + b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
            except trio.BrokenResourceError:
                return  # closed after the early answer: the client knows to reconnect
            rest = b""
            with trio.move_on_after(5) as waited:
                while b"/v1/health" not in rest and b'"ok"' not in rest:
                    chunk = await stream.receive_some(65536)
                    if not chunk:
                        return  # closed after the early answer: the client knows to reconnect
                    rest += chunk
            assert not waited.cancelled_caught, "the next request on the connection got no answer"
