"""Config files: the devnet's load, and every bad file is a clear ConfigError (exit 2)."""

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from aitbc_p2p.cli.config import KNOWN_PROVIDER, KNOWN_RPC, KNOWN_TOP, load_peer_config
from aitbc_p2p.exceptions import ConfigError

NODES = Path(__file__).resolve().parents[1] / "nodes"


def test_devnet_configs_load():
    cfg = load_peer_config(NODES / "devnet" / "peer3.toml", data_dir="/tmp/x", rpc_port=0)
    assert cfg.node.provider is not None and cfg.node.provider.miner_id == "peer3-gpu0"
    assert cfg.node.genesis.chain_id == "ait-devnet" and cfg.rpc_port == 0
    assert cfg.node.key.address in cfg.node.genesis.consensus["authorities"]
    assert cfg.node.genesis.total_supply == (1_000_000 + 10_000 + 1_000 + 100) * 10**9


@pytest.mark.parametrize("role", ["validator", "provider", "client"])
def test_role_templates_use_known_keys(role):
    doc = tomllib.loads((NODES / "roles" / f"{role}.toml").read_text())
    assert set(doc) <= KNOWN_TOP and set(doc.get("rpc", {})) <= KNOWN_RPC
    assert set(doc.get("provider", {})) <= KNOWN_PROVIDER


def write_config(tmp_path, text, key="01" * 32, genesis=None):
    (tmp_path / "node.key").write_text(key)
    genesis_text = genesis if genesis is not None else (NODES / "devnet" / "genesis.json").read_text()
    (tmp_path / "genesis.json").write_text(genesis_text)
    path = tmp_path / "peer.toml"
    path.write_text(text)
    return path


BASE = 'data_dir = "d"\nkey_file = "node.key"\ngenesis = "genesis.json"\n'


@pytest.mark.parametrize(
    ("text", "kwargs", "match"),
    [
        ("data_dir = ", {}, "cannot read config"),
        (BASE + "colour = 'blue'\n", {}, "unknown keys"),
        ('data_dir = "d"\ngenesis = "genesis.json"\n', {}, "lacks"),
        (BASE + "[rpc]\nport = 70000\n", {}, "out of range"),
        (BASE + "[provider]\nprice = 3\n", {}, r"unknown keys in \[provider\]"),
        (BASE + "listen = [1]\n", {}, "multiaddr"),
        (BASE, {"key": "zz"}, "node key"),
        (BASE, {"key": "00" * 32}, "node key"),
        (BASE, {"genesis": "{"}, "bad genesis"),
        (BASE, {"genesis": '{"chain_id": "x", "timestamp_ms": 0, "alloc": [], "consensus": {}}'}, "engine"),
        (BASE + "[node]\npeer_floor = 9\npeer_ceiling = 4\n", {}, "peer_floor"),
        (BASE + "[node]\npeer_ceiling = 0\n", {}, "peer_ceiling"),
        (BASE + "[node]\nmdns = 'yes'\n", {}, "wrong type"),
        (BASE + "[node]\npeer_floor = true\n", {}, "wrong type"),
        (BASE + "[node]\npeer_floor = 2.5\n", {}, "wrong type"),
        (BASE + "announce = [4001]\n", {}, "multiaddr"),
    ],
)
def test_bad_configs_are_refused(tmp_path, text, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        load_peer_config(write_config(tmp_path, text, **kwargs))


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config"):
        load_peer_config(tmp_path / "nope.toml")


def test_daemon_exits_2_with_one_line(tmp_path):
    path = write_config(tmp_path, BASE + "colour = 'blue'\n")
    out = subprocess.run(
        [sys.executable, "-m", "aitbc_p2p.cli.peer", "run", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert out.stderr.strip().startswith("aitbc-peer: unknown keys") and len(out.stderr.strip().splitlines()) == 1


def test_peer_options_reach_the_node(tmp_path):
    text = BASE + 'announce = ["/ip4/198.51.100.4/tcp/4001"]\n[node]\npeer_floor = 3\npeer_ceiling = 9\nmdns = true\n'
    node = load_peer_config(write_config(tmp_path, text)).node
    assert (node.peer_floor, node.peer_ceiling, node.mdns) == (3, 9, True)
    assert node.announce == ("/ip4/198.51.100.4/tcp/4001",)
