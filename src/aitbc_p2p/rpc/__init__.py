"""L5: the local RPC (QuartTrio on Hypercorn) and its httpx client, the SDK transport.

The client needs only httpx and the core: the server (Quart, Hypercorn, and the node
behind them) loads on first use of ``create_app``, ``serve_rpc`` or ``ensure_token``, so an
agent that only calls a peer installs and imports none of it."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from aitbc_p2p.rpc.client import RpcClient, result_image
from aitbc_p2p.rpc.files import NODE_INFO, TOKEN_FILE

if TYPE_CHECKING:
    from aitbc_p2p.rpc.app import create_app
    from aitbc_p2p.rpc.server import ensure_token, serve_rpc

_SERVER = {
    "create_app": "aitbc_p2p.rpc.app",
    "ensure_token": "aitbc_p2p.rpc.server",
    "serve_rpc": "aitbc_p2p.rpc.server",
}

__all__ = ["NODE_INFO", "TOKEN_FILE", "RpcClient", "create_app", "ensure_token", "result_image", "serve_rpc"]


def __getattr__(name: str) -> Any:
    module = _SERVER.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
