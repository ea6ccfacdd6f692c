"""Serving the RPC app with Hypercorn under Trio, and the cookie-auth token file."""

from __future__ import annotations

import errno
import os
import secrets
import socket
from dataclasses import dataclass
from pathlib import Path

import trio
from hypercorn.config import Config
from hypercorn.trio import serve

from aitbc_p2p.exceptions import NetworkError
from aitbc_p2p.node.api import NodeAPI
from aitbc_p2p.rpc.app import LOOPBACK_NAMES, create_app
from aitbc_p2p.rpc.files import NODE_INFO, TOKEN_FILE

__all__ = ["NODE_INFO", "TOKEN_FILE", "ServerLimits", "ensure_token", "hypercorn_config", "serve_rpc"]



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


@dataclass(frozen=True, slots=True)
class ServerLimits:
    """Hypercorn's limits, set deliberately rather than left to its defaults (specs/rpc.md,
    "Limits"): what a slow, stuck or flooding local client may hold."""

    header_bytes: int = 16 * 1024
    """A request line and headers larger than this close the connection (h11)."""
    keep_alive_s: float = 5.0
    """A connection is closed when it has not sent a whole request line and headers this
    long after it opened or after its last answer: an idle kept-alive connection, and a
    slowloris client dribbling headers. (Not Hypercorn's ``read_timeout``: that would cut
    event streams, whose clients rightly send nothing for minutes.)"""
    body_timeout_s: float = 10.0
    """A request body not received in full this long after its headers is a ``408``."""
    keep_alive_requests: int = 1000
    backlog: int = 1024
    """Connections the kernel queues before the server accepts them (capped by the host's
    ``net.core.somaxconn``). At 128, a burst of 1,000 connections from one client had some
    reset by the kernel on a loaded machine."""
    h2_streams: int = 100


def allowed_hosts_for(host: str) -> frozenset[str] | None:
    """The ``Host`` names the RPC answers to when bound to ``host``: the loopback names
    and ``host`` itself; any name when bound to every interface (the operator chose to
    expose it, and the token still guards it)."""
    if host in ("0.0.0.0", "::", ""):
        return None
    return LOOPBACK_NAMES | {host.strip("[]").lower()}


def hypercorn_config(host: str, port: int, limits: ServerLimits) -> Config:
    """Hypercorn's settings for serving on ``host:port`` within ``limits``, once the
    address is known to be bindable (NetworkError otherwise)."""
    check_bindable(host, port)
    config = Config()
    config.bind = [f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = None
    config.graceful_timeout = 1.0
    config.include_server_header = False
    config.h11_max_incomplete_size = limits.header_bytes
    config.keep_alive_timeout = limits.keep_alive_s
    config.keep_alive_max_requests = limits.keep_alive_requests
    config.backlog = limits.backlog
    config.h2_max_concurrent_streams = limits.h2_streams
    return config


async def serve_rpc(
    api: NodeAPI,
    *,
    token: str,
    host: str = "127.0.0.1",
    port: int = 8006,
    limits: ServerLimits = ServerLimits(),
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the RPC until cancelled; ``task_status.started`` gets the base URL (port 0 works).

    Raises:
        NetworkError: ``host:port`` cannot be bound.
    """
    config = hypercorn_config(host, port, limits)
    app = create_app(api, token=token, allowed_hosts=allowed_hosts_for(host))
    app.config["BODY_TIMEOUT"] = limits.body_timeout_s
    async with trio.open_nursery() as nursery:
        urls: list[str] = await nursery.start(serve, app, config)
        task_status.started(urls[0])
