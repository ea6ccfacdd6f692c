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


def test_the_schema_is_the_dataclasses():
    """A key exists in the file format exactly when a config dataclass has the field."""
    import dataclasses

    from aitbc_p2p.cli.config import KNOWN_NODE, NODE_SET_ELSEWHERE
    from aitbc_p2p.node.config import NodeConfig, ProviderConfig

    assert {f.name for f in dataclasses.fields(ProviderConfig)} == KNOWN_PROVIDER
    assert {f.name for f in dataclasses.fields(NodeConfig)} - NODE_SET_ELSEWHERE == KNOWN_NODE
    assert {"max_ram_mb", "models", "ollama_url"} <= KNOWN_PROVIDER  # the README's example uses them


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
PROV = BASE + "[provider]\nminer_id = 'm'\n"
RIG = PROV + f"[miners]\nkeys = {{ a = '{'k' * 16}' }}\n"
WAL = BASE + "[wallet]\nkey_file = 'node.key'\n[wallet.clients.a]\n"
NOWAL = BASE + "[wallet]\nkey_file = 'none.key'\n[wallet.clients.a]\n"


@pytest.mark.parametrize(
    ("text", "kwargs", "match"),
    [
        ("data_dir = ", {}, "cannot read config"),
        (BASE + "colour = 'blue'\n", {}, "unknown keys"),
        ('data_dir = "d"\ngenesis = "genesis.json"\n', {}, "lacks"),
        (BASE + "[rpc]\nport = 70000\n", {}, "out of range"),
        (BASE + "[rpc]\nmetrics_port = 70000\n", {}, "metrics_port must be a port number"),
        (BASE + "[rpc]\nmetrics_port = 'on'\n", {}, "metrics_port must be a port number"),
        (BASE + "[rpc]\nmetrics_port = true\n", {}, "metrics_port must be a port number"),
        (BASE + "[provider]\nprice = 3\n", {}, r"unknown keys in \[provider\]"),
        (BASE + "listen = [1]\n", {}, "multiaddr"),
        (BASE, {"key": "zz"}, "node key"),
        (BASE, {"key": "00" * 32}, "node key"),
        (BASE, {"genesis": "{"}, "bad genesis"),
        (BASE, {"genesis": '{"chain_id": "x", "timestamp_ms": 0, "alloc": [], "consensus": {}}'}, "engine"),
        (BASE + "[node]\npeer_floor = 9\npeer_ceiling = 4\n", {}, "peer_floor"),
        (BASE + "[node]\npeer_ceiling = 0\n", {}, "peer_ceiling"),
        (BASE + "[node]\naudit_rate = 1.5\n", {}, "audit_rate must be 0 to 1"),
        (BASE + "[node]\naudit_rate = 'often'\n", {}, r"\[node\] audit_rate must be float"),
        (BASE + "[node]\nmdns = 'yes'\n", {}, r"\[node\] mdns must be bool"),
        (BASE + "[node]\npeer_floor = true\n", {}, r"\[node\] peer_floor must be int"),
        (BASE + "[node]\npeer_floor = 2.5\n", {}, r"\[node\] peer_floor must be int"),
        (BASE + "announce = [4001]\n", {}, "multiaddr"),
        (BASE + "listen = '/ip4/0.0.0.0/tcp/4001'\n", {}, "listen must be a list"),
        (BASE + "[provider]\nmax_concurrency = 1\n", {}, "needs miner_id"),
        (BASE + f"[miners]\nkeys = {{ r = '{'k' * 16}' }}\n", {}, r"\[miners\] needs \[provider\]"),
        (PROV + "[miners]\nworkloads = ['echo']\n", {}, r"\[miners\] needs keys"),
        (PROV + "[miners]\nkeys = { r = 'short' }\n", {}, "API key of miner 'r' must be 16"),
        (PROV + "[miners]\nkeys = { r = 'k' }\nkey = 1\n", {}, r"unknown keys in \[miners\]"),
        (PROV + f"[miners]\nkeys = {{ a = '{'k' * 16}', b = '{'k' * 16}' }}\n", {}, "keys must differ"),
        (RIG + "workloads = ['mine']\n", {}, "workloads must be some of"),
        (RIG + "payout_percent = 101\n", {}, "payout_percent must be 0 to 100"),
        (RIG + "heartbeat_timeout_s = 0\n", {}, "heartbeat_timeout_s"),
        (PROV + "[miners]\nkeys = { a = 5 }\n", {}, r"\[miners\] keys must be dict"),
        (BASE + "[wallet]\nmax_price = '1'\n", {}, r"\[wallet\] needs key_file"),
        (BASE + "[wallet]\nkey_file = 'node.key'\n", {}, r"needs at least one client"),
        (BASE + "[wallet]\nkey_file = 'node.key'\ncap = 1\n", {}, r"unknown keys in \[wallet\]"),
        (NOWAL + f"api_key = '{'k' * 16}'\nmax_spend = '1'\n", {}, "cannot load wallet key"),
        (WAL + "api_key = 'short'\nmax_spend = '1'\n", {}, "api_key must be 16"),
        (WAL + f"api_key = '{'k' * 16}'\n", {}, r"needs api_key and max_spend"),
        (WAL + f"api_key = '{'k' * 16}'\nmax_spend = 100\n", {}, r"max_spend must be a string of AITBC"),
        (WAL + f"api_key = '{'k' * 16}'\nmax_spend = 'lots'\n", {}, r"max_spend"),
        (WAL + f"api_key = '{'k' * 16}'\nmax_spend = '0'\n", {}, r"max_spend must be above 0"),
        (WAL + f"api_key = '{'k' * 16}'\nmax_spend = '1'\nlimit = 2\n", {}, r"unknown keys in \[wallet.clients"),
        (BASE + "[provider]\nminer_id = 'm'\naccel_mode = 'quantum'\n", {}, "accel_mode must be one of auto, gpu, cpu"),
        (BASE + "[provider]\nminer_id = 'm'\nprice_per_s = -1\n", {}, "price_per_s must be 0 to"),
        (BASE + "[provider]\nminer_id = 'm'\nprice_per_s = 'abc'\n", {}, r"\[provider\] price_per_s must be int"),
        (BASE + "[provider]\nminer_id = 'm'\nmax_concurrency = 0\n", {}, "max_concurrency must be at least 1"),
        (BASE + "[provider]\nminer_id = 7\n", {}, r"\[provider\] miner_id must be str"),
        (BASE + "[provider]\nminer_id = 'm'\nmodels = {tiny = 3}\n", {}, r"\[provider\] models must be"),
        (BASE + "provider = 3\n", {}, r"\[provider\] must be a table"),
        (BASE + "[node]\nmodels = {tiny = 3}\n", {}, r"\[node\] models must be"),
    ],
)
def test_bad_configs_are_refused(tmp_path, text, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        load_peer_config(write_config(tmp_path, text, **kwargs))


def test_a_peers_own_models_are_found_beside_the_config(tmp_path):
    """``[node] models``: what the peer checks generations with, paths relative to the file."""
    cfg = load_peer_config(write_config(tmp_path, BASE + "[node]\nmodels = { tiny = 'models/tiny' }\n"))
    assert cfg.node.models == {"tiny": str((tmp_path / "models" / "tiny").resolve())}


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


def _daemon(*args, timeout=60):
    return subprocess.run(
        [sys.executable, "-m", "aitbc_p2p.cli.peer", *args], capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.parametrize(
    "text",
    [
        BASE + "[provider]\nminer_id = 'm'\naccel_mode = 'quantum'\n",
        BASE + "[provider]\nminer_id = 'm'\nprice_per_s = -1\n",
        BASE + "[provider]\nminer_id = 'm'\nprice_per_s = 'abc'\n",
        BASE + "[provider]\nprice_per_s = 1\n",
        BASE + "listen = '/ip4/127.0.0.1/tcp/0'\n",
    ],
)
def test_the_daemon_refuses_bad_values_with_one_line_and_status_2(tmp_path, text):
    out = _daemon("run", "--config", str(write_config(tmp_path, text)))
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("aitbc-peer: ") and "Traceback" not in out.stderr


@pytest.mark.parametrize(
    "args", [["--model", "foo"], ["--log-level", "verbose"], ["--rpc-port", "http"]], ids=["model", "log", "port"]
)
def test_bad_daemon_options_are_usage_errors(tmp_path, args):
    out = _daemon("run", "--config", str(write_config(tmp_path, BASE)), *args)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith("aitbc-peer run: error: ")


def test_the_daemon_refuses_an_rpc_port_in_use_with_one_line(tmp_path):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        text = BASE.replace('"d"', f'"{tmp_path / "d"}"') + f"[rpc]\nport = {port}\n"
        out = _daemon("run", "--config", str(write_config(tmp_path, text)), timeout=120)
    assert out.returncode == 2, out.stderr[-2000:]
    lines = [ln for ln in out.stderr.strip().splitlines() if ln.startswith("aitbc-peer: ")]
    assert lines == [f"aitbc-peer: cannot serve the RPC on 127.0.0.1:{port}: address in use"], out.stderr[-2000:]
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize(
    "argv",
    [
        ["devnet", "up", "--nodes-dir", "nodes/pos-devnet"],  # as the README and the pos-devnet configs write it
        ["--nodes-dir", "nodes/pos-devnet", "devnet", "up"],
    ],
)
def test_global_options_count_before_and_after_the_subcommand(argv):
    from aitbc_p2p.cli.main import DEFAULT_RUN, build_parser

    args = build_parser().parse_args(argv)
    assert args.nodes_dir == Path("nodes/pos-devnet") and args.run_dir == DEFAULT_RUN
    args = build_parser().parse_args(["chain", "status", "--data-dir", "d", "--devnet"])
    assert args.data_dir == "d" and args.devnet is True
    assert build_parser().parse_args(["chain", "status"]).devnet is False
