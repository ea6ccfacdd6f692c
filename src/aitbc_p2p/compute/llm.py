"""Text generation backends for ``llm_gen``: a built-in torch backend and Ollama.

Both stream: each new piece of text is emitted as ``{"token": text}`` through the run
context as soon as it exists, and the result reports time to first token and tokens/s.
Nothing is downloaded: the torch backend loads a causal language model from a local
directory that the provider configured by name; Ollama serves its own models.
"""

from __future__ import annotations

import json
import time
from typing import Any

from aitbc_p2p.compute.context import RunContext, language_models, module_available, pick_model, torch_available
from aitbc_p2p.exceptions import ComputeError

_MODELS: dict[tuple[str, str], tuple[Any, Any]] = {}


def generate(params: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
    backend = params["backend"]
    local = language_models(ctx.models)
    if backend == "auto":
        if params["model"] in local or (not params["model"] and local):
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
    if key not in _MODELS:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True).to(device).eval()
        _MODELS[key] = (tokenizer, model)
    return _MODELS[key]


def _torch_generate(params: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
    if not (torch_available() and module_available("transformers")):
        raise ComputeError("the torch backend needs torch and transformers")
    import torch

    name, path = pick_model(language_models(ctx.models), params["model"], "model")
    tokenizer, model = _load(path, ctx.device)
    gen = torch.Generator(device="cpu").manual_seed(params["seed"])
    temperature = params["temperature_milli"] / 1000
    ids = tokenizer(params["prompt"], return_tensors="pt").input_ids.to(ctx.device)
    eos = tokenizer.eos_token_id
    start = time.perf_counter()
    ttft = 0.0
    out_ids: list[int] = []
    text_so_far = ""
    past = None
    step_input = ids
    with torch.inference_mode():
        for i in range(params["max_tokens"]):
            out = model(input_ids=step_input, past_key_values=past, use_cache=True)
            past = out.past_key_values
            logits = out.logits[:, -1, :].float().cpu()
            if temperature == 0:
                next_id = int(torch.argmax(logits, dim=-1)[0])
            else:
                probs = torch.softmax(logits / temperature, dim=-1)
                next_id = int(torch.multinomial(probs, 1, generator=gen)[0, 0])
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
        "ttft_ms": int(ttft * 1000),
        "tokens_per_s": int(max(len(out_ids) - 1, 0) / decode_s) if len(out_ids) > 1 else 0,
        "elapsed_ms": int(elapsed * 1000),
    }


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
