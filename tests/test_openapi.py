"""``GET /openapi.json`` against a real server: generated from the routes and the body
models (rpc/schemas.py), it lists exactly the routes specs/rpc.md lists, each route
answers as the spec says, and each body it documents is the one the route checks."""

import re
from pathlib import Path

import httpx
import pytest

from aitbc_p2p.compute.miners import HEARTBEAT_FIELDS, PROOF_FIELDS
from aitbc_p2p.rpc.schemas import HeartbeatBody, ProofBody
from conftest import RPC_TOKEN

SPEC = (Path(__file__).resolve().parents[1] / "specs" / "rpc.md").read_text()
FAKE = {"job_id": "ab" * 32, "tx_hash": "cd" * 32, "height": "999999", "address": "aitbc1qqqq"}


def spec_routes() -> set[tuple[str, str]]:
    """``(METHOD, /path/{param})`` of every row of the Routes table."""
    table = SPEC.split("## Routes", 1)[1].split("\n## ", 1)[0]
    found = re.findall(r"^\| `(GET|POST) (/[^`]+)`", table, flags=re.M)
    return {(method, re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", path)) for method, path in found}


@pytest.fixture
async def api(rpc_server):
    node, url = rpc_server
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {RPC_TOKEN}"}) as http:
        yield node, http, url


async def test_the_document_lists_the_spec_routes_and_no_other(api):
    _node, http, url = api
    async with httpx.AsyncClient(base_url=url) as anon:
        assert (await anon.get("/openapi.json")).status_code == 401  # behind the token like the rest
    doc = (await http.get("/openapi.json")).json()
    assert doc["openapi"].startswith("3.") and doc["info"]["title"] == "AITBC peer RPC"
    documented = {
        (method.upper(), path)
        for path, operations in doc["paths"].items()
        for method in operations
        if not path.startswith("/ui") and path != "/openapi.json"  # the dashboard: rpc.md, "Dashboard"
    }
    assert documented == spec_routes()
    for path, operations in doc["paths"].items():
        for method, op in operations.items():
            body = op.get("requestBody")
            if method == "post" and path.startswith("/v1/") and path != "/v1/jobs/{job_id}/cancel":
                schema = body["content"]["application/json"]["schema"]
                if "$ref" in schema:
                    schema = doc["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
                assert schema["additionalProperties"] is False, path  # unknown fields are refused


def test_the_miner_models_are_the_pools_fields():
    assert set(HeartbeatBody.model_fields) == set(HEARTBEAT_FIELDS)
    assert set(ProofBody.model_fields) == set(PROOF_FIELDS)


async def test_every_route_answers_as_the_spec_says(api):
    _node, http, _url = api
    for method, path in sorted(spec_routes()):
        concrete = re.sub(r"\{(\w+)\}", lambda m: FAKE[m.group(1)], path)
        if method == "GET" and path.endswith("events"):
            async with http.stream("GET", concrete) as resp:  # a stream: its headers say enough
                if "{job_id}" in path:
                    assert resp.status_code == 404, path  # no such job
                else:
                    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
            continue
        resp = await (http.get(concrete) if method == "GET" else http.post(concrete, json={"unknown": 1}))
        assert resp.headers["content-type"] == "application/json", (path, resp.text)
        if path.startswith("/v1/miner"):  # this peer takes no miners: rpc.md, "Miner API"
            assert resp.status_code == 404 and resp.json()["error"]["code"] == "NOT_FOUND", (path, resp.text)
        elif "{" in path:
            expected = {"{address}": 400, "{job_id}": 404, "{tx_hash}": 404, "{height}": 404}
            status = next(code for name, code in expected.items() if name in path)
            if path == "/v1/jobs/{job_id}/cancel":
                status = 404
            assert resp.status_code == status and set(resp.json()) == {"error"}, (path, resp.text)
        elif method == "POST":  # a field the route does not take: refused, named
            assert resp.status_code == 400 and "unknown fields ['unknown']" in resp.json()["error"]["message"], path
        else:
            assert resp.status_code == 200 and isinstance(resp.json(), dict), (path, resp.text)
