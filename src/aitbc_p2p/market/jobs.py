"""Job payloads and results as they travel over the direct libp2p job stream."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aitbc_p2p.codec import decode, encode
from aitbc_p2p.crypto import sha256
from aitbc_p2p.exceptions import CodecError, MarketError
from aitbc_p2p.types import Hash32, JobId


def params_hash(workload: str, params: dict[str, Any]) -> Hash32:
    """The hash an offer commits to: SHA-256 of canonical ``[workload, params]``."""
    return sha256(encode([workload, params]))


def result_hash(output: bytes) -> Hash32:
    """The hash a receipt carries: SHA-256 of the canonical result output bytes."""
    return sha256(output)


@dataclass(frozen=True, slots=True)
class JobPayload:
    job_id: JobId
    workload: str
    params: dict[str, Any]

    def encode(self) -> bytes:
        return encode({"job_id": self.job_id, "workload": self.workload, "params": self.params})

    @classmethod
    def decode(cls, data: bytes) -> JobPayload:
        try:
            w = decode(data)
            if not isinstance(w, dict) or set(w) != {"job_id", "workload", "params"}:
                raise MarketError("payload must be a map of job_id, workload, params")
            if not isinstance(w["params"], dict):
                raise MarketError("params must be a map")
            return cls(JobId(str(w["job_id"])), str(w["workload"]), w["params"])
        except CodecError as e:
            raise MarketError(f"malformed job payload: {e}") from e


@dataclass(frozen=True, slots=True)
class JobResult:
    """The provider's answer. ``output`` is canonical CBOR of the workload's result."""

    job_id: JobId
    ok: bool
    output: bytes = b""
    error: str = ""
    metrics: dict[str, int] = field(default_factory=dict)

    @property
    def result_hash(self) -> Hash32:
        return result_hash(self.output)

    def encode(self) -> bytes:
        return encode(
            {"job_id": self.job_id, "ok": self.ok, "output": self.output, "error": self.error, "metrics": self.metrics}
        )

    @classmethod
    def decode(cls, data: bytes, *, max_size: int = 1 << 20) -> JobResult:
        try:
            w = decode(data, max_size=max_size)
            return cls(JobId(w["job_id"]), bool(w["ok"]), bytes(w["output"]), str(w["error"]), dict(w["metrics"]))
        except (CodecError, KeyError, TypeError) as e:
            raise MarketError(f"malformed job result: {e}") from e
