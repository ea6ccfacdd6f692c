"""How the node's views look as JSON (specs/rpc.md): bytes as hex, amounts as integers
with an ``_aitbc`` decimal beside the ones people read. The node returns typed views
(:mod:`aitbc_p2p.node.api`); only this module decides their wire shape."""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Any

from aitbc_p2p.chain.models import Block, BlockHeader, Transaction
from aitbc_p2p.chain.state import Job, Reputation, Supply
from aitbc_p2p.codec import decode
from aitbc_p2p.exceptions import CodecError
from aitbc_p2p.market.messages import CapabilityRecord
from aitbc_p2p.node.api import (
    AccountInfo,
    AccountProof,
    BlockInfo,
    ChainUpdate,
    JobInfo,
    JobResultInfo,
    JobUpdate,
    NetworkInfo,
    NodeStatus,
    TxStatus,
)
from aitbc_p2p.store.chain import ReceiptProof, TxLocation
from aitbc_p2p.types import format_aitbc


def jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def tx_view(tx: Transaction) -> dict[str, Any]:
    return {"hash": tx.hash.hex(), **jsonable(tx.body())}


def header_view(h: BlockHeader) -> dict[str, Any]:
    return {"hash": h.hash.hex(), **jsonable(h.body())}


def block_view(block: Block) -> dict[str, Any]:
    return {"header": header_view(block.header), "txs": [tx_view(tx) for tx in block.txs]}


def job_view(job: Job) -> dict[str, Any]:
    view: dict[str, Any] = jsonable(job.to_wire())
    view["amount_aitbc"] = format_aitbc(job.amount)
    view["cost_aitbc"] = format_aitbc(job.cost)
    return view


def status(s: NodeStatus) -> dict[str, Any]:
    provider = None
    if s.provider is not None:
        p = s.provider
        provider = {
            "miner_id": p.miner_id,
            "mode": p.mode,
            "device": p.device,
            "gflops": p.gflops,
            "gflops_by_dtype": dict(p.gflops_by_dtype),
            "workloads": list(p.workloads),
            "price_per_s": p.price_per_s,
            **p.executor,
        }
    return {
        "chain_id": s.chain_id,
        "genesis_hash": s.genesis_hash.hex(),
        "height": s.head.height,
        "head_hash": s.head.hash.hex(),
        "head_timestamp_ms": s.head.timestamp_ms,
        "consensus": s.consensus,
        "next_proposer": s.next_proposer,
        "final_height": s.final_height,
        "address": s.address,
        "peer_id": s.peer_id,
        "listen": list(s.listen),
        "peers": list(s.peers),
        "mempool": s.mempool,
        "min_fee": s.min_fee,
        "provider": provider,
        "version": s.version,
        "uptime_s": round(s.uptime_s, 3),
        "sync": {"target_height": s.sync_target, "behind": s.sync_target - s.head.height},
    }


def network(n: NetworkInfo) -> dict[str, Any]:
    return {
        "peers": [dataclasses.asdict(p) for p in n.peers],
        "gossip": dict(n.gossip),
        "mempool_rejected": dict(n.mempool_rejected),
    }


def supply(s: Supply) -> dict[str, int]:
    return {
        "balances": s.balances,
        "escrowed": s.escrowed,
        "staked": s.staked,
        "unbonding": s.unbonding,
        "burned": s.burned,
        "total": s.total,
        "genesis_total": s.genesis_total,
    }


def account(a: AccountInfo) -> dict[str, Any]:
    acct = a.account
    return {
        "address": a.address,
        "balance": acct.balance,
        "balance_aitbc": format_aitbc(acct.balance),
        "nonce": acct.nonce,
        "pending_nonce": a.pending_nonce,
        "stake": acct.stake,
        "unbonding": [{"amount": amount, "release_height": h} for amount, h in acct.unbonding],
        "provider": acct.provider,
        "active_jobs": acct.active_jobs,
    }


def history_entry(loc: TxLocation) -> dict[str, Any]:
    return {"height": loc.height, "index": loc.index, **tx_view(loc.tx)}


def tx_status(t: TxStatus) -> dict[str, Any]:
    if t.status == "committed":
        return {"status": t.status, "height": t.height, "index": t.index, "final": t.final, "tx": tx_view(t.tx)}
    return {"status": t.status, "tx": tx_view(t.tx)}


def tx_proof(p: ReceiptProof) -> dict[str, Any]:
    view: dict[str, Any] = jsonable(p.to_wire())
    return view


def account_proof(p: AccountProof) -> dict[str, Any]:
    view: dict[str, Any] = jsonable({"height": p.header.height, "state_root": p.header.state_root, **p.proof.to_wire()})
    return view


def block(b: BlockInfo) -> dict[str, Any]:
    view = block_view(b.block)
    if b.certificate is not None:
        view["certificate"] = {"round": b.certificate.round, "validators": list(b.certificate.validators)}
    return view


def job(j: JobInfo) -> dict[str, Any]:
    escrow = j.escrow
    view: dict[str, Any] = {
        "job_id": j.job_id.hex(),
        "status": j.status,
        "phase": j.phase,
        "error": j.error,
        "escrow": job_view(escrow) if escrow else None,
        "receipt_id": escrow.receipt_tx.hex() if escrow and escrow.receipt_tx else None,
        "result_available": j.result_available,
        "check": None if j.check is None else {"verdict": j.check[0], "why": j.check[1]},
    }
    if j.offer is not None:
        view["workload"] = j.workload
        view["client"] = j.offer.signer
        view["replica"] = None if j.replica is None else j.replica.hex()
        view["offer"] = jsonable(dict(j.offer.body))
        view["bids"] = [
            {**jsonable(dict(b.body)), "wire": b.encode().hex(), "trust_milli": j.trust.get(b.signer, 1000)}
            for b in j.bids
        ]
    return view


def job_result(r: JobResultInfo) -> dict[str, Any]:
    result = r.result
    try:
        output = jsonable(decode(result.output)) if result.output else None
    except CodecError:
        output = None
    return {
        "job_id": r.job_id.hex(),
        "ok": result.ok,
        "error": result.error,
        "output": output,
        "output_hex": result.output.hex(),
        "result_hash": result.result_hash.hex(),
        "metrics": result.metrics,
        "receipt_matches": r.receipt_matches,
    }


def iso_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


SEED_FAILED = frozenset({"failed", "cancelled", "refunded"})


def seed_job(j: JobInfo, r: JobResultInfo | None) -> dict[str, Any]:
    """A job in the seeds' client shape (system-flow.md, step 11): ``status`` is
    ``pending`` (no escrow yet), ``running``, ``completed`` (its result delivered and
    receipted) or ``failed``; ``result`` is an llm_gen's text, else the output."""
    escrow = j.escrow
    output: Any = None
    if r is not None and r.result.ok and r.result.output:
        try:
            output = jsonable(decode(r.result.output))
        except CodecError:
            output = None
    receipted = escrow is not None and bool(escrow.receipt_tx)
    if j.status in SEED_FAILED or (r is not None and not r.result.ok):
        status = "failed"
    elif receipted and output is not None:
        status = "completed"
    elif escrow is None:
        status = "pending"
    else:
        status = "running"
    text = output.get("text") if isinstance(output, dict) and isinstance(output.get("text"), str) else None
    return {
        "job_id": j.job_id.hex(),
        "status": status,
        "result": text if text is not None else output,
        "receipt_id": escrow.receipt_tx.hex() if receipted and escrow is not None else None,
        "cost_aitbc": format_aitbc(escrow.cost) if escrow is not None and escrow.cost else None,
        "error": j.error or None,
        "detail": j.status,
    }


def reputation(record: Reputation) -> dict[str, int]:
    """A provider's record on chain, and the trust bids are weighed by."""
    return {**record._asdict(), "score_milli": record.score_milli()}


def provider(rec: CapabilityRecord, record: Reputation) -> dict[str, Any]:
    """A capability record as its provider signed it, with its record on chain beside it."""
    view: dict[str, Any] = jsonable(dict(rec.body))
    view["reputation"] = reputation(record)
    return view


KEEPALIVE_EVENT = b": keepalive\n\n"


def _event(name: str, data: Any, event_id: int | None = None) -> bytes:
    """One server-sent event: ``name``, ``data`` as compact JSON, and ``event_id`` (what a
    client resumes after with ``Last-Event-ID``) if it has one."""
    head = "" if event_id is None else f"id: {event_id}\n"
    return f"{head}event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def sse(update: JobUpdate) -> bytes:
    """One server-sent event of a job's stream: ``status`` and ``end`` carry the job as
    ``GET /v1/jobs/<id>`` shows it, ``progress`` the workload's event with its number as
    the event id (a client resumes after it with ``Last-Event-ID``)."""
    if update.kind == "keepalive":
        return KEEPALIVE_EVENT
    if update.kind == "progress":
        return _event("progress", jsonable(dict(update.progress or {})), update.seq)
    assert update.job is not None
    return _event(update.kind, job(update.job))


def chain_sse(update: ChainUpdate) -> bytes:
    """One server-sent event of the peer's stream (``GET /v1/events``): ``block`` with the
    block's height as its id (a client resumes after it with ``Last-Event-ID``), ``reorg``
    naming the height whose successors left the main chain, ``tx`` for a transaction
    submitted here once committed, ``job`` with a job as ``GET /v1/jobs/<id>`` shows it."""
    if update.kind == "keepalive":
        return KEEPALIVE_EVENT
    if update.kind == "reorg":
        return _event("reorg", {"height": update.height})
    if update.kind == "tx":
        assert update.tx_hash is not None
        tx = {"hash": update.tx_hash.hex(), "status": "committed", "height": update.height, "index": update.index}
        return _event("tx", tx)
    if update.kind == "job":
        assert update.job is not None
        return _event("job", job(update.job))
    assert update.block is not None
    header = update.block
    data = {
        "height": header.height,
        "hash": header.hash.hex(),
        "parent": header.parent.hex(),
        "timestamp_ms": header.timestamp_ms,
        "proposer": header.proposer,
        "txs": update.txs,
        "final_height": update.final_height,
    }
    return _event("block", data, header.height)
