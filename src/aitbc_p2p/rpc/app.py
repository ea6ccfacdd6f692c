"""The local RPC: a QuartTrio app over a :class:`~aitbc_p2p.node.api.NodeAPI` (specs/rpc.md).

Every route but ``/v1/health`` (and the dashboard's page, :mod:`aitbc_p2p.rpc.ui`) needs
``Authorization: Bearer <token>``, the token being the cookie file in the data directory,
or the dashboard's session cookie from a page of this peer. Errors use the seeds' envelope
``{"error": {"code", "message", "details"}}``. POSTs honour ``Idempotency-Key``.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections import OrderedDict
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import aclosing
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from quart import Response, g, request
from quart_schema import Info, QuartSchema, document_request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from aitbc_p2p.chain.models import Transaction
from aitbc_p2p.codec import encode
from aitbc_p2p.crypto.keys import validate_address
from aitbc_p2p.exceptions import CodecError, ComputeError, CryptoError, MarketError, TxRejected
from aitbc_p2p.market.messages import JobOffer
from aitbc_p2p.node.api import NodeAPI
from aitbc_p2p.node.client_wallet import CapExceeded
from aitbc_p2p.rpc import miners, render, ui
from aitbc_p2p.rpc.schemas import ClientJobBody, JobBody, TxBody
from aitbc_p2p.types import VERSION, Address, Hash32, JobId, aitbc

logger = logging.getLogger(__name__)
T = TypeVar("T")

MAX_BODY = 1 << 20
IDEMPOTENCY_CACHE = 1024
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
"""The ``Host`` names a peer bound to loopback answers to (specs/rpc.md, "Hosts and origins")."""
TOKEN_PARAMS = frozenset({"token", "access_token", "auth", "authorization"})
"""Query parameters refused outright: a token in a URL ends up in logs, histories and
``Referer`` headers (rpc.md); it belongs in the ``Authorization`` header."""

# HTTP status for each TxRejected reason (specs/rpc.md, "Errors").
REASON_STATUS = {
    "Malformed": 400,
    "BadSignature": 400,
    "WrongChain": 400,
    "AmountOutOfRange": 400,
    "BadEvidence": 400,
    "NonceTooLow": 409,
    "NonceTooHigh": 409,
    "Duplicate": 409,
    "ReplacementUnderpriced": 409,
    "InsufficientFunds": 422,
    "InsufficientStake": 422,
    "NothingToWithdraw": 422,
    "Underpriced": 422,
    "NotProvider": 422,
    "UnknownJob": 422,
    "NotJobParty": 422,
    "NotArbiter": 422,
    "JobState": 422,
    "PoolFull": 503,
}


def reason_code(reason: str) -> str:
    """``NonceTooLow`` -> ``NONCE_TOO_LOW``."""
    return "".join("_" + c if c.isupper() and i else c for i, c in enumerate(reason)).upper()


class Problem(Exception):
    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details or {}


def envelope(status: int, code: str, message: str, details: Any = None) -> Response:
    body = json.dumps({"error": {"code": code, "message": message, "details": details or {}}}, default=_hexify)
    return Response(body, status=status, content_type="application/json")


def _hexify(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _closing(response: Response) -> Response:
    """Mark an answer given before the request's body was read: the server closes the
    connection after it. Kept alive, the unread body would sit where the client's next
    request is expected, and that request would never be answered."""
    if request.method not in ("GET", "HEAD"):
        response.headers["Connection"] = "close"
    return response


def _event_stream(updates: AsyncGenerator[T, None], encode: Callable[[T], bytes]) -> Response:
    """A ``text/event-stream`` answer of ``updates``, each encoded by ``encode``; the
    generator is closed when the client goes."""

    async def stream() -> AsyncIterator[bytes]:
        async with aclosing(updates):
            async for update in updates:
                yield encode(update)

    response = Response(stream(), content_type="text/event-stream")
    response.headers["Cache-Control"] = "no-cache"
    response.timeout = None  # a stream lasts as long as what it follows
    return response


def _json(value: Any, status: int = 200) -> Response:
    return Response(json.dumps(value, default=_hexify), status=status, content_type="application/json")


async def _body(model: type[BaseModel]) -> dict[str, Any]:
    """The request's JSON object, checked against its route's ``model`` (rpc/schemas.py):
    a field the route does not know is refused, never ignored (a typo must not pass as a
    default), and a field of the wrong JSON type is refused, never coerced."""
    raw = await request.get_data(cache=True)
    try:
        doc = json.loads(raw or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise Problem(400, "BAD_JSON", f"request body is not valid JSON: {e}") from e
    except RecursionError as e:  # the stdlib parser recurses per level of nesting
        raise Problem(400, "BAD_JSON", "request body nests too deeply") from e
    if not isinstance(doc, dict):
        raise Problem(400, "BAD_JSON", "request body must be a JSON object")
    known = sorted(model.model_fields)
    unknown = sorted(set(doc) - set(known))
    if unknown:
        raise Problem(400, "BAD_REQUEST", f"unknown fields {unknown[:8]}; this route takes {known}")
    try:
        model.model_validate(doc)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise Problem(400, "BAD_REQUEST", f"field {where!r}: {first['msg']}") from e
    except RecursionError as e:
        raise Problem(400, "BAD_JSON", "request body nests too deeply") from e
    return doc


def _hex_field(doc: dict[str, Any], name: str, size: int | None = None) -> bytes:
    value = doc.get(name)
    if not isinstance(value, str):
        raise Problem(400, "BAD_REQUEST", f"field {name!r} must be a hex string")
    try:
        raw = bytes.fromhex(value)
    except ValueError as e:
        raise Problem(400, "BAD_REQUEST", f"field {name!r} is not hex") from e
    if size is not None and len(raw) != size:
        raise Problem(400, "BAD_REQUEST", f"field {name!r} must be {2 * size} hex digits")
    return raw


def _tx_hash(text: str) -> Hash32:
    try:
        return Hash32(bytes.fromhex(text))
    except ValueError as e:
        raise Problem(400, "BAD_REQUEST", "transaction hash must be hex") from e


def _address(text: str) -> Address:
    try:
        return validate_address(text)
    except CryptoError as e:
        raise Problem(400, "BAD_ADDRESS", str(e)) from e


def _job_params(value: Any) -> dict[str, Any]:
    """Job parameters as the codec will hash them: a map of at most MAX_DEPTH levels,
    integers in 64 bits, no floats (specs/rpc.md, "Jobs")."""
    if not isinstance(value, dict):
        raise Problem(400, "BAD_PARAMS", "params must be an object")
    try:
        encode(value)  # the codec's own checks: depth, integer range, no floats
    except CodecError as e:
        if "float" in str(e):
            raise Problem(400, "BAD_PARAMS", "job parameters must not contain floats (use integers or strings)") from e
        raise Problem(400, "BAD_PARAMS", f"job parameters cannot be encoded: {e}") from e
    return value


def _job_lookup(lookup: Callable[[str], T | None], job_id: str) -> T | None:
    """A job by its hex id or a unique prefix of it (409 AMBIGUOUS_JOB_ID otherwise)."""
    try:
        return lookup(job_id)
    except MarketError as e:
        raise Problem(409, "AMBIGUOUS_JOB_ID", str(e)) from e


def host_name(value: str) -> str:
    """The host of a ``Host`` header or an origin's authority, lower-cased, without its
    port or an IPv6 literal's brackets (``[::1]:8006`` is ``::1``)."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def create_app(
    api: NodeAPI, *, token: str, max_body: int = MAX_BODY, allowed_hosts: frozenset[str] | None = LOOPBACK_NAMES
) -> QuartTrio:
    """The RPC app for ``api``. ``token`` guards every route but health; every route
    answers only requests whose ``Host`` (and ``Origin``, if sent) names one of
    ``allowed_hosts`` (None: any), so a web page cannot reach it by DNS rebinding."""
    app = QuartTrio(__name__)
    app.config["MAX_CONTENT_LENGTH"] = max_body
    QuartSchema(  # GET /openapi.json, from the routes and rpc/schemas.py (behind the token like the rest)
        app,
        openapi_path="/openapi.json",
        swagger_ui_path=None,
        redoc_ui_path=None,
        scalar_ui_path=None,
        info=Info(title="AITBC peer RPC", version=VERSION, description="specs/rpc.md"),
        security_schemes={"bearer": {"type": "http", "scheme": "bearer"}},
        security=[{"bearer": []}],
    )
    idempotent: OrderedDict[tuple[str, str, str], tuple[int, bytes]] = OrderedDict()
    """(who, path, Idempotency-Key) -> the answer: a miner's key never replays another's answer."""

    @app.before_request
    async def guard() -> Response | None:
        """Checks before the token: where the request says it is going and came from."""
        if allowed_hosts is not None:
            host = host_name(request.headers.get("Host", ""))
            if host not in allowed_hosts:
                return _closing(
                    envelope(403, "FORBIDDEN_HOST", f"this peer answers to {', '.join(sorted(allowed_hosts))} only")
                )
            origin = request.headers.get("Origin")
            if origin is not None and host_name(origin.partition("://")[2].split("/", 1)[0]) not in allowed_hosts:
                return _closing(envelope(403, "FORBIDDEN_ORIGIN", f"requests from {origin[:100]!r} are refused"))
        if TOKEN_PARAMS & {k.lower() for k in request.args}:
            return _closing(
                envelope(400, "TOKEN_IN_QUERY", "send the token as 'Authorization: Bearer <token>', never in the URL")
            )
        return None

    @app.before_request
    async def authenticate() -> Response | None:
        g.principal = ""
        if request.path == "/v1/health" or request.path in ui.PUBLIC_PATHS:
            return None
        header = request.headers.get("Authorization", "")
        given = header.removeprefix("Bearer ").strip() if header.startswith("Bearer ") else ""
        api_key = request.headers.get("X-Api-Key")
        if request.path.startswith(miners.PREFIX):  # a miner's own key, never the token
            unknown = miners.miner_of(api)
            if unknown is not None:
                return _closing(envelope(*unknown))
            g.principal = "miner:" + g.miner
        elif api_key is not None and not header:  # a client of the peer's wallet (the seeds' client API)
            refused = _client_of(api_key)
            if refused is not None:
                return _closing(refused)
            g.principal = "client:" + g.client
        elif given and hmac.compare_digest(given.encode(), token.encode()):
            pass
        elif not header and ui.has_session(token):
            refusal = ui.cookie_refusal()  # the dashboard's cookie: from the peer's own pages only
            if refusal is not None:
                return _closing(envelope(403, "FORBIDDEN_ORIGIN", refusal))
        else:
            return _closing(
                envelope(401, "UNAUTHORIZED", "missing or wrong bearer token (see rpc.token in the data directory)")
            )
        key = request.headers.get("Idempotency-Key")
        if request.method == "POST" and key:
            cached = idempotent.get((g.principal, request.path, key))
            if cached is not None:
                return _closing(Response(cached[1], status=cached[0], content_type="application/json"))
        return None

    def _client_of(api_key: str) -> Response | None:
        """Authenticate ``X-Api-Key`` against the peer's wallet; it reaches ``POST /v1/jobs``
        and ``GET /v1/jobs/<id>`` only."""
        wallet = api.wallet_service()
        name = wallet.authenticate(api_key) if wallet is not None else None
        if name is None:
            why = "unknown X-Api-Key" if wallet is not None else "this peer holds no wallet for API keys ([wallet])"
            return envelope(401, "UNAUTHORIZED", why)
        path, method = request.path, request.method
        if not ((method == "POST" and path == "/v1/jobs") or (method == "GET" and path.startswith("/v1/jobs/"))):
            return envelope(403, "FORBIDDEN", "an API key reaches POST /v1/jobs and GET /v1/jobs/<id> only")
        g.client = name
        return None

    @app.after_request
    async def remember(response: Response) -> Response:
        key = request.headers.get("Idempotency-Key")
        if request.method == "POST" and key and response.status_code < 500 and "principal" in g:
            idempotent[(g.principal, request.path, key)] = (
                response.status_code,
                await response.get_data(as_text=False),
            )
            while len(idempotent) > IDEMPOTENCY_CACHE:
                idempotent.popitem(last=False)
        return response

    @app.errorhandler(Problem)
    async def problem(e: Problem) -> Response:
        return envelope(e.status, e.code, e.message, e.details)

    @app.errorhandler(HTTPException)
    async def http_error(e: HTTPException) -> Response:
        codes = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED", 408: "BODY_TIMEOUT", 413: "BODY_TOO_LARGE"}
        code = codes.get(e.code or 0, "HTTP_ERROR")
        response = envelope(e.code or 500, code, e.description or code)
        return _closing(response) if e.code in (408, 413) else response

    @app.get("/v1/health")
    async def health() -> Response:
        return _json({"status": "ok"})

    @app.get("/v1/status")
    async def status() -> Response:
        return _json(render.status(api.status()))

    @app.get("/v1/events")
    async def chain_events() -> Response:
        """Server-sent events: each block as it joins the main chain, a ``reorg`` when
        blocks leave it (specs/rpc.md, "Chain events")."""
        text = request.headers.get("Last-Event-ID") or request.args.get("after")
        if text is not None and (not text.isdigit() or len(text) > 12):
            raise Problem(400, "BAD_REQUEST", "after (or Last-Event-ID) must be a block height")
        updates = api.watch_chain(after=None if text is None else int(text))
        return _event_stream(updates, render.chain_sse)

    @app.get("/v1/network")
    async def network() -> Response:
        return _json(render.network(api.network_info()))

    @app.get("/v1/supply")
    async def supply() -> Response:
        return _json(render.supply(api.supply()))

    @app.get("/v1/accounts/<address>")
    async def account(address: str) -> Response:
        checked = _address(address)
        return _json({**render.account(api.account(checked)), "reputation": render.reputation(api.reputation(checked))})

    @app.get("/v1/accounts/<address>/history")
    async def history(address: str) -> Response:
        try:
            limit = min(max(int(request.args.get("limit", "50")), 1), 500)
        except ValueError as e:
            raise Problem(400, "BAD_REQUEST", "limit must be an integer") from e
        txs = [render.history_entry(loc) for loc in api.history(_address(address), limit)]
        return _json({"address": address, "txs": txs})

    @app.post("/v1/transactions")
    @document_request(TxBody)
    async def submit_tx() -> Response:
        raw = _hex_field(await _body(TxBody), "tx")
        try:
            tx = Transaction.decode(raw)
            tx_hash = await api.submit_tx(tx)
        except TxRejected as e:
            details = {"reason": e.reason, **e.details}
            raise Problem(REASON_STATUS.get(e.reason, 400), reason_code(e.reason), e.message, details) from e
        return _json({"tx_hash": tx_hash.hex(), "status": "pending"}, 201)

    @app.get("/v1/transactions/<tx_hash>")
    async def tx_status(tx_hash: str) -> Response:
        found = api.tx_status(_tx_hash(tx_hash))
        if found is None:
            raise Problem(404, "NOT_FOUND", "no such transaction")
        return _json(render.tx_status(found))

    @app.get("/v1/transactions/<tx_hash>/proof")
    async def tx_proof(tx_hash: str) -> Response:
        found = api.tx_proof(_tx_hash(tx_hash))
        if found is None:
            raise Problem(404, "NOT_FOUND", "no committed transaction with this hash")
        return _json(render.tx_proof(found))

    @app.get("/v1/accounts/<address>/proof")
    async def account_proof(address: str) -> Response:
        found = api.account_proof(_address(address))
        if found is None:
            raise Problem(404, "NOT_FOUND", "no such account in the state")
        return _json(render.account_proof(found))

    @app.get("/v1/blocks/<int:height>")
    async def block(height: int) -> Response:
        found = api.block(height)
        if found is None:
            raise Problem(404, "NOT_FOUND", f"no block at height {height}")
        return _json(render.block(found))

    @app.post("/v1/jobs")
    @document_request(JobBody)
    async def submit_job() -> Response:
        """Submit a job: a wallet's signed offer with the token, or the seeds' request
        (ClientJobBody) with X-Api-Key (specs/rpc.md, "Client API")."""
        if "client" in g:
            return await _client_job(g.client)
        doc = await _body(JobBody)
        raw = _hex_field(doc, "offer")
        workload = doc.get("workload")
        if not isinstance(workload, str):
            raise Problem(400, "BAD_REQUEST", "workload must be a string")
        params = _job_params(doc.get("params", {}))
        replica_of = None if doc.get("replica_of") is None else JobId(Hash32(_hex_field(doc, "replica_of", 32)))
        try:
            job_id = await api.submit_job(JobOffer.decode(raw), workload, params, replica_of=replica_of)
        except ComputeError as e:
            raise Problem(400, "BAD_PARAMS", str(e)) from e
        except MarketError as e:
            raise Problem(422, "BAD_OFFER", str(e)) from e
        return _json({"job_id": job_id.hex(), "status": "bidding"}, 201)

    async def _client_job(client: str) -> Response:
        """The seeds' submit: ``{"type": "inference", "prompt", "model"}`` or ``{"workload",
        "params"}``, optional ``max_price`` (AITBC) and ``max_runtime_s``; the peer's wallet
        offers it and opens its escrow (specs/rpc.md, "Client API")."""
        doc = await _body(ClientJobBody)
        if "type" in doc:
            if doc["type"] != "inference" or "workload" in doc or "params" in doc:
                raise Problem(400, "BAD_REQUEST", "type must be 'inference' (with prompt and model), or send workload")
            workload: Any = "llm_gen"
            params: dict[str, Any] = {k: doc[k] for k in ("prompt", "model") if k in doc}
        else:
            workload = doc.get("workload")
            if not isinstance(workload, str) or "prompt" in doc or "model" in doc:
                raise Problem(400, "BAD_REQUEST", "send type 'inference' with prompt and model, or workload and params")
            params = _job_params(doc.get("params", {}))
        max_price = None
        if doc.get("max_price") is not None:  # a string: ClientJobBody checked its type
            try:
                max_price = aitbc(doc["max_price"])
            except ValueError as e:
                raise Problem(400, "BAD_REQUEST", f"max_price: {e}") from e
            if max_price < 1:
                raise Problem(400, "BAD_REQUEST", 'max_price must be a string of AITBC above 0, such as "0.5"')
        runtime = doc.get("max_runtime_s")
        if runtime is not None and not 1 <= runtime <= 86_400:  # an integer: ClientJobBody checked
            raise Problem(400, "BAD_REQUEST", "max_runtime_s must be an integer from 1 to 86400")
        wallet = api.wallet_service()
        assert wallet is not None
        try:
            job_id = await wallet.submit(client, workload, params, max_price=max_price, max_runtime_s=runtime)
        except CapExceeded as e:
            raise Problem(402, "SPENDING_CAP", str(e)) from e
        except ComputeError as e:
            raise Problem(400, "BAD_PARAMS", str(e)) from e
        except MarketError as e:
            raise Problem(422, "BAD_OFFER", str(e)) from e
        return _json({"job_id": job_id.hex(), "status": "pending", "submitted_at": render.iso_now()}, 201)

    @app.get("/v1/jobs/<job_id>")
    async def job_status(job_id: str) -> Response:
        found = _job_lookup(api.job_status, job_id)
        if "client" in g:  # the seeds' shape, for the client's own jobs only
            wallet = api.wallet_service()
            if found is None or wallet is None or wallet.owner(found.job_id) != g.client:
                raise Problem(404, "NOT_FOUND", "no such job of this API key")
            return _json(render.seed_job(found, api.job_result(found.job_id)))
        if found is None:
            raise Problem(404, "NOT_FOUND", "no such job")
        return _json(render.job(found))

    @app.get("/v1/jobs/<job_id>/events")
    async def job_events(job_id: str) -> Response:
        """Server-sent events: the job's status now and on each change, the workload's
        progress, and ``end`` when it has finished (specs/rpc.md, "Job events")."""
        found = _job_lookup(api.job_status, job_id)
        if found is None:
            raise Problem(404, "NOT_FOUND", "no such job")
        text = request.headers.get("Last-Event-ID") or request.args.get("after", "0")
        if not text.isdigit() or len(text) > 12:
            raise Problem(400, "BAD_REQUEST", "after (or Last-Event-ID) must be a progress event number")
        return _event_stream(api.watch_job(found.job_id, after=int(text)), render.sse)

    @app.get("/v1/jobs/<job_id>/result")
    async def job_result(job_id: str) -> Response:
        found = _job_lookup(api.job_result, job_id)
        if found is None:
            raise Problem(404, "NOT_FOUND", "no result for this job (yet)")
        return _json(render.job_result(found))

    @app.get("/v1/jobs/<job_id>/proof")
    async def job_proof(job_id: str) -> Response:
        found = _job_lookup(api.job_proof, job_id)
        if found is None:
            raise Problem(404, "NOT_FOUND", "no committed receipt for this job (yet)")
        return _json(found.to_json())

    @app.post("/v1/jobs/<job_id>/cancel")
    async def cancel_job(job_id: str) -> Response:
        _job_lookup(api.job_status, job_id)  # an ambiguous prefix: 409 AMBIGUOUS_JOB_ID
        try:
            info = await api.cancel_job(job_id)
        except MarketError as e:
            raise Problem(409, "CANNOT_CANCEL", str(e)) from e
        if info is None:
            raise Problem(404, "NOT_FOUND", "this peer tracks no such job")
        return _json(render.job(info))

    @app.get("/v1/jobs")
    async def jobs() -> Response:
        try:
            limit = min(max(int(request.args.get("limit", "50")), 1), 200)
        except ValueError as e:
            raise Problem(400, "BAD_REQUEST", "limit must be an integer") from e
        return _json({"jobs": [render.job(info) for info in api.jobs(limit)]})

    @app.get("/v1/providers")
    async def providers() -> Response:
        return _json({"providers": [render.provider(rec, api.reputation(rec.signer)) for rec in api.providers()]})

    miners.install(app, api, _body, _json, Problem)
    ui.install(app, token=token)
    return app
