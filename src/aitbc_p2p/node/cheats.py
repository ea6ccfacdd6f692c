"""Cheating providers, as fixtures for tests and the audit bench: never for a real host.

A provider runs one when its config names it (``[provider] cheat = "..."``, logged as a
warning at start): the injection is passed in, never read from the environment. Each
cheat is what a dishonest provider would do to be paid for less work; the verification
of specs/market.md is meant to catch every one of them (tests/test_devnet_audit.py,
bench/audit.py).
"""

from __future__ import annotations

import array
import enum
import hashlib
import os
from dataclasses import dataclass
from typing import Any

from aitbc_p2p.chain.merkle import merkle_root
from aitbc_p2p.codec import decode, encode
from aitbc_p2p.market import JobResult
from aitbc_p2p.market.jobs import MAX_OUTPUT


class Cheat(enum.StrEnum):
    WRONG_ROWS = "wrong_rows"
    """torch_bench: half the product's rows are not computed (zeros), and committed so."""
    RANDOM_OUTPUT = "random_output"
    """The output is made up: an echo of another message; a rows_root of random bytes;
    embeddings pointing the other way; token ids that are not the text; an image of noise
    over latents of noise."""
    INFLATED_METERING = "inflated_metering"
    """The receipt bills an hour of compute (capped by the escrow) for the real result."""
    WITHHELD_AUDITS = "withheld_audits"
    """Honest work, but audits go unanswered."""
    TRUNCATED_GENERATION = "truncated_generation"
    """llm_gen: half the tokens asked for are generated, and billed as the whole."""
    SUBSTITUTED_GENERATION = "substituted_generation"
    """llm_gen: the tokens are sampled hot from another seed, not the decoding asked for."""
    OTHER_MODEL = "other_model"
    """llm_gen: another (cheaper) configured model runs; the result names the one asked for."""
    FEWER_STEPS = "fewer_steps"
    """sd_infer: half the denoising steps run; each latents committed twice to fill the
    trajectory of the steps asked for, billed as the whole."""


CHEATS = tuple(c.value for c in Cheat)
INFLATED_MS = 3_600_000


def skipped(params: dict[str, Any], index: int) -> bool:
    """Whether the WRONG_ROWS cheat leaves row ``index`` uncomputed: half the rows, chosen
    by a hash the auditor cannot predict from the index alone."""
    return hashlib.sha256(f"{params['seed']}:{params['n']}:{index}".encode()).digest()[0] < 128


@dataclass(frozen=True, slots=True)
class Cheater:
    cheat: Cheat

    @property
    def answers_audits(self) -> bool:
        return self.cheat is not Cheat.WITHHELD_AUDITS

    def run_params(self, workload: str, params: dict[str, Any], models: dict[str, str]) -> dict[str, Any]:
        """The parameters this provider really runs a job with, in place of ``params``
        (blocking: naming another model reads the models' content hashes)."""
        if workload == "sd_infer" and self.cheat is Cheat.FEWER_STEPS:
            return {**params, "steps": max(1, int(params.get("steps", 20)) // 2)}
        if workload != "llm_gen":
            return params
        if self.cheat is Cheat.TRUNCATED_GENERATION:
            return {**params, "max_tokens": max(1, int(params.get("max_tokens", 64)) // 2)}
        if self.cheat is Cheat.SUBSTITUTED_GENERATION:
            return {**params, "temperature_milli": 1500, "seed": (int(params.get("seed", 0)) + 1) % (1 << 32)}
        if self.cheat is Cheat.OTHER_MODEL:
            from aitbc_p2p.compute.context import find_model, language_models

            asked = find_model(models, str(params.get("model", "")))
            others = [name for name, path in language_models(models).items() if asked is None or path != asked[1]]
            if others:
                return {**params, "model": others[0]}
        return params

    def leaves(self, params: dict[str, Any], ran: list[bytes]) -> list[bytes]:
        """The sd_infer latents this provider commits to (and answers audits from), from
        those of what it ran (``run_params``)."""
        steps = int(params["steps"])
        if self.cheat is Cheat.FEWER_STEPS:
            return [ran[i * (len(ran) - 1) // steps] for i in range(steps + 1)]
        if self.cheat is Cheat.RANDOM_OUTPUT:
            return [hashlib.shake_256(f"{params['seed']}:{i}".encode()).digest(len(ran[0])) for i in range(steps + 1)]
        return ran

    def rows(self, params: dict[str, Any], honest: list[bytes]) -> list[bytes]:
        """The rows this provider committed to (it answers audits from them)."""
        if self.cheat is not Cheat.WRONG_ROWS:
            return honest
        return [bytes(len(row)) if skipped(params, i) else row for i, row in enumerate(honest)]

    def result(
        self, workload: str, params: dict[str, Any], result: JobResult, honest_rows: list[bytes] | None
    ) -> JobResult:
        """The result this provider delivers and receipts instead of ``result`` (blocking:
        ``honest_rows`` is the torch_bench product, recomputed by the caller, or the
        sd_infer latents it committed to, :meth:`leaves`)."""
        if not result.ok:
            return result
        output = decode(result.output, max_size=MAX_OUTPUT)
        metrics = dict(result.metrics)
        if workload == "llm_gen":
            output["model"] = params["model"]  # the model asked for, whichever ran
        if self.cheat is Cheat.INFLATED_METERING:
            metrics["compute_ms"] = INFLATED_MS
        elif self.cheat is Cheat.RANDOM_OUTPUT:
            if workload == "echo":
                output = {"message": "made up", "length": 7}
            elif workload == "torch_bench":
                output["rows_root"] = hashlib.sha256(result.output).hexdigest()
            elif workload == "embed":  # every vector pointing the other way
                floats = array.array("f", output["vectors"])
                output["vectors"] = array.array("f", (-x for x in floats)).tobytes()
                output["digest"] = hashlib.sha256(output["vectors"]).hexdigest()
            elif workload == "llm_gen" and isinstance(output.get("ids"), list):  # ids that do not make the text
                output["ids"] = [(t + 1) % 256 for t in output["ids"]]
            elif workload == "sd_infer":
                output.update(_noise_image(params))
        elif self.cheat is Cheat.WRONG_ROWS and workload == "torch_bench" and honest_rows is not None:
            rows = self.rows(params, honest_rows)
            output["rows_root"] = merkle_root(rows).hex()
            output["digest"] = hashlib.sha256(b"".join(rows)).hexdigest()
        if workload == "sd_infer" and honest_rows is not None:
            output["latents_root"] = merkle_root(honest_rows).hex()
            output["steps"] = params["steps"]  # the steps asked for, however many ran
        return JobResult(result.job_id, True, encode(output), "", metrics)


def _noise_image(params: dict[str, Any]) -> dict[str, Any]:
    """A PNG of noise the size asked for, and its digests."""
    import io

    from PIL import Image

    size = (params["width"], params["height"])
    rgb = Image.frombytes("RGB", size, os.urandom(size[0] * size[1] * 3))
    png = io.BytesIO()
    rgb.save(png, format="PNG")
    data = png.getvalue()
    return {
        "image": data,
        "digest": hashlib.sha256(data).hexdigest(),
        "pixels_digest": hashlib.sha256(rgb.tobytes()).hexdigest(),
    }
