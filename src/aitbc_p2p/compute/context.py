"""What every workload module shares: the run context and the availability probes
(a module of its own so that workloads.py and llm.py do not import each other)."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aitbc_p2p.exceptions import ComputeError


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
    "is_pipeline",
    "language_models",
    "module_available",
    "pick_model",
    "pipeline_models",
    "torch_available",
]
