"""The SDK without the server stack: an agent that only calls a peer imports and uses
``RpcClient`` with none of libp2p, LevelDB, Quart, Hypercorn, the worker pool, the metrics
client or torch (here made unimportable in a fresh interpreter), against a real server."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import trio

from conftest import RPC_TOKEN

UNAVAILABLE = """
import importlib.abc, sys
SERVER_STACK = {"quart", "quart_trio", "hypercorn", "werkzeug", "libp2p", "multiaddr", "plyvel",
                "trio_parallel", "prometheus_client", "pythonjsonlogger", "torch"}
class Unavailable(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in SERVER_STACK:
            raise ImportError(f"{name} is not installed")
sys.meta_path.insert(0, Unavailable())
"""

PROGRAM = (
    UNAVAILABLE
    + """
import hashlib, json
import trio
from aitbc_p2p import PrivateKey, RpcClient, aitbc

def make_key(label):  # as aitbc_p2p.testing does (which imports the node)
    return PrivateKey(hashlib.sha256(b"aitbc-test-key:" + label.encode()).digest())

async def main(url, token):
    async with RpcClient(url, token=token) as rpc:
        status = await rpc.status()
        tx = await rpc.transfer(make_key("client"), make_key("dest").address, aitbc(1))
        done = await rpc.wait_tx(tx, timeout=30)
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in SERVER_STACK)
    print(json.dumps({"chain_id": status["chain_id"], "tx": done["status"], "loaded": loaded}))

trio.run(main, sys.argv[1], sys.argv[2])
"""
)
CLI = UNAVAILABLE + "from aitbc_p2p.cli.main import main\nsys.exit(main(sys.argv[1:]))\n"


async def test_an_agent_calls_a_peer_with_the_sdk_alone(rpc_server: Any) -> None:
    _node, url = rpc_server
    out = await trio.to_thread.run_sync(
        lambda: subprocess.run(
            [sys.executable, "-c", PROGRAM, url, RPC_TOKEN], capture_output=True, text=True, timeout=60
        )
    )
    assert out.returncode == 0, out.stderr[-3000:]
    answer = json.loads(out.stdout)
    assert answer == {"chain_id": answer["chain_id"], "tx": "committed", "loaded": []}


async def test_the_wallet_cli_runs_with_the_sdk_alone(rpc_server: Any, tmp_path) -> None:
    _node, url = rpc_server
    (tmp_path / "rpc.token").write_text(RPC_TOKEN)
    args = ["--rpc", url, "--token-file", str(tmp_path / "rpc.token"), "chain", "status", "--json"]
    out = await trio.to_thread.run_sync(
        lambda: subprocess.run([sys.executable, "-c", CLI, *args], capture_output=True, text=True, timeout=60)
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout)["height"] >= 0


def test_the_daemon_without_its_stack_says_which_extra_to_install(tmp_path) -> None:
    daemon = UNAVAILABLE + "from aitbc_p2p.cli.peer import main\nsys.exit(main(sys.argv[1:]))\n"
    out = subprocess.run(
        [sys.executable, "-c", daemon, "run", "--config", str(tmp_path / "peer.toml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and "pip install 'aitbc-p2p[peer]'" in out.stderr and "Traceback" not in out.stderr
