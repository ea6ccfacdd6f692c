"""Text generation backends for ``llm_gen``: a built-in torch backend and Ollama.

Both stream: each new piece of text is emitted as ``{"token": text}`` through the run
context as soon as it exists, and the result reports time to first token and tokens/s.
Nothing is downloaded: the torch backend loads a causal language model from a local
directory that the provider configured by name, or that a job names by its content
(``sha256:<hex>``, :func:`model_digest`); Ollama serves its own models.

The torch backend's generations are checkable (specs/market.md, "Checks per workload"):
the result carries the token ids, greedy decoding takes the argmax and seeded sampling
inverts the CDF at uniforms drawn up front from the seed, so one teacher-forced forward
pass over prompt + output (:func:`check_generation`, a prefill) tells whether each token
is what the model's logits allow.
"""

from __future__ import annotations

import inspect
import json
import math
import threading
import time
from collections.abc import Mapping
from typing import Any

from aitbc_p2p.compute.context import (
    RunContext,
    find_model,
    language_models,
    model_digest,  # noqa: F401 - llm.model_digest is what users and tests have named
    module_available,
    torch_available,
    with_digests,  # noqa: F401
)
from aitbc_p2p.exceptions import ComputeError

_MODELS: dict[tuple[str, str], tuple[Any, Any]] = {}
_LOAD_LOCK = threading.Lock()

LOGIT_SLACK = 0.25
"""How far the provider's logits may differ from the checker's, each (a different device
class rounds them differently and may break a near-tie the other way). A produced token
is allowed when logits within this of the checker's would have made it the one taken:
greedy, its logit within 2 x 0.25 = 0.5 of the top one (a token the model ranks more than
e^0.5 = 1.65 times less likely than its top is not a greedy choice); seeded, the step's
uniform inside the widest interval such logits give it. The slack is in logits, before
the temperature: a low temperature widens the interval as much as it magnifies errors."""


def generate(params: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
    backend = params["backend"]
    local = language_models(ctx.models)
    if backend == "auto":
        if find_model(local, params["model"]) is not None:
            backend = "torch"
        elif ctx.ollama_url:
            backend = "ollama"
        else:
            raise ComputeError("no local model of that name and no Ollama configured")
    if backend == "torch":
        return _torch_generate(params, ctx)
    return _ollama_generate(params, ctx)


def _load(path: str, device: str) -> tuple[Any, Any]:
    key = (path, device)
    with _LOAD_LOCK:
        if key not in _MODELS:
            from transformers import AutoModelForCausalLM, AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
            model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True).to(device).eval()
            _MODELS[key] = (tokenizer, model)
        return _MODELS[key]


def _cache_argument(model: Any) -> str:
    """The name under which the model's forward takes and returns its key/value cache:
    ``cache`` in transformers 5 (which deprecates ``past_key_values``, to be removed in
    5.40), ``past_key_values`` before."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _uniforms(seed: int, count: int) -> Any:
    """The uniforms a seeded generation samples at, one per step, drawn up front (float64)."""
    import torch

    return torch.rand(count, generator=torch.Generator(device="cpu").manual_seed(seed), dtype=torch.float64)


def _sample(logits: Any, temperature: float, u: float) -> int:
    """The token whose interval of the cumulative distribution holds ``u``."""
    import torch

    probs = torch.softmax(logits.double() / temperature, dim=-1)
    cdf = torch.cumsum(probs, dim=-1)
    return min(int(torch.searchsorted(cdf, torch.tensor([u * float(cdf[-1])], dtype=torch.float64))[0]), len(cdf) - 1)


def _torch_generate(params: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
    if not (torch_available() and module_available("transformers")):
        raise ComputeError("the torch backend needs torch and transformers")
    import torch

    found = find_model(ctx.models, params["model"])
    if found is None:
        local = sorted(language_models(ctx.models))
        raise ComputeError(f"model {params['model']!r} is not configured on this provider; it has {local}")
    name, path = found
    tokenizer, model = _load(path, ctx.device)
    temperature = params["temperature_milli"] / 1000
    uniforms = _uniforms(params["seed"], params["max_tokens"] + 1) if temperature else None
    ids = tokenizer(params["prompt"], return_tensors="pt").input_ids.to(ctx.device)
    eos = tokenizer.eos_token_id
    start = time.perf_counter()
    ttft = 0.0
    out_ids: list[int] = []
    text_so_far = ""
    past = None
    step_input = ids
    cache = _cache_argument(model)
    with torch.inference_mode():
        for i in range(params["max_tokens"]):
            out = model(input_ids=step_input, use_cache=True, **{cache: past})
            past = getattr(out, cache)
            logits = out.logits[:, -1, :].float().cpu()
            if temperature == 0:
                next_id = int(torch.argmax(logits, dim=-1)[0])
            else:
                assert uniforms is not None
                next_id = _sample(logits[0], temperature, float(uniforms[i]))
            if i == 0:
                ttft = time.perf_counter() - start
            if eos is not None and next_id == eos:
                break
            out_ids.append(next_id)
            text = tokenizer.decode(out_ids, skip_special_tokens=True)
            piece, text_so_far = text[len(text_so_far) :], text
            if piece:
                ctx.emit({"token": piece})
            step_input = torch.tensor([[next_id]], device=ctx.device)
    elapsed = time.perf_counter() - start
    decode_s = max(elapsed - ttft, 1e-9)
    return {
        "backend": "torch",
        "model": name,
        "text": text_so_far,
        "tokens": len(out_ids),
        "ids": out_ids,
        "ttft_ms": int(ttft * 1000),
        "tokens_per_s": int(max(len(out_ids) - 1, 0) / decode_s) if len(out_ids) > 1 else 0,
        "elapsed_ms": int(elapsed * 1000),
    }


def check_generation(params: Mapping[str, Any], output: Mapping[str, Any], path: str, *, device: str = "cpu") -> str:
    """Whether a torch generation is what the model at ``path`` gives for ``params``
    (validated): one teacher-forced forward pass over prompt + output. Each produced token
    must be allowed by the logits before it, within LOGIT_SLACK (greedy: the top; sampled:
    its interval of the distribution holds the step's seeded uniform), a generation
    shorter than ``max_tokens`` must end where end-of-text is allowed, and the text must
    be the ids decoded. Empty: it is; else why not (blocking)."""
    import torch

    ids = output.get("ids")
    if output.get("backend") != "torch" or not isinstance(ids, list) or not all(type(t) is int for t in ids):
        return "the result carries no token ids of a torch generation"
    max_tokens = int(params["max_tokens"])
    if len(ids) > max_tokens or output.get("tokens") != len(ids):
        return f"the result claims {output.get('tokens')} tokens and carries {len(ids)} ids (at most {max_tokens})"
    tokenizer, model = _load(path, device)
    vocab = int(model.get_output_embeddings().weight.shape[0])
    if not all(0 <= t < vocab for t in ids):
        return "a token id is outside the model's vocabulary"
    if tokenizer.decode(ids, skip_special_tokens=True) != output.get("text"):
        return "the text is not the token ids decoded"
    prompt = tokenizer(params["prompt"], return_tensors="pt").input_ids[0].tolist()
    eos = tokenizer.eos_token_id
    if not prompt:
        return "the prompt has no tokens: nothing was generated from it"
    if eos is not None and eos in ids:
        return "the ids go on past end-of-text"
    context = getattr(model.config, "max_position_embeddings", None) or getattr(model.config, "n_positions", None)
    if context is not None and len(prompt) + len(ids) > int(context):
        return f"prompt + generation, {len(prompt)} + {len(ids)} tokens, longer than the model's context of {context}"
    ends = len(ids) < max_tokens
    if ends and eos is None:
        return f"the generation stops after {len(ids)} of {max_tokens} tokens and the model has no end-of-text"
    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([prompt + ids], device=device)).logits[0].double().cpu()
    steps = logits[len(prompt) - 1 : len(prompt) - 1 + len(ids) + int(ends)]
    wanted = ids + ([eos] if ends else [])
    temperature = params["temperature_milli"] / 1000
    uniforms = _uniforms(params["seed"], max_tokens + 1) if temperature else None
    for i, (row, token) in enumerate(zip(steps, wanted, strict=True)):
        what = "end-of-text" if i == len(ids) else f"token {i}"
        if uniforms is None:
            gap = float(row.max() - row[token])
            if not gap <= 2 * LOGIT_SLACK:  # NaN logits fail too
                return f"{what} is not a greedy choice: its logit is {gap:.2f} below the top"
            continue
        probs = torch.softmax(row / temperature, dim=-1)
        before, own = float(torch.sum(probs[:token])), float(probs[token])
        after = max(0.0, 1.0 - before - own)
        # The lowest start of its interval: the tokens before it lowered by the slack, the
        # rest raised; the highest end: the reverse (each shift of at most LOGIT_SLACK).
        k = math.exp(min(2 * LOGIT_SLACK / temperature, 700.0))
        lo, hi = before / (before + (own + after) * k), (before + own) * k / ((before + own) * k + after)
        u = float(uniforms[i])
        if not (lo - 1e-12 <= u <= hi + 1e-12) or math.isnan(lo + hi):
            return f"{what} is not the seeded sample: its interval, widened to [{lo:.4f}, {hi:.4f}], misses {u:.4f}"
    return ""


def _ollama_generate(params: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
    """POST ``/api/generate`` with ``stream: true`` (as in seed system-flow.md) and read NDJSON."""
    import httpx

    if not ctx.ollama_url:
        raise ComputeError("no Ollama URL configured on this provider")
    body = {
        "model": params["model"],
        "prompt": params["prompt"],
        "stream": True,
        "options": {
            "temperature": params["temperature_milli"] / 1000,
            "num_predict": params["max_tokens"],
            "seed": params["seed"],
        },
    }
    start = time.perf_counter()
    ttft = 0.0
    pieces: list[str] = []
    final: dict[str, Any] = {}
    try:
        with (
            httpx.Client(base_url=ctx.ollama_url, timeout=httpx.Timeout(10.0, read=300.0)) as client,
            client.stream("POST", "/api/generate", json=body) as resp,
        ):
            if resp.status_code != 200:
                raise ComputeError(f"Ollama answered {resp.status_code}: {resp.read()[:200]!r}")
            for line in resp.iter_lines():
                if not line.strip():
                    continue
                msg = json.loads(line)
                if "error" in msg:
                    raise ComputeError(f"Ollama error: {msg['error']}")
                piece = msg.get("response", "")
                if piece:
                    if not pieces:
                        ttft = time.perf_counter() - start
                    pieces.append(piece)
                    ctx.emit({"token": piece})
                if msg.get("done"):
                    final = msg
                    break
    except (httpx.HTTPError, json.JSONDecodeError) as e:
        raise ComputeError(f"Ollama at {ctx.ollama_url} failed: {e}") from e
    elapsed = time.perf_counter() - start
    tokens = int(final.get("eval_count", len(pieces)))
    eval_ns = int(final.get("eval_duration", 0))
    rate = tokens / (eval_ns / 1e9) if eval_ns else (tokens / max(elapsed - ttft, 1e-9))
    return {
        "backend": "ollama",
        "model": params["model"],
        "text": "".join(pieces),
        "tokens": tokens,
        "ttft_ms": int(ttft * 1000),
        "tokens_per_s": int(rate),
        "elapsed_ms": int(elapsed * 1000),
    }
