"""End to end with three real ``aitbc-peer`` processes on 127.0.0.1 (the demo's flow)."""

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from aitbc_p2p.cli import devnet
from aitbc_p2p.compute.context import module_available, torch_available
from aitbc_p2p.crypto import load_key_file
from aitbc_p2p.market import JobOffer, params_hash
from aitbc_p2p.types import aitbc

NODES = Path(__file__).resolve().parents[1] / "nodes" / "devnet"
pytestmark = pytest.mark.slow


async def test_demo_flow_across_three_processes(tmp_path):
    lines: list[str] = []
    with trio.fail_after(150):
        outcome = await devnet.run_demo(NODES, tmp_path / "run", out=lines.append)
    job, result = outcome["job"], outcome["result"]
    assert job["status"] == "settled", lines
    assert job["receipt_id"] and len(job["receipt_id"]) == 64
    escrow = job["escrow"]
    assert result["ok"] and result["receipt_matches"]
    assert result["result_hash"] == escrow["result_hash"]
    cost, fee = escrow["cost"], 1000
    assert 0 < cost <= escrow["amount"]
    before, after = outcome["before"], outcome["after"]
    assert after["client"] == before["client"] - cost - fee  # escrow open; the rest refunded at settle
    assert after["provider"] == before["provider"] + cost - 2 * fee  # receipt + settle fees
    supply_before, supply_after = outcome["supply"]
    assert supply_before["total"] == supply_after["total"] == supply_before["genesis_total"]
    assert supply_after["escrowed"] == 0
    assert any("stopped" in line for line in lines) and not any("killed" in line for line in lines)
    assert devnet.load_state(tmp_path / "run") == []
    # It says which workload runs and why: torch_bench where torch is, echo (and how to get torch) where not.
    why = [line for line in lines if "] workload " in line]
    assert len(why) == 1, lines
    assert ("torch_bench" in why[0]) if torch_available() else ("EXTRAS=dev,compute" in why[0])


@pytest.mark.skipif(not (torch_available() and module_available("transformers")), reason="llm_gen needs the llm extra")
async def test_demo_runs_llm_gen_with_streamed_generation(tmp_path):
    lines: list[str] = []
    with trio.fail_after(240):
        outcome = await devnet.run_demo(NODES, tmp_path / "run", workload="llm_gen", prompt="Hello", out=lines.append)
    assert outcome["job"]["status"] == "settled", lines
    assert any("random weights" in line and "noise" in line for line in lines), lines
    output = outcome["result"]["output"]
    assert output["backend"] == "torch" and output["model"] == "tiny" and 0 < output["tokens"] <= 32
    assert outcome["result"]["metrics"]["tokens"] == output["tokens"]
    assert outcome["supply"][0]["total"] == outcome["supply"][1]["total"]


needs_sd = pytest.mark.skipif(
    not all(module_available(m) for m in ("torch", "diffusers", "transformers")), reason="sd_infer needs the sd extra"
)


@needs_sd
async def test_demo_runs_sd_infer_and_writes_the_image(tmp_path):
    from PIL import Image

    lines: list[str] = []
    with trio.fail_after(240):
        outcome = await devnet.run_demo(NODES, tmp_path / "run", workload="sd_infer", out=lines.append)
    assert outcome["job"]["status"] == "settled", lines
    output, path = outcome["result"]["output"], outcome["image"]
    assert any(f"image written to {path}" in line for line in lines), lines
    data = path.read_bytes()
    assert hashlib.sha256(data).hexdigest() == output["digest"]
    with Image.open(path) as image:
        assert (image.format, image.size) == ("PNG", (128, 128))
        assert hashlib.sha256(image.convert("RGB").tobytes()).hexdigest() == output["pixels_digest"]
    assert outcome["result"]["metrics"]["steps"] == output["steps"] == 10
    assert outcome["supply"][0]["total"] == outcome["supply"][1]["total"]


@needs_sd
async def test_sd_infer_streams_its_steps_to_the_cli_and_saves_the_png(tmp_path):
    """``aitbc job submit --stream`` shows each denoising step as the provider makes it;
    ``aitbc job result --image`` writes the PNG; the client pays the cost and the fee."""
    from PIL import Image

    run_dir = tmp_path / "run"
    procs = devnet.start(NODES, run_dir, tiny_sd=True)
    try:
        with trio.fail_after(90):
            await devnet.wait_ready(procs, progress=lambda s: None)
        client = load_key_file(NODES / "wallets" / "client.json", "devnet")
        async with procs[0].rpc() as rpc:
            with trio.fail_after(30):
                while not any("sd_infer" in p["workloads"] for p in await rpc.providers()):
                    await trio.sleep(0.3)
            balance = (await rpc.account(client.address))["balance"]
        params = ["steps=4", "width=64", "height=96", "seed=7", "model=tiny-sd"]
        out = await trio.to_thread.run_sync(
            aitbc_cli, run_dir, "job", "submit", "--workload", "sd_infer", "--prompt", "a red cube",
            *(a for p in params for a in ("--param", p)), "--max-runtime", "60", "--stream",
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        steps = [json.loads(line) for line in out.stderr.splitlines() if line.startswith('{"step"')]
        assert steps == [{"step": i, "steps": 4} for i in range(1, 5)], out.stderr
        short = re.search(r"job ([0-9a-f]{16}): settled", out.stderr)
        assert short, out.stderr
        png = tmp_path / "out.png"
        args = ("job", "result", short.group(1), "--image", str(png), "--json")
        out = await trio.to_thread.run_sync(aitbc_cli, run_dir, *args)
        assert out.returncode == 0, out.stderr
        result = json.loads(out.stdout)
        assert result["output"]["image"] == str(png) and result["output_hex"] is None  # not printed twice
        assert hashlib.sha256(png.read_bytes()).hexdigest() == result["output"]["digest"]
        with Image.open(png) as image:
            assert (image.format, image.size) == ("PNG", (64, 96))
        out = await trio.to_thread.run_sync(aitbc_cli, run_dir, "job", "status", short.group(1), "--json")
        job = json.loads(out.stdout)
        async with procs[0].rpc() as rpc:
            after = (await rpc.account(client.address))["balance"]
        assert job["status"] == "settled" and after == balance - job["escrow"]["cost"] - 1000
        # A job with no image in its result: a clear refusal, no traceback, no file.
        out = await trio.to_thread.run_sync(
            aitbc_cli, run_dir, "job", "submit", "--workload", "echo", "--message", "hi", "--wait", "--json"
        )
        echo_id = json.loads(out.stdout)["job_id"]
        out = await trio.to_thread.run_sync(
            aitbc_cli, run_dir, "job", "result", echo_id, "--image", str(tmp_path / "none.png")
        )
        assert out.returncode == 1 and "has no image" in out.stderr and "Traceback" not in out.stderr, out.stderr
        assert not (tmp_path / "none.png").exists()
    finally:
        report = devnet.stop(run_dir)
    assert all("stopped" in line for line in report), report


def plain_cli(*args):
    """``aitbc`` as a script without a terminal and without AITBC_WALLET_PASSWORD."""
    env = {k: v for k, v in os.environ.items() if k != "AITBC_WALLET_PASSWORD"}
    cmd = [sys.executable, "-m", "aitbc_p2p.cli.main", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL, timeout=120)


def aitbc_cli(run_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``aitbc --devnet ARGS`` through its real command line, against the devnet in
    ``run_dir`` (the devnet wallets' password in the environment)."""
    env = {**os.environ, "AITBC_WALLET_PASSWORD": "devnet"}
    base = [sys.executable, "-m", "aitbc_p2p.cli.main", "--devnet", "--nodes-dir", str(NODES)]
    base += ["--run-dir", str(run_dir)]
    return subprocess.run([*base, *args], capture_output=True, text=True, env=env, timeout=120)


async def test_cli_against_a_running_devnet(tmp_path):
    run_dir = tmp_path / "run"
    procs = devnet.start(NODES, run_dir)
    try:
        with trio.fail_after(90):
            await devnet.wait_ready(procs, progress=lambda s: None)
        genesis_wallet = load_key_file(NODES / "wallets" / "genesis.json", "devnet")
        client = load_key_file(NODES / "wallets" / "client.json", "devnet")
        out = await trio.to_thread.run_sync(aitbc_cli, run_dir, "wallet", "balance")
        assert out.returncode == 0 and client.address in out.stdout and "balance 10000 AITBC" in out.stdout, out
        out = await trio.to_thread.run_sync(
            aitbc_cli, run_dir, "wallet", "send", "2.5", genesis_wallet.address, "--wait"
        )
        assert out.returncode == 0 and "committed in block" in out.stdout, out.stderr
        out = await trio.to_thread.run_sync(aitbc_cli, run_dir, "wallet", "history")
        assert out.returncode == 0 and "transfer" in out.stdout and "2.5 AITBC" in out.stdout, out
        async with procs[1].rpc() as rpc:  # another peer sees the same committed state
            with trio.fail_after(20):
                while (await rpc.account(genesis_wallet.address))["balance"] != aitbc(1_000_000) + aitbc("2.5"):
                    await trio.sleep(0.2)
        out = await trio.to_thread.run_sync(
            aitbc_cli, run_dir, "job", "submit", "--workload", "echo", "--message", "hi", "--wait", "--json"
        )
        assert out.returncode == 0, out.stderr
        job = json.loads(out.stdout)  # --wait: stdout is one JSON document, progress on stderr
        assert job["status"] == "settled" and job["phase"] == "settled"
        # --stream: echo's chunks on stdout as the provider streams them, statuses on stderr.
        async with procs[0].rpc() as rpc:
            balance = (await rpc.account(client.address))["balance"]
        chunks = ["--param", "chunks=4", "--param", "interval_ms=20"]
        out = await trio.to_thread.run_sync(
            aitbc_cli, run_dir, "job", "submit", "--workload", "echo", "--message", "live text", *chunks, "--stream"
        )
        assert out.returncode == 0 and out.stdout == "live text\n", (out.stdout, out.stderr)
        short = re.search(r"job ([0-9a-f]{16}): settled", out.stderr)
        assert short and "running" in out.stderr, out.stderr
        out = await trio.to_thread.run_sync(aitbc_cli, run_dir, "job", "status", short.group(1), "--json")
        streamed = json.loads(out.stdout)
        async with procs[0].rpc() as rpc:
            after = (await rpc.account(client.address))["balance"]
        assert after == balance - streamed["escrow"]["cost"] - 1000  # the cost and the escrow's fee, to the unit
        # A printed short id (16 hex digits) names the job, as git takes a commit's prefix.
        out = await trio.to_thread.run_sync(aitbc_cli, run_dir, "job", "status", job["job_id"][:16], "--json")
        assert out.returncode == 0 and json.loads(out.stdout)["job_id"] == job["job_id"], out.stderr
        # A job offered and not yet escrowed is cancelled by its short id; nothing reaches the chain.
        async with procs[0].rpc() as rpc:
            status = await rpc.status()
            params = {"message": "cancel me"}
            offer = JobOffer.create(
                client, status["chain_id"], workload="echo", params_hash=params_hash("echo", params),
                max_price=aitbc(5), max_runtime_s=10, verification="none", timestamp_ms=status["head_timestamp_ms"],
            )  # fmt: skip
            body = {"offer": offer.encode().hex(), "workload": "echo", "params": params}
            job_id = (await rpc._call("POST", "/v1/jobs", body))["job_id"]
            balance = (await rpc.account(client.address))["balance"]
        out = await trio.to_thread.run_sync(aitbc_cli, run_dir, "job", "cancel", job_id[:12], "--json")
        assert out.returncode == 0, out.stderr
        cancelled = json.loads(out.stdout)
        assert (cancelled["job_id"], cancelled["status"], cancelled["escrow"]) == (job_id, "cancelled", None)
        out = await trio.to_thread.run_sync(aitbc_cli, run_dir, "job", "cancel", job_id)
        assert out.returncode == 1 and "CANNOT_CANCEL" in out.stderr and "Traceback" not in out.stderr, out.stderr
        out = await trio.to_thread.run_sync(aitbc_cli, run_dir, "job", "cancel", "ab" * 32)
        assert out.returncode == 1 and "NOT_FOUND" in out.stderr, out.stderr
        async with procs[0].rpc() as rpc:
            assert (await rpc.account(client.address))["balance"] == balance
        # Jobs that cannot run are refused before anything is sent, with the reason.
        for args, why in (
            (["--param", "n"], "write NAME=VALUE"),
            (["--max-runtime", "0"], "must be at least 1"),
            (["--workload", "no_such"], "unknown workload"),
            (["--workload", "echo", "--param", "message=5"], "parameter 'message' must be a string"),
            (["--workload", "echo", "--max-runtime", "100000"], "above every provider's cap"),
            (["--workload", "echo", "--max-price", "0.000000001"], "every provider quotes above max_price"),
        ):
            out = await trio.to_thread.run_sync(aitbc_cli, run_dir, "job", "submit", *args)
            assert out.returncode != 0 and why in out.stderr and "Traceback" not in out.stderr, (args, out.stderr)
        # --param takes JSON values (lists and all: embed's texts).
        from aitbc_p2p.cli.main import _params, build_parser

        parsed = build_parser().parse_args(["job", "submit", "--param", 'texts=["a","b"]', "--param", "n=7"])
        assert _params(parsed) == {"texts": ["a", "b"], "n": 7}
        # Read-only wallet commands need no password, and nothing prompts without a terminal.
        wallet, peer1 = str(NODES / "wallets" / "client.json"), ["--data-dir", str(procs[0].data_dir)]
        out = await trio.to_thread.run_sync(plain_cli, "--wallet", wallet, "wallet", "balance", *peer1)
        assert out.returncode == 0 and client.address in out.stdout, out.stderr
        send = ["wallet", "send", "1", genesis_wallet.address, *peer1]
        out = await trio.to_thread.run_sync(plain_cli, "--wallet", wallet, *send)
        assert out.returncode == 1 and "set AITBC_WALLET_PASSWORD" in out.stderr and "Traceback" not in out.stderr
        missing = str(tmp_path / "none.json")
        out = await trio.to_thread.run_sync(plain_cli, "--wallet", missing, *send)
        assert out.returncode == 1 and "no wallet at" in out.stderr, out.stderr
        out = await trio.to_thread.run_sync(aitbc_cli, run_dir, "wallet", "send", "999999", genesis_wallet.address)
        assert out.returncode == 1 and "INSUFFICIENT_FUNDS" in out.stderr
        # SIGKILL a peer: it restarts from its LevelDB at a whole block and catches up by sync.
        victim = procs[1]
        async with victim.rpc() as rpc:
            killed_at = (await rpc.status())["height"]
        os.kill(victim.pid, signal.SIGKILL)
        with trio.fail_after(10):
            while devnet._alive(victim.pid):
                await trio.sleep(0.05)
        restarted = devnet.restart_peer(run_dir, victim.name)
        with trio.fail_after(60):
            while not (restarted.data_dir / "node.json").exists():
                await trio.sleep(0.1)
            async with restarted.rpc() as rpc, procs[0].rpc() as rpc0:
                status = await rpc.status()
                assert status["height"] >= killed_at  # nothing committed was lost
                target = (await rpc0.status())["height"] + 2
                while (await rpc.status())["height"] < target:
                    await trio.sleep(0.2)
                assert (await rpc.status())["peers"]
                block_a = await rpc._call("GET", f"/v1/blocks/{target}")
                block_b = await rpc0._call("GET", f"/v1/blocks/{target}")
                assert block_a["header"]["hash"] == block_b["header"]["hash"]
    finally:
        report = devnet.stop(run_dir)
    assert all("stopped" in line for line in report), report


def test_sigterm_to_the_daemons_process_group_stops_it_cleanly(tmp_path):
    """A service manager (or Ctrl-C) signals the whole process group, verifying workers
    included: the daemon stops with status 0 and no traceback (a worker killed first made
    trio-parallel's exit hook print a BrokenWorkerProcessError)."""
    import time

    data_dir = tmp_path / "peer"
    cmd = [
        sys.executable, "-m", "aitbc_p2p.cli.peer", "run", "--config", str(NODES / "peer1.toml"),
        "--data-dir", str(data_dir), "--rpc-port", "0", "--listen", "/ip4/127.0.0.1/tcp/0",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not (data_dir / "node.json").exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read() if proc.stdout else ""
            time.sleep(0.1)
        time.sleep(2)  # the verifying workers are up (warm_up at start)
        children = subprocess.run(["pgrep", "-g", str(proc.pid)], capture_output=True, text=True).stdout.split()
        assert len(children) > 1, "expected worker processes in the daemon's group"
        os.killpg(proc.pid, signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, out[-3000:]
    assert "Traceback" not in out and "BrokenWorker" not in out, out[-3000:]
    assert "stopped cleanly" in out


async def test_a_frozen_peer_is_dropped_by_the_others_and_rejoins_when_it_thaws(tmp_path):
    """SIGSTOP one of the three processes: its TCP connections stay "established", but the
    others' keepalive pings go unanswered and they drop it (default policy: a ping every
    15 s, two missed); the chain goes on without it. SIGCONT: it is dialled again, and
    catches up to the same chain."""
    run_dir = tmp_path / "run"
    procs = devnet.start(NODES, run_dir)
    frozen = procs[2]
    try:
        with trio.fail_after(90):
            await devnet.wait_ready(procs, progress=lambda s: None)
        frozen_id = json.loads((frozen.data_dir / "node.json").read_text())["peer_id"]

        async def status(p):
            async with p.rpc() as rpc:
                return await rpc.status()

        with trio.fail_after(30):
            while not all(frozen_id in s["peers"] for s in [await status(p) for p in procs[:2]]):
                await trio.sleep(0.5)
        os.kill(frozen.pid, signal.SIGSTOP)
        try:
            height = (await status(procs[0]))["height"]
            with trio.fail_after(75):  # 2 x 15 s of pings and a 10 s timeout, on a loaded machine
                while any(frozen_id in s["peers"] for s in [await status(p) for p in procs[:2]]):
                    await trio.sleep(1)
            assert (await status(procs[0]))["height"] > height  # the chain went on without it
        finally:
            os.kill(frozen.pid, signal.SIGCONT)
        with trio.fail_after(90):
            while True:
                heads = [await status(p) for p in procs]
                if frozen_id in heads[0]["peers"] and heads[2]["height"] >= heads[0]["height"] - 1:
                    break
                await trio.sleep(1)
        async with frozen.rpc() as rpc, procs[0].rpc() as other:
            h = (await rpc.status())["height"] - 1
            ours = (await rpc._call("GET", f"/v1/blocks/{h}"))["header"]["hash"]
            assert ours == (await other._call("GET", f"/v1/blocks/{h}"))["header"]["hash"]
    finally:
        devnet.stop(run_dir)


def _scrape(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    from prometheus_client.parser import text_string_to_metric_families

    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_metrics_move_during_a_job(tmp_path):
    """Each devnet peer serves Prometheus metrics on its own loopback port (node.json's
    ``metrics_url``), without a token. Around one echo job: blocks, accepted gossip, the
    client's job, the provider's executor runs and its settled escrows all move."""
    import httpx

    run_dir = tmp_path / "run"
    procs = devnet.start(NODES, run_dir)
    client = load_key_file(NODES / "wallets" / "client.json", "devnet")
    try:
        with trio.fail_after(90):
            await devnet.wait_ready(procs, progress=lambda s: None)
        urls = [json.loads((p.data_dir / "node.json").read_text())["metrics_url"] for p in procs]
        provider = 2  # nodes/devnet/peer3.toml sells compute

        async def scrape_all() -> list[dict]:
            async with httpx.AsyncClient(timeout=10) as http:
                pages = [await http.get(url) for url in urls]
            assert all(p.status_code == 200 and p.headers["content-type"].startswith("text/plain") for p in pages)
            return [_scrape(p.text) for p in pages]

        before = await scrape_all()
        async with procs[0].rpc() as rpc:
            job_id = await rpc.submit_job(client, "echo", {"message": "metrics"}, max_price=aitbc(1), max_runtime_s=10)
            assert (await rpc.wait_job(job_id, timeout=120))["status"] == "settled"
        after = await scrape_all()

        def value(page: dict, name: str, **labels: str) -> float:
            return page.get((name, tuple(sorted(labels.items()))), 0.0)

        for b, a in zip(before, after, strict=True):
            assert value(a, "aitbc_chain_height") > value(b, "aitbc_chain_height")
            assert value(a, "aitbc_peers_connected") == 2
            assert value(a, "aitbc_gossip_messages_total", verdict="accept") > value(
                b, "aitbc_gossip_messages_total", verdict="accept"
            )
        assert value(after[0], "aitbc_client_jobs", phase="result_received") >= 1  # the job, at the client's peer

        def moved(name: str, **labels: str) -> float:
            return value(after[provider], name, **labels) - value(before[provider], name, **labels)

        assert moved("aitbc_executor_jobs_total", outcome="done") == 1
        assert moved("aitbc_provider_escrows_total", outcome="settled") == 1
        async with httpx.AsyncClient(timeout=10) as http:  # loopback names only, as the RPC
            refused = await http.get(urls[0], headers={"Host": "evil.example"})
            assert refused.status_code == 403
    finally:
        devnet.stop(run_dir)
