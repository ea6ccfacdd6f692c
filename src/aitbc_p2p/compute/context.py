"""What every workload module shares: the run context and the availability probes
(a module of its own so that workloads.py and llm.py do not import each other)."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


def module_available(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def torch_available() -> bool:
    return module_available("torch")


@dataclass(frozen=True)
class RunContext:
    """What a running workload may use: its device, an event sink, configured models."""

    device: str = "cpu"
    emit: Callable[[dict[str, Any]], None] = lambda event: None
    models: Mapping[str, str] = field(default_factory=dict)
    """Model name -> local directory (never downloaded at run time)."""
    ollama_url: str | None = None


__all__ = ["RunContext", "module_available", "torch_available"]
