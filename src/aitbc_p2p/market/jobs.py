"""Job payloads and results as they travel over the direct libp2p job stream."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from aitbc_p2p.chain.payloads import MAX_ACK_BYTES
from aitbc_p2p.codec import decode, encode, fields
from aitbc_p2p.crypto import sha256
from aitbc_p2p.exceptions import CodecError, MarketError
from aitbc_p2p.types import Hash32, JobId

MAX_WORKLOAD_NAME = 64
MAX_RESULT_METRICS = 16
MAX_OUTPUT = (1 << 20) - (16 << 10)
"""The largest workload output a result carries (1,008 KiB): the result frame, a fetch
answer and a journal record each hold one with its envelope under 1 MiB. A provider fails
a job whose output is larger rather than receipt what it could not deliver."""


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
            obj = decode(data)
        except CodecError as e:
            raise MarketError(f"malformed job payload: {e}") from e
        return cls.from_wire(obj)

    @classmethod
    def from_wire(cls, obj: Any) -> JobPayload:
        try:
            w = fields.record(obj, ("job_id", "workload", "params"), "a job payload")
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


@dataclass(frozen=True, slots=True)
class JobFetch:
    """The client's peer asking the provider again for a job's result: its stream dropped,
    or it gave up waiting while the job queued for a slot (specs/market.md, "Delivery")."""

    job_id: JobId

    def encode(self) -> bytes:
        return encode({"fetch": self.job_id.hex()})


class Held(enum.StrEnum):
    """Where a job is on the provider, as a fetch answer says."""

    RUNNING = "running"
    """Accepted and not finished (waiting for its escrow or a slot, or computing)."""
    DONE = "done"
    """Finished: the answer carries the result (which may be a failure)."""
    UNKNOWN = "unknown"
    """The provider holds nothing for this job from this peer."""


@dataclass(frozen=True, slots=True)
class FetchAnswer:
    state: Held
    result: JobResult | None = None

    def encode(self) -> bytes:
        if self.result is None:
            return encode({"state": str(self.state)})
        return encode({"state": str(self.state), "result": self.result.encode()})

    @classmethod
    def decode(cls, data: bytes, *, max_size: int = 1 << 20) -> FetchAnswer:
        """Parse a provider's answer to a fetch. Raises MarketError."""
        try:
            w = fields.record(decode(data, max_size=max_size + 64), ("state",), "a fetch answer", optional=("result",))
            state = Held(fields.text(w, "state", max_len=16))
            if (state is Held.DONE) != ("result" in w):
                raise MarketError("a fetch answer carries a result exactly when it is done")
            result = JobResult.decode(fields.blob(w, "result", max_len=max_size)) if "result" in w else None
        except (ValueError, CodecError) as e:  # ValueError: an unknown state
            raise MarketError(f"malformed fetch answer: {e}") from e
        return cls(state, result)


@dataclass(frozen=True, slots=True)
class JobAck:
    """The client's peer telling the provider it holds the result: ``sig`` is the client's
    (or its agent's) signature of ``ack_digest(chain_id, job_id, result_hash)``, which the
    provider puts in ``job_settle`` to be paid at once (specs/market.md, "Delivery")."""

    job_id: JobId
    sig: bytes

    def encode(self) -> bytes:
        return encode({"ack": {"job_id": self.job_id.hex(), "sig": self.sig}})


@dataclass(frozen=True, slots=True)
class ReleaseRequest:
    """The client's peer asking the provider to release the current attempt of a job (it
    failed, or the client cancels). ``sig``: the client's or its agent's signature of the
    same ``release_digest`` the provider would sign, so only they can ask."""

    job_id: JobId
    sig: bytes

    def encode(self) -> bytes:
        return encode({"release": {"job_id": self.job_id.hex(), "sig": self.sig}})


def encode_release_answer(release: bytes) -> bytes:
    """The provider's release signature, or empty bytes when it will not release."""
    return encode({"release": release})


def decode_release_answer(data: bytes) -> bytes:
    try:
        w = fields.record(decode(data, max_size=1024), ("release",), "a release answer")
        return fields.blob(w, "release", max_len=MAX_ACK_BYTES)
    except CodecError as e:
        raise MarketError(f"malformed release answer: {e}") from e


MAX_EVENT_BYTES = 16 * 1024
"""The largest progress event a provider may stream (an llm_gen token is a few bytes)."""


@dataclass(frozen=True, slots=True)
class JobEvent:
    """One progress event of a running job (an llm_gen token, a denoising step), streamed
    by the provider to the client's peer as an interim frame of the run request
    (specs/market.md, "Job stream"). Numbered from 1 per job; the result binds the whole
    output, so events are only a preview of it."""

    job_id: JobId
    seq: int
    event: dict[str, Any]

    def encode(self) -> bytes:
        return encode({"job_id": self.job_id.hex(), "seq": self.seq, "event": self.event})

    @classmethod
    def decode(cls, data: bytes) -> JobEvent:
        """Raises MarketError for anything but a job id, a number from 1 and a small map."""
        try:
            w = fields.record(decode(data, max_size=MAX_EVENT_BYTES), ("job_id", "seq", "event"), "a job event")
            return cls(_job_id(w), fields.uint(w, "seq", low=1), fields.mapping(w, "event", max_items=16))
        except CodecError as e:
            raise MarketError(f"malformed job event: {e}") from e


ACK_TAKEN = encode({"acked": True})
ACK_REFUSED = encode({"acked": False})
"""The provider's answer to an ack: refused when it holds no finished job from that peer."""


def decode_job_request(data: bytes) -> JobPayload | JobFetch | JobAck | ReleaseRequest:
    """A request on the job stream: a job to run, a fetch of one's result, a delivery ack,
    or a release request. Raises MarketError."""
    try:
        obj = decode(data)
    except CodecError as e:
        raise MarketError(f"malformed job payload: {e}") from e
    if isinstance(obj, dict) and obj.keys() == {"fetch"}:
        try:
            return JobFetch(_job_id({"job_id": obj["fetch"]}))
        except CodecError as e:
            raise MarketError(f"malformed job fetch: {e}") from e
    if isinstance(obj, dict) and obj.keys() in ({"ack"}, {"release"}):
        ((kind, body),) = obj.items()
        try:
            w = fields.record(body, ("job_id", "sig"), f"a job {kind}")
            job_id, sig = _job_id(w), fields.blob(w, "sig", max_len=MAX_ACK_BYTES)
        except CodecError as e:
            raise MarketError(f"malformed job {kind}: {e}") from e
        return JobAck(job_id, sig) if kind == "ack" else ReleaseRequest(job_id, sig)
    return JobPayload.from_wire(obj)
