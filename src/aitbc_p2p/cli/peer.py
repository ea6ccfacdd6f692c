"""``aitbc-peer``: the daemon. ``aitbc-peer run --config nodes/devnet/peer1.toml``."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from pathlib import Path

import trio

from aitbc_p2p.cli.config import PeerConfig, load_peer_config
from aitbc_p2p.exceptions import AitbcError

logger = logging.getLogger("aitbc_p2p.peer")


async def run_peer(cfg: PeerConfig) -> None:
    """Run node + RPC until SIGINT/SIGTERM; write ``node.json`` once both listen."""
    # Imported here, not at the top: worker processes that verify signatures start by
    # importing this (their parent's main) module, and need neither libp2p nor Quart.
    from aitbc_p2p.node import open_node
    from aitbc_p2p.node.runtime import tune_gc
    from aitbc_p2p.rpc import ensure_token, serve_rpc
    from aitbc_p2p.rpc.metrics import serve_metrics
    from aitbc_p2p.rpc.server import NODE_INFO, check_bindable

    check_bindable(cfg.rpc_host, cfg.rpc_port)  # before the store and the network open
    if cfg.metrics_port is not None:
        check_bindable("127.0.0.1", cfg.metrics_port)
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    token = ensure_token(cfg.data_dir)
    info_path = cfg.data_dir / NODE_INFO
    info_path.unlink(missing_ok=True)
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with open_node(cfg.node) as node, trio.open_nursery() as nursery:
            tune_gc()  # after start-up: what is alive now stays, and is no longer walked
            url = await nursery.start(
                lambda task_status: serve_rpc(
                    node, token=token, host=cfg.rpc_host, port=cfg.rpc_port, task_status=task_status
                )
            )
            info = {
                "pid": os.getpid(),
                "address": node.key.address,
                "peer_id": node.network.peer_id,
                "listen": node.network.listen_addrs(),
                "rpc_url": url,
                "chain_id": node.genesis.chain_id,
            }
            if cfg.metrics_port is not None:
                port = cfg.metrics_port
                info["metrics_url"] = await nursery.start(
                    lambda task_status: serve_metrics(node, port=port, task_status=task_status)
                )
            tmp = info_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(info, indent=2) + "\n")
            tmp.replace(info_path)
            logger.info("peer %s serving RPC at %s", node.key.address, url)
            async for signum in signals:
                logger.info("signal %d: shutting down", signum)
                nursery.cancel_scope.cancel()
                break
    info_path.unlink(missing_ok=True)
    logger.info("stopped cleanly")


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def _model(text: str) -> tuple[str, str]:
    name, eq, path = text.partition("=")
    if not eq or not name or not path:
        raise argparse.ArgumentTypeError(f"{text!r}: write NAME=PATH (a local model directory)")
    return name, path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="aitbc-peer", description="Run an AITBC peer.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the peer daemon")
    run.add_argument("--config", required=True, type=Path, help="peer TOML config")
    run.add_argument("--data-dir", help="override data_dir")
    run.add_argument("--rpc-host", help="override [rpc] host (an address on this host; keep it private)")
    run.add_argument("--rpc-port", type=int, help="override [rpc] port (0 picks a free port)")
    run.add_argument(
        "--metrics-port", type=int, help="serve Prometheus metrics on 127.0.0.1 at this port (0: a free one)"
    )
    run.add_argument("--listen", action="append", help="override listen multiaddrs")
    run.add_argument("--bootstrap", action="append", help="override bootstrap multiaddrs")
    run.add_argument(
        "--model", action="append", type=_model, help="add an llm_gen model NAME=PATH to [provider.models]"
    )
    run.add_argument(
        "--verify-in-threads",
        action="store_true",
        help="check signatures in threads, not worker processes (peers sharing a host: a devnet)",
    )
    run.add_argument(
        "--log-level",
        type=str.upper,
        choices=LOG_LEVELS,
        default=os.environ.get("AITBC_LOG", "INFO").upper(),
        help="(env AITBC_LOG; default INFO)",
    )
    args = parser.parse_args(argv)
    if args.log_level not in LOG_LEVELS:  # from AITBC_LOG, which argparse does not check
        parser.error(f"AITBC_LOG must be one of {', '.join(LOG_LEVELS)}, not {args.log_level!r}")
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("libp2p").setLevel(logging.WARNING)
    try:
        cfg = load_peer_config(
            args.config,
            data_dir=args.data_dir,
            rpc_host=args.rpc_host,
            rpc_port=args.rpc_port,
            metrics_port=args.metrics_port,
            listen=args.listen,
            bootstrap=args.bootstrap,
            models=dict(args.model or []),
            verify_in_workers=False if args.verify_in_threads else None,
        )
        trio.run(run_peer, cfg)
    except (AitbcError, BaseExceptionGroup) as e:
        error = _our_error(e)
        if error is None:
            raise
        print(f"aitbc-peer: {error}", file=sys.stderr)
        return 2
    return 0


def _our_error(e: BaseException) -> AitbcError | None:
    """The error to report in one line: ``e`` itself, or the one error of ours that a
    nursery wrapped in an exception group (None if anything else is in it)."""
    if isinstance(e, AitbcError):
        return e
    if isinstance(e, BaseExceptionGroup):
        ours, rest = e.split(AitbcError)
        if ours is not None and rest is None:
            first: BaseException = ours
            while isinstance(first, BaseExceptionGroup):
                first = first.exceptions[0]
            return first if isinstance(first, AitbcError) else None
    return None


if __name__ == "__main__":
    sys.exit(main())
