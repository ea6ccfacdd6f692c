"""Peer config files (TOML) -> :class:`NodeConfig`. Paths are relative to the file.

See ``nodes/devnet/peer1.toml`` for a commented example and specs/rpc.md for the RPC.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aitbc_p2p.chain.genesis import genesis_from_json
from aitbc_p2p.crypto import PrivateKey
from aitbc_p2p.exceptions import ConfigError, CryptoError
from aitbc_p2p.node.config import ApiClient, MinersConfig, NodeConfig, ProviderConfig, WalletConfig
from aitbc_p2p.types import aitbc

TOP_KEYS = {"data_dir": str, "key_file": str, "genesis": str, "listen": list, "bootstrap": list, "announce": list}
KNOWN_RPC = {"host", "port", "metrics_port"}
NODE_SET_ELSEWHERE = {
    "key", "genesis", "data_dir", "listen", "bootstrap", "announce", "provider", "miners", "wallet", "extra",
}  # fmt: skip
"""NodeConfig fields that the top level of the file (or the CLI) sets, not ``[node]``."""


def _schema(cls: type, leave_out: Collection[str] = ()) -> dict[str, Any]:
    """The keys a config table may hold and their types: the dataclass's own fields, so
    that a key cannot exist in the dataclass and not in the file, or the other way round."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.name not in leave_out}


PROVIDER_SCHEMA = _schema(ProviderConfig)
MINERS_SCHEMA = _schema(MinersConfig)
NODE_SCHEMA = _schema(NodeConfig, NODE_SET_ELSEWHERE)
KNOWN_PROVIDER = set(PROVIDER_SCHEMA)
KNOWN_NODE = set(NODE_SCHEMA)
KNOWN_TOP = {*TOP_KEYS, "rpc", "provider", "miners", "wallet", "node"}


def _type_ok(value: Any, hint: Any) -> bool:
    """Whether a TOML value fits a dataclass annotation (TOML has no null: ``X | None`` takes X)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, arg) for arg in typing.get_args(hint) if arg is not type(None))
    if hint is bool:
        return type(value) is bool
    if hint is int:
        return type(value) is int
    if hint is float:
        return type(value) in (int, float)
    if hint is str:
        return type(value) is str
    if origin is dict:
        key_t, value_t = typing.get_args(hint)
        return isinstance(value, dict) and all(_type_ok(k, key_t) and _type_ok(v, value_t) for k, v in value.items())
    if origin is tuple:
        return isinstance(value, list) and all(_type_ok(v, typing.get_args(hint)[0]) for v in value)
    return isinstance(value, hint)


def _describe(hint: Any) -> str:
    text = str(hint).replace("typing.", "").replace("<class '", "").replace("'>", "")
    return text.replace(" | None", "")


def _table(section: str, table: Any, schema: dict[str, Any]) -> dict[str, Any]:
    """Check a table against its schema: known keys, each of its field's type."""
    if not isinstance(table, dict):
        raise ConfigError(f"{section} must be a table")
    _unknown(section, table, set(schema))
    for name, value in table.items():
        if not _type_ok(value, schema[name]):
            raise ConfigError(f"{section} {name} must be {_describe(schema[name])}, not {value!r}")
    return table


@dataclass(frozen=True, kw_only=True)
class PeerConfig:
    node: NodeConfig
    data_dir: Path
    rpc_host: str
    rpc_port: int
    metrics_port: int | None = None
    """Serve Prometheus metrics on 127.0.0.1 at this port (0: a free one); None: off."""


def _unknown(section: str, table: dict[str, Any], known: set[str]) -> None:
    extra = set(table) - known
    if extra:
        raise ConfigError(f"unknown keys in {section}: {sorted(extra)}")


def read_key_file(path: Path, what: str = "node key") -> PrivateKey:
    """A key file: the private key as 64 hex characters (keep it mode 0600)."""
    try:
        return PrivateKey.from_hex(path.read_text())
    except (OSError, UnicodeDecodeError, CryptoError) as e:
        raise ConfigError(f"cannot load {what} {path}: {e}") from e


def _aitbc(section: str, name: str, value: Any) -> int:
    """An amount of AITBC written as a string ("100", "0.25") in base units."""
    if not isinstance(value, str):
        raise ConfigError(f"{section} {name} must be a string of AITBC such as \"100\" or \"0.25\", not {value!r}")
    try:
        return aitbc(value)
    except ValueError as e:
        raise ConfigError(f"{section} {name}: {e}") from e


def _wallet(base: Path, table: Any) -> WalletConfig:
    """``[wallet]``: its key file (64 hex digits, as the node key), defaults, and
    ``[wallet.clients.NAME]`` with each client's ``api_key`` and ``max_spend``."""
    if not isinstance(table, dict):
        raise ConfigError("[wallet] must be a table")
    _unknown("[wallet]", table, {"key_file", "max_price", "max_runtime_s", "clients"})
    if not isinstance(table.get("key_file"), str):
        raise ConfigError("[wallet] needs key_file (the wallet's private key, 64 hex digits, mode 0600)")
    clients = table.get("clients", {})
    if not isinstance(clients, dict):
        raise ConfigError("[wallet.clients] must be a table of tables")
    parsed = {}
    for name, client in clients.items():
        section = f"[wallet.clients.{name}]"
        if not isinstance(client, dict):
            raise ConfigError(f"{section} must be a table")
        _unknown(section, client, {"api_key", "max_spend"})
        if not isinstance(client.get("api_key"), str) or "max_spend" not in client:
            raise ConfigError(f"{section} needs api_key and max_spend")
        parsed[name] = ApiClient(api_key=client["api_key"], max_spend=_aitbc(section, "max_spend", client["max_spend"]))
    runtime = table.get("max_runtime_s", 120)
    if type(runtime) is not int:
        raise ConfigError(f"[wallet] max_runtime_s must be int, not {runtime!r}")
    return WalletConfig(
        key=read_key_file(base / table["key_file"], "wallet key"),
        clients=parsed,
        max_price=_aitbc("[wallet]", "max_price", table.get("max_price", "5")),
        max_runtime_s=runtime,
    )


def load_peer_config(path: Path, **overrides: Any) -> PeerConfig:
    """Parse a peer's TOML config.

    Raises:
        ConfigError: unreadable or invalid TOML, unknown keys, bad values, bad genesis or key.
    """
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, RecursionError) as e:
        raise ConfigError(f"cannot read config {path}: {e}") from e
    _unknown("the config", doc, KNOWN_TOP)
    for name, kind in TOP_KEYS.items():
        if name in doc and not isinstance(doc[name], kind):
            raise ConfigError(f"{name} must be a {'list of strings' if kind is list else 'string'}, not {doc[name]!r}")
    base = path.parent
    try:
        data_dir = (base / str(overrides.get("data_dir") or doc["data_dir"])).resolve()
        key = read_key_file(base / str(doc["key_file"]))
        try:
            genesis = genesis_from_json((base / str(doc["genesis"])).read_text())
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"cannot read genesis: {e}") from e
        rpc = doc.get("rpc", {})
        _unknown("[rpc]", rpc, KNOWN_RPC)
        provider = None
        if "provider" in doc:
            table = dict(_table("[provider]", doc["provider"], PROVIDER_SCHEMA))
            if "miner_id" not in table:
                raise ConfigError("[provider] needs miner_id (a stable label for this provider)")
            models = table.pop("models", {})
            resolved = {str(name): str((base / path).resolve()) for name, path in models.items()}
            resolved.update({name: str(Path(path).resolve()) for name, path in (overrides.get("models") or {}).items()})
            provider = ProviderConfig(**table, models=resolved)
        miners = None
        if "miners" in doc:
            table = dict(_table("[miners]", doc["miners"], MINERS_SCHEMA))
            if "keys" not in table:
                raise ConfigError("[miners] needs keys (MINER_ID = API_KEY for each external miner)")
            if "workloads" in table:
                table["workloads"] = tuple(table["workloads"])
            miners = MinersConfig(**table)
        wallet = _wallet(base, doc["wallet"]) if "wallet" in doc else None
        node_opts = dict(_table("[node]", doc.get("node", {}), NODE_SCHEMA))
        if "models" in node_opts:
            node_opts["models"] = {str(name): str((base / p).resolve()) for name, p in node_opts["models"].items()}
        if overrides.get("verify_in_workers") is not None:
            node_opts["verify_in_workers"] = overrides["verify_in_workers"]
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
            miners=miners,
            wallet=wallet,
            **node_opts,
        )
        port = overrides.get("rpc_port")
        rpc_port = int(port if port is not None else rpc.get("port", 8006))
        if not 0 <= rpc_port <= 65535:
            raise ConfigError(f"rpc port {rpc_port} out of range")
        rpc_host = str(overrides.get("rpc_host") or rpc.get("host", "127.0.0.1"))
        metrics = overrides.get("metrics_port")
        metrics = metrics if metrics is not None else rpc.get("metrics_port")
        is_port = isinstance(metrics, int) and not isinstance(metrics, bool) and 0 <= metrics <= 65535
        if metrics is not None and not is_port:
            raise ConfigError(f"[rpc] metrics_port must be a port number 0..65535, not {metrics!r}")
        return PeerConfig(node=node, data_dir=data_dir, rpc_host=rpc_host, rpc_port=rpc_port, metrics_port=metrics)
    except KeyError as e:
        raise ConfigError(f"config {path} lacks {e}") from e
    except (TypeError, ValueError) as e:
        raise ConfigError(f"config {path}: {e}") from e
