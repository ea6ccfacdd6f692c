"""A local 3-peer devnet as real ``aitbc-peer`` processes, and the end-to-end demo.

``up`` starts one process per ``nodes/devnet/peer*.toml`` with free ports on 127.0.0.1,
each bootstrapping to the peers started before it; ``down`` stops them with SIGTERM;
``demo`` runs a job from the client wallet through peer1's RPC and prints the outcome.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from aitbc_p2p.crypto import load_key_file
from aitbc_p2p.exceptions import ConfigError, RpcError
from aitbc_p2p.rpc import RpcClient, result_image
from aitbc_p2p.rpc.files import NODE_INFO, TOKEN_FILE
from aitbc_p2p.types import aitbc, format_aitbc

DEVNET_WALLET_PASSWORD = "devnet"
STATE_FILE = "devnet.json"


@dataclass(frozen=True)
class PeerProcess:
    name: str
    pid: int
    data_dir: Path
    log: Path
    cmd: tuple[str, ...] = ()

    def info(self) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads((self.data_dir / NODE_INFO).read_text())
        return loaded

    def token(self) -> str:
        return (self.data_dir / TOKEN_FILE).read_text().strip()

    def rpc(self) -> RpcClient:
        return RpcClient(self.info()["rpc_url"], token=self.token())


def _free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of ours counts as gone
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        return True


def peer_configs(nodes_dir: Path) -> list[Path]:
    """``peer*.toml`` in numeric order (peer2 before peer10)."""
    found = sorted(Path(nodes_dir).glob("peer*.toml"), key=lambda p: (len(p.stem), p.stem))
    if not found:
        raise ConfigError(f"no peer*.toml in {nodes_dir}")
    return found


def load_state(run_dir: Path) -> list[PeerProcess]:
    path = Path(run_dir) / STATE_FILE
    if not path.exists():
        return []
    return [
        PeerProcess(p["name"], p["pid"], Path(p["data_dir"]), Path(p["log"]), tuple(p["cmd"]))
        for p in json.loads(path.read_text())
    ]


def _save_state(run_dir: Path, procs: list[PeerProcess]) -> None:
    doc = [
        {"name": p.name, "pid": p.pid, "data_dir": str(p.data_dir), "log": str(p.log), "cmd": list(p.cmd)}
        for p in procs
    ]
    (Path(run_dir) / STATE_FILE).write_text(json.dumps(doc, indent=2))


def _spawn(cmd: tuple[str, ...], log: Path) -> int:
    with log.open("ab") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
    return proc.pid


def restart_peer(run_dir: Path, name: str, *, prefix: Sequence[str] = ()) -> PeerProcess:
    """Start a stopped (or killed) devnet peer again on its data directory and ports.
    ``prefix``: a command to run it under this time only (``faketime -f +2s``, say)."""
    procs = load_state(run_dir)
    for i, p in enumerate(procs):
        if p.name == name:
            if _alive(p.pid):
                raise ConfigError(f"{name} is still running")
            (p.data_dir / NODE_INFO).unlink(missing_ok=True)
            procs[i] = PeerProcess(p.name, _spawn((*prefix, *p.cmd), p.log), p.data_dir, p.log, p.cmd)
            _save_state(run_dir, procs)
            return procs[i]
    raise ConfigError(f"no devnet peer named {name}")


def start(
    nodes_dir: Path,
    run_dir: Path,
    *,
    tiny_llm: bool = False,
    tiny_sd: bool = False,
    hosts: Sequence[str] = (),
    wrap: Sequence[Sequence[str]] = (),
    bootstrap_first: bool = False,
    prepare: Callable[[Path], None] | None = None,
) -> list[PeerProcess]:
    """Start a fresh devnet in ``run_dir`` (its old contents are removed).

    With ``tiny_llm`` (needs the ``llm`` extra), a tiny causal LM is built in the run
    directory and every provider offers it to ``llm_gen`` as the model ``tiny``; with
    ``tiny_sd`` (the ``sd`` extra), a tiny Stable Diffusion pipeline, offered to
    ``sd_infer`` as ``tiny-sd``.

    ``hosts`` gives peer i its own IPv4 address for libp2p and RPC (default 127.0.0.1);
    ``wrap`` prefixes peer i's command (``ip netns exec ns1``, say). Each peer bootstraps
    from all the peers before it, or with ``bootstrap_first`` from the first only, so
    that it must find the rest by peer exchange. ``prepare`` is called with each peer's
    new, empty data directory before the peer starts (to mount a small file system
    there, say).
    """
    # Here, not at the top: the wallet commands import this module, and an SDK-only
    # install (no peer extra) has neither the node's config nor libp2p.
    from aitbc_p2p.cli.config import load_peer_config
    from aitbc_p2p.network import peer_id_of

    if any(_alive(p.pid) for p in load_state(run_dir)):
        raise ConfigError(f"a devnet is already running in {run_dir}; run 'aitbc devnet down' first")
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    model_args = [
        *(_tiny_model(run_dir, "tiny", "llm") if tiny_llm else []),
        *(_tiny_model(run_dir, "tiny-sd", "sd") if tiny_sd else []),
    ]
    procs: list[PeerProcess] = []
    bootstrap: list[str] = []
    for i, config in enumerate(peer_configs(nodes_dir)):
        name = config.stem
        cfg = load_peer_config(config)
        host = hosts[i] if i < len(hosts) else "127.0.0.1"
        # An address of another network namespace cannot be bound here; ports are its own there.
        port = _free_port(host if host.startswith("127.") else "127.0.0.1")
        data_dir = (run_dir / name).resolve()
        data_dir.mkdir()
        if prepare is not None:
            prepare(data_dir)
        log = run_dir / f"{name}.log"
        cmd = [*(wrap[i] if i < len(wrap) else ())]
        cmd += [sys.executable, "-m", "aitbc_p2p.cli.peer", "run", "--config", str(config), "--data-dir", str(data_dir)]
        cmd += ["--rpc-host", host, "--rpc-port", "0", "--metrics-port", "0", "--listen", f"/ip4/{host}/tcp/{port}"]
        cmd += ["--verify-in-threads"]  # the peers share this machine's cores: worker processes would compete
        for addr in bootstrap[:1] if bootstrap_first else bootstrap:
            cmd += ["--bootstrap", addr]
        if cfg.node.provider is not None:
            cmd += model_args
        procs.append(PeerProcess(name, _spawn(tuple(cmd), log), data_dir, log, tuple(cmd)))
        bootstrap.append(f"/ip4/{host}/tcp/{port}/p2p/{peer_id_of(cfg.node.key)}")
    _save_state(run_dir, procs)
    return procs


def _tiny_model(run_dir: Path, name: str, extra: str) -> list[str]:
    """Build the tiny model ``name`` in ``run_dir``; the peer arguments that offer it."""
    from aitbc_p2p.compute.context import module_available

    needs = {"llm": ("torch", "transformers"), "sd": ("torch", "diffusers", "transformers")}[extra]
    missing = [m for m in needs if not module_available(m)]
    if missing:
        raise ConfigError(f"the tiny model {name!r} needs {missing}: pip install 'aitbc-p2p[{extra}]'")
    from aitbc_p2p.testing import models

    build = models.build_tiny_causal_lm if extra == "llm" else models.build_tiny_sd_pipeline
    return ["--model", f"{name}={build(run_dir / 'models' / name).resolve()}"]


async def wait_ready(
    procs: list[PeerProcess], *, min_height: int = 2, timeout: float = 90.0, progress: Callable[[str], None] = print
) -> None:
    """Wait until every peer serves RPC, sees all the others and is past ``min_height``."""
    want_peers = len(procs) - 1
    last = ""
    with trio.fail_after(timeout):
        while True:
            states: list[tuple[int, int] | None] = []  # (height, peers), None while starting
            for p in procs:
                if not _alive(p.pid):
                    tail = p.log.read_text()[-2000:] if p.log.exists() else ""
                    raise ConfigError(f"{p.name} exited during start-up; log tail:\n{tail}")
                state = None
                if (p.data_dir / NODE_INFO).exists():
                    try:
                        async with p.rpc() as rpc:
                            s = await rpc.status()
                        state = (int(s["height"]), len(s["peers"]))
                    except RpcError:
                        pass
                states.append(state)
            line = " | ".join(
                f"{p.name}: starting" if st is None else f"{p.name}: height {st[0]}, {st[1]} peers"
                for p, st in zip(procs, states, strict=True)
            )
            if line != last:
                progress(f"  {line}")
                last = line
            if all(st is not None and st[0] >= min_height and st[1] >= want_peers for st in states):
                return
            await trio.sleep(0.3)


def stop(run_dir: Path, *, timeout: float = 15.0) -> list[str]:
    """SIGTERM every devnet peer, SIGKILL what is left after ``timeout``; returns what was done."""
    report = []
    procs = load_state(run_dir)
    for p in procs:
        if _alive(p.pid):
            os.kill(p.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for p in procs:
        while _alive(p.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _alive(p.pid):
            os.kill(p.pid, signal.SIGKILL)
            report.append(f"{p.name} (pid {p.pid}) killed after {timeout} s")
        else:
            report.append(f"{p.name} (pid {p.pid}) stopped")
    (Path(run_dir) / STATE_FILE).unlink(missing_ok=True)
    return report


def _short_result(workload: str, output: Any) -> str:
    if not isinstance(output, dict):
        return str(output)[:80]
    if workload == "torch_bench":
        return (
            f"{output['gflops']} GFLOP/s on {output['device']} "
            f"({output['n']}x{output['n']} {output['dtype']}, {output['iters']} iters)"
        )
    if workload == "llm_gen":
        rate = f"{output['tokens']} tokens, first after {output['ttft_ms']} ms, {output['tokens_per_s']} tokens/s"
        return f"{rate}: {output['text'][:60]!r}"
    if workload == "embed":
        return f"{output['count']} x {output['dim']} {output['dtype']} vectors, {output['texts_per_s']} texts/s"
    if workload == "sd_infer":
        return (
            f"{output['width']}x{output['height']} PNG, {output['steps']} steps at {output['ms_per_step']} ms each, "
            f"pixels {output['pixels_digest'][:16]}"
        )
    return json.dumps(output)[:80]


DEMO_PARAMS: dict[str, dict[str, Any]] = {
    "torch_bench": {"n": 256, "iters": 20, "seed": 42, "dtype": "float32"},
    "echo": {"message": "hello from the AITBC devnet"},
    "embed": {"texts": ["a GPU market for AI agents", "providers sell compute for tokens"]},
    "llm_gen": {"prompt": "What is machine learning?", "max_tokens": 32, "model": "tiny"},
    "sd_infer": {"prompt": "an astronaut riding a horse on the moon", "steps": 10, "width": 128, "height": 128,
                 "seed": 42, "model": "tiny-sd"},
}
PROMPTED = ("llm_gen", "sd_infer")
"""The demo's workloads whose ``--prompt`` is a prompt (echo's is its message)."""


async def run_demo(
    nodes_dir: Path,
    run_dir: Path,
    *,
    workload: str | None = None,
    prompt: str | None = None,
    out: Callable[[str], None] = print,
    to_stderr: bool = False,
) -> dict[str, Any]:
    """Start the devnet, run one job end to end, print the outcome, stop the devnet.
    ``to_stderr``: the outcome's table goes to stderr (``--json`` keeps stdout for the answer).

    ``workload`` defaults to torch_bench where the provider offers it, else echo.
    """
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False, stderr=to_stderr)
    started = time.monotonic()

    def say(text: str) -> None:
        out(f"[{time.monotonic() - started:5.1f}s] {text}")

    say(f"starting {len(peer_configs(nodes_dir))} aitbc-peer processes on 127.0.0.1 ...")
    if workload == "llm_gen":
        say("building a tiny causal LM for llm_gen (model 'tiny') ...")
    if workload == "sd_infer":
        say("building a tiny Stable Diffusion pipeline for sd_infer (model 'tiny-sd') ...")
    procs = start(nodes_dir, run_dir, tiny_llm=workload == "llm_gen", tiny_sd=workload == "sd_infer")
    try:
        await wait_ready(procs, progress=say)
        say("devnet connected and producing blocks")
        client = load_key_file(nodes_dir / "wallets" / "client.json", DEVNET_WALLET_PASSWORD)
        async with procs[0].rpc() as rpc:
            providers: list[dict[str, Any]] = []
            with trio.fail_after(30):
                while not providers:
                    providers = await rpc.providers()
                    await trio.sleep(0.3)
            provider = providers[0]
            if workload is None:
                if "torch_bench" in provider["workloads"]:
                    workload = "torch_bench"
                    say("workload torch_bench: a seeded matmul on the provider's GPU, or its CPU")
                else:
                    workload = "echo"
                    say(
                        "workload echo: the provider has no torch, so it offers no GPU/CPU benchmark; "
                        "'make demo EXTRAS=dev,compute' installs it (the CPU wheel) for torch_bench"
                    )
            if workload == "llm_gen":
                say("note: the demo's model 'tiny' has random weights: its text is noise, its timings are real")
            if workload == "sd_infer":
                say("note: the demo's pipeline 'tiny-sd' has random weights: its image is noise, its steps are real")
            if workload not in provider["workloads"]:
                raise ConfigError(f"the provider does not offer {workload} (it offers {provider['workloads']})")
            params = dict(DEMO_PARAMS.get(workload, {}))
            if prompt is not None:
                params["prompt" if workload in PROMPTED else "message"] = prompt
            say(
                f"provider {provider['miner_id']} ({provider['mode']}, {provider['device']}) "
                f"offers {provider['workloads']}"
            )
            before = {
                "client": (await rpc.account(client.address))["balance"],
                "provider": (await rpc.account(provider["provider"]))["balance"],
            }
            supply_before = await rpc.supply()
            job_id = await rpc.submit_job(client, workload, params, max_price=aitbc(5), max_runtime_s=30, progress=say)
            job = await rpc.wait_job(job_id, timeout=60, progress=say)
            result = await rpc.job_result(job_id) if job.get("result_available") else {}
            after = {
                "client": (await rpc.account(client.address))["balance"],
                "provider": (await rpc.account(provider["provider"]))["balance"],
            }
            supply_after = await rpc.supply()
        image_path = None
        image = result_image(result)
        if image is not None:
            image_path = (run_dir / f"{workload}-{job_id[:16]}.png").resolve()
            image_path.write_bytes(image)
        escrow = job.get("escrow") or {}
        table = Table(title=f"AITBC devnet demo: {workload} job", show_header=False)
        table.add_column(no_wrap=True)
        table.add_column(overflow="fold")
        rows = [
            ("job id", job_id),
            ("status", job["status"]),
            ("result digest", result.get("result_hash", "-")),
            ("result", _short_result(workload, result.get("output"))),
            ("receipt id", job.get("receipt_id") or "-"),
            ("cost", f"{escrow.get('cost_aitbc', '0')} AITBC (escrowed {escrow.get('amount_aitbc', '0')})"),
            ("client balance", f"{format_aitbc(before['client'])} -> {format_aitbc(after['client'])} AITBC"),
            ("provider balance", f"{format_aitbc(before['provider'])} -> {format_aitbc(after['provider'])} AITBC"),
            ("total supply", f"{format_aitbc(supply_before['total'])} -> {format_aitbc(supply_after['total'])} AITBC"),
        ]
        if image_path is not None:
            rows.insert(4, ("image", str(image_path)))
        for k, v in rows:
            table.add_row(k, str(v))
        console.print(table)
        if image_path is not None:
            say(f"image written to {image_path} ({len(image or b''):,} bytes)")
        return {
            "job": job,
            "result": result,
            "before": before,
            "after": after,
            "supply": (supply_before, supply_after),
            "image": image_path,
        }
    finally:
        say("stopping peers ...")
        for line in stop(run_dir):
            say(f"  {line}")
