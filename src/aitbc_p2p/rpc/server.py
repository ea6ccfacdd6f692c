"""Serving the RPC app with Hypercorn under Trio, and the cookie-auth token file."""

from __future__ import annotations

import errno
import os
import secrets
import socket
from pathlib import Path

import trio
from hypercorn.config import Config
from hypercorn.trio import serve

from aitbc_p2p.exceptions import NetworkError
from aitbc_p2p.node.api import NodeAPI
from aitbc_p2p.rpc.app import create_app

TOKEN_FILE = "rpc.token"
NODE_INFO = "node.json"
"""Written by ``aitbc-peer`` into its data directory once it listens: address, peer id,
``rpc_url`` and listen addresses. Removed at start, so its presence means "up"."""


def ensure_token(data_dir: Path) -> str:
    """Read the data directory's RPC token, creating it (mode 0600) if absent."""
    path = Path(data_dir) / TOKEN_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(32) + "\n")
    return path.read_text().strip()


def check_bindable(host: str, port: int) -> None:
    """Raise NetworkError in one line if ``host:port`` cannot be bound (in use, or not an
    address of this host), before anything else starts. Port 0 always can."""
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        family, _, _, _, addr = infos[0]
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Hypercorn binds
            probe.bind(addr)
    except OSError as e:
        why = "address in use" if e.errno == errno.EADDRINUSE else (e.strerror or str(e))
        raise NetworkError(f"cannot serve the RPC on {host}:{port}: {why}") from e


async def serve_rpc(
    api: NodeAPI,
    *,
    token: str,
    host: str = "127.0.0.1",
    port: int = 8006,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the RPC until cancelled; ``task_status.started`` gets the base URL (port 0 works).

    Raises:
        NetworkError: ``host:port`` cannot be bound.
    """
    check_bindable(host, port)
    config = Config()
    config.bind = [f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = None
    config.graceful_timeout = 1.0
    app = create_app(api, token=token)
    async with trio.open_nursery() as nursery:
        urls: list[str] = await nursery.start(serve, app, config)
        task_status.started(urls[0])
