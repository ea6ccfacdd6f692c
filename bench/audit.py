"""What verification catches and what it costs (specs/market.md, "Verification").

For each cheat of node/cheats.py and for the honest provider, ``--trials`` runs of
``--jobs`` jobs of the workload the cheat is about: torch_bench jobs (n x n, ``--iters``
products, real products on this machine's CPU) for the cheats on products and metering,
and (with transformers) llm_gen jobs of ``--tokens`` tokens from a tiny GPT-2 shaped
model named by its content hash, greedy and seeded in turn, for the cheats on
generations (truncated, substituted, another model, made-up ids). At level ``none``
the client's agent only checks the receipt's cost against the bid; at ``spot`` it draws
rows from a block hash the provider could not know, asks the provider (the cheat's own
answer: its committed rows with their proofs, or no answer), and rules with the same
``judge`` the node runs (a generation: one teacher-forced pass of its own model, nothing
to ask); at ``audit`` it does that for the jobs the same hash draws (one in two). A
cheat is detected in a run if any of its jobs is ruled against it; a false positive is an honest job ruled against.

Metering is held to the chain's time from a job's escrow to its receipt (taken here as its
compute plus one block): an inflated receipt is caught on every workload.

Cost, at each of ``--cost-n`` (the headline at the last, 2048: a job of about a second on a
2-core CPU), each the median over ``--repeats`` timings and a fraction of the job's own
compute (the provider's ``_bench_run``, measured in the same run): the check costs O(n^2)
against the job's O(n^3 iters), so a smaller job pays a larger share (the table shows
it): the verifier's check (k rows recomputed at n^2 each, after generating the seeded
inputs: ``verifier_overhead``) and the provider's answer: the proofs from the product it kept with the result
(``provider_overhead``; products up to n = 2048 are kept), or, where it was not kept, one
more n^3 product (``provider_overhead_recomputed``). A level's extra compute is the
verifier's and the provider's (kept) together, times the share of jobs it checks; the
headline figures are level ``audit``'s.

A generation's check is one teacher-forced pass over prompt + output, whatever the seed:
its cost (``llm_cost.verifier``, a share of the generation's own time) counts toward a
level's extra compute where it is more than the product's: the headline takes the larger.

With diffusers, ``--jobs`` sd_infer jobs of a tiny Stable Diffusion pipeline named by its
content hash (``--sd-steps`` DDIM steps, ``--sd-size`` pixels a side) for the cheats on
images (made-up latents and image, half the steps run): the agent draws one challenge
(a denoising step or the decode) per job and re-runs it from the latents the provider
proves under its ``latents_root``. Its cost (``sd_cost.verifier``) is the mean over every
challenge, each equally likely, against the job's own time; it counts toward the headline
as the generation's does.

At level ``replicate`` each job's replica is a second honest run on this machine (the same
device class, where honest results repeat: market/replicate.py): a job is checked (the spot
check) only when its output differs from its replica's or the checks that need no model
(its bid, its metering) refute it. Its extra compute is the second run (1.0) plus the check
on the honest jobs whose replicas differ. A provider that only refuses audits delivers right
results, which a replica confirms: not counted against ``replicate`` (n/a).

Prints progress and a table to stderr; its last line is JSON:
{"bench": "audit", "level": "audit", "detect_rate_min": ..., "false_positives": 0,
 "audit_overhead": ..., "levels": {level: {"detect_rate_min", "overhead"}}, ...,
 "cheats": {cheat: {level: rate}}}
Run: .venv/bin/python bench/audit.py [--trials 200] [--jobs 10] [--n 512] [--cost-n 512 1024 2048] [--iters 10]
     [--tokens 64] [--sd-steps 20] [--sd-size 64]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aitbc_p2p.chain.merkle import leaf_hashes
from aitbc_p2p.chain.payloads import Verdict
from aitbc_p2p.chain.state import Job, JobStatus
from aitbc_p2p.codec import encode
from aitbc_p2p.compute import check_params, torch_available
from aitbc_p2p.compute.context import RunContext, module_available
from aitbc_p2p.market import JobOffer, JobResult, params_hash
from aitbc_p2p.market.audit import SPOT_ROWS, AuditAnswer, Evidence, Facts, challenge_rows, judge, sampled
from aitbc_p2p.market.replicate import compare
from aitbc_p2p.node.cheats import Cheat, Cheater
from aitbc_p2p.testing import make_key

CLIENT = make_key("bench-audit-client")
PROVIDER = make_key("bench-audit-provider")
BID = 10**9
"""The provider's bid and the escrow: the cost a receipt may claim unchallenged."""
BLOCK_MS = 1000
"""The chain's time from a job's escrow to its receipt is taken as its compute plus one
block (the receipt waits for the next block): what ``judge`` holds the metered time to."""


PRODUCT_CHEATS = ("random_output", "wrong_rows", "inflated_metering", "withheld_audits")
GENERATION_CHEATS = (
    "truncated_generation", "substituted_generation", "other_model", "random_output", "inflated_metering"
)  # fmt: skip
IMAGE_CHEATS = ("random_output", "fewer_steps", "inflated_metering")
"""The cheats measured on each workload (random_output and inflated_metering on each)."""


def spot_offer(workload: str, params: dict[str, Any], nonce: int) -> JobOffer:
    """The client's signed offer of a job at level ``spot``, escrowed at the bid."""
    return JobOffer.create(
        CLIENT, "ait-devnet", workload=workload, params_hash=params_hash(workload, params), max_price=BID,
        max_runtime_s=60, verification="spot", timestamp_ms=1, nonce=nonce,
    )  # fmt: skip


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


class BenchJob:
    """One torch_bench job: run once, honestly, and its product kept for the answers."""

    def __init__(self, n: int, iters: int, seed: int) -> None:
        from aitbc_p2p.compute.workloads import _bench_run, product_rows

        self.params = check_params("torch_bench", {"n": n, "iters": iters, "seed": seed})
        self.offer = spot_offer("torch_bench", self.params, seed)
        start = time.perf_counter()
        output = _bench_run(self.params, RunContext(device="cpu"))
        self.compute_ms = max(1, int((time.perf_counter() - start) * 1000))
        self.elapsed_ms = self.compute_ms + BLOCK_MS
        self.gflops = int(output["gflops"])
        self.result = JobResult(self.offer.job_id, True, encode(output), "", {"compute_ms": self.compute_ms})
        self.replica = encode(_bench_run(self.params, RunContext(device="cpu")))  # another provider's run
        self.rows = product_rows(self.params)
        self.hashes = leaf_hashes(self.rows)  # kept by the provider with the rows

    def as_delivered(self, cheater: Cheater | None) -> tuple[Job, Facts, list[bytes]]:
        """The escrow after the receipt, what the client was delivered, and the rows the
        provider answers from."""
        result, rows = self.result, self.rows
        if cheater is not None:
            result = cheater.result("torch_bench", self.params, result, self.rows)
            rows = cheater.rows(self.params, self.rows)
        cost = min(BID, result.metrics["compute_ms"] * 1000)  # 1,000 units a second, capped by the escrow
        job = Job(
            self.offer.job_id, CLIENT.address, PROVIDER.address, BID, 99, 1, CLIENT.address,
            status=JobStatus.RECEIPTED, result_hash=result.result_hash, cost=cost, metrics=dict(result.metrics),
            receipt_height=5,
        )  # fmt: skip
        return job, Facts(self.offer, self.params, result), rows


class GenJob:
    """One llm_gen job of a tiny model named by content: generated honestly, and as each
    cheat would (node/cheats.py: what it runs instead, and what it delivers)."""

    def __init__(self, models: dict[str, str], digest: str, tokens: int, seed: int) -> None:
        self.models = models
        temperature = 0 if seed % 2 else 700  # greedy and seeded in turn
        self.params = check_params(
            "llm_gen", {"prompt": f"Job {seed}: a provider", "model": digest, "max_tokens": tokens,
                        "temperature_milli": temperature, "seed": seed}
        )  # fmt: skip
        self.offer = spot_offer("llm_gen", self.params, seed)
        start = time.perf_counter()
        output = self.run_gen(self.params)
        self.compute_ms = max(1, int((time.perf_counter() - start) * 1000))
        self.elapsed_ms = self.compute_ms + BLOCK_MS
        self.result = JobResult(self.offer.job_id, True, encode(output), "", {"compute_ms": self.compute_ms})
        self.replica = encode(self.run_gen(self.params))  # another provider's run

    def run_gen(self, params: dict[str, Any]) -> dict[str, Any]:
        from aitbc_p2p.compute.workloads import get_workload

        gen = get_workload("llm_gen")
        return gen.run(gen.validate(params), RunContext(models=self.models))

    def as_delivered(self, cheater: Cheater | None) -> tuple[Job, Facts]:
        result = self.result
        if cheater is not None:
            ran = cheater.run_params("llm_gen", self.params, self.models)
            if ran != self.params:
                output = self.run_gen(ran)
                result = JobResult(self.offer.job_id, True, encode(output), "", {"compute_ms": self.compute_ms})
            result = cheater.result("llm_gen", self.params, result, None)
        job = Job(
            self.offer.job_id, CLIENT.address, PROVIDER.address, BID, 99, 1, CLIENT.address,
            status=JobStatus.RECEIPTED, result_hash=result.result_hash, cost=min(BID, self.compute_ms * 1000),
            metrics=dict(result.metrics), receipt_height=5,
        )  # fmt: skip
        return job, Facts(self.offer, self.params, result)


def check_generation(params: dict[str, Any], output: dict[str, Any]) -> str | None:
    from aitbc_p2p.compute import llm
    from aitbc_p2p.compute.context import find_model

    found = find_model(GEN_MODELS, params["model"])
    return None if found is None else llm.check_generation(params, output, found[1])


GEN_MODELS: dict[str, str] = {}
"""The models the generation jobs' checker holds (set once they are built)."""


def generation_detection(jobs: list[GenJob], cheat: str | None, trials: int) -> tuple[dict[str, float], int]:
    """As :func:`detection`, for generations: each job's check is deterministic (one
    teacher-forced pass), so only level ``audit``'s draw varies between runs."""
    cheater = Cheater(Cheat(cheat)) if cheat else None
    verdicts, checked = [], []
    for gen in jobs:
        job, facts = gen.as_delivered(cheater)
        checked.append(replicated(gen.replica, job, facts, gen.elapsed_ms))
        ruling = judge(
            job, Evidence("spot", facts), None, check_row, check_params, check_generation=check_generation,
            elapsed_ms=gen.elapsed_ms,
        )  # fmt: skip
        assert ruling.verdict is not None, ruling
        verdicts.append((job, ruling.verdict))
    rates, false_positives, _, _ = runs(
        [job for job, _ in verdicts], lambda k, seed: verdicts[k][1], cheater, trials, checked
    )
    return rates, false_positives


def generation_costs(job: GenJob, repeats: int) -> dict[str, float]:
    """Median seconds of the generation and of its check."""
    escrow, facts = job.as_delivered(None)
    runs: dict[str, list[float]] = {"job": [], "verifier": []}
    for _ in range(repeats):
        start = time.perf_counter()
        job.run_gen(job.params)
        runs["job"].append(time.perf_counter() - start)
        start = time.perf_counter()
        ruling = judge(
            escrow, Evidence("spot", facts), None, check_row, check_params, check_generation=check_generation
        )
        runs["verifier"].append(time.perf_counter() - start)
        assert ruling.verdict is Verdict.PROVIDER, ruling
    return {name: statistics.median(values) for name, values in runs.items()}


class ImageJob:
    """One sd_infer job of a tiny pipeline named by content: run honestly (its latents
    kept), and as each cheat would."""

    def __init__(self, models: dict[str, str], digest: str, steps: int, size: int, seed: int) -> None:
        self.models = models
        self.params = check_params(
            "sd_infer", {"prompt": f"job {seed}: a red cube", "model": digest, "steps": steps, "width": size,
                         "height": size, "seed": seed}
        )  # fmt: skip
        self.offer = spot_offer("sd_infer", self.params, seed)
        start = time.perf_counter()
        output, self.leaves = self.run_image(self.params)
        self.compute_ms = max(1, int((time.perf_counter() - start) * 1000))
        self.elapsed_ms = self.compute_ms + BLOCK_MS
        self.result = JobResult(self.offer.job_id, True, encode(output), "", {"compute_ms": self.compute_ms})
        self.replica = encode(self.run_image(self.params)[0])  # another provider's run

    def run_image(self, params: dict[str, Any]) -> tuple[dict[str, Any], list[bytes]]:
        from aitbc_p2p.compute import diffusion

        kept: list[bytes] = []
        output = diffusion.text_to_image(params, RunContext(models=self.models, keep=kept.append))
        leaves = diffusion.split_leaves(kept[0], params["steps"])
        assert leaves is not None
        return output, leaves

    def as_delivered(self, cheater: Cheater | None) -> tuple[Job, Facts, list[bytes]]:
        result, leaves = self.result, self.leaves
        if cheater is not None:
            ran = cheater.run_params("sd_infer", self.params, self.models)
            if ran != self.params:
                output, leaves = self.run_image(ran)
                result = JobResult(self.offer.job_id, True, encode(output), "", {"compute_ms": self.compute_ms})
            leaves = cheater.leaves(self.params, leaves)
            result = cheater.result("sd_infer", self.params, result, leaves)
        job = Job(
            self.offer.job_id, CLIENT.address, PROVIDER.address, BID, 99, 1, CLIENT.address,
            status=JobStatus.RECEIPTED, result_hash=result.result_hash, cost=min(BID, self.compute_ms * 1000),
            metrics=dict(result.metrics), receipt_height=5,
        )  # fmt: skip
        return job, Facts(self.offer, self.params, result), leaves


IMAGE_MODELS: dict[str, str] = {}


def check_image(params: dict[str, Any], output: dict[str, Any], challenge: int, leaves: Any) -> str | None:
    from aitbc_p2p.compute import diffusion
    from aitbc_p2p.compute.context import find_model, pipeline_models

    found = find_model(IMAGE_MODELS, params["model"], pipeline_models)
    return None if found is None else diffusion.check_challenge(params, output, found[1], challenge, leaves)


def image_spot(
    job: Job, facts: Facts, leaves: list[bytes], seed: bytes, elapsed_ms: int
) -> tuple[Verdict, tuple[int, ...]]:
    """The client agent's spot check of one image: the ruling, and the challenges drawn."""
    from aitbc_p2p.compute.workloads import prove_rows
    from aitbc_p2p.market.audit import image_challenges, leaves_for

    evidence = Evidence("spot check", facts)
    ruling = judge(job, evidence, None, check_row, check_params, check_image=check_image, elapsed_ms=elapsed_ms)
    if ruling.verdict is not None:
        return ruling.verdict, ()
    steps = int(facts.params["steps"])
    drawn = image_challenges(seed, job.job_id, steps)
    answer = AuditAnswer(job.job_id, facts, tuple(prove_rows(leaves, leaves_for(drawn, steps))))
    verdict = judge(
        job, evidence, answer, check_row, check_params, asked=drawn, check_image=check_image, elapsed_ms=elapsed_ms
    ).verdict
    assert verdict is not None
    return verdict, drawn


def image_detection(jobs: list[ImageJob], cheat: str | None, trials: int) -> tuple[dict[str, float], int]:
    """As :func:`detection`, for images; a challenge's re-run is deterministic, so each
    (job, challenge) is ruled once and looked up after."""
    cheater = Cheater(Cheat(cheat)) if cheat else None
    delivered = [j.as_delivered(cheater) for j in jobs]
    steps = int(jobs[0].params["steps"])
    known: dict[tuple[int, int], Verdict] = {}

    def rule(k: int, seed: bytes) -> Verdict:
        from aitbc_p2p.market.audit import image_challenges

        job, facts, leaves = delivered[k]
        key = (k, image_challenges(seed, job.job_id, steps)[0])
        if key not in known:
            known[key] = image_spot(job, facts, leaves, seed, jobs[k].elapsed_ms)[0]
        return known[key]

    checked = [replicated(j.replica, *d[:2], j.elapsed_ms) for j, d in zip(jobs, delivered, strict=True)]
    rates, false_positives, _, _ = runs([job for job, _, _ in delivered], rule, cheater, trials, checked)
    return rates, false_positives


def image_costs(job: ImageJob, repeats: int) -> dict[str, float]:
    """Median seconds of the job; mean seconds of a challenge's check over every challenge."""
    from aitbc_p2p.compute.workloads import prove_rows
    from aitbc_p2p.market.audit import challenge_leaves

    escrow, facts, leaves = job.as_delivered(None)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        job.run_image(job.params)
        times.append(time.perf_counter() - start)
    steps = int(job.params["steps"])
    checks = []
    for challenge in range(1, steps + 2):
        answer = AuditAnswer(escrow.job_id, facts, tuple(prove_rows(leaves, challenge_leaves(challenge, steps))))
        start = time.perf_counter()
        ruling = judge(escrow, Evidence("spot", facts), answer, check_row, check_params, asked=(challenge,),
                       check_image=check_image)  # fmt: skip
        checks.append(time.perf_counter() - start)
        assert ruling.verdict is Verdict.PROVIDER, ruling
    return {"job": statistics.median(times), "verifier": statistics.mean(checks)}


def measure_images(args: argparse.Namespace, table: dict[str, dict[str, float]]) -> tuple[int, dict[str, float]]:
    """The image cheats' rows of ``table``; the false positives and a check's cost."""
    if not (module_available("diffusers") and module_available("transformers")):
        say("audit: diffusers not installed: the image cheats are not measured")
        return 0, {}
    import tempfile

    from aitbc_p2p.compute.context import model_digest
    from aitbc_p2p.testing.models import build_tiny_sd_pipeline

    false_positives = 0
    with tempfile.TemporaryDirectory() as tmp:
        path = str(build_tiny_sd_pipeline(Path(tmp) / "tiny-sd"))
        IMAGE_MODELS.update({"tiny-sd": path})
        digest = model_digest(path)
        size, steps = args.sd_size, args.sd_steps
        say(f"audit: {args.jobs} sd_infer jobs of {steps} steps, {size} x {size} ({digest[:19]}...) on the CPU")
        image_jobs = [ImageJob(IMAGE_MODELS, digest, steps, size, seed) for seed in range(args.jobs)]
        for cheat in [None, *IMAGE_CHEATS]:
            rates, fp = image_detection(image_jobs, cheat, args.trials)
            false_positives += fp
            report(table, f"{cheat or 'honest'} (sd_infer)", rates, fp, cheat)
        cost = image_costs(image_jobs[0], max(1, args.repeats // 2))
    job_ms, check_ms = cost["job"] * 1000, cost["verifier"] * 1000
    say(f"  cost of a {steps}-step image: job {job_ms:.1f} ms, a challenge's check {check_ms:.2f} ms (mean)")
    return false_positives, {"job_ms": round(job_ms, 3), "verifier": round(cost["verifier"] / cost["job"], 4)}


def check_row(params: dict[str, Any], index: int, row: bytes) -> bool:
    from aitbc_p2p.compute.workloads import row_matches

    return row_matches(params, index, row)


def spot(
    job: Job, facts: Facts, rows: list[bytes], cheater: Cheater | None, seed: bytes, gflops: int, elapsed_ms: int
) -> Verdict:
    """The client agent's spot check of one job: the ruling it acts on."""
    from aitbc_p2p.compute.workloads import prove_rows

    evidence = Evidence("spot check", facts)
    ruling = judge(job, evidence, None, check_row, check_params, gflops=gflops, elapsed_ms=elapsed_ms)
    if ruling.verdict is not None:
        return ruling.verdict
    asked = challenge_rows(seed, job.job_id, len(rows), SPOT_ROWS)
    if cheater is not None and not cheater.answers_audits:
        answer = AuditAnswer(job.job_id, error="no answer")
    else:
        answer = AuditAnswer(job.job_id, facts, tuple(prove_rows(rows, asked)))
    verdict = judge(
        job, evidence, answer, check_row, check_params, asked=asked, gflops=gflops, elapsed_ms=elapsed_ms
    ).verdict
    assert verdict is not None
    return verdict


def detection(jobs: list[BenchJob], cheat: str | None, trials: int) -> tuple[dict[str, float], int, float, float]:
    """Per level, the share of runs in which the cheat is caught within the jobs; the false
    positives (honest jobs ruled against); and the shares of honest jobs levels ``audit``
    and ``replicate`` checked."""
    cheater = Cheater(Cheat(cheat)) if cheat else None
    delivered = [j.as_delivered(cheater) for j in jobs]

    def rule(k: int, seed: bytes) -> Verdict:
        job, facts, rows = delivered[k]
        return spot(job, facts, rows, cheater, seed, jobs[k].gflops, jobs[k].elapsed_ms)

    checked = [replicated(j.replica, *d[:2], j.elapsed_ms, j.gflops) for j, d in zip(jobs, delivered, strict=True)]
    return runs([job for job, _, _ in delivered], rule, cheater, trials, checked)


def replicated(replica: bytes, job: Job, facts: Facts, elapsed_ms: int, gflops: int = 0) -> bool:
    """Whether level ``replicate`` checks a delivered job: its output differs from an honest
    replica's (run here: the same device class, market/replicate.py), or the checks that
    need no model (its bid, its metering) refute it before anything is compared."""
    if compare(facts.offer.body["workload"], replica, facts.result.output):
        return True
    evidence = Evidence("replicate", facts)
    return judge(job, evidence, None, check_row, check_params, gflops=gflops, elapsed_ms=elapsed_ms).verdict is (
        Verdict.CLIENT
    )


def runs(
    escrows: list[Job],
    rule: Callable[[int, bytes], Verdict],
    cheater: Cheater | None,
    trials: int,
    checked: list[bool],
) -> tuple[dict[str, float], int, float, float]:
    """``trials`` runs of the jobs at each level: a run catches the cheat when ``rule``
    (job index, the hash of the block after its receipt) rules a checked job against it;
    at ``replicate`` the jobs ``checked`` says (those that differ from their replica) are.
    The share of runs per level, the honest jobs ruled against, the share of honest jobs
    ``audit`` drew and the share ``replicate`` checked (0 for a cheat)."""
    caught = {"none": 0, "spot": 0, "audit": 0, "replicate": 0}
    false_positives = drawn = 0
    for trial in range(trials):
        if any(job.cost > BID for job in escrows):  # level none: the cost against the bid
            caught["none"] += 1
        for level in ("spot", "audit", "replicate"):
            for k, job in enumerate(escrows):
                seed = hashlib.sha256(f"block after receipt {trial}:{k}".encode()).digest()
                if level == "replicate" and not checked[k]:
                    continue  # agrees with its replica: acked unchecked
                if level == "audit":
                    if not sampled(seed, job.job_id):
                        continue  # acked unchecked
                    drawn += 1
                if rule(k, seed) is Verdict.CLIENT:
                    if cheater is None:
                        false_positives += 1
                        continue
                    caught[level] += 1
                    break
    rate = drawn / (trials * len(escrows)) if cheater is None else 0.0
    differ = sum(checked) / len(checked) if cheater is None else 0.0
    return {level: count / trials for level, count in caught.items()}, false_positives, rate, differ


def costs(job: BenchJob, repeats: int) -> dict[str, float]:
    """Median seconds of the job, the verifier's check and the provider's answer."""
    from aitbc_p2p.compute import workloads
    from aitbc_p2p.compute.workloads import _bench_run, product_rows, prove_rows

    escrow, facts, rows = job.as_delivered(None)
    runs: dict[str, list[float]] = {"job": [], "verifier": [], "provider": [], "recomputed": []}
    for r in range(repeats):
        start = time.perf_counter()
        _bench_run(job.params, RunContext(device="cpu"))
        runs["job"].append(time.perf_counter() - start)
        seed = hashlib.sha256(f"cost {r}".encode()).digest()
        asked = challenge_rows(seed, escrow.job_id, len(rows), SPOT_ROWS)
        start = time.perf_counter()
        answer = AuditAnswer(escrow.job_id, facts, tuple(prove_rows(rows, asked, job.hashes)))  # from what it kept
        runs["provider"].append(time.perf_counter() - start)
        start = time.perf_counter()
        prove_rows(product_rows(job.params), asked)  # a product too large to keep: recomputed
        runs["recomputed"].append(time.perf_counter() - start)
        workloads._INPUTS.clear()  # a verifier checks each job once: its inputs are not at hand
        start = time.perf_counter()
        verdict = judge(escrow, Evidence("spot", facts), answer, check_row, check_params, asked=asked).verdict
        runs["verifier"].append(time.perf_counter() - start)
        assert verdict is Verdict.PROVIDER
    return {name: statistics.median(values) for name, values in runs.items()}


RIGHT_RESULTS = ("withheld_audits",)
"""Cheats whose results are right (it refuses audits): level ``replicate`` compares them
with an agreeing replica and asks nothing, so they are not counted against it."""


def report(table: dict[str, dict[str, float]], name: str, rates: dict[str, float], fp: int, cheat: str | None) -> None:
    if cheat in RIGHT_RESULTS:
        del rates["replicate"]
    say(f"  {name}: caught " + ", ".join(f"at {k} {v:.3f}" for k, v in rates.items()) + f"; false positives {fp}")
    if cheat:
        table[name] = rates


def measure_generations(args: argparse.Namespace, table: dict[str, dict[str, float]]) -> tuple[int, dict[str, float]]:
    """The generation cheats' rows of ``table``; the false positives and the check's cost."""
    if not module_available("transformers"):
        say("audit: transformers not installed: the generation cheats are not measured")
        return 0, {}
    import tempfile

    from aitbc_p2p.compute.context import model_digest
    from aitbc_p2p.testing.models import build_tiny_causal_lm

    false_positives = 0
    with tempfile.TemporaryDirectory() as tmp:
        named = build_tiny_causal_lm(Path(tmp) / "tiny", layers=4, hidden=128)
        cheap = build_tiny_causal_lm(Path(tmp) / "cheap", layers=2, hidden=64, seed=1)
        GEN_MODELS.update(tiny=str(named), cheap=str(cheap))
        digest = model_digest(str(named))
        say(f"audit: {args.jobs} llm_gen jobs of {args.tokens} tokens ({digest[:19]}..., 4 x 128) on the CPU")
        gen_jobs = [GenJob(GEN_MODELS, digest, args.tokens, seed) for seed in range(args.jobs)]
        for cheat in [None, *GENERATION_CHEATS]:
            rates, fp = generation_detection(gen_jobs, cheat, args.trials)
            false_positives += fp
            report(table, f"{cheat or 'honest'} (llm_gen)", rates, fp, cheat)
        cost = generation_costs(gen_jobs[0], args.repeats)
    job_ms, check_ms = cost["job"] * 1000, cost["verifier"] * 1000
    say(f"  cost of a {args.tokens}-token generation: job {job_ms:.1f} ms, check {check_ms:.2f} ms")
    return false_positives, {
        "job_ms": round(cost["job"] * 1000, 3),
        "verifier": round(cost["verifier"] / cost["job"], 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--jobs", type=int, default=10)
    parser.add_argument("--n", type=int, default=512, help="the jobs' n for the detection runs")
    parser.add_argument(
        "--cost-n", type=int, nargs="+", default=[512, 1024, 2048], help="n of the costs' jobs (the last: headline)"
    )
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--tokens", type=int, default=64, help="tokens per generation job")
    parser.add_argument("--sd-steps", type=int, default=20, help="denoising steps per sd_infer job")
    parser.add_argument("--sd-size", type=int, default=64, help="sd_infer image side in pixels")
    args = parser.parse_args()
    if not torch_available():
        say("audit: torch not installed (pip install '.[compute]'), skipped")
        print(json.dumps({"bench": "audit", "skipped": "torch not installed"}))
        return
    import torch

    torch.set_num_threads(max(1, torch.get_num_threads()))
    say(f"audit: {args.jobs} torch_bench jobs (n={args.n}, iters={args.iters}) run on the CPU")
    jobs = [BenchJob(args.n, args.iters, seed) for seed in range(args.jobs)]
    say(f"  jobs run; measured {jobs[0].gflops} GFLOP/s (declared in the bids)")
    table: dict[str, dict[str, float]] = {}
    false_positives, audit_rate, replica_rate = 0, 0.0, 0.0
    for cheat in [None, *PRODUCT_CHEATS]:
        name = f"{cheat or 'honest'} (torch_bench)"
        rates, fp, drawn, differ = detection(jobs, cheat, args.trials)
        false_positives += fp
        if cheat is None:
            audit_rate, replica_rate = drawn, differ
        report(table, name, rates, fp, cheat)
    fp, llm_cost = measure_generations(args, table)
    false_positives += fp
    fp, sd_cost = measure_images(args, table)
    false_positives += fp
    by_n: dict[int, dict[str, float]] = {}
    for n in args.cost_n:
        cost = costs(jobs[0] if n == args.n else BenchJob(n, args.iters, 0), args.repeats)
        by_n[n] = {
            "job_ms": round(cost["job"] * 1000, 3),
            "verifier": round(cost["verifier"] / cost["job"], 4),
            "provider": round(cost["provider"] / cost["job"], 4),
            "provider_recomputed": round(cost["recomputed"] / cost["job"], 4),
        }
        say(
            f"  cost at n={n}: job {cost['job'] * 1000:.1f} ms, verifier {cost['verifier'] * 1000:.2f} ms, "
            f"provider's answer {cost['provider'] * 1000:.2f} ms "
            f"({cost['recomputed'] * 1000:.2f} ms where the product is not kept)"
        )
    head = by_n[args.cost_n[-1]]
    verifier, provider, recomputed = head["verifier"], head["provider"], head["provider_recomputed"]
    worst = max(verifier + provider, llm_cost.get("verifier", 0.0), sd_cost.get("verifier", 0.0))  # the costliest
    # replicate: a second run of every job, and the check of the honest jobs whose replicas differ
    overhead = {"none": 0.0, "spot": worst, "audit": audit_rate * worst, "replicate": 1.0 + replica_rate * worst}
    say("")
    say(f"share of {args.trials} runs in which the cheat is caught within {args.jobs} jobs, per level (n={args.n})")
    say(f"{'cheat':<34} {'none':>6} {'spot':>6} {'audit':>6} {'replicate':>9}")
    for name, rates in table.items():
        replica = f"{rates['replicate']:>9.3f}" if "replicate" in rates else f"{'n/a':>9}"
        shares = f"{rates['none']:>6.3f} {rates['spot']:>6.3f} {rates['audit']:>6.3f} {replica}"
        say(f"{name:<34} {shares}")
    extra = f"{overhead['none']:>6.3f} {overhead['spot']:>6.3f} {overhead['audit']:>6.3f} {overhead['replicate']:>9.3f}"
    say(f"{'extra compute':<34} {extra}  (the largest of n={args.cost_n[-1]}, the generation's and the image's)")
    say(f"false positives (honest jobs ruled against, of {args.trials * args.jobs} per level): {false_positives}")
    say(f"level audit checked {audit_rate:.3f} of the jobs; replicate {replica_rate:.3f} (their replicas differed)")
    say("")
    say(f"{'n':>6} {'job ms':>9} {'verifier':>9} {'provider':>9} {'recomputed':>11}   (shares of the job)")
    for n, row in by_n.items():
        shares = f"{row['verifier']:>9.4f} {row['provider']:>9.4f} {row['provider_recomputed']:>11.4f}"
        say(f"{n:>6} {row['job_ms']:>9.1f} {shares}")
    levels = {
        level: {
            "detect_rate_min": min(r[level] for r in table.values() if level in r),
            "overhead": round(overhead[level], 4),
        }
        for level in ("none", "spot", "audit", "replicate")
    }
    print(
        json.dumps(
            {
                "bench": "audit",
                "level": "audit",
                "detect_rate_min": levels["audit"]["detect_rate_min"],
                "false_positives": false_positives,
                "audit_overhead": levels["audit"]["overhead"],
                "levels": levels,
                "audit_rate": round(audit_rate, 4),
                "replica_differ_rate": round(replica_rate, 4),
                "verifier_overhead": round(verifier, 4),
                "provider_overhead": round(provider, 4),
                "provider_overhead_recomputed": round(recomputed, 4),
                "overhead_n": args.cost_n[-1],
                "costs": by_n,
                "llm_cost": llm_cost,
                "sd_cost": sd_cost,
                "sd_steps": args.sd_steps,
                "tokens": args.tokens,
                "n": args.n,
                "iters": args.iters,
                "jobs": args.jobs,
                "trials": args.trials,
                "spot_rows": SPOT_ROWS,
                "cheats": table,
            }
        )
    )


if __name__ == "__main__":
    main()
