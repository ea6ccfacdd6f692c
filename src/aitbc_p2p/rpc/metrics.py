"""``GET /metrics`` for Prometheus, on its own loopback port and without a token, as
exporters serve it (specs/rpc.md, "Metrics"). Hypercorn under Trio, like the RPC."""

from __future__ import annotations

import trio
from hypercorn.trio import serve
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from quart import Response, request
from quart_trio import QuartTrio

from aitbc_p2p.node.facade import Node
from aitbc_p2p.node.metrics import node_registry
from aitbc_p2p.rpc.app import LOOPBACK_NAMES, envelope, host_name
from aitbc_p2p.rpc.server import ServerLimits, hypercorn_config


def create_metrics_app(node: Node) -> QuartTrio:
    registry = node_registry(node)
    app = QuartTrio(__name__)

    @app.before_request
    async def loopback_only() -> Response | None:
        if host_name(request.headers.get("Host", "")) not in LOOPBACK_NAMES:
            return envelope(403, "FORBIDDEN_HOST", "metrics answer to a loopback host name only")
        return None

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)

    return app


async def serve_metrics(
    node: Node, *, port: int = 9106, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED
) -> None:
    """Serve ``/metrics`` on 127.0.0.1:``port`` until cancelled; ``task_status.started``
    gets the URL of the metrics page (port 0 picks a free port).

    Raises:
        NetworkError: the port cannot be bound.
    """
    config = hypercorn_config("127.0.0.1", port, ServerLimits())
    async with trio.open_nursery() as nursery:
        urls: list[str] = await nursery.start(serve, create_metrics_app(node), config)
        task_status.started(urls[0].rstrip("/") + "/metrics")
