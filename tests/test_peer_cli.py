"""``aitbc-peer`` through its real command line: ``init`` lays out a peer that ``run``
starts as written; a real process tells a service manager when it is ready and when it
stops (sd_notify, as systemd's Type=notify reads it), logs JSON lines on request, and a bad
config exits 2 (the unit's RestartPreventExitStatus)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import httpx
import pytest

from aitbc_p2p.cli.config import load_peer_config

ROOT = Path(__file__).resolve().parents[1]
GENESIS = ROOT / "nodes" / "devnet" / "genesis.json"
PEER = [sys.executable, "-m", "aitbc_p2p.cli.peer"]


def peer(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*PEER, *args], capture_output=True, text=True, timeout=60, env=env)


@pytest.mark.parametrize("role", ["client", "provider", "validator"])
def test_init_lays_out_a_peer_from_its_role_template_and_never_overwrites(tmp_path, role):
    out = peer("init", str(tmp_path / "p"), "--role", role, "--genesis", str(GENESIS), "--json")
    assert out.returncode == 0, out.stderr
    written = json.loads(out.stdout)
    key = tmp_path / "p" / "node.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and len(key.read_text().strip()) == 64
    cfg = load_peer_config(tmp_path / "p" / "peer.toml")
    assert cfg.node.key.address == written["address"] and str(cfg.data_dir) == written["data_dir"]
    assert cfg.data_dir == (tmp_path / "p" / "data").resolve() and written["chain_id"] == "ait-devnet"
    assert (cfg.node.provider is not None) == (role == "provider")
    doc = tomllib.loads((tmp_path / "p" / "peer.toml").read_text())
    assert doc["key_file"] == "node.key" and doc["genesis"] == "genesis.json"
    again = peer("init", str(tmp_path / "p"), "--role", role, "--genesis", str(GENESIS))
    assert again.returncode == 2 and "never overwrites" in again.stderr and "Traceback" not in again.stderr
    assert key.read_text().strip() == cfg.node.key.secret.hex()  # the key is untouched
    bad = peer("init", str(tmp_path / "q"), "--genesis", str(tmp_path / "missing.json"))
    assert bad.returncode == 2 and "cannot read genesis" in bad.stderr and not (tmp_path / "q" / "node.key").exists()


def test_a_peer_run_from_init_tells_the_service_manager_when_it_is_ready_and_logs_json(tmp_path):
    out = peer("init", str(tmp_path / "p"), "--genesis", str(GENESIS), "--json")
    assert out.returncode == 0, out.stderr
    config = json.loads(out.stdout)["config"]
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify.sock"))
    notify.settimeout(60)
    env = {**os.environ, "AITBC_CONFIG": config, "NOTIFY_SOCKET": str(tmp_path / "notify.sock")}
    env.pop("AITBC_DATA_DIR", None)
    stderr = tmp_path / "peer.log"
    with stderr.open("w") as log:
        proc = subprocess.Popen(
            [*PEER, "run", "--rpc-port", "0", "--listen", "/ip4/127.0.0.1/tcp/0", "--log-format", "json"],
            env=env,
            stderr=log,
            stdout=subprocess.DEVNULL,
        )
    try:
        ready = notify.recv(4096).decode()
        fields = dict(line.split("=", 1) for line in ready.splitlines())
        assert fields["READY"] == "1" and fields["MAINPID"] == str(proc.pid)
        info = json.loads((tmp_path / "p" / "data" / "node.json").read_text())  # written before READY
        assert fields["STATUS"] == f"serving RPC at {info['rpc_url']}"
        assert httpx.get(f"{info['rpc_url']}/v1/health", timeout=10).json() == {"status": "ok"}
        proc.send_signal(signal.SIGTERM)
        assert notify.recv(4096).decode() == "STOPPING=1"
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        notify.close()
    lines = [json.loads(line) for line in stderr.read_text().splitlines()]
    assert lines and all({"time", "level", "logger", "message"} <= set(line) for line in lines), lines[:3]
    messages = [line["message"] for line in lines]
    assert any(m.startswith("peer ") and "serving RPC" in m for m in messages)
    assert messages[-1] == "stopped cleanly"


def test_a_bad_config_exits_2_in_one_line_so_systemd_does_not_restart_it(tmp_path):
    (tmp_path / "peer.toml").write_text('data_dir = "d"\n')
    started = time.monotonic()
    for args in (["run", "--config", str(tmp_path / "peer.toml")], ["run", "--config", str(tmp_path / "none.toml")]):
        out = peer(*args)
        assert out.returncode == 2 and out.stderr.startswith("aitbc-peer: ") and "Traceback" not in out.stderr
        assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    env = {k: v for k, v in os.environ.items() if k != "AITBC_CONFIG"} | {"AITBC_LOG_FORMAT": "xml"}
    out = peer("run", "--config", str(tmp_path / "peer.toml"), env=env)
    assert out.returncode == 2 and "AITBC_LOG_FORMAT" in out.stderr
    init = peer("init", str(tmp_path / "p"), "--genesis", str(GENESIS), "--json")
    env = {k: v for k, v in os.environ.items() if k != "AITBC_CONFIG"} | {"AITBC_TEST_CLOCK_OFFSET_MS": "2s"}
    out = peer("run", "--config", json.loads(init.stdout)["config"], "--rpc-port", "0", env=env)
    assert out.returncode == 2 and "AITBC_TEST_CLOCK_OFFSET_MS must be an integer" in out.stderr, out.stderr
    assert time.monotonic() - started < 60


def test_the_systemd_unit_waits_for_readiness_and_does_not_restart_a_bad_config():
    unit = (ROOT / "nodes" / "systemd" / "aitbc-peer.service").read_text()
    settings = dict(line.split("=", 1) for line in unit.splitlines() if "=" in line and not line.startswith(("#", "[")))
    assert settings["Type"] == "notify" and settings["NotifyAccess"] == "main"
    assert settings["RestartPreventExitStatus"] == "2" and settings["Restart"] == "on-failure"
    assert settings["ExecStart"].split()[1:3] == ["run", "--config"]


@pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("unshare"), reason="needs root and unshare for a private tmpfs"
)
def test_a_full_disk_stops_the_peer_in_one_line_with_a_status_systemd_restarts(tmp_path):
    """A block write that fails (ENOSPC) ends the peer with the error on one line and
    exit status 1, which the unit's Restart=on-failure restarts (2, a bad config, it does
    not). The data directory is a 4 MiB tmpfs in a mount namespace of the peer's own;
    the test fills it through /proc/PID/root once the peer serves."""
    out = peer("init", str(tmp_path / "p"), "--role", "validator", "--genesis", str(GENESIS), "--json")
    assert out.returncode == 0, out.stderr
    made = json.loads(out.stdout)
    genesis = json.loads(GENESIS.read_text())  # a chain of this peer alone, so that it writes blocks
    genesis["consensus"] = {"engine": "solo", "authorities": [made["address"]], "block_time_ms": 200}
    layout = tomllib.loads(Path(made["config"]).read_text())
    (tmp_path / "p" / layout["genesis"]).write_text(json.dumps(genesis))
    data = tmp_path / "p" / layout["data_dir"]
    data.mkdir(exist_ok=True)
    run = " ".join([*PEER, "run", "--config", made["config"], "--rpc-port", "0", "--listen", "/ip4/127.0.0.1/tcp/0"])
    proc = subprocess.Popen(
        [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            f"mount -t tmpfs -o size=4m tmpfs {data} && exec {run}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        inside = Path(f"/proc/{proc.pid}/root") / data.relative_to("/")
        deadline = time.monotonic() + 60
        while not (inside / "node.json").exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.1)
        with (inside / "filler").open("wb", buffering=0) as filler:
            try:
                while True:
                    filler.write(b"\0" * 65536)
            except OSError:
                pass  # full
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, stderr[-2000:]
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("aitbc-peer: ") and "No space left on device" in last and "Traceback" not in stderr
