"""JSON-ready views of chain objects for the RPC (bytes as hex, amounts as integers)."""

from __future__ import annotations

from typing import Any

from aitbc_p2p.chain.models import Block, BlockHeader, Transaction
from aitbc_p2p.chain.state import Job
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
