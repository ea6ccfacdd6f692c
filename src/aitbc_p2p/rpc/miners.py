"""The v1 miner API, exactly as the seed miner guide's ``miner.sh`` speaks it (specs/rpc.md,
"Miner API"): ``POST /v1/miner/heartbeat``, ``GET /v1/miner/next?miner=ID&slots=N``
(204 when there is no work), ``POST /v1/miner/proof``; and ``GET /v1/miners`` for the
operator. A miner authenticates with its own Bearer API key (``[miners] keys``), never
the peer's token, and reaches only these three routes and only its own jobs.
"""

from __future__ import annotations

import hmac
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import BaseModel
from quart import Quart, Response, g, request
from quart_schema import document_request

from aitbc_p2p.compute.miners import MinerPool, MinerRequestError
from aitbc_p2p.crypto.keys import validate_address
from aitbc_p2p.exceptions import CryptoError
from aitbc_p2p.node.api import NodeAPI
from aitbc_p2p.rpc.schemas import HeartbeatBody, ProofBody

PREFIX = "/v1/miner/"


def _valid_address(text: str) -> bool:
    try:
        validate_address(text)
    except CryptoError:
        return False
    return True


def miner_of(api: NodeAPI) -> tuple[int, str, str] | None:
    """Authenticate a request to ``/v1/miner/*``: None once ``g.miner`` names the miner,
    else the refusal's ``(status, code, message)``."""
    pool = api.miner_pool()
    if pool is None:
        return 404, "NOT_FOUND", "this peer takes no external miners ([miners] in its config)"
    header = request.headers.get("Authorization", "")
    bearer = header.removeprefix("Bearer ").strip() if header.startswith("Bearer ") else ""
    miner = pool.authenticate(bearer) if bearer else None
    if miner is None:
        return 401, "UNAUTHORIZED", "missing or unknown miner API key (Authorization: Bearer <API_KEY>)"
    g.miner = miner
    return None


def install(
    app: Quart,
    api: NodeAPI,
    body: Callable[[type[BaseModel]], Awaitable[dict[str, Any]]],
    json_response: Callable[[Any, int], Response],
    problem: Callable[[int, str, str], Exception],
) -> None:
    """Add the miner API to the RPC ``app``: ``body(model)`` reads a request's JSON
    object checked against its model, ``json_response(value, status)`` answers, ``problem(status, code, message)``
    is the app's error."""

    def pool() -> MinerPool:
        found = api.miner_pool()
        assert found is not None  # miner_of let the request through
        return found

    @app.errorhandler(MinerRequestError)
    async def refused(e: MinerRequestError) -> Response:
        doc = {"error": {"code": e.code, "message": str(e), "details": {}}}
        return Response(json.dumps(doc), status=e.status, content_type="application/json")

    @app.post("/v1/miner/heartbeat")
    @document_request(HeartbeatBody)
    async def heartbeat() -> Response:
        doc = await body(HeartbeatBody)
        answer = pool().heartbeat(g.miner, doc, valid_wallet=_valid_address)
        answer["server_time"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        return json_response(answer, 200)

    @app.get("/v1/miner/next")
    async def next_job() -> Response:
        named = request.args.get("miner", g.miner)
        if not hmac.compare_digest(named.encode(), g.miner.encode()):
            raise problem(403, "MINER_MISMATCH", f"this API key is miner {g.miner!r}'s, not {named[:64]!r}'s")
        text = request.args.get("slots", "1")
        if not text.isdigit() or not 1 <= int(text) <= 64:
            raise problem(400, "BAD_REQUEST", "slots must be an integer from 1 to 64")
        job = pool().next(g.miner, int(text))
        if job is None:
            return Response(b"", status=204)
        return json_response(job, 200)

    @app.post("/v1/miner/proof")
    @document_request(ProofBody)
    async def proof() -> Response:
        doc = await body(ProofBody)
        return json_response(pool().proof(g.miner, doc), 200)

    @app.get("/v1/miners")
    async def miners() -> Response:
        found = api.miner_pool()
        if found is None:
            raise problem(404, "NOT_FOUND", "this peer takes no external miners ([miners] in its config)")
        return json_response({"miners": found.describe(), "payouts": api.miner_payouts()}, 200)


__all__ = ["PREFIX", "install", "miner_of"]
