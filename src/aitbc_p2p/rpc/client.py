"""The SDK transport: an httpx client for a peer's local RPC, and the job flow on top.

Keys never leave the caller: the client signs offers and transactions locally and
sends only signed bytes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing
from pathlib import Path
from types import TracebackType
from typing import Any, NoReturn, Self

import httpx
import trio
from httpx_sse import ServerSentEvent, SSEError, aconnect_sse

from aitbc_p2p.chain.models import Transaction, TxKind
from aitbc_p2p.chain.payloads import MAX_ATTEMPTS, JobOpen, Payload
from aitbc_p2p.compute.workloads import check_params
from aitbc_p2p.crypto import PrivateKey
from aitbc_p2p.exceptions import MarketError, RpcError
from aitbc_p2p.market import Bid, JobOffer, escrow_amount, params_hash, select_bid
from aitbc_p2p.market.audit import check_level
from aitbc_p2p.market.messages import is_model_digest
from aitbc_p2p.rpc.files import NODE_INFO, TOKEN_FILE
from aitbc_p2p.types import Address, format_aitbc

STREAM_READ_TIMEOUT_S = 45.0
"""A job's event stream sends a keepalive every 15 s: this long with nothing is a dead stream."""
STREAM_RETRIES = 5
"""Reconnections of a job's event stream in a row before :meth:`RpcClient.stream_job` gives up."""

logger = logging.getLogger(__name__)

NONCE_RETRIES = 5
NONCE_RACES = ("REPLACEMENT_UNDERPRICED", "NONCE_TOO_LOW")
"""Refusals meaning another sender of the same key took the nonce first."""


class RpcClient:
    """``async with RpcClient(url, token=...) as rpc: await rpc.status()``."""

    def __init__(
        self, url: str, *, token: str, timeout: float = 10.0, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self._http = httpx.AsyncClient(
            base_url=url.rstrip("/"),
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout,
            transport=transport,
        )
        self._send_locks: dict[str, trio.Lock] = {}

    @classmethod
    def from_data_dir(cls, data_dir: str | Path, *, url: str | None = None, **kwargs: Any) -> RpcClient:
        """The RPC of the peer running on ``data_dir``: its ``rpc.token``, and the URL it
        wrote to ``node.json`` when it started (unless ``url`` is given).

        Raises:
            RpcError: no token there, or no ``node.json`` (the peer is not running) and no ``url``.
        """
        data_dir = Path(data_dir)
        try:
            token = (data_dir / TOKEN_FILE).read_text().strip()
        except OSError as e:
            raise RpcError(0, "NO_TOKEN", f"no RPC token in {data_dir}: is it a peer's data directory?") from e
        if url is None:
            try:
                url = str(json.loads((data_dir / NODE_INFO).read_text())["rpc_url"])
            except (OSError, ValueError, KeyError, TypeError) as e:
                raise RpcError(
                    0, "NOT_RUNNING", f"no {NODE_INFO} in {data_dir}: is its peer running? (or pass url=)"
                ) from e
        return cls(url, token=token, **kwargs)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _call(self, method: str, path: str, json: Any = None, *, idempotent: bool = True) -> Any:
        headers = {"Idempotency-Key": str(uuid.uuid4())} if method == "POST" and idempotent else {}
        try:
            resp = await self._http.request(method, path, json=json, headers=headers)
        except httpx.HTTPError as e:
            raise RpcError(0, "UNREACHABLE", f"{method} {path}: {e}") from e
        if resp.status_code >= 400:
            _raise_for(resp)
        return resp.json()

    async def health(self) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("GET", "/v1/health")
        return result

    async def status(self) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("GET", "/v1/status")
        return result

    async def supply(self) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("GET", "/v1/supply")
        return result

    async def account(self, address: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("GET", f"/v1/accounts/{address}")
        return result

    async def history(self, address: str, limit: int = 50) -> list[dict[str, Any]]:
        result: dict[str, Any] = await self._call("GET", f"/v1/accounts/{address}/history?limit={limit}")
        return list(result["txs"])

    async def submit_tx(self, tx: Transaction) -> str:
        result: dict[str, Any] = await self._call("POST", "/v1/transactions", {"tx": tx.encode().hex()})
        return str(result["tx_hash"])

    async def tx_status(self, tx_hash: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("GET", f"/v1/transactions/{tx_hash}")
        return result

    async def job(self, job_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("GET", f"/v1/jobs/{job_id}")
        return result

    async def cancel_job(self, job_id: str) -> dict[str, Any]:
        """Cancel a job submitted through this peer: its escrow comes back at once with the
        provider's release, else after the provider's grace (specs/market.md, "Failover and cancel")."""
        result: dict[str, Any] = await self._call("POST", f"/v1/jobs/{job_id}/cancel")
        return result

    async def job_result(self, job_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("GET", f"/v1/jobs/{job_id}/result")
        return result

    async def job_proof(self, job_id: str) -> dict[str, Any]:
        """The job's receipt proof (``GET /v1/jobs/<id>/proof``): save it, and check it
        offline with :func:`aitbc_p2p.verify_receipt` or ``aitbc job verify FILE``."""
        result: dict[str, Any] = await self._call("GET", f"/v1/jobs/{job_id}/proof")
        return result

    async def providers(self) -> list[dict[str, Any]]:
        result: dict[str, Any] = await self._call("GET", "/v1/providers")
        return list(result["providers"])

    async def jobs(self, limit: int = 50) -> list[dict[str, Any]]:
        """The jobs this peer takes part in, newest first (``GET /v1/jobs``)."""
        result: dict[str, Any] = await self._call("GET", f"/v1/jobs?limit={limit}")
        return list(result["jobs"])

    async def block(self, height: int) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("GET", f"/v1/blocks/{height}")
        return result

    async def network(self) -> dict[str, Any]:
        """Peers with their scores, gossip verdicts, pool refusals (``GET /v1/network``)."""
        result: dict[str, Any] = await self._call("GET", "/v1/network")
        return result

    async def miners(self) -> dict[str, Any]:
        """A miners' peer's external miners and payouts (``GET /v1/miners``)."""
        result: dict[str, Any] = await self._call("GET", "/v1/miners")
        return result

    # ---------------------------------------------------------- signed flows
    async def send(
        self, key: PrivateKey, kind: TxKind | str, payload: Payload | dict[str, Any], *, fee: int | None = None
    ) -> str:
        """Sign a transaction at the account's pending nonce and submit it; returns its hash.

        Concurrent sends from one key through this client take the nonce one at a time
        (each reads it after the one before was admitted). A nonce taken meanwhile by
        another client of the same key is read again and retried, a few times.
        """
        lock = self._send_locks.setdefault(key.address, trio.Lock())
        async with lock:
            for attempt in range(NONCE_RETRIES):
                status = await self.status()
                acct = await self.account(key.address)
                tx = Transaction.create(
                    key,
                    chain_id=status["chain_id"],
                    kind=kind,
                    nonce=acct["pending_nonce"],
                    fee=status["min_fee"] if fee is None else fee,
                    payload=payload,
                )
                try:
                    return await self.submit_tx(tx)
                except RpcError as e:
                    if e.code not in NONCE_RACES or attempt == NONCE_RETRIES - 1:
                        raise
                    logger.debug("nonce %d taken meanwhile (%s); retrying", tx.nonce, e.code)
        raise AssertionError("unreachable")

    async def transfer(self, key: PrivateKey, to: Address, amount: int, *, fee: int | None = None) -> str:
        return await self.send(key, TxKind.TRANSFER, {"to": to, "amount": amount}, fee=fee)

    async def wait_tx(self, tx_hash: str, *, timeout: float = 30.0) -> dict[str, Any]:
        with trio.fail_after(timeout):
            while True:
                found = await self.tx_status(tx_hash)
                if found["status"] == "committed":
                    return found
                await trio.sleep(0.2)

    async def submit_job(
        self,
        key: PrivateKey,
        workload: str,
        params: dict[str, Any],
        *,
        max_price: int,
        max_runtime_s: int = 60,
        verification: str = "none",
        bid_timeout: float = 15.0,
        progress: Callable[[str], Awaitable[None] | None] | None = None,
    ) -> str:
        """Offer a job, choose a bid, open escrow for that provider; returns the job's id
        in hex (its offer's hash, also its escrow's id on chain).

        ``verification``: ``"none"``; ``"spot"``: the peer checks the delivered result
        (rows of a product proved and recomputed, a cheap output recomputed, the metered
        time) before it pays, and disputes it with the evidence if it fails; ``"audit"``:
        the same on the jobs a later block draws (one in two); ``"replicate"``: a second
        offer of the same job goes to another provider (a second escrow: it costs twice)
        and the peer compares the two results, settling a difference by the spot check
        where it can run one (specs/market.md, "Verification"). The job's status names the
        other job as its ``replica``.

        Nothing is sent for a job that cannot run: bad parameters, a runtime cap under
        1 s, or (when this peer knows providers) one that none of them can take.

        Raises:
            ComputeError: the workload is unknown or refuses ``params``.
            MarketError: no acceptable bid (within ``bid_timeout``), with the reason
                where it can be known; at replicate, no bid from a second provider.
            RpcError: the node refused the offer or the escrow transaction.
        """
        if max_runtime_s < 1:
            raise MarketError(f"max_runtime_s must be at least 1, not {max_runtime_s}")
        if max_price < 1:
            raise MarketError(f"max_price must be at least 1 base unit, not {max_price}")
        check_level(workload, verification, params)
        check_params(workload, params)
        known = await self.providers()
        if known and (why := no_bid_reason(known, workload, max_price, max_runtime_s, params)):
            raise MarketError(f"no provider can take this job: {why}")
        status = await self.status()
        copies = 2 if verification == "replicate" else 1
        offers = [
            JobOffer.create(
                key,
                status["chain_id"],
                workload=workload,
                params_hash=params_hash(workload, params),
                max_price=max_price,
                max_runtime_s=max_runtime_s,
                verification=verification,
                timestamp_ms=int(status["head_timestamp_ms"]),
            )
            for _ in range(copies)
        ]
        for i, offer in enumerate(offers):
            body: dict[str, Any] = {"offer": offer.encode().hex(), "workload": workload, "params": params}
            if i:
                body["replica_of"] = offers[0].job_id.hex()
            posted = await self._call("POST", "/v1/jobs", body)
            if posted["job_id"] != offer.job_id.hex():
                raise MarketError(f"the node filed the offer as job {posted['job_id']}, not {offer.job_id.hex()}")
        job_id = offers[0].job_id.hex()
        await _report(progress, f"offer {job_id[:16]} published; collecting bids")
        heard: list[tuple[list[Bid], dict[str, int]]] = [([], {}) for _ in offers]

        async def collect(i: int) -> None:
            heard[i] = await self._bids(offers[i].job_id.hex(), bid_timeout)

        async with trio.open_nursery() as nursery:
            for i in range(copies):
                nursery.start_soon(collect, i)
        chosen: list[tuple[Bid, int]] = []  # each offer's bid and its escrow's amount
        for offer, (bids, trust) in zip(offers, heard, strict=True):
            others = [b for b in bids if b.signer not in {c.signer for c, _ in chosen}]  # a replica: another provider
            bid = select_bid(offer, others, trust) if others else None
            if bid is None:
                why = no_bid_reason(await self.providers(), workload, max_price, max_runtime_s, params)
                why = why or "no provider answered"
                if chosen:  # nothing escrowed yet: drop both offers
                    why = f"no second provider bid for its replica ({len(bids)} bids, all from {chosen[0][0].signer})"
                    for dropped in offers:
                        with contextlib.suppress(RpcError):
                            await self.cancel_job(dropped.job_id.hex())
                raise MarketError(f"no acceptable bid for job {job_id} within {bid_timeout} s: {why}")
            # Enough for the next bids too: a failover moves this escrow, and cannot add to it.
            chosen.append((bid, escrow_amount(offer, others, MAX_ATTEMPTS, trust)))
        for offer, (bid, amount) in zip(offers, chosen, strict=True):
            await _report(
                progress,
                f"chose provider {bid.signer} at {bid.body['price']} units"
                f"{f' for {offer.job_id.hex()[:16]}' if copies > 1 else ''}; opening escrow of {amount}",
            )
            deadline = int(status["height"]) + max(30, 4 * max_runtime_s)
            # The peer tracking the job acts for the client on its escrow (settles it once the
            # result is delivered, disputes a receipt it was not delivered); not the provider's own.
            agent = status["address"] if status["address"] != bid.signer else key.address
            await self.send(key, TxKind.JOB_OPEN, JobOpen(offer.job_id, bid.signer, amount, deadline, agent))
        return job_id

    async def _bids(self, job_id: str, bid_timeout: float) -> tuple[list[Bid], dict[str, int]]:
        """The bids the peer holds for a job once its bidding closes with at least one (or
        at ``bid_timeout``), with each bidder's trust in thousandths."""
        bids: list[Bid] = []
        trust: dict[str, int] = {}
        with trio.move_on_after(bid_timeout):
            async with aclosing(self.stream_job(job_id)) as events:
                async for event in events:  # the job's status each time a bid comes in
                    job = event["data"]
                    if event["event"] == "progress":
                        continue
                    bids = [Bid.decode(bytes.fromhex(b["wire"])) for b in job.get("bids", [])]
                    # each bidder's record on chain, as the peer reads it: a provider that
                    # failed jobs or lost disputes needs a lower price to win
                    trust = {b["provider"]: int(b.get("trust_milli", 1000)) for b in job.get("bids", [])}
                    if (bids and job["phase"] != "bidding") or event["event"] == "end":
                        break
        return bids, trust

    async def wait_job(
        self,
        job_id: str,
        *,
        timeout: float = 120.0,
        progress: Callable[[str], Awaitable[None] | None] | None = None,
    ) -> dict[str, Any]:
        """Wait until the job is settled, refunded or failed (or cancelled before any
        escrow), following its event stream; returns its last status.

        Raises:
            trio.TooSlowError: not finished within ``timeout`` seconds.
            RpcError: no such job, or the peer stopped answering.
        """
        last = ""
        with trio.fail_after(timeout):
            async with aclosing(self.stream_job(job_id)) as events:
                async for event in events:
                    if event["event"] == "progress":
                        continue
                    job: dict[str, Any] = event["data"]
                    if job["status"] != last:
                        last = job["status"]
                        await _report(progress, f"job {job_id[:16]}: {last}")
                    if event["event"] == "end":
                        return job
        raise RpcError(0, "STREAM_ENDED", f"the event stream of job {job_id} ended before the job did")

    async def stream_job(self, job_id: str, *, after: int = 0) -> AsyncGenerator[dict[str, Any], None]:
        """The job's events as the peer sends them (``GET /v1/jobs/<id>/events``, specs/rpc.md):
        ``{"event": "status" | "progress" | "end", "id": n | None, "data": {...}}``. A
        ``status`` event carries the job as :meth:`job` returns it, at once and on every
        change; ``progress`` the workload's events (an llm_gen token, a denoising step)
        numbered from 1; ``end`` the finished job, and then the iteration stops. A dropped
        connection is resumed after the last progress event (up to STREAM_RETRIES times
        in a row); close the iterator early with ``contextlib.aclosing``.

        Raises:
            RpcError: no such job (404), or the peer cannot be reached.
        """
        events = self._server_events(f"/v1/jobs/{job_id}/events", lambda: {"after": after})
        async with aclosing(events):
            async for sse in events:
                if sse.event == "progress":
                    after = int(sse.id)
                yield {"event": sse.event, "id": after if sse.event == "progress" else None, "data": sse.json()}
                if sse.event == "end":
                    return

    async def stream_chain(self, *, after: int | None = None) -> AsyncGenerator[dict[str, Any], None]:
        """The chain as it grows (``GET /v1/events``, specs/rpc.md, "Chain events"):
        ``{"event": "block", "id": height, "data": {height, hash, parent, timestamp_ms,
        proposer, txs, final_height}}`` for each block after ``after`` (from the head if
        None; at most the last 100), then each new one; ``{"event": "reorg", "id": None,
        "data": {"height": h}}`` when the blocks above ``h`` left the main chain (their
        replacements follow); ``"tx"`` when a transaction submitted through this peer is
        committed (``{hash, status, height, index}``); ``"job"`` when a job this peer
        tracks changes (the job as :meth:`job` returns it). It never ends by itself: close it with
        ``contextlib.aclosing``. A dropped connection is resumed after the last block.

        Raises:
            RpcError: the peer cannot be reached (STREAM_RETRIES times in a row).
        """
        events = self._server_events("/v1/events", lambda: {} if after is None else {"after": after})
        async with aclosing(events):
            async for sse in events:
                data = sse.json()
                if sse.event in ("block", "reorg"):  # resume after it
                    after = data["height"]
                yield {"event": sse.event, "id": after if sse.event == "block" else None, "data": data}

    async def _server_events(
        self, path: str, params: Callable[[], dict[str, Any]]
    ) -> AsyncGenerator[ServerSentEvent, None]:
        """The server-sent events of ``GET path``, reconnecting with ``params()`` (read anew
        each time, so the caller can resume after what it got) when the connection drops,
        up to STREAM_RETRIES times in a row.

        Raises:
            RpcError: an error answer, or the peer cannot be reached.
        """
        timeout = httpx.Timeout(self._http.timeout.connect, read=STREAM_READ_TIMEOUT_S)
        failures = 0
        while True:
            try:
                async with aconnect_sse(self._http, "GET", path, params=params(), timeout=timeout) as source:
                    if source.response.status_code >= 400:
                        await source.response.aread()
                        _raise_for(source.response)
                    async for sse in source.aiter_sse():
                        failures = 0
                        yield sse
            except (httpx.HTTPError, SSEError) as e:
                failures += 1
                if failures > STREAM_RETRIES:
                    raise RpcError(0, "UNREACHABLE", f"GET {path}: {e}") from e
                await trio.sleep(0.2 * failures)


def result_image(result: dict[str, Any]) -> bytes | None:
    """The image file of a result as :meth:`RpcClient.job_result` returns it (an
    ``sd_infer`` PNG, which JSON carries as hex), or None if it has none."""
    output = result.get("output")
    image = output.get("image") if isinstance(output, dict) else None
    return bytes.fromhex(image) if isinstance(image, str) else None


def no_bid_reason(
    providers: list[dict[str, Any]],
    workload: str,
    max_price: int,
    max_runtime_s: int,
    params: dict[str, Any] | None = None,
) -> str | None:
    """Why no provider among ``providers`` (capability records, as ``GET /v1/providers``
    returns them) would bid on such a job, or be chosen for it (one naming its model by
    content hash needs a provider that lists that model); None when some could."""
    if not providers:
        return "no provider has announced itself to this peer"
    offering = [p for p in providers if workload in p.get("workloads", [])]
    if not offering:
        offered = sorted({w for p in providers for w in p.get("workloads", [])})
        return f"no provider offers {workload} (offered: {', '.join(offered)})"
    model = (params or {}).get("model")
    if is_model_digest(model):
        offering = [p for p in offering if model in p.get("models", [])]
        if not offering:
            return f"no provider that offers {workload} holds the model {model}"
    caps = [int(p.get("limits", {}).get("max_runtime_s", 0)) for p in offering]
    fitting = [p for p, cap in zip(offering, caps, strict=True) if cap >= max_runtime_s]
    if not fitting:
        return f"max_runtime_s {max_runtime_s} is above every provider's cap (the largest is {max(caps)} s)"
    cheapest = min(int(p.get("price_per_s", 0)) * max_runtime_s for p in fitting)
    if cheapest > max_price:
        return (
            f"every provider quotes above max_price {format_aitbc(max_price)} AITBC: the cheapest asks "
            f"{format_aitbc(cheapest)} AITBC for {max_runtime_s} s"
        )
    return None


def _raise_for(resp: httpx.Response) -> NoReturn:
    """The RpcError of an error response (specs/rpc.md, "Errors")."""
    try:
        err = resp.json()["error"]
        raise RpcError(resp.status_code, err["code"], err["message"], err.get("details"))
    except (ValueError, KeyError, TypeError) as e:
        raise RpcError(resp.status_code, "HTTP_ERROR", resp.text[:200]) from e


async def _report(progress: Callable[[str], Awaitable[None] | None] | None, text: str) -> None:
    if progress is not None:
        maybe = progress(text)
        if maybe is not None:
            await maybe
