"""The README as a new user reads it: its example config, its devnet commands and its SDK
snippet are run as written (code blocks extracted from README.md, nothing retyped)."""

import importlib.util
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from aitbc_p2p.cli.config import load_peer_config
from aitbc_p2p.crypto.keys import validate_address

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def code_blocks(lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", README, flags=re.S | re.M)


def block_with(lang: str, needle: str) -> str:
    found = [b for b in code_blocks(lang) if needle in b]
    assert len(found) == 1, f"expected one ```{lang} block with {needle!r}, found {len(found)}"
    return found[0]


def test_the_example_config_loads_as_written(tmp_path):
    text = block_with("toml", 'data_dir = "/var/lib/aitbc"')
    (tmp_path / "node.key").write_text("07" * 32)
    (tmp_path / "genesis.json").write_text((ROOT / "nodes" / "devnet" / "genesis.json").read_text())
    (tmp_path / "peer.toml").write_text(text)
    cfg = load_peer_config(tmp_path / "peer.toml")
    provider = cfg.node.provider
    assert provider is not None
    assert (provider.miner_id, provider.max_ram_mb, provider.ollama_url) == (
        "gpu-box-1", 16000, "http://127.0.0.1:11434"
    )
    assert provider.models == {"tiny": "/srv/models/tiny", "sd15": "/srv/models/stable-diffusion-v1-5"}
    assert cfg.node.models == {"tiny": "/srv/models/tiny"}
    assert (cfg.node.peer_floor, cfg.node.peer_ceiling, cfg.rpc_port, cfg.metrics_port) == (8, 50, 8006, 9106)


def test_the_wallet_table_loads_as_written(tmp_path):
    config = block_with("toml", 'data_dir = "/var/lib/aitbc"') + "\n" + block_with("toml", "[wallet]")
    (tmp_path / "node.key").write_text("07" * 32)
    (tmp_path / "wallet.key").write_text("08" * 32)
    (tmp_path / "genesis.json").write_text((ROOT / "nodes" / "devnet" / "genesis.json").read_text())
    (tmp_path / "peer.toml").write_text(config)
    wallet = load_peer_config(tmp_path / "peer.toml").node.wallet
    assert wallet is not None and wallet.key.secret == bytes.fromhex("08" * 32)
    assert [(n, c.max_spend) for n, c in wallet.clients.items()] == [("agent-1", 100 * 10**9)]


def test_the_miners_table_and_the_miner_conf_fit_together(tmp_path):
    """The "Miners with their own script" blocks: ``[miners]`` beside the example config
    loads, and the miner.conf names the miner and key that table gives it."""
    config = block_with("toml", 'data_dir = "/var/lib/aitbc"') + "\n" + block_with("toml", "[miners]")
    (tmp_path / "node.key").write_text("07" * 32)
    (tmp_path / "genesis.json").write_text((ROOT / "nodes" / "devnet" / "genesis.json").read_text())
    (tmp_path / "peer.toml").write_text(config)
    miners = load_peer_config(tmp_path / "peer.toml").node.miners
    assert miners is not None and miners.workloads == ("torch_bench",) and miners.payout_percent == 100
    conf = dict(line.split("=", 1) for line in block_with("ini", "COORD_URL").splitlines() if "=" in line)
    conf = {k: v.strip('"') for k, v in conf.items()}
    assert miners.keys == {conf["MINER_ID"]: conf["API_KEY"]}
    assert conf["COORD_URL"] == f"http://127.0.0.1:{load_peer_config(tmp_path / 'peer.toml').rpc_port}"
    validate_address(conf["WALLET_ADDR"])


@pytest.mark.slow
def test_the_devnet_commands_and_the_sdk_snippet_run_as_written(tmp_path):
    """In a fresh directory laid out like the checkout (``.venv`` and ``nodes``), with a
    fresh HOME and no terminal, every line of the README's devnet block succeeds; while
    the devnet is up, the SDK snippet runs too (it needs torch for torch_bench)."""
    (tmp_path / ".venv").symlink_to(ROOT / ".venv")
    (tmp_path / "nodes").symlink_to(ROOT / "nodes")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AITBC_")} | {"HOME": str(tmp_path)}
    lines = [ln.split("  #")[0].strip() for ln in block_with("bash", "aitbc devnet up").splitlines()]
    lines = [ln for ln in lines if ln]
    assert lines[0].endswith("devnet up") and lines[-1].endswith("devnet down")
    snippet = block_with("python", "RpcClient")
    wallet_lines = [ln.split("  #")[0].strip() for ln in block_with("bash", "wallet earn").splitlines()]

    def run_line(line: str) -> subprocess.CompletedProcess[str]:
        out = subprocess.run(
            ["bash", "-c", line], cwd=tmp_path, env=env, capture_output=True, text=True,
            stdin=subprocess.DEVNULL, timeout=300,
        )  # fmt: skip
        assert out.returncode == 0, f"{line}\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}"
        assert "Traceback" not in out.stderr, f"{line}\n{out.stderr[-2000:]}"
        return out

    try:
        for line in lines[:-1]:
            out = run_line(line)
            if line.endswith("devnet up"):  # it names the dashboard ("The dashboard"), which answers
                dashboard = re.search(r"^dashboard: (http://127\.0\.0\.1:\d+/ui/) ", out.stdout, re.M)
                assert dashboard, out.stdout
                page = httpx.get(dashboard.group(1), timeout=10)
                assert page.status_code == 200 and "<title>AITBC peer</title>" in page.text
        if importlib.util.find_spec("torch") is not None:
            (tmp_path / "sdk.py").write_text(snippet)
            out = subprocess.run(
                [sys.executable, "sdk.py"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
            )
            assert out.returncode == 0, out.stderr[-3000:]
            assert out.stdout.startswith("settled "), out.stdout
        # "Clients with an API key": the system flow's curl commands, run whole.
        out = subprocess.run(
            ["bash", "-e", "-c", block_with("bash", "X-Api-Key")], cwd=tmp_path, env=env, capture_output=True,
            text=True, stdin=subprocess.DEVNULL, timeout=180,
        )  # fmt: skip
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
        printed = out.stdout.splitlines()  # the poll's true/false, then jq's document
        seed_job = json.loads("\n".join(printed[printed.index("{") :]))
        assert seed_job["status"] == "completed" and seed_job["receipt_id"], seed_job
        assert seed_job["result"]["message"] == "What is machine learning?"
        # "Wallets and the command line": the seed's wallet commands, with the devnet's
        # provider as the miner (it sold the jobs above).
        for line in wallet_lines:
            out = run_line(line)
        stats = json.loads(out.stdout)  # the last line: --json
        assert stats["sold"]["jobs"] >= 1 and stats["sold"]["earned"] > 0, stats
    finally:
        down = subprocess.run(["bash", "-c", lines[-1]], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert down.returncode == 0, down.stderr


def test_every_make_command_in_the_readme_names_a_target_with_its_variables():
    """``make demo``, ``make fuzz SECONDS=600`` ...: each target exists in the Makefile, and
    each VARIABLE=value it is given is one the Makefile reads."""
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z][\w-]*):", makefile, flags=re.M))
    commands = [line for block in code_blocks("bash") for line in block.splitlines() if line.startswith("make ")]
    commands += re.findall(r"`(make [^`]+)`", README)
    assert len(commands) >= 5, commands
    for command in commands:
        words = shlex.split(command.split("#")[0])[1:]
        names = [w for w in words if "=" not in w]
        assert names and all(n in targets for n in names), (command, sorted(targets))
        for var in (w.split("=")[0] for w in words if "=" in w):
            assert f"$({var})" in makefile or f"$(or $({var})" in makefile, (command, var)


def test_the_init_block_lays_out_a_peer_that_runs_as_written(tmp_path):
    """The README's ``aitbc-peer init`` line, then its ``run`` line as a real process, from
    a directory laid out like the checkout: the peer comes up (node.json) and stops on SIGTERM."""
    (tmp_path / ".venv").symlink_to(ROOT / ".venv")
    (tmp_path / "nodes").symlink_to(ROOT / "nodes")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AITBC_")} | {"HOME": str(tmp_path)}
    init, run = [ln for ln in block_with("bash", "aitbc-peer init").splitlines() if ln.strip()]
    out = subprocess.run(["bash", "-c", init], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "next: aitbc-peer run" in out.stdout, out.stderr
    proc = subprocess.Popen(shlex.split(run), cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True)
    try:
        info = tmp_path / "mypeer" / "data" / "node.json"
        deadline = time.monotonic() + 60
        while not info.exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.2)
        assert json.loads(info.read_text())["chain_id"] == "ait-devnet"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
