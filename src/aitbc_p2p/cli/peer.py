"""``aitbc-peer``: the daemon. ``aitbc-peer run --config nodes/devnet/peer1.toml``."""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import re
import signal
import socket
import sys
from collections.abc import Callable
from importlib.resources import files
from pathlib import Path

import trio

from aitbc_p2p.cli.config import PeerConfig, load_peer_config
from aitbc_p2p.exceptions import AitbcError, ConfigError, NetworkError

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

    try:  # before the store and the network open; a port taken is the config's to change (exit 2)
        check_bindable(cfg.rpc_host, cfg.rpc_port)
        if cfg.metrics_port is not None:
            check_bindable("127.0.0.1", cfg.metrics_port)
    except NetworkError as e:
        raise ConfigError(str(e)) from e
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    token = ensure_token(cfg.data_dir)
    info_path = cfg.data_dir / NODE_INFO
    info_path.unlink(missing_ok=True)
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with open_node(cfg.node, clock_ms=_clock()) as node, trio.open_nursery() as nursery:
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
            sd_notify(f"READY=1\nSTATUS=serving RPC at {url}\nMAINPID={os.getpid()}")
            async for signum in signals:
                logger.info("signal %d: shutting down", signum)
                sd_notify("STOPPING=1")
                nursery.cancel_scope.cancel()
                break
    info_path.unlink(missing_ok=True)
    logger.info("stopped cleanly")


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
LOG_FORMATS = ("text", "json")
ROLES = ("client", "provider", "validator")
CLOCK_OFFSET_ENV = "AITBC_TEST_CLOCK_OFFSET_MS"
"""Testing only (the chaos bench's clock skew): milliseconds added to the wall clock the
node reads for block timestamps, slots and job deadlines. A host's skewed clock, without
touching the host's."""
EXIT_CONFIG = 2
"""The exit status for a bad config or command line: the systemd unit's
RestartPreventExitStatus, so systemd does not restart a peer that cannot start."""
EXIT_FAILURE = 1
"""The exit status for a failure while running (a disk write that failed: a full disk,
say): systemd restarts the peer, which resumes from its last committed block."""


def sd_notify(message: str) -> bool:
    """Tell the service manager ``message`` (sd_notify(3): ``READY=1`` once serving,
    ``STOPPING=1`` when shutting down) where ``$NOTIFY_SOCKET`` names one (a systemd unit of
    ``Type=notify``); False where none does or it cannot be reached."""
    address = os.environ.get("NOTIFY_SOCKET", "")
    if not address.startswith(("/", "@")):
        return False
    target = "\0" + address[1:] if address.startswith("@") else address  # "@": the abstract namespace
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(target)
            sock.sendall(message.encode())
    except OSError as e:
        logger.warning("cannot notify the service manager at %s: %s", address, e)
        return False
    return True


def setup_logging(level: str, fmt: str) -> None:
    """Log to stderr as text, or as one JSON object per line (``--log-format json``: for
    journald or a log shipper) with ``time``, ``level``, ``logger`` and ``message``."""
    handler = logging.StreamHandler()
    if fmt == "json":
        from pythonjsonlogger.json import JsonFormatter

        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
                timestamp=False,
            )
        )
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler], force=True)
    logging.getLogger("libp2p").setLevel(logging.WARNING)


def init_peer(directory: Path, role: str, genesis: Path, data_dir: Path | None) -> dict[str, str]:
    """Lay out a peer in ``directory``: a new node key (mode 0600), a copy of ``genesis``
    (checked), and ``peer.toml`` from the role's template with ``data_dir`` set. Refuses
    to overwrite any of them.

    Raises:
        ConfigError: the genesis cannot be read, or a file already exists.
    """
    from aitbc_p2p.chain.genesis import genesis_from_json
    from aitbc_p2p.crypto.keys import PrivateKey

    try:
        genesis_text = genesis.read_text()
        chain = genesis_from_json(genesis_text)
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read genesis {genesis}: {e}") from e
    config, key_path, genesis_path = directory / "peer.toml", directory / "node.key", directory / "genesis.json"
    for path in (config, key_path, genesis_path):
        if path.exists():
            raise ConfigError(f"{path} exists; init never overwrites (a key especially): choose another directory")
    template = (files("aitbc_p2p.cli") / "roles" / f"{role}.toml").read_text()
    data = (data_dir or directory / "data").resolve()
    text, n = re.subn(r'^data_dir = "[^"]*"', lambda _: f"data_dir = {json.dumps(str(data))}", template, flags=re.M)
    assert n == 1, f"the {role} template has no data_dir line"
    directory.mkdir(parents=True, exist_ok=True)
    key = PrivateKey.generate()
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key.secret.hex() + "\n")
    genesis_path.write_text(genesis_text)
    config.write_text(text)
    load_peer_config(config)  # what init wrote loads, or this is a bug
    return {
        "config": str(config.resolve()),
        "key_file": str(key_path.resolve()),
        "address": key.address,
        "data_dir": str(data),
        "chain_id": chain.chain_id,
        "role": role,
    }


def _model(text: str) -> tuple[str, str]:
    name, eq, path = text.partition("=")
    if not eq or not name or not path:
        raise argparse.ArgumentTypeError(f"{text!r}: write NAME=PATH (a local model directory)")
    return name, path


EXAMPLES = """examples:
  aitbc-peer init /etc/aitbc --role provider --genesis genesis.json --data-dir /var/lib/aitbc
  aitbc-peer run --config /etc/aitbc/peer.toml
  AITBC_CONFIG=/etc/aitbc/peer.toml aitbc-peer run --log-format json
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="aitbc-peer",
        description="Run an AITBC peer.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    init = sub.add_parser(
        "init",
        help="lay out a new peer: key, genesis, config from a role template",
        epilog="example: aitbc-peer init ./mypeer --role client --genesis nodes/devnet/genesis.json",
    )
    init.add_argument("directory", type=Path, help="where peer.toml, node.key and genesis.json go")
    init.add_argument("--role", choices=ROLES, default="client", help="the template (default client)")
    init.add_argument("--genesis", type=Path, required=True, help="the chain's genesis.json (copied)")
    init.add_argument("--data-dir", type=Path, help="the peer's data directory (default DIRECTORY/data)")
    init.add_argument("--json", action="store_true", help="print what was written as one JSON object")
    run = sub.add_parser(
        "run", help="run the peer daemon", epilog="example: aitbc-peer run --config /etc/aitbc/peer.toml"
    )
    config_env = os.environ.get("AITBC_CONFIG")
    run.add_argument(
        "--config",
        type=Path,
        required=not config_env,
        default=Path(config_env) if config_env else None,
        help="peer TOML config (env AITBC_CONFIG)",
    )
    run.add_argument(
        "--data-dir", default=os.environ.get("AITBC_DATA_DIR"), help="override data_dir (env AITBC_DATA_DIR)"
    )
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
    run.add_argument(
        "--log-format",
        type=str.lower,
        choices=LOG_FORMATS,
        default=os.environ.get("AITBC_LOG_FORMAT", "text").lower(),
        help="text, or one JSON object per line (env AITBC_LOG_FORMAT; default text)",
    )
    args = parser.parse_args(argv)
    try:
        for module in ("aitbc_p2p.node", "aitbc_p2p.rpc.server"):  # the daemon's stack
            importlib.import_module(module)
    except ImportError as e:
        print(f"aitbc-peer: the daemon needs the peer extra: pip install 'aitbc-p2p[peer]' ({e})", file=sys.stderr)
        return EXIT_CONFIG
    if args.command == "init":
        try:
            written = init_peer(args.directory, args.role, args.genesis, args.data_dir)
        except AitbcError as e:
            print(f"aitbc-peer: {e}", file=sys.stderr)
            return EXIT_CONFIG
        if args.json:
            print(json.dumps(written, indent=2))
        else:
            print(f"{written['role']} peer for {written['chain_id']} in {args.directory}: address {written['address']}")
            print(f"next: aitbc-peer run --config {written['config']}")
        return 0
    if args.log_level not in LOG_LEVELS:  # from AITBC_LOG, which argparse does not check
        parser.error(f"AITBC_LOG must be one of {', '.join(LOG_LEVELS)}, not {args.log_level!r}")
    if args.log_format not in LOG_FORMATS:
        parser.error(f"AITBC_LOG_FORMAT must be one of {', '.join(LOG_FORMATS)}, not {args.log_format!r}")
    setup_logging(args.log_level, args.log_format)
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
        return EXIT_CONFIG if isinstance(error, ConfigError) else EXIT_FAILURE
    return 0


def _clock() -> Callable[[], int]:
    from aitbc_p2p.node.node import wall_clock_ms

    raw = os.environ.get(CLOCK_OFFSET_ENV)
    if raw is None:
        return wall_clock_ms
    try:
        offset = int(raw)
    except ValueError:
        raise ConfigError(f"{CLOCK_OFFSET_ENV} must be an integer (ms), not {raw!r}") from None
    logger.warning("testing: this peer's clock runs %+d ms off the host's (%s)", offset, CLOCK_OFFSET_ENV)
    return lambda: wall_clock_ms() + offset


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
