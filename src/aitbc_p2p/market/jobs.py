"""Job payloads and results as they travel over the direct libp2p job stream."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aitbc_p2p.codec import decode, encode, fields
from aitbc_p2p.crypto import sha256
from aitbc_p2p.exceptions import CodecError, MarketError
from aitbc_p2p.types import Hash32, JobId

MAX_WORKLOAD_NAME = 64
MAX_RESULT_METRICS = 16


def params_hash(workload: str, params: dict[str, Any]) -> Hash32:
    """The hash an offer commits to: SHA-256 of canonical ``[workload, params]``."""
    return sha256(encode([workload, params]))


def result_hash(output: bytes) -> Hash32:
    """The hash a receipt carries: SHA-256 of the canonical result output bytes."""
    return sha256(output)


def _job_id(w: Any) -> JobId:
    """The job stream spells a job's id in hex (specs/market.md); one spelling only."""
    return JobId(Hash32(fields.hex_hash32(w, "job_id")))


@dataclass(frozen=True, slots=True)
class JobPayload:
    job_id: JobId
    workload: str
    params: dict[str, Any]

    def encode(self) -> bytes:
        return encode({"job_id": self.job_id.hex(), "workload": self.workload, "params": self.params})

    @classmethod
    def decode(cls, data: bytes) -> JobPayload:
        """Parse a payload from the job stream. Raises MarketError, for anything malformed."""
        try:
            w = fields.record(decode(data), ("job_id", "workload", "params"), "a job payload")
            return cls(
                _job_id(w),
                fields.text(w, "workload", max_len=MAX_WORKLOAD_NAME),
                fields.mapping(w, "params"),
            )
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
        wire = {"job_id": self.job_id.hex(), "ok": self.ok, "output": self.output, "error": self.error}
        return encode({**wire, "metrics": self.metrics})

    @classmethod
    def decode(cls, data: bytes, *, max_size: int = 1 << 20) -> JobResult:
        """Parse a provider's answer. Raises MarketError, for anything malformed."""
        try:
            keys = ("job_id", "ok", "output", "error", "metrics")
            w = fields.record(decode(data, max_size=max_size), keys, "a job result")
            return cls(
                _job_id(w),
                fields.boolean(w, "ok"),
                fields.blob(w, "output", max_len=max_size),
                fields.text(w, "error"),
                fields.uint_map(w, "metrics", max_items=MAX_RESULT_METRICS),
            )
        except CodecError as e:
            raise MarketError(f"malformed job result: {e}") from e
