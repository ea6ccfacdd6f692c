"""The seed miner guide's ``miner.sh``, unmodified (examples/miner/miner.sh is the guide's
block byte for byte), earning AITBC from real ``aitbc-peer`` processes: it heartbeats to
a peer with ``[miners]``, pulls a client's torch_bench job, runs it with torch, posts its
hash-only proof and is paid its share once the job settles. Killed holding a second job,
it stops being offered and that job fails over to another provider. As the guide writes
it, its torch_bench never runs (a quoting slip); the proof of that empty output is
refused and the job fails over, so no client pays for nothing.

The script writes ``/var/log/aitbc-miner.log`` and sources ``/opt/aitbc-miner/.venv``
(install_miner.sh's venv, with torch). It runs in a mount namespace of its own
(``unshare``), where both are directories of the test's: nothing on the host is touched.
There, the project's own virtualenv (which has torch) stands in for the installer's.
"""

import hashlib
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from aitbc_p2p.cli import devnet
from aitbc_p2p.compute.context import module_available
from aitbc_p2p.crypto import load_key_file
from aitbc_p2p.rpc.files import NODE_INFO
from aitbc_p2p.store.crash import CRASH_ENV
from aitbc_p2p.testing import make_key
from aitbc_p2p.testing.devnets import ProviderSpec, write_devnet
from aitbc_p2p.types import aitbc

ROOT = Path(__file__).resolve().parents[1]
NODES = ROOT / "nodes" / "devnet"
MINER_SH = ROOT / "examples" / "miner" / "miner.sh"
SEED = ROOT.parent / "shared" / "seeds" / "miner-guide.md"
MINER_SH_SHA256 = "51063fb78539dea3bf10522d66ad345c482cb4862e8a758138dbf153d27727b9"
CHEAP, DEAR = 10_000_000, 40_000_000
"""Prices per second: the miners' peer stays the best bid after two failures (trust 1/3)."""
RIG_KEY = "rig-1-api-key-for-the-devnet-test"
PAYOUT_PERCENT = 90
pytestmark = pytest.mark.slow

NAMESPACE = r"""
set -euo pipefail
T="$1"
mount --bind "$T/log" /var/log
# /opt keeps what it holds (the tmpfs gets a bind of each entry), plus /opt/aitbc-miner.
mkdir -p "$T/opt-host"
mount --bind /opt "$T/opt-host"
mount -t tmpfs tmpfs /opt
for entry in "$T/opt-host"/* "$T/opt-host"/.[!.]*; do
  [ -e "$entry" ] || continue
  name=$(basename "$entry")
  [ "$name" = aitbc-miner ] && continue
  if [ -d "$entry" ]; then mkdir "/opt/$name"; else touch "/opt/$name"; fi
  mount --rbind "$entry" "/opt/$name"
done
mkdir /opt/aitbc-miner
mount --bind "$T/aitbc-miner" /opt/aitbc-miner
set -a; . "$T/miner.conf"; set +a
exec /bin/bash "$2"
"""


@pytest.fixture
def _needs_tools():
    """The script's tools (CI installs them: .ci/run), and torch for its torch_bench (the
    compute extra: without it, as the README's plain ``make test`` runs, this skips)."""
    missing = [t for t in ("bash", "curl", "jq", "unshare", "sha256sum") if shutil.which(t) is None]
    if missing and os.environ.get("CI"):
        raise RuntimeError(f"CI must install {missing} (.ci/run installs curl and jq)")
    if missing:
        pytest.skip(f"needs {missing}")
    if not module_available("torch"):
        pytest.skip("miner.sh's torch_bench needs torch (the compute extra)")


def test_the_script_is_the_seed_guides_own():
    assert hashlib.sha256(MINER_SH.read_bytes()).hexdigest() == MINER_SH_SHA256
    if SEED.exists():  # beside a checkout with the seeds: the very block of the guide
        section = SEED.read_text().split("## 5) Miner Runtime", 1)[1]
        assert section.split("```bash\n", 1)[1].split("\n```", 1)[0] + "\n" == MINER_SH.read_text()


class Miner:
    """miner.sh in its own mount namespace and process group."""

    def __init__(self, root: Path, coord_url: str, wallet: str, script: Path) -> None:
        self.root = root
        for sub in ("log", "work", "aitbc-miner/.venv/bin"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        venv = Path(sys.executable).parent
        (root / "aitbc-miner/.venv/bin/activate").write_text(
            "# stands in for install_miner.sh's venv: the project's, which has torch\n"
            f'export VIRTUAL_ENV="{venv.parent}"\nexport PATH="{venv}:$PATH"\n'
        )
        (root / "miner.conf").write_text(
            f'COORD_URL="{coord_url}"\nWALLET_ADDR="{wallet}"\nAPI_KEY="{RIG_KEY}"\nMINER_ID="rig-1"\n'
            f'WORK_DIR="{root / "work"}"\nHEARTBEAT_SECS=20\nJOB_POLL_SECS=1\nMAX_CONCURRENCY=1\nACCEL_MODE="cpu"\n'
        )
        (root / "namespace.sh").write_text(NAMESPACE)
        user = [] if os.geteuid() == 0 else ["--user", "--map-root-user"]
        cmd = ["unshare", *user, "--mount", "--propagation", "private", "bash", str(root / "namespace.sh")]
        self.out = (root / "miner.out").open("wb")
        self.proc = subprocess.Popen(
            [*cmd, str(root), str(script)], stdout=self.out, stderr=subprocess.STDOUT, start_new_session=True
        )

    @property
    def log(self) -> str:
        path = self.root / "log" / "aitbc-miner.log"
        return path.read_text() if path.exists() else ""

    async def wait_log(self, text: str, timeout: float) -> None:
        with trio.move_on_after(timeout):
            while text not in self.log:
                if self.proc.poll() is not None:
                    break
                await trio.sleep(0.2)
            else:
                return
        raise AssertionError(f"miner.sh never logged {text!r}; its log:\n{self.log[-3000:]}\n{self.output()}")

    def output(self) -> str:
        return (self.root / "miner.out").read_text(errors="replace")[-3000:]

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.out.close()


async def _offered(proc: devnet.PeerProcess, provider: str, timeout: float, *, offered: bool) -> None:
    async with proc.rpc() as rpc:
        with trio.fail_after(timeout):
            while True:
                record = next((p for p in await rpc.providers() if p["provider"] == provider), None)
                if record is not None and ("torch_bench" in record["workloads"]) == offered:
                    return
                await trio.sleep(0.3)


def fixed_script(root: Path) -> Path:
    """miner.sh mended by examples/miner/README.md's sed line, run as written on a copy:
    the f-string's double quotes ended the ``bash -lc "..."`` string, so its torch_bench
    never ran."""
    readme = (MINER_SH.parent / "README.md").read_text()
    (line,) = [ln.strip() for ln in readme.splitlines() if ln.strip().startswith("sed -i ")]
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(MINER_SH, root / "miner.sh")
    subprocess.run(["bash", "-c", line], cwd=root, check=True)
    before, after = MINER_SH.read_text().splitlines(), (root / "miner.sh").read_text().splitlines()
    changed = [(a, b) for a, b in zip(before, after, strict=True) if a != b]
    assert changed == [(
        'print(f"throughput_ops={100}, seconds={elapsed:.4f}")',
        'print(f\\"throughput_ops={100}, seconds={elapsed:.4f}\\")',
    )]  # fmt: skip
    return root / "miner.sh"


@pytest.mark.usefixtures("_needs_tools")
async def test_miner_sh_earns_and_a_miner_that_stops_or_proves_nothing_loses_its_job(tmp_path, monkeypatch):
    spec = ProviderSpec(CHEAP, miners=(("rig-1", RIG_KEY),), miner_timeout_s=5.0, payout_percent=PAYOUT_PERCENT)
    net = write_devnet(tmp_path / "nodes", NODES, [spec, ProviderSpec(DEAR)])
    run_dir = tmp_path / "run"
    monkeypatch.setenv(CRASH_ENV, "payouts.signed")  # reached only where miners are paid: peer2
    procs = devnet.start(net.nodes, run_dir)
    monkeypatch.delenv(CRASH_ENV)  # its restart runs unarmed
    miners: list[Miner] = []
    client = load_key_file(NODES / "wallets" / "client.json", "devnet")
    wallet = make_key("rig-1 payout wallet").address
    sold_by, other = net.providers
    bench = {"n": 64, "iters": 1}

    async def submit(max_runtime_s: int) -> str:
        async with procs[0].rpc() as rpc:
            return await rpc.submit_job(client, "torch_bench", bench, max_price=aitbc(5), max_runtime_s=max_runtime_s)

    async def finished(job_id: str) -> tuple[dict, dict]:
        async with procs[0].rpc() as rpc:
            job = await rpc.wait_job(job_id, timeout=180)
            return job, await rpc.job_result(job_id)

    try:
        with trio.fail_after(120):
            await devnet.wait_ready(procs, progress=lambda s: None)
        await _offered(procs[0], other, 60, offered=True)
        await _offered(procs[0], sold_by, 10, offered=False)  # no miner heard yet: nothing to sell
        miner = Miner(tmp_path / "fixed", procs[1].info()["rpc_url"], wallet, fixed_script(tmp_path / "fixed"))
        miners.append(miner)
        await miner.wait_log("[BOOT] AITBC miner starting (id=rig-1)", 30)
        await _offered(procs[0], sold_by, 30, offered=True)

        # 1. miner.sh runs a torch_bench job with torch and is paid its share once it settles.
        job_id = await submit(120)
        job, result = await finished(job_id)
        assert job["status"] == "settled" and job["escrow"]["provider"] == sold_by, job
        await miner.wait_log(f"[JOB] done id={job_id} proof_submitted", 10)
        out = (miner.root / "work" / job_id / "out.txt").read_bytes()
        assert out.startswith(b"throughput_ops=100, seconds="), out
        assert result["ok"] and result["receipt_matches"], result
        assert result["output"] == {"miner": "rig-1", "mode": "cpu", "output_sha": hashlib.sha256(out).hexdigest()}
        owed = job["escrow"]["cost"] * PAYOUT_PERCENT // 100
        assert owed > 0
        # The peer is SIGKILLed with the payout signed and journaled, not yet submitted; on
        # restart it submits that same transfer, and the miner is paid exactly once.
        with trio.fail_after(60):
            while devnet._alive(procs[1].pid):
                await trio.sleep(0.1)
        miner.kill()  # its COORD_URL is the dead peer's port; a new one follows the restart
        procs[1] = devnet.restart_peer(run_dir, procs[1].name)
        async with procs[0].rpc() as rpc:
            with trio.fail_after(60):
                while (await rpc.account(wallet))["balance"] != owed:
                    await trio.sleep(0.3)
            transfers = [t for t in await rpc.history(wallet, 100) if t["kind"] == "transfer"]
        assert len(transfers) == 1 and transfers[0]["from"] == sold_by, transfers
        with trio.fail_after(60):
            while not (procs[1].data_dir / NODE_INFO).exists():
                await trio.sleep(0.2)
        miner = Miner(tmp_path / "fixed-2", procs[1].info()["rpc_url"], wallet, fixed_script(tmp_path / "fixed-2"))
        miners.append(miner)
        await _offered(procs[0], sold_by, 30, offered=True)

        # 2. Killed while it runs the next job: no proof comes, the job fails over to the
        # other provider past its runtime cap, and the silent miner is no longer offered.
        job_id = await submit(20)
        await miner.wait_log(f"[JOB] start id={job_id}", 60)
        miner.kill()
        job, result = await finished(job_id)
        assert job["status"] == "settled" and job["escrow"]["provider"] == other, job
        assert job["escrow"]["attempts"] == 2 and result["ok"], job
        await _offered(procs[0], sold_by, 30, offered=False)
        assert "posted no proof within the runtime cap" in procs[1].log.read_text()

        # 3. The guide's script as written: its torch_bench writes nothing, and the proof
        # of an empty output is refused, so the job fails over at once and nobody pays for it.
        seed = Miner(tmp_path / "seed", procs[1].info()["rpc_url"], wallet, MINER_SH)
        miners.append(seed)
        await _offered(procs[0], sold_by, 30, offered=True)
        job_id = await submit(120)
        job, result = await finished(job_id)
        assert job["status"] == "settled" and job["escrow"]["provider"] == other, job
        assert (seed.root / "work" / job_id / "out.txt").read_bytes() == b""
        assert "The requested URL returned error: 422" in seed.output()
        async with procs[0].rpc() as rpc:
            assert (await rpc.account(wallet))["balance"] == owed  # paid once, for the first job only
            status = await rpc.status()
        assert "produced no output" in procs[1].log.read_text()
        assert status["height"] > 0
    finally:
        for m in miners:
            m.kill()
        devnet.stop(run_dir)
