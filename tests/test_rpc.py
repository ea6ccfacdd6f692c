"""The RPC through a real Hypercorn server and real httpx requests.

Every bad request gets a 4xx with the envelope {"error": {"code", "message", "details"}}
and changes no state (balances, nonces, mempool).
"""

import json
from importlib.metadata import version

import httpx
import pytest
import trio

from aitbc_p2p.chain import Transaction
from aitbc_p2p.exceptions import REJECTION_REASONS, RpcError
from aitbc_p2p.rpc import RpcClient
from aitbc_p2p.rpc.app import REASON_STATUS, reason_code
from aitbc_p2p.testing import make_key, make_tx
from aitbc_p2p.types import aitbc
from conftest import RPC_TOKEN

TOKEN = RPC_TOKEN
CLIENT = make_key("client")
DEST = make_key("dest")


@pytest.fixture
async def rpc(rpc_server):
    node, url = rpc_server
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}) as http:
        yield node, http, url


def snapshot(node):
    return (node.account(CLIENT.address), node.account(DEST.address), len(node.mempool), node.supply())


def assert_envelope(resp, status, code):
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code, body
    assert body["error"]["message"]
    return body["error"]


async def post_tx(http, tx):
    return await http.post("/v1/transactions", json={"tx": tx.encode().hex()})


async def test_health_needs_no_token_but_everything_else_does(rpc):
    node, _http, url = rpc
    async with httpx.AsyncClient(base_url=url) as anon:
        assert (await anon.get("/v1/health")).json() == {"status": "ok"}
        assert_envelope(await anon.get("/v1/status"), 401, "UNAUTHORIZED")
        before = snapshot(node)
        tx = make_tx(CLIENT, to=DEST.address, amount=1)
        assert_envelope(await anon.post("/v1/transactions", json={"tx": tx.encode().hex()}), 401, "UNAUTHORIZED")
        wrong = {"Authorization": "Bearer not-the-token"}
        assert_envelope(
            await anon.post("/v1/transactions", json={"tx": tx.encode().hex()}, headers=wrong), 401, "UNAUTHORIZED"
        )
        assert snapshot(node) == before


async def test_status_account_and_accepted_transaction(rpc):
    _node, http, _url = rpc
    status = (await http.get("/v1/status")).json()
    assert status["chain_id"] == "ait-devnet" and status["consensus"] == "solo"
    assert status["version"] == version("aitbc-p2p") and status["uptime_s"] >= 0
    assert status["sync"] == {"target_height": status["height"], "behind": 0}  # alone: nobody claims more
    tx = make_tx(CLIENT, to=DEST.address, amount=aitbc(1))
    resp = await post_tx(http, tx)
    assert resp.status_code == 201 and resp.json()["tx_hash"] == tx.hash.hex()
    with trio.fail_after(20):
        while (await http.get(f"/v1/transactions/{tx.hash.hex()}")).json()["status"] != "committed":
            await trio.sleep(0.1)
    assert (await http.get(f"/v1/transactions/{tx.hash.hex()}")).json()["final"] is True  # solo: at once
    acct = (await http.get(f"/v1/accounts/{DEST.address}")).json()
    assert acct["balance"] == aitbc(1) and acct["balance_aitbc"] == "1"
    history = (await http.get(f"/v1/accounts/{DEST.address}/history")).json()["txs"]
    assert [h["hash"] for h in history] == [tx.hash.hex()]


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"{not json", "BAD_JSON"),
        (b"[1, 2]", "BAD_JSON"),
        (b'{"tx": 5}', "BAD_REQUEST"),
        (b'{"tx": "zz"}', "BAD_REQUEST"),
        (b'{"tx": "deadbeef"}', "MALFORMED"),
    ],
)
async def test_malformed_requests(rpc, body, code):
    node, http, _ = rpc
    before = snapshot(node)
    resp = await http.post("/v1/transactions", content=body, headers={"Content-Type": "application/json"})
    assert_envelope(resp, 400, code)
    assert snapshot(node) == before


async def test_bad_signature(rpc):
    node, http, _ = rpc
    before = snapshot(node)
    good = make_tx(CLIENT, to=DEST.address, amount=5)
    forged = Transaction.from_wire(
        {"body": {**good.body(), "payload": {"to": DEST.address, "amount": 50}}, "sig": good.signature}
    )
    err = assert_envelope(await post_tx(http, forged), 400, "BAD_SIGNATURE")
    assert err["details"]["reason"] == "BadSignature"
    assert snapshot(node) == before


async def test_wrong_chain(rpc):
    node, http, _ = rpc
    before = snapshot(node)
    assert_envelope(await post_tx(http, make_tx(CLIENT, chain_id="ait-mainnet")), 400, "WRONG_CHAIN")
    assert snapshot(node) == before


async def test_replayed_nonce(rpc):
    node, http, _ = rpc
    tx = make_tx(CLIENT, to=DEST.address, amount=1)
    assert (await post_tx(http, tx)).status_code == 201
    assert_envelope(await post_tx(http, tx), 409, "DUPLICATE")
    with trio.fail_after(20):
        while node.store.find_tx(tx.hash) is None:
            await trio.sleep(0.05)
    before = snapshot(node)
    assert_envelope(await post_tx(http, tx), 409, "DUPLICATE")  # the very same tx, committed
    err = assert_envelope(
        await post_tx(http, make_tx(CLIENT, nonce=0, to=DEST.address, amount=2)), 409, "NONCE_TOO_LOW"
    )
    assert err["details"]["expected"] == 1
    assert snapshot(node) == before


async def test_overspend(rpc):
    node, http, _ = rpc
    before = snapshot(node)
    err = assert_envelope(
        await post_tx(http, make_tx(CLIENT, to=DEST.address, amount=aitbc(101))), 422, "INSUFFICIENT_FUNDS"
    )
    assert err["details"]["balance"] == aitbc(100)
    # People read AITBC, not base units; details keep the exact integers for programs.
    assert err["message"] == "balance 100 AITBC is below 101.000001 AITBC", err["message"]
    assert snapshot(node) == before


async def test_oversized_body(rpc):
    node, http, _ = rpc
    before = snapshot(node)
    resp = await http.post("/v1/transactions", content=b'{"tx": "' + b"00" * (1 << 20) + b'"}')
    assert_envelope(resp, 413, "BODY_TOO_LARGE")
    assert snapshot(node) == before


async def test_unknown_routes_and_jobs(rpc):
    _, http, _ = rpc
    assert_envelope(await http.get("/v1/nope"), 404, "NOT_FOUND")
    assert_envelope(await http.get("/v1/jobs/" + "00" * 32), 404, "NOT_FOUND")
    assert_envelope(await http.post("/v1/jobs/" + "00" * 32 + "/cancel"), 404, "NOT_FOUND")
    assert_envelope(await http.get("/v1/accounts/aitbc1bad"), 400, "BAD_ADDRESS")
    assert_envelope(await http.post("/v1/jobs", json={"offer": "00", "workload": "echo"}), 422, "BAD_OFFER")


async def test_idempotency_key_replays_the_first_answer(rpc):
    _node, http, _ = rpc
    tx = make_tx(CLIENT, to=DEST.address, amount=3)
    headers = {"Idempotency-Key": "k-1"}
    first = await http.post("/v1/transactions", json={"tx": tx.encode().hex()}, headers=headers)
    again = await http.post("/v1/transactions", json={"tx": tx.encode().hex()}, headers=headers)
    assert first.status_code == again.status_code == 201
    assert json.loads(first.content) == json.loads(again.content)


async def test_sdk_client_raises_rpc_errors(rpc):
    _node, _, url = rpc
    async with RpcClient(url, token=TOKEN) as client:
        assert (await client.health())["status"] == "ok"
        tx_hash = await client.transfer(CLIENT, DEST.address, 7)
        assert (await client.wait_tx(tx_hash))["status"] == "committed"
        with pytest.raises(RpcError) as info:
            await client.transfer(CLIENT, DEST.address, aitbc(1000))
        assert info.value.status == 422 and info.value.code == "INSUFFICIENT_FUNDS"
    async with RpcClient(url, token="wrong") as bad:
        with pytest.raises(RpcError) as info:
            await bad.status()
        assert info.value.status == 401


def test_every_rejection_reason_has_an_http_status_and_code():
    assert set(REASON_STATUS) == set(REJECTION_REASONS)
    assert reason_code("ReplacementUnderpriced") == "REPLACEMENT_UNDERPRICED"


async def test_a_replica_that_cannot_be_paired_is_refused_and_nothing_is_offered(rpc):
    """``replica_of`` (specs/rpc.md): not 32 bytes of hex, or naming no job of this client
    and parameters at replicate: a clear refusal, and no job is tracked."""
    from aitbc_p2p.market import JobOffer, params_hash

    node, http, _ = rpc
    params = {"message": "twice"}

    def offer(**fields):
        return JobOffer.create(
            CLIENT, node.genesis.chain_id, workload="echo", params_hash=params_hash("echo", params),
            max_price=aitbc(1), max_runtime_s=10, verification=fields.get("verification", "replicate"), timestamp_ms=1,
        ).encode().hex()  # fmt: skip

    body = {"offer": offer(), "workload": "echo", "params": params}
    for bad in ("ab", "zz" * 32, 7):
        assert_envelope(await http.post("/v1/jobs", json={**body, "replica_of": bad}), 400, "BAD_REQUEST")
    err = assert_envelope(await http.post("/v1/jobs", json={**body, "replica_of": "11" * 32}), 422, "BAD_OFFER")
    assert "tracks no other job" in err["message"]
    assert not node.market.client_jobs
    first = await http.post("/v1/jobs", json=body)
    assert first.status_code == 201
    spot = {"offer": offer(verification="spot"), "workload": "echo", "params": params}
    paired = await http.post("/v1/jobs", json={**spot, "replica_of": first.json()["job_id"]})
    err = assert_envelope(paired, 422, "BAD_OFFER")
    assert "only an offer at replicate" in err["message"]
    second = await http.post("/v1/jobs", json={**body, "offer": offer(), "replica_of": first.json()["job_id"]})
    assert second.status_code == 201
    status = (await http.get(f"/v1/jobs/{first.json()['job_id']}")).json()
    assert status["replica"] == second.json()["job_id"]
