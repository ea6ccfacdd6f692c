"""Peer config files (TOML) -> :class:`NodeConfig`. Paths are relative to the file.

See ``nodes/devnet/peer1.toml`` for a commented example and specs/rpc.md for the RPC.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aitbc_p2p.chain.genesis import genesis_from_json
from aitbc_p2p.crypto import PrivateKey
from aitbc_p2p.exceptions import ConfigError, CryptoError
from aitbc_p2p.node.config import NodeConfig, ProviderConfig

KNOWN_TOP = {"data_dir", "key_file", "genesis", "listen", "bootstrap", "announce", "rpc", "provider", "node"}
KNOWN_RPC = {"host", "port"}
KNOWN_PROVIDER = {
    "miner_id",
    "price_per_s",
    "accel_mode",
    "max_concurrency",
    "max_runtime_s",
    "announce_interval_s",
    "benchmark",
}
NODE_TYPES: dict[str, type | tuple[type, ...]] = {
    "max_block_txs": int,
    "bid_window_s": (int, float),
    "peer_interval_s": (int, float),
    "bundle_interval_s": (int, float),
    "reannounce_s": (int, float),
    "peer_floor": int,
    "peer_ceiling": int,
    "mdns": bool,
}
KNOWN_NODE = set(NODE_TYPES)


@dataclass(frozen=True, kw_only=True)
class PeerConfig:
    node: NodeConfig
    data_dir: Path
    rpc_host: str
    rpc_port: int


def _unknown(section: str, table: dict[str, Any], known: set[str]) -> None:
    extra = set(table) - known
    if extra:
        raise ConfigError(f"unknown keys in {section}: {sorted(extra)}")


def read_key_file(path: Path) -> PrivateKey:
    """A node key file: the private key as 64 hex characters (keep it mode 0600)."""
    try:
        return PrivateKey.from_hex(path.read_text())
    except (OSError, CryptoError) as e:
        raise ConfigError(f"cannot load node key {path}: {e}") from e


def load_peer_config(path: Path, **overrides: Any) -> PeerConfig:
    """Parse a peer's TOML config.

    Raises:
        ConfigError: unreadable or invalid TOML, unknown keys, bad values, bad genesis or key.
    """
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"cannot read config {path}: {e}") from e
    _unknown("the config", doc, KNOWN_TOP)
    base = path.parent
    try:
        data_dir = (base / str(overrides.get("data_dir") or doc["data_dir"])).resolve()
        key = read_key_file(base / str(doc["key_file"]))
        try:
            genesis = genesis_from_json((base / str(doc["genesis"])).read_text())
        except OSError as e:
            raise ConfigError(f"cannot read genesis: {e}") from e
        rpc = doc.get("rpc", {})
        _unknown("[rpc]", rpc, KNOWN_RPC)
        provider = None
        if "provider" in doc:
            table = dict(doc["provider"])
            _unknown("[provider]", table, KNOWN_PROVIDER)
            models = table.pop("models", {})
            if not isinstance(models, dict) or not all(isinstance(v, str) for v in models.values()):
                raise ConfigError("[provider.models] maps model names to local directories")
            resolved = {str(name): str((base / path).resolve()) for name, path in models.items()}
            resolved.update({name: str(Path(path).resolve()) for name, path in (overrides.get("models") or {}).items()})
            provider = ProviderConfig(**table, models=resolved)
        node_opts = doc.get("node", {})
        _unknown("[node]", node_opts, KNOWN_NODE)
        for name, value in node_opts.items():
            # bool is an int in Python; only mdns takes one.
            if not isinstance(value, NODE_TYPES[name]) or (isinstance(value, bool) and NODE_TYPES[name] is not bool):
                raise ConfigError(f"[node] {name} has the wrong type: {value!r}")
        listen = tuple(overrides.get("listen") or doc.get("listen", ["/ip4/127.0.0.1/tcp/0"]))
        bootstrap = tuple(overrides.get("bootstrap") or doc.get("bootstrap", []))
        announce = tuple(doc.get("announce", []))
        if not all(isinstance(a, str) for a in listen + bootstrap + announce):
            raise ConfigError("listen, bootstrap and announce must be lists of multiaddr strings")
        node = NodeConfig(
            key=key,
            genesis=genesis,
            data_dir=data_dir,
            listen=listen,
            bootstrap=bootstrap,
            announce=announce,
            provider=provider,
            **node_opts,
        )
        port = overrides.get("rpc_port")
        rpc_port = int(port if port is not None else rpc.get("port", 8006))
        if not 0 <= rpc_port <= 65535:
            raise ConfigError(f"rpc port {rpc_port} out of range")
        rpc_host = str(overrides.get("rpc_host") or rpc.get("host", "127.0.0.1"))
        return PeerConfig(node=node, data_dir=data_dir, rpc_host=rpc_host, rpc_port=rpc_port)
    except KeyError as e:
        raise ConfigError(f"config {path} lacks {e}") from e
    except (TypeError, ValueError) as e:
        raise ConfigError(f"config {path}: {e}") from e
