"""L4: the composition root. ``open_node(config)`` starts a peer and owns its tasks.

The configuration types load eagerly; the node itself (and with it libp2p) on first use,
so that a config check or a verifying worker process does not import the network stack.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from aitbc_p2p.node.config import NodeConfig, ProviderConfig

if TYPE_CHECKING:
    from aitbc_p2p.node.api import NodeAPI
    from aitbc_p2p.node.facade import Node
    from aitbc_p2p.node.node import open_node

_LAZY = {"NodeAPI": "aitbc_p2p.node.api", "Node": "aitbc_p2p.node.facade", "open_node": "aitbc_p2p.node.node"}

__all__ = ["Node", "NodeAPI", "NodeConfig", "ProviderConfig", "open_node"]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'aitbc_p2p.node' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
