"""``aitbc`` through its real command line: every command has examples in its ``--help``
and answers ``--json`` with one JSON document on stdout, which these tests parse; the
seed simulation's wallet commands run with the seed's arguments; ``--version`` and shell
completion work. The commands that need a peer run against a real devnet of
``aitbc-peer`` processes, started and stopped by ``aitbc devnet up/down --json``."""

import argparse
import json
import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest

from aitbc_p2p.cli.main import build_parser
from aitbc_p2p.crypto import load_key_file

ROOT = Path(__file__).resolve().parents[1]
NODES = ROOT / "nodes" / "devnet"
GENESIS = load_key_file(NODES / "wallets" / "genesis.json", "devnet").address


def leaves(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> list[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                found += leaves(child, (*path, name))
    return found or [(path, parser)]


def test_every_command_has_examples_in_its_help():
    commands = leaves(build_parser())
    assert len(commands) == 39  # a new command gets here by being counted
    for path, parser in commands:
        text = parser.format_help()
        assert "examples:\n  aitbc" in text, " ".join(path)
        assert "--json" in text and parser.description, " ".join(path)


def run(*args: str, cwd: Path = ROOT, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "AITBC_WALLET_PASSWORD": "devnet", **(env or {})}
    cmd = [sys.executable, "-m", "aitbc_p2p.cli.main", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=full, cwd=cwd, timeout=180, stdin=subprocess.DEVNULL)


def test_version_and_completion(tmp_path):
    out = run("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"aitbc {version('aitbc-p2p')}"
    answer = tmp_path / "completion"
    env = {
        "_ARGCOMPLETE": "1",
        "COMP_LINE": "aitbc wal",
        "COMP_POINT": "9",
        "_ARGCOMPLETE_STDOUT_FILENAME": str(answer),
    }
    out = run(env=env)
    assert out.returncode == 0, out.stderr
    assert answer.read_text().split() == ["wallet"]


def test_model_digest_names_a_directory_by_its_content(tmp_path):
    """``aitbc model digest DIR`` (offline): what a checkable llm_gen job names its model by,
    the library's own hash of the same files; a path that is no directory fails in a line."""
    from aitbc_p2p.compute.llm import model_digest

    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    (tmp_path / "m" / "weights.bin").write_bytes(bytes(range(256)))
    out = run("model", "digest", str(tmp_path / "m"))
    assert out.returncode == 0 and out.stdout.strip() == model_digest(str(tmp_path / "m")), out.stderr
    assert json.loads(run("--json", "model", "digest", str(tmp_path / "m")).stdout)["model"] == out.stdout.strip()
    bad = run("model", "digest", str(tmp_path / "none"))
    assert bad.returncode == 1 and "is not a model directory" in bad.stderr and len(bad.stderr.splitlines()) == 1


def test_wallet_files_new_import_export_list(tmp_path):
    """Key files without a peer: the seed's wallets live in files too."""
    rig = tmp_path / "wallets" / "rig.json"
    imported = run("--wallet", str(rig), "wallet", "import", str(NODES / "keys" / "peer3.key"), "--json")
    assert imported.returncode == 0, imported.stderr
    assert json.loads(imported.stdout)["address"] == "aitbc1xfhzx8nqc8c6m6d0wc2c86wtd3l28436dn0pcl"
    assert oct(rig.stat().st_mode & 0o777) == "0o600"
    again = run("--wallet", str(rig), "wallet", "import", str(NODES / "keys" / "peer3.key"), "--json")
    assert again.returncode == 1 and "refusing to overwrite" in json.loads(again.stdout)["error"]["message"]
    fresh = json.loads(run("--wallet", str(tmp_path / "wallets" / "new.json"), "wallet", "new", "--json").stdout)
    listed = json.loads(run("--wallet", str(rig), "wallet", "list", "--json").stdout)["wallets"]
    assert [(w["name"], w["address"]) for w in listed] == [
        ("new", fresh["address"]), ("rig", "aitbc1xfhzx8nqc8c6m6d0wc2c86wtd3l28436dn0pcl")
    ]  # fmt: skip
    exported = run("--wallet", str(rig), "wallet", "export", "--out", str(tmp_path / "rig.key"), "--json")
    assert exported.returncode == 0, exported.stdout
    assert (tmp_path / "rig.key").read_text().strip() == (NODES / "keys" / "peer3.key").read_text().strip()
    assert oct((tmp_path / "rig.key").stat().st_mode & 0o777) == "0o600"
    wrong = run("--wallet", str(rig), "wallet", "export", "--json", env={"AITBC_WALLET_PASSWORD": "not it"})
    assert wrong.returncode == 1 and "error" in json.loads(wrong.stdout) and "Traceback" not in wrong.stderr
    bad = tmp_path / "junk.key"
    bad.write_text("not a key")
    refused = run("--wallet", str(tmp_path / "wallets" / "junk.json"), "wallet", "import", str(bad))
    assert refused.returncode == 1 and "holds no private key" in refused.stderr
    assert not (tmp_path / "wallets" / "junk.json").exists()


class Cli:
    """``aitbc --devnet ... --json`` against the devnet in ``run_dir``."""

    def __init__(self, tmp_path: Path) -> None:
        self.base = ["--devnet", "--run-dir", str(tmp_path / "run"), "--nodes-dir", str(NODES)]
        self.tmp = tmp_path

    def json(self, *args: str, ok: bool = True) -> Any:
        out = run(*self.base, *args, "--json")
        assert (out.returncode == 0) == ok, (args, out.stdout[-2000:], out.stderr[-2000:])
        assert "Traceback" not in out.stderr, out.stderr
        return json.loads(out.stdout)  # one document, nothing else on stdout

    def text(self, *args: str) -> str:
        out = run(*self.base, *args)
        assert out.returncode == 0, (args, out.stderr[-2000:])
        return out.stdout


@pytest.mark.slow
def test_every_command_against_a_devnet(tmp_path):
    cli = Cli(tmp_path)
    up = cli.json("devnet", "up")
    assert [p["name"] for p in up["peers"]] == ["peer1", "peer2", "peer3"] and up["dashboard"].endswith("/ui/")
    provider = "aitbc1xfhzx8nqc8c6m6d0wc2c86wtd3l28436dn0pcl"
    rig = str(tmp_path / "rig.json")
    try:
        # The chain.
        status = cli.json("chain", "status")
        assert status["chain_id"] == "ait-devnet" and len(status["peers"]) == 2
        assert cli.json("chain", "supply")["total"] == cli.json("chain", "supply")["genesis_total"]
        assert cli.json("chain", "block", "1")["header"]["height"] == 1
        assert {p["peer_id"] for p in cli.json("chain", "peers")["peers"]} >= set(status["peers"])
        providers = cli.json("chain", "providers")["providers"]
        assert [p["provider"] for p in providers] == [provider]

        # The seed simulation's client wallet, with the seed's arguments.
        client = cli.json("wallet", "address")["address"]
        assert cli.json("wallet", "balance")["balance"] == 10_000 * 10**9
        sent = cli.json("wallet", "send", "50.0", GENESIS, "Payment for inference", "--wait")
        assert (
            sent["status"] == "committed"
            and sent["from"] == client
            and sent["amount"] == 50 * 10**9
            and sent["description"] == "Payment for inference"
        )
        assert cli.json("chain", "tx", sent["tx_hash"])["status"] == "committed"
        history = cli.json("wallet", "history")["txs"]
        assert history[0]["hash"] == sent["tx_hash"] and history[0]["payload"]["to"] == GENESIS
        assert "Payment for inference" in cli.text("wallet", "send", "0.5", GENESIS, "Payment for inference")

        # Jobs: submit, list, status, result, proof, verify.
        job = cli.json("job", "submit", "--workload", "echo", "--message", "What is AI?", "--wait")
        assert job["status"] == "settled", job
        job_id, cost = job["job_id"], job["escrow"]["cost"]
        assert job_id in [j["job_id"] for j in cli.json("job", "list")["jobs"]]
        assert cli.json("job", "status", job_id[:12])["status"] == "settled"
        assert cli.json("job", "result", job_id)["output"]["message"] == "What is AI?"
        proof = tmp_path / "proof.json"
        assert cli.json("job", "proof", job_id, "-o", str(proof))["file"] == str(proof)
        assert cli.json("job", "verify", str(proof))["verified"] is True
        for refused, code in (
            ("cancel", "CANNOT_CANCEL"),
            ("refund", "JOB_STATE"),
            ("settle", "JOB_STATE"),
            ("dispute", "JOB_STATE"),
        ):
            answer = cli.json("job", refused, job_id, ok=False)
            assert answer["error"]["code"] == code, (refused, answer)
        ruled = cli.json(
            "--wallet",
            str(NODES / "wallets" / "genesis.json"),
            "arbiter",
            "resolve",
            job_id,
            "--verdict",
            "client",
            ok=False,
        )
        assert ruled["error"]["code"] == "JOB_STATE"  # an arbiter's key, but nothing is disputed
        stats = cli.json("wallet", "stats")
        assert (
            stats["bought"]["jobs"] == 1 and stats["bought"]["spent"] == cost and stats["bought"]["success_rate"] == 1.0
        )

        # The seed's miner wallet: the provider's key, imported; its earnings come from the chain.
        assert run("--wallet", rig, "wallet", "import", str(NODES / "keys" / "peer3.key")).returncode == 0
        earned = cli.json("--wallet", rig, "wallet", "earn")
        assert earned["total"] == cost and [j["job_id"] for j in earned["jobs"]] == [job_id]
        amount = f"{cost / 10**9:.9f}"
        checked = cli.json("--wallet", rig, "wallet", "earn", amount, "--job", job_id[:8], "--desc", "Inference task")
        assert checked == {"job_id": job_id, "earned": cost, "earned_aitbc": checked["earned_aitbc"], "verified": True,
                           "description": "Inference task"}  # fmt: skip
        wrong = cli.json("--wallet", rig, "wallet", "earn", "50.0", "--job", job_id[:8], ok=False)
        assert f"({cost} base units)" in wrong["error"]["message"]
        mine = cli.json("--wallet", rig, "wallet", "stats")
        assert mine["sold"]["jobs"] == 1 and mine["sold"]["earned"] == cost and mine["sold"]["success_rate"] == 1.0
        paid_out = cli.json("--wallet", rig, "wallet", "withdraw", "1", GENESIS, "--wait")
        assert paid_out["status"] == "committed" and paid_out["from"] == provider
        assert cli.json("--wallet", rig, "wallet", "balance")["stake"] > 0
        assert cli.json("provider", "status", provider)["registered"] is True

        # Stake and provider registration with the client's wallet.
        assert cli.json("stake", "add", "100", "--wait")["status"] == "committed"
        assert cli.json("stake", "status")["stake"] == 100 * 10**9
        assert cli.json("provider", "register", "--wait")["status"] == "committed"
        assert cli.json("provider", "status")["registered"] is True
        assert cli.json("provider", "unregister", "--wait")["status"] == "committed"
        assert cli.json("stake", "remove", "100", "--wait")["status"] == "committed"
        unbonding = cli.json("stake", "status")["unbonding"]
        assert [u["amount"] for u in unbonding] == [100 * 10**9]
        early = cli.json("stake", "withdraw", ok=False)
        assert early["error"]["code"] == "NOTHING_TO_WITHDRAW", early
    finally:
        down = cli.json("devnet", "down")
        assert len(down["stopped"]) == 3
