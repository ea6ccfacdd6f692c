"""The request bodies of the RPC, as pydantic models: each route's body is checked against
its model (rpc/app.py ``_body``), and ``/openapi.json`` is generated from the same models
and the routes (quart-schema), so the document cannot describe a body the peer does not
take. Strict: a field of the wrong JSON type is refused, never coerced, and a field a
route does not know is refused, never ignored."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class TxBody(_Body):
    """``POST /v1/transactions``."""

    tx: str = Field(description="hex of the canonical signed transaction (specs/transactions.md)")


class JobBody(_Body):
    """``POST /v1/jobs`` with the token: a wallet's signed offer and the job's payload."""

    offer: str = Field(description="hex of the signed offer (specs/market.md)")
    workload: str
    params: dict[str, Any] = Field(default_factory=dict, description="the workload's parameters (no floats)")
    replica_of: str | None = Field(
        None, description="at verification replicate: the id of the job this one repeats (specs/market.md)"
    )


class ClientJobBody(_Body):
    """``POST /v1/jobs`` with ``X-Api-Key``: the seeds' client request (specs/rpc.md, "Client API")."""

    type: Literal["inference"] | None = Field(None, description="the seed's job type: an llm_gen job")
    prompt: str | None = None
    model: str | None = None
    workload: str | None = Field(None, description="instead of type: any workload, with params")
    params: dict[str, Any] | None = None
    max_price: str | None = Field(None, description='AITBC, e.g. "0.5"')
    max_runtime_s: int | None = None


class HeartbeatBody(_Body):
    """``POST /v1/miner/heartbeat``: the miner guide's heartbeat, and MinerCapabilities' fields."""

    miner_id: str
    wallet: str | None = Field(None, description="the aitbc1 address the miner is paid at")
    mode: Literal["gpu", "cpu"] = "cpu"
    gpu: bool | int = False
    concurrency: int | None = None
    workloads: list[str] | None = None
    limits: dict[str, Any] | None = None


class ProofBody(_Body):
    """``POST /v1/miner/proof``: the miner guide's proof."""

    id: str = Field(description="the job id, as GET /v1/miner/next gave it")
    mode: Literal["gpu", "cpu"] | None = None
    output_sha: str | None = Field(None, description="SHA-256 of the output, 64 hex digits")
    metrics: dict[str, Any] | None = Field(None, description="at most 32 non-negative integers (else 400 BAD_METRICS)")
    output: str | None = Field(None, description="the output itself, whose SHA-256 is output_sha")
    error: str | None = Field(None, description="instead of output_sha: why the job could not run")


__all__ = ["ClientJobBody", "HeartbeatBody", "JobBody", "ProofBody", "TxBody"]
