"""Verification of a receipted job: challenges, the provider's answers, evidence and the
ruling every checker reaches the same way (specs/market.md, "Verification").

Pure: the workload checks that need compute (recomputing a row of a product) come in as
a :data:`RowCheck` from the node, which runs :func:`judge` off its event loop. The same
:func:`judge` serves the client's agent (whether to ack or dispute) and the arbiters
(which way to rule), so an honest provider that answers is never ruled against.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aitbc_p2p.chain.merkle import verify_proof
from aitbc_p2p.chain.payloads import MAX_EVIDENCE, Verdict
from aitbc_p2p.chain.state import Job
from aitbc_p2p.codec import decode, encode, fields
from aitbc_p2p.crypto import sha256
from aitbc_p2p.exceptions import CodecError, MarketError
from aitbc_p2p.market.jobs import MAX_OUTPUT, JobResult, params_hash
from aitbc_p2p.market.messages import Bid, JobOffer, is_model_digest
from aitbc_p2p.market.replicate import REPLICABLE
from aitbc_p2p.types import Hash32, JobId


class Level(enum.StrEnum):
    """An offer's ``verification``: what the client's agent checks before it acks."""

    NONE = "none"
    """Delivery and price only (the receipt names the delivered result at most the bid)."""
    SPOT = "spot"
    """And the result itself: k rows of a product proved and recomputed, a cheap output
    recomputed, and the metered time against what the job can take."""
    AUDIT = "audit"
    """The spot check on a sampled share of the jobs (AUDIT_RATE), drawn from the block
    after the receipt: a provider cannot know which of its results will be checked."""
    REPLICATE = "replicate"
    """The job run by two providers and their results compared (market/replicate.py);
    a difference is settled by the spot check where the client's peer can run it."""


AUDIT_RATE_BITS = 1
"""Level ``audit`` checks one job in 2**AUDIT_RATE_BITS."""


def sampled(seed: bytes, job_id: bytes) -> bool:
    """Whether level ``audit`` checks this job: from ``seed`` (the hash of the block after
    the receipt), unknown to the provider when it computed."""
    return sha256(b"audit" + seed + job_id)[0] >> (8 - AUDIT_RATE_BITS) == 0


def third_party_drawn(rate: float, auditor: str, seed: bytes, job_id: bytes) -> bool:
    """Whether a third-party auditor auditing a share ``rate`` of receipts audits this job:
    from ``seed`` (the hash of the block after the receipt, unknown to the provider when it
    computed) and the auditor's own address (each auditor draws its own share)."""
    draw = int.from_bytes(sha256(b"third-party" + auditor.encode() + seed + job_id)[:8], "big")
    return draw < rate * 2**64


SPOT_ROWS = 4
"""Rows of a torch_bench product a spot check asks for, and texts of an embed job it re-embeds."""
MAX_AUDIT_ROWS = 16
MAX_ANSWER_ROWS_BYTES = 512 * 1024
"""A bound on the rows one answer carries (k rows of n float32 values each)."""
MAX_PROOF_DEPTH = 32
METER_SLACK_MS = 5000
"""Metered time a job may take beyond what its parameters need (a worker's start, a
model's load): a receipt claiming more is an overcharge."""
METER_FACTOR = 4
"""... and the factor on the time its parameters need at the provider's declared speed."""
CLOCK_SLACK_MS = 5000
"""A receipt may meter this much more than the chain's time between its escrow and its
receipt (block timestamps are their proposers' clocks, a few seconds apart at most)."""

VERIFIABLE = frozenset({"echo", "torch_bench", "embed", "llm_gen", "sd_infer"})
"""Workloads with a spot check; ``llm_gen`` and ``sd_infer`` only as :func:`check_level` says."""
SPOT_STEPS = 1
"""Challenges of an sd_infer job a spot check draws (a denoising step or the decode)."""

Normalize = Callable[[str, dict[str, Any]], dict[str, Any]]
"""``(workload, params) -> clean params`` (defaults filled in), raising on parameters the
workload refuses: :func:`aitbc_p2p.compute.check_params`."""


def check_level(workload: str, level: str, params: Mapping[str, Any] | None = None) -> None:
    """Raises MarketError for a verification level that is unknown, or that ``workload``
    (with ``params``) has no check for. ``llm_gen`` is checked only when its parameters
    name the model by content (``sha256:<hex>``: both sides run the same weights) and do
    not ask for Ollama (whose generations carry no token ids); ``sd_infer`` only when they
    name the pipeline by content. ``replicate`` compares two results instead, so takes
    any parameters of a workload with a comparison."""
    if level not in tuple(Level):
        raise MarketError(f"verification must be one of {[str(v) for v in Level]}, not {level!r}")
    if level == Level.REPLICATE:  # any model, any backend: the two results are compared, not checked
        if workload not in REPLICABLE:
            raise MarketError(f"{workload} has no replicate comparison; replicable: {sorted(REPLICABLE)}")
        return
    if level != Level.NONE and workload not in VERIFIABLE:
        raise MarketError(f"{workload} has no {level} check yet; verifiable: {sorted(VERIFIABLE)}")
    if level != Level.NONE and workload == "llm_gen" and not checkable_generation(params or {}):
        raise MarketError(
            f"llm_gen at {level} needs the model named by its content hash (sha256:<64 hex>) and a backend other"
            " than Ollama (whose generations carry no token ids to check)"
        )
    if level != Level.NONE and workload == "sd_infer" and not is_model_digest((params or {}).get("model")):
        raise MarketError(f"sd_infer at {level} needs the pipeline named by its content hash (sha256:<64 hex>)")


def checkable_generation(params: Mapping[str, Any]) -> bool:
    """Whether an ``llm_gen`` job's generation can be checked: its model is named by
    content hash and it does not ask for Ollama. Others are ruled as before (step 8)."""
    return is_model_digest(params.get("model")) and params.get("backend", "auto") != "ollama"


GenerationCheck = Callable[[dict[str, Any], dict[str, Any]], "str | None"]
"""``(params, output) -> ""`` if an ``llm_gen`` output is what the named model gives (one
teacher-forced pass, compute/llm.py ``check_generation``), why not otherwise, or None
where this peer cannot check it (it has no model of that content)."""

ImageCheck = Callable[[dict[str, Any], dict[str, Any], int, Mapping[int, bytes]], "str | None"]
"""``(params, output, challenge, leaves) -> ""`` if an ``sd_infer`` challenge holds (a
denoising step or the decode re-run from the committed latents, compute/diffusion.py
``check_challenge``), why not otherwise, or None where this peer cannot check it."""

RowCheck = Callable[[dict[str, Any], int, bytes], bool]
"""``(params, index, row) -> whether the row is right``: a torch_bench row recomputed
(n^2) within the tolerance of specs/market.md, "Determinism"."""

Row = tuple[int, bytes, tuple[tuple[bool, bytes], ...]]
"""``(index, row bytes, Merkle proof against the result's rows_root)``."""


def challenge_rows(seed: bytes, job_id: bytes, n: int, k: int = SPOT_ROWS) -> tuple[int, ...]:
    """``k`` distinct row indices of an ``n``-row product, drawn from ``seed`` (the hash
    of the first block after the receipt: unknown to the provider when it computed)."""
    k = min(k, n)
    picked: list[int] = []
    counter = 0
    while len(picked) < k:
        draw = int.from_bytes(sha256(seed + job_id + counter.to_bytes(4, "big"))[:8], "big") % n
        counter += 1
        if draw not in picked:
            picked.append(draw)
    return tuple(sorted(picked))


def image_challenges(seed: bytes, job_id: bytes, steps: int, k: int = SPOT_STEPS) -> tuple[int, ...]:
    """``k`` challenges of an sd_infer job of ``steps`` steps, drawn from ``seed`` (as
    :func:`challenge_rows`): 1 to ``steps`` a denoising step, ``steps + 1`` the decode."""
    return tuple(i + 1 for i in challenge_rows(seed, job_id, steps + 1, k))


def challenge_leaves(challenge: int, steps: int) -> tuple[int, ...]:
    """The committed latents a challenge needs: a step, the leaves before and after it;
    the decode, the last."""
    return (challenge - 1, challenge) if challenge <= steps else (steps,)


def leaves_for(challenges: Sequence[int], steps: int) -> tuple[int, ...]:
    """What an audit of these challenges asks the provider for."""
    return tuple(sorted({i for c in challenges for i in challenge_leaves(c, steps)}))


def challenges_of(leaves: Sequence[int], steps: int) -> tuple[int, ...]:
    """The challenges a set of leaves answers (what a challenger's evidence names)."""
    have = set(leaves)
    steps_shown = [c for c in range(1, steps + 1) if c - 1 in have and c in have]
    return tuple(steps_shown + ([steps + 1] if steps in have and steps - 1 not in have else []))


def rows_for(n: int) -> int:
    """How many rows of width ``n`` fit one answer (at most MAX_AUDIT_ROWS)."""
    return max(1, min(MAX_AUDIT_ROWS, MAX_ANSWER_ROWS_BYTES // (4 * n + 64 * MAX_PROOF_DEPTH)))


def _rows_wire(rows: Sequence[Row]) -> list[Any]:
    return [[i, row, [[left, h] for left, h in proof]] for i, row, proof in rows]


def _read_rows(w: Mapping[str, Any], name: str) -> tuple[Row, ...]:
    out: list[Row] = []
    for item in fields.listing(w, name, max_items=MAX_AUDIT_ROWS):
        if not (isinstance(item, list) and len(item) == 3 and type(item[0]) is int and isinstance(item[1], bytes)):
            raise CodecError(f"{name}: each row is [index, bytes, proof]")
        proof = item[2]
        if not isinstance(proof, list) or len(proof) > MAX_PROOF_DEPTH:
            raise CodecError(f"{name}: a proof is a list of at most {MAX_PROOF_DEPTH} steps")
        steps = []
        for step in proof:
            if not (isinstance(step, list) and len(step) == 2 and type(step[0]) is bool and isinstance(step[1], bytes)):
                raise CodecError(f"{name}: a proof step is [bool, hash]")
            steps.append((step[0], step[1]))
        out.append((item[0], item[1], tuple(steps)))
    return tuple(out)


@dataclass(frozen=True, slots=True)
class AuditRequest:
    """``/aitbc/audit/1``: show the receipted result of ``job_id`` and these rows of it."""

    job_id: JobId
    rows: tuple[int, ...] = ()

    def encode(self) -> bytes:
        return encode({"job_id": self.job_id.hex(), "rows": list(self.rows)})

    @classmethod
    def decode(cls, data: bytes) -> AuditRequest:
        """Raises MarketError for anything but a well-formed request."""
        try:
            w = fields.record(decode(data, max_size=4096), ("job_id", "rows"), "an audit request")
            rows = fields.listing(w, "rows", max_items=MAX_AUDIT_ROWS)
            if not all(type(i) is int and 0 <= i < 1 << 32 for i in rows):
                raise CodecError("rows must be row indices")
            return cls(JobId(Hash32(fields.hex_hash32(w, "job_id"))), tuple(rows))
        except CodecError as e:
            raise MarketError(f"malformed audit request: {e}") from e


@dataclass(frozen=True, slots=True)
class Facts:
    """What a job was: its signed offer, the parameters it hashes, and the result."""

    offer: JobOffer
    params: dict[str, Any]
    result: JobResult


@dataclass(frozen=True, slots=True)
class AuditAnswer:
    """The provider's answer: the job's facts and the rows asked for (``error`` if it
    will not answer: it holds no such job)."""

    job_id: JobId
    facts: Facts | None = None
    rows: tuple[Row, ...] = ()
    error: str = ""

    def encode(self) -> bytes:
        return encode({"job_id": self.job_id.hex(), **_facts_wire(self.facts), "rows": _rows_wire(self.rows),
                       "error": self.error})  # fmt: skip

    @classmethod
    def decode(cls, data: bytes) -> AuditAnswer:
        """Raises MarketError for anything but a well-formed answer (its facts are read, not yet checked)."""
        try:
            keys = ("job_id", "offer", "params", "result", "rows", "error")
            w = fields.record(decode(data, max_size=1 << 20), keys, "an audit answer")
            return cls(
                JobId(Hash32(fields.hex_hash32(w, "job_id"))),
                _read_facts(w),
                _read_rows(w, "rows"),
                fields.text(w, "error"),
            )
        except CodecError as e:
            raise MarketError(f"malformed audit answer: {e}") from e


def _facts_wire(facts: Facts | None) -> dict[str, Any]:
    if facts is None:
        return {"offer": None, "params": None, "result": None}
    return {"offer": facts.offer.to_wire(), "params": facts.params, "result": facts.result.encode()}


def _read_facts(w: Mapping[str, Any]) -> Facts | None:
    if w["offer"] is None:
        return None
    try:
        offer = JobOffer.from_wire(w["offer"])
    except MarketError as e:
        raise CodecError(f"offer: {e}") from e
    try:
        result = JobResult.decode(fields.blob(w, "result", max_len=MAX_OUTPUT + 4096))
    except MarketError as e:
        raise CodecError(f"result: {e}") from e
    return Facts(offer, fields.mapping(w, "params"), result)


@dataclass(frozen=True, slots=True)
class Evidence:
    """What a dispute carries (``JobDispute.evidence``, canonical CBOR): why, and what
    the challenger holds that shows it. Every part is optional; an arbiter that is not
    convinced by it audits the provider itself."""

    why: str
    facts: Facts | None = None
    rows: tuple[Row, ...] = ()
    """Rows the provider answered with, under its committed root."""
    bid: Bid | None = None
    """The provider's signed bid: the most its receipt may claim."""
    extra: dict[str, Any] = field(default_factory=dict)

    def encode(self) -> bytes:
        """The evidence, within MAX_EVIDENCE: facts with a large output are left out
        (the arbiter asks the provider for them), then rows."""
        bid = None if self.bid is None else self.bid.to_wire()
        wire = {"v": 1, "why": self.why[:200], **_facts_wire(self.facts), "rows": _rows_wire(self.rows), "bid": bid}
        raw = encode(wire)
        if len(raw) > MAX_EVIDENCE:
            raw = encode({**wire, **_facts_wire(None)})
        if len(raw) > MAX_EVIDENCE:
            raw = encode({**wire, **_facts_wire(None), "rows": []})
        return raw

    @classmethod
    def decode(cls, data: bytes) -> Evidence:
        """Strict. Raises MarketError: a challenger's evidence that is not this is read as none."""
        try:
            keys = ("v", "why", "offer", "params", "result", "rows", "bid")
            w = fields.record(decode(data, max_size=MAX_EVIDENCE), keys, "dispute evidence")
            if w["v"] != 1:
                raise CodecError("evidence version must be 1")
            bid = None if w["bid"] is None else Bid.from_wire(w["bid"])
            return cls(fields.text(w, "why", max_len=200), _read_facts(w), _read_rows(w, "rows"), bid)
        except (CodecError, MarketError) as e:
            raise MarketError(f"malformed evidence: {e}") from e


def facts_hold(job: Job, facts: Facts | None) -> bool:
    """Whether ``facts`` are this escrow's: the offer is signed by the escrow's client and
    is its job, the parameters hash to the offer's, the result is the receipted one."""
    if facts is None:
        return False
    offer, result = facts.offer, facts.result
    return (
        offer.job_id == job.job_id
        and offer.signer == job.client
        and params_hash(offer.body["workload"], facts.params) == offer.body["params_hash"]
        and result.ok
        and result.result_hash == job.result_hash
    )


@dataclass(frozen=True, slots=True)
class Ruling:
    """``verdict`` None: not decided from what was shown (ask the provider)."""

    verdict: Verdict | None
    why: str


UNDECIDED = Ruling(None, "")


def expected_ms(workload: str, params: Mapping[str, Any], output: Mapping[str, Any], gflops: int) -> int | None:
    """The compute time a job's parameters need at ``gflops`` (the provider's declared
    speed), or None where it is not known from them."""
    if workload == "echo":
        return int(params.get("chunks", 1)) * int(params.get("interval_ms", 0))
    if workload == "torch_bench":
        flops = 2 * int(params["n"]) ** 3 * (int(params["iters"]) + 1)
        return flops // max(1, gflops) // 1_000_000
    return None


def check_output(facts: Facts) -> str:
    """A workload's output recomputed where that is cheap (empty: right, or not cheap)."""
    workload, params = facts.offer.body["workload"], facts.params
    try:
        output = decode(facts.result.output, max_size=MAX_OUTPUT)
    except CodecError:
        return "the result's output is not canonical CBOR"
    if workload == "echo":
        message = params.get("message", "")
        if output != {"message": message, "length": len(message)}:
            return "the echo result is not the message sent"
    if workload == "torch_bench":
        root = output.get("rows_root") if isinstance(output, dict) else None
        if not isinstance(root, str) or len(root) != 64:
            return "the result commits to no rows_root"
    if workload == "embed":
        if not isinstance(output, dict) or not isinstance(output.get("vectors"), bytes):
            return "the result holds no vectors"
        count, dim, vectors = output.get("count"), output.get("dim"), output["vectors"]
        if count != len(params["texts"]) or type(dim) is not int or dim < 1 or len(vectors) != 4 * count * dim:
            return "the result's vectors are not one per text"
        if output.get("digest") != hashlib.sha256(vectors).hexdigest():
            return "the result's digest is not of its vectors"
    if workload == "sd_infer" and is_model_digest(params.get("model")):
        if not isinstance(output, dict) or output.get("model") != params.get("model"):
            return "the result does not name the pipeline the job asked for"
        if any(output.get(k) != params.get(k) for k in ("width", "height", "steps", "seed")):
            return "the result's size, steps or seed are not the job's"
        root, image = output.get("latents_root"), output.get("image")
        if not isinstance(root, str) or len(root) != 64:
            return "the result commits to no latents_root"
        if not isinstance(image, bytes) or output.get("digest") != hashlib.sha256(image).hexdigest():
            return "the result's digest is not of its image"
    if workload == "llm_gen" and checkable_generation(params):
        if not isinstance(output, dict) or output.get("model") != params.get("model"):
            return "the result does not name the model the job asked for"
        ids = output.get("ids")
        if output.get("backend") != "torch" or not isinstance(ids, list) or output.get("tokens") != len(ids):
            return "the result carries no token ids of a torch generation"
    return ""


def _judge_embed(
    facts: Facts, output: dict[str, Any], evidence: Evidence | None, asked: Sequence[int], check: RowCheck | None
) -> Ruling:
    """Texts re-embedded: those drawn (``asked``) and those the challenger names (the
    indices of its evidence rows); the delivered vector of each must agree."""
    if check is None:
        return Ruling(None, "this peer cannot re-embed texts (no embedding model)")
    count, dim = output["count"], output["dim"]
    named = {index for index, _, _ in (evidence.rows if evidence is not None else ())}
    indices = sorted({i for i in (*asked, *named) if 0 <= i < count})
    if not indices:
        return UNDECIDED
    width = 4 * dim
    for i in indices:
        if not check(facts.params, i, output["vectors"][i * width : (i + 1) * width]):
            return Ruling(Verdict.CLIENT, f"text {i} re-embedded does not match its vector")
    return Ruling(Verdict.PROVIDER, f"texts {indices} re-embedded match")


def _judge_llm(facts: Facts, output: dict[str, Any], check: GenerationCheck | None) -> Ruling:
    """The whole generation checked in one teacher-forced pass (nothing to ask for)."""
    why = check(facts.params, output) if check is not None else None
    if why is None:
        return Ruling(None, f"this peer cannot check generations of {facts.params.get('model')!r} (no such model)")
    if why:
        return Ruling(Verdict.CLIENT, why)
    return Ruling(Verdict.PROVIDER, f"each of the {len(output['ids'])} tokens is what the model allows")


def _judge_image(
    facts: Facts,
    output: dict[str, Any],
    evidence: Evidence | None,
    answer: AuditAnswer | None,
    asked: Sequence[int],
    check: ImageCheck | None,
) -> Ruling:
    """Challenges re-run from committed latents: those drawn (``asked``) and those the
    challenger's committed leaves show."""
    if check is None:
        return Ruling(None, f"this peer cannot check images of {facts.params.get('model')!r} (no such pipeline)")
    steps = int(facts.params["steps"])
    root = bytes.fromhex(output["latents_root"])
    leaves: dict[int, bytes] = {}
    shown = [(r, False) for r in (evidence.rows if evidence is not None else ())]
    shown += [(r, True) for r in (answer.rows if answer is not None else ())]
    for (index, data, proof), by_provider in shown:
        if 0 <= index <= steps and verify_proof(root, data, list(proof)):
            leaves[index] = data
        elif by_provider:
            return Ruling(Verdict.CLIENT, f"the provider's leaf {index} is not under its latents_root")
    challenger = [i for (i, data, _), by_provider in shown if not by_provider and i in leaves]
    challenges = sorted({c for c in asked if 1 <= c <= steps + 1} | set(challenges_of(challenger, steps)))
    if answer is not None:
        missing = [i for i in leaves_for([c for c in asked if 1 <= c <= steps + 1], steps) if i not in leaves]
        if missing:
            return Ruling(Verdict.CLIENT, f"the provider did not show its latents {missing}")
    checked = []
    for c in challenges:
        need = challenge_leaves(c, steps)
        if not all(i in leaves for i in need):
            continue
        why = check(facts.params, output, c, {i: leaves[i] for i in need})
        if why is None:
            return Ruling(None, f"this peer cannot check images of {facts.params.get('model')!r}")
        if why:
            return Ruling(Verdict.CLIENT, why)
        checked.append(c)
    if answer is None:
        return UNDECIDED  # nothing shown is wrong: the provider is asked for latents of its own
    what = ", ".join("the decode" if c > steps else f"step {c}" for c in checked)
    return Ruling(Verdict.PROVIDER, f"{what or 'nothing asked'} re-run from the committed latents: right")


def judge(
    job: Job,
    evidence: Evidence | None,
    answer: AuditAnswer | None,
    check_row: RowCheck,
    normalize: Normalize,
    *,
    asked: Sequence[int] = (),
    gflops: int = 0,
    check_vector: RowCheck | None = None,
    check_generation: GenerationCheck | None = None,
    check_image: ImageCheck | None = None,
    elapsed_ms: int | None = None,
) -> Ruling:
    """Rule on a receipted job from the challenger's ``evidence`` and, where that does
    not decide it, the provider's ``answer`` to an audit that asked for rows ``asked``.

    Against the provider only on what it signed or committed to: a bid its receipt
    exceeds, a result that is not what its parameters give, a row under its own root
    that a recomputation refutes, a metered time its parameters cannot need; or when it
    cannot show the receipted result and rows it is asked for (``answer`` given, with
    no valid facts or rows). Everything else is for the provider.

    ``elapsed_ms``: the chain's time from the escrow the provider ran under (the block at
    its ``opened_at``) to the receipt's block; a receipt metering more compute than that is
    an overcharge whatever the workload (the provider starts once the escrow is committed).
    """
    if evidence is not None and evidence.bid is not None:
        bid = evidence.bid
        if bid.signer == job.provider and bid.job_id == job.job_id and job.cost > bid.body["price"]:
            return Ruling(Verdict.CLIENT, f"the receipt claims {job.cost}, more than the bid of {bid.body['price']}")
    billed = job.metrics.get("compute_ms", 0)
    if elapsed_ms is not None and billed > max(0, elapsed_ms) + CLOCK_SLACK_MS:
        return Ruling(Verdict.CLIENT, f"metered {billed} ms, but the receipt came {elapsed_ms} ms after the escrow")
    if answer is not None and answer.error:
        return Ruling(Verdict.CLIENT, f"the provider did not answer the audit ({answer.error[:100]})")
    facts = evidence.facts if evidence is not None and facts_hold(job, evidence.facts) else None
    if facts is None and answer is not None:
        if not facts_hold(job, answer.facts):
            return Ruling(Verdict.CLIENT, "the provider cannot show the receipted result of the offer's parameters")
        facts = answer.facts
    if facts is None:
        return UNDECIDED
    try:
        facts = Facts(facts.offer, normalize(facts.offer.body["workload"], facts.params), facts.result)
    except Exception as e:  # noqa: BLE001 - any refusal: no provider runs parameters its workload refuses
        return Ruling(Verdict.CLIENT, f"the receipted job's parameters are refused by its workload: {e}")
    wrong = check_output(facts)
    if wrong:
        return Ruling(Verdict.CLIENT, wrong)
    workload = facts.offer.body["workload"]
    output = decode(facts.result.output)
    need = expected_ms(workload, facts.params, output, gflops) if gflops or workload == "echo" else None
    if need is not None and billed > METER_FACTOR * need + METER_SLACK_MS:
        return Ruling(Verdict.CLIENT, f"metered {billed} ms where the job needs about {need} ms")
    if workload == "embed":
        return _judge_embed(facts, output, evidence, asked, check_vector)
    if workload == "llm_gen" and checkable_generation(facts.params):
        return _judge_llm(facts, output, check_generation)
    if workload == "sd_infer" and is_model_digest(facts.params.get("model")):
        return _judge_image(facts, output, evidence, answer, asked, check_image)
    if workload != "torch_bench":
        return Ruling(Verdict.PROVIDER, "the result is what the parameters give")  # recomputed whole
    root = bytes.fromhex(output["rows_root"])
    n = int(facts.params["n"])
    shown = [(r, "the challenger") for r in (evidence.rows if evidence is not None else ())]
    shown += [(r, "the provider") for r in (answer.rows if answer is not None else ())]
    for (index, row, proof), who in shown:
        committed = 0 <= index < n and verify_proof(root, row, list(proof))
        if not committed:
            if who == "the provider":
                return Ruling(Verdict.CLIENT, f"the provider's row {index} is not under its rows_root")
            continue  # a row the challenger cannot show committed proves nothing
        if not check_row(facts.params, index, row):
            return Ruling(Verdict.CLIENT, f"row {index} under the provider's rows_root is wrong")
    if answer is None:
        return UNDECIDED  # nothing shown is wrong: the provider is asked for rows of its own
    missing = set(asked) - {index for index, _, _ in answer.rows}
    if missing:
        return Ruling(Verdict.CLIENT, f"the provider did not show rows {sorted(missing)}")
    return Ruling(Verdict.PROVIDER, "every row asked for is committed and right")
