"""What every workload module shares: the run context and the availability probes
(a module of its own so that workloads.py and llm.py do not import each other)."""

from __future__ import annotations

import hashlib
import importlib.util
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aitbc_p2p.exceptions import ComputeError
from aitbc_p2p.market.messages import DIGEST_PREFIX, is_model_digest

_DIGESTS: dict[str, tuple[tuple[tuple[str, int, int], ...], str]] = {}
_DIGEST_LOCK = threading.Lock()


def module_available(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def torch_available() -> bool:
    return module_available("torch")


def is_pipeline(path: str) -> bool:
    """A diffusers pipeline directory (it has ``model_index.json``), not a causal LM."""
    return (Path(path) / "model_index.json").is_file()


def pipeline_models(models: Mapping[str, str]) -> dict[str, str]:
    """The configured models that are diffusers pipelines (``sd_infer``)."""
    return {name: path for name, path in models.items() if is_pipeline(path)}


def language_models(models: Mapping[str, str]) -> dict[str, str]:
    """The configured models that are causal LMs (``llm_gen``): all the others."""
    return {name: path for name, path in models.items() if not is_pipeline(path)}


def pick_model(models: Mapping[str, str], name: str, what: str) -> tuple[str, str]:
    """The configured model ``name``, or the first of ``models`` when ``name`` is empty:
    (its name, its directory). Raises ComputeError naming the ones there are."""
    chosen = name or next(iter(models), "")
    path = models.get(chosen)
    if path is None:
        raise ComputeError(f"{what} {chosen!r} is not configured on this provider; it has {sorted(models)}")
    return chosen, path


def model_digest(path: str) -> str:
    """The content hash of a model directory: ``sha256:`` of its manifest, one line
    ``relative path, size, SHA-256`` per file (sorted; hidden files left out). What a job
    names so that its provider and its checkers run the same weights. Cached while the
    files' sizes and modification times stay the same (blocking: it reads every file)."""
    root = Path(path)
    files = sorted(
        p
        for p in root.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )
    stats = [(str(p.relative_to(root)), p.stat()) for p in files]
    signature = tuple((rel, st.st_size, st.st_mtime_ns) for rel, st in stats)
    with _DIGEST_LOCK:
        cached = _DIGESTS.get(path)
        if cached is not None and cached[0] == signature:
            return cached[1]
    manifest = hashlib.sha256()
    for p, (rel, size, _) in zip(files, signature, strict=True):
        h = hashlib.sha256()
        with p.open("rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        manifest.update(f"{rel}\0{size}\0{h.hexdigest()}\n".encode())
    digest = DIGEST_PREFIX + manifest.hexdigest()
    with _DIGEST_LOCK:
        _DIGESTS[path] = (signature, digest)
    return digest


def find_model(
    models: Mapping[str, str], name: str, kind: Callable[[Mapping[str, str]], dict[str, str]] | None = None
) -> tuple[str, str] | None:
    """The configured model of ``kind`` (:func:`language_models` unless told, or
    :func:`pipeline_models`) a job names (by name, by content hash, or the first for an
    empty name): (the name as the job gave it, its directory), or None."""
    local = (kind or language_models)(models)
    if name in local:  # a name, or a content hash already known (with_digests)
        return name, local[name]
    if is_model_digest(name):
        for path in local.values():
            if Path(path).is_dir() and model_digest(path) == name:
                return name, path
        return None
    try:
        return pick_model(local, name, "model")
    except ComputeError:
        return None


def with_digests(models: Mapping[str, str]) -> dict[str, str]:
    """``models`` and, for each model directory among them (causal LMs and pipelines),
    its content hash -> its directory: what a provider hands its workers, so that a job
    naming a model by content finds it without each worker reading every model's files
    again (blocking)."""
    out = dict(models)
    for path in models.values():
        if Path(path).is_dir():
            out.setdefault(model_digest(path), path)
    return out


@dataclass(frozen=True)
class RunContext:
    """What a running workload may use: its device, an event sink, configured models."""

    device: str = "cpu"
    emit: Callable[[dict[str, Any]], None] = lambda event: None
    models: Mapping[str, str] = field(default_factory=dict)
    """Model name -> local directory (never downloaded at run time): causal LMs for
    ``llm_gen`` and diffusers pipelines for ``sd_infer``, told apart by their files."""
    ollama_url: str | None = None
    keep: Callable[[bytes], None] = lambda data: None
    """Hand bytes back to the provider with the result, not sent to the client: what it
    answers audits from (a torch_bench product's rows)."""


__all__ = [
    "RunContext",
    "find_model",
    "is_pipeline",
    "language_models",
    "model_digest",
    "module_available",
    "pick_model",
    "pipeline_models",
    "torch_available",
    "with_digests",
]
