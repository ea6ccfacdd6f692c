"""Chaos: a devnet of real ``aitbc-peer`` processes under load while peers are killed,
restarted and paused on a seeded schedule; then the checks Jepsen and CometBFT's e2e
runner make (issue 21).

Load: transfers from the client's wallet to whichever peer is up (about ``--tps`` a
second), and an echo job every ``--job-every`` seconds through a live peer that does not
itself sell compute. Faults, one every 20 to 30 s (``--fault-every``), on a peer chosen
at random; the kinds come in shuffled rounds, each kind once a round:

- ``kill``: SIGKILL, down 1 to 4 s, then restarted on its data directory and ports;
- ``pause``: SIGSTOP for 5 to 15 s (its connections stay open, it answers nothing), then
  SIGCONT;
- ``drop``: every TCP connection of the peer killed at once (``ss -K``); it and the
  others must dial again;
- ``partition``: the peer cut off for 10 to 20 s (its network namespace's link down),
  then joined again;
- ``disk``: the peer's data directory (its own small tmpfs) filled to the last byte for
  5 to 15 s. A peer whose write fails exits with the error (nothing half-written: every
  block is one synced batch); the harness then restarts it as systemd's
  ``Restart=on-failure`` would, once the space is back;
- ``skew``: the peer restarted with its clock off by up to 2 s either way (the peer's
  ``AITBC_TEST_CLOCK_OFFSET_MS``), inside the 5 s a block may lead a peer's clock; it
  keeps that clock until its next fault.

``partition`` and ``drop`` need root and network namespaces (each peer then has its own,
bridged); ``disk`` needs root and a private mount namespace (the harness re-executes
itself under ``unshare --mount``).
The default, ``--faults all``, is every kind this machine allows; the JSON names those
it could not inject and why.

A peer that exits by itself (a failed write on a full disk) is restarted at once, as a
supervisor would; any other exit fails the run. After the last fault the peers get 90 s
to agree. Checked:

- ``committed_lost``: transactions some peer reported committed and final (under poa,
  a block is final once fork choice can no longer revert it; under pos at once) that a
  peer lacks, or holds at another height;
- ``divergent_heights``: heights whose block hash differs between peers (up to the
  lowest head);
- ``height_gaps``: heights a peer cannot serve below its own head;
- ``supply_conserved``: on every peer, total = balances + escrowed + staked + unbonding +
  burned = the genesis total;
- ``catch_up_s_max``: the longest a restarted or resumed peer took to reach the height
  the others had when it came back;
- ``stall_s_max``: the longest time between consecutive blocks (the blocks' own
  timestamps), and ``final_stall_s_max`` the longest the final height stood still (polled).

Prints progress to stderr; its last line is JSON:
{"bench": "chaos", "consensus": ..., "faults": ..., "committed_lost": 0, "divergent_heights": 0,
 "supply_conserved": true, "catch_up_s_max": ..., "stall_s_max": ..., ...}
Run: .venv/bin/python bench/chaos.py --consensus pos --minutes 10
     .venv/bin/python bench/chaos.py --consensus poa --peers 4 --minutes 10   (nodes/devnet and a 4th authority)
Exit status 1 when a check fails (lost, divergent, gap, supply, a peer that never caught
up or is unreachable at the end, or a peer that exited by itself for another reason than
a full disk).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from aitbc_p2p.cli import devnet
from aitbc_p2p.cli.devnet import DEVNET_WALLET_PASSWORD, PeerProcess
from aitbc_p2p.cli.peer import CLOCK_OFFSET_ENV
from aitbc_p2p.crypto import PrivateKey, load_key_file
from aitbc_p2p.exceptions import AitbcError, RpcError
from aitbc_p2p.testing import make_key, netns
from aitbc_p2p.types import aitbc

ROOT = Path(__file__).resolve().parents[1]
NODES = {"poa": ROOT / "nodes" / "devnet", "pos": ROOT / "nodes" / "pos-devnet"}
SINK = "aitbc1r44jyhgqkngl74ur7234ltghvx0z578cnfwdr6"  # the devnets' genesis wallet
SETTLE_S = 90.0
CATCH_UP_LIMIT_S = 120.0
KINDS = ("kill", "pause", "drop", "partition", "disk", "skew")
MOUNT_NS_ENV = "AITBC_CHAOS_MOUNT_NS"
MAX_SKEW_S = 2.0
"""Within the 5 s a block's timestamp may lead a peer's clock (MAX_FUTURE_MS), even
between two peers skewed opposite ways."""
DATA_FS = "size=256m"
"""Each peer's data directory under the ``disk`` fault: a tmpfs of this size."""


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


@dataclass
class Run:
    procs: list[PeerProcess]
    down: set[str] = field(default_factory=set)
    """Peers killed or paused now: no load is sent to them and they are not polled."""
    submitted: int = 0
    pending: dict[str, float] = field(default_factory=dict)
    """Accepted transactions not yet seen committed, with when they were sent."""
    committed: dict[str, int] = field(default_factory=dict)
    """Transactions some peer reported committed, with the height it named."""
    faults: list[dict[str, Any]] = field(default_factory=list)
    catch_ups: list[float] = field(default_factory=list)
    never_caught_up: list[str] = field(default_factory=list)
    final_stalls: list[float] = field(default_factory=list)
    jobs: dict[str, int] = field(default_factory=dict)
    job_errors: list[str] = field(default_factory=list)
    exits: list[dict[str, str]] = field(default_factory=list)
    """Peers that exited by themselves (restarted by the supervisor), with their last log line."""
    job_ids: list[tuple[str, str]] = field(default_factory=list)
    """Each job submitted, with the peer it went through (which may be killed under it)."""

    def live(self) -> list[PeerProcess]:
        return [p for p in self.procs if p.name not in self.down]


class Lab:
    """What this machine lets the harness do to its peers, and how.

    ``unavailable``: fault kinds it cannot inject here, with the reason."""

    def __init__(self, peers: int, wanted: list[str]) -> None:
        self.unavailable: dict[str, str] = {}
        self.nets: netns.Namespaces | None = None
        self.mounts: list[Path] = []
        root = os.geteuid() == 0
        if {"partition", "drop"} & set(wanted):
            reason = netns.unavailable() if shutil.which("ss") else "needs ss (iproute2)"
            if reason is None:
                self.nets = netns.Namespaces(peers)
            else:
                self.unavailable |= {"partition": reason, "drop": reason}
        if "disk" in wanted and not (root and os.environ.get(MOUNT_NS_ENV)):
            self.unavailable["disk"] = "needs root and a private mount namespace (unshare --mount)"

    def kinds(self, wanted: list[str]) -> list[str]:
        return [k for k in wanted if k not in self.unavailable]

    def up(self) -> None:
        if self.nets is not None:
            self.nets.up()

    def down(self) -> None:
        for mount in self.mounts:
            subprocess.run(["umount", "-l", str(mount)], capture_output=True, check=False)
        if self.nets is not None:
            self.nets.down()

    def start(self, nodes: Path, run_dir: Path, disk: bool) -> list[PeerProcess]:
        def tmpfs(data_dir: Path) -> None:
            subprocess.run(["mount", "-t", "tmpfs", "-o", DATA_FS, "tmpfs", str(data_dir)], check=True)
            self.mounts.append(data_dir)

        if self.nets is None:
            return devnet.start(nodes, run_dir, prepare=tmpfs if disk else None)
        return devnet.start(nodes, run_dir, hosts=self.nets.hosts, wrap=self.nets.wrap, prepare=tmpfs if disk else None)

    @staticmethod
    def skewed(offset_s: float) -> tuple[str, ...]:
        """The prefix that runs a peer with its clock ``offset_s`` off the host's (the
        peer's testing knob: libfaketime, tried first, serializes every clock read of a
        threaded process on one lock and stalled peers for tens of seconds)."""
        return ("env", f"{CLOCK_OFFSET_ENV}={round(offset_s * 1000)}")


def poa_devnet(root: Path, peers: int) -> Path:
    """nodes/devnet with ``peers - 3`` more authorities (published test keys), each a peer
    like peer2: a new chain (the genesis names them), the same wallets."""
    shutil.copytree(NODES["poa"], root)
    genesis = json.loads((root / "genesis.json").read_text())
    template = (root / "peer2.toml").read_text()
    for i in range(4, peers + 1):
        key = make_key(f"chaos-authority-{i}")
        (root / "keys" / f"peer{i}.key").write_text(key.secret.hex() + "\n")
        (root / f"peer{i}.toml").write_text(template.replace("peer2", f"peer{i}").replace("peer 2", f"peer {i}"))
        genesis["consensus"]["authorities"].append(key.address)
    (root / "genesis.json").write_text(json.dumps(genesis, indent=2))
    return root


async def status(proc: PeerProcess) -> dict[str, Any] | None:
    try:
        async with proc.rpc() as rpc:
            answer: dict[str, Any] = await rpc.status()
            return answer
    except (RpcError, OSError, ValueError, KeyError):
        return None


async def ask(run: Run, proc: PeerProcess, tx_hash: str) -> bool | None:
    """Whether ``proc`` reports ``tx_hash`` committed and final (noting its height), or None if it
    did not answer."""
    try:
        async with proc.rpc() as rpc:
            found = await rpc.tx_status(tx_hash)
    except (RpcError, OSError):
        return None
    if found.get("status") != "committed" or not found.get("final"):
        return False  # a block fork choice may still revert (poa) is no promise yet: ask again
    run.committed[tx_hash] = int(found["height"])
    run.pending.pop(tx_hash, None)
    return True


async def load(run: Run, key: PrivateKey, rng: random.Random, tps: float) -> None:
    """Transfers of one base unit to the genesis wallet, each to a live peer at random."""
    while True:
        live = run.live()
        if live:
            try:
                async with rng.choice(live).rpc() as rpc:
                    tx_hash = await rpc.transfer(key, SINK, 1)
                run.submitted += 1
                run.pending[tx_hash] = time.monotonic()
            except (RpcError, OSError, KeyError):
                pass  # a peer killed under us, a nonce that raced another peer: the load goes on
        await trio.sleep(1 / tps)


async def confirm(run: Run, rng: random.Random) -> None:
    """Ask a live peer about each pending transaction; note the height of those committed."""
    while True:
        live = run.live()
        for tx_hash in list(run.pending)[:200]:
            if not live:
                break
            await ask(run, rng.choice(live), tx_hash)
        for tx_hash, sent in list(run.pending.items()):  # never to commit: replaced, or dropped with a peer
            if time.monotonic() - sent > 300:
                run.pending.pop(tx_hash)
        await trio.sleep(1)


async def jobs(run: Run, key: PrivateKey, rng: random.Random, every: float) -> None:
    """An echo job now and then through a live peer; its outcome is counted, not checked."""

    async def one(proc: PeerProcess, i: int) -> None:
        outcome = "unreachable"
        try:
            async with proc.rpc() as rpc:
                job_id = await rpc.submit_job(
                    key, "echo", {"message": f"chaos {i}"}, max_price=aitbc(1), max_runtime_s=20
                )
                run.job_ids.append((proc.name, job_id))
                outcome = (await rpc.wait_job(job_id, timeout=180))["status"]
        except (AitbcError, OSError, TimeoutError, trio.TooSlowError) as e:
            outcome = type(e).__name__
            run.job_errors.append(f"{proc.name}: {e}"[:160])
        run.jobs[outcome] = run.jobs.get(outcome, 0) + 1

    async with trio.open_nursery() as nursery:
        for i in itertools.count():
            await trio.sleep(every)
            # Not through a provider's own peer: it does not bid on offers made through
            # itself (its own gossip does not come back to it), so there the job would
            # find no bid where it is the only provider.
            clients = [p for p in run.live() if (s := await status(p)) is not None and s["provider"] is None]
            if clients:
                nursery.start_soon(one, rng.choice(clients), i)


def last_line(proc: PeerProcess) -> str:
    lines = proc.log.read_text(errors="replace").strip().splitlines()
    return lines[-1][:200] if lines else ""


async def supervise(run: Run, run_dir: Path) -> None:
    """Restart a peer that exited by itself (not one a fault holds down), as systemd's
    ``Restart=on-failure`` would; each exit is reported with its last log line."""
    while True:
        await trio.sleep(0.5)
        for i, proc in enumerate(run.procs):
            if proc.name in run.down or devnet._alive(proc.pid):
                continue
            run.exits.append({"peer": proc.name, "last_line": last_line(proc)})
            say(f"{proc.name} exited by itself ({run.exits[-1]['last_line']}); restarting it")
            run.procs[i] = devnet.restart_peer(run_dir, proc.name)


async def watch_finality(run: Run) -> None:
    last, since = -1, time.monotonic()
    while True:
        heights = [s["final_height"] for s in [await status(p) for p in run.live()] if s]
        if heights and max(heights) > last:
            if last >= 0:
                run.final_stalls.append(time.monotonic() - since)
            last, since = max(heights), time.monotonic()
        await trio.sleep(0.5)


async def caught_up(run: Run, proc: PeerProcess, target: int, since: float) -> None:
    """Time until ``proc`` (back from a fault) reaches ``target``, the others' height then."""
    while time.monotonic() - since < CATCH_UP_LIMIT_S:
        s = await status(proc)
        if s is not None and s["height"] >= target:
            run.catch_ups.append(time.monotonic() - since)
            return
        await trio.sleep(0.25)
    run.never_caught_up.append(proc.name)


def fill(directory: Path) -> Path:
    """Fill the file system that holds ``directory`` to the last byte; the file doing it."""
    filler = directory / ".chaos-filler"
    with filler.open("wb", buffering=0) as f:
        fs = os.statvfs(directory)
        try:
            os.posix_fallocate(f.fileno(), 0, max(1, fs.f_bavail * fs.f_frsize))
        except OSError:
            pass
        f.seek(0, os.SEEK_END)
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError:  # ENOSPC: full
            pass
    return filler


def kind_rounds(kinds: list[str], rng: random.Random) -> Iterator[str]:
    """The fault kinds in shuffled rounds: every kind once a round, in a seeded order."""
    while True:
        round_ = list(kinds)
        rng.shuffle(round_)
        yield from round_


async def inject(run: Run, run_dir: Path, lab: Lab, rng: random.Random, kind: str, nursery: trio.Nursery) -> None:
    i = rng.randrange(len(run.procs))
    victim = run.procs[i]
    run.down.add(victim.name)
    fault: dict[str, Any] = {"kind": kind, "peer": victim.name}
    prefix: tuple[str, ...] | None = None  # restart the victim (under this prefix)
    if kind == "kill":
        os.kill(victim.pid, signal.SIGKILL)
        await trio.sleep(rng.uniform(1, 4))
        prefix = ()
    elif kind == "pause":
        os.kill(victim.pid, signal.SIGSTOP)
        await trio.sleep(rng.uniform(5, 15))
        os.kill(victim.pid, signal.SIGCONT)
    elif kind == "drop":
        assert lab.nets is not None
        fault["connections"] = lab.nets.drop_connections(i)
    elif kind == "partition":
        assert lab.nets is not None
        lab.nets.cut(i, off=True)
        fault["seconds"] = round(rng.uniform(10, 20), 1)
        await trio.sleep(fault["seconds"])
        lab.nets.cut(i, off=False)
    elif kind == "disk":
        filler = await trio.to_thread.run_sync(fill, victim.data_dir)
        await trio.sleep(rng.uniform(5, 15))
        filler.unlink()
        if not devnet._alive(victim.pid):  # it stopped on the failed write: a supervisor restarts it
            fault["exited"] = last_line(victim)
            prefix = ()
    elif kind == "skew":
        os.kill(victim.pid, signal.SIGKILL)
        fault["offset_s"] = round(rng.uniform(-MAX_SKEW_S, MAX_SKEW_S), 3)
        prefix = lab.skewed(fault["offset_s"])
    if prefix is not None:
        while devnet._alive(victim.pid):  # noqa: ASYNC110 (reaping our killed child)
            await trio.sleep(0.05)
        run.procs[i] = victim = devnet.restart_peer(run_dir, victim.name, prefix=prefix)
        with trio.fail_after(60):
            while not (victim.data_dir / "node.json").exists():  # noqa: ASYNC110 (another process writes it)
                await trio.sleep(0.1)
    others = [s["height"] for s in [await status(p) for p in run.live()] if s]  # as it comes back
    run.down.discard(victim.name)
    fault["at_height"] = target = max([*others, 0])
    run.faults.append(fault)
    extra = "".join(f", {k} {v}" for k, v in fault.items() if k not in ("kind", "peer", "at_height"))
    say(f"fault {len(run.faults)}: {kind} {victim.name} (others at {target}{extra})")
    nursery.start_soon(caught_up, run, victim, target, time.monotonic())


async def settle(run: Run) -> int:
    """Wait until every peer is up and the heads are within one block; the lowest head."""
    with trio.move_on_after(SETTLE_S):
        while True:
            states = [await status(p) for p in run.procs]
            if all(states) and max(s["height"] for s in states) - min(s["height"] for s in states) <= 1:  # type: ignore[index]
                return min(s["height"] for s in states)  # type: ignore[index]
            await trio.sleep(0.5)
    heights = [s["height"] if s else -1 for s in [await status(p) for p in run.procs]]
    say(f"peers did not agree within {SETTLE_S:.0f} s: heights {heights}")
    return max(0, min(heights))


async def job_outcomes(run: Run) -> dict[str, int]:
    """Each submitted job's status now, at the peer it went through (restarted or not):
    the escrows of agents killed mid-job must still end, settled or refunded."""
    found: dict[str, int] = {}
    by_name = {p.name: p for p in run.procs}
    for name, job_id in run.job_ids:
        try:
            async with by_name[name].rpc() as rpc:
                state = (await rpc.job(job_id))["status"]
        except (RpcError, OSError) as e:
            state = f"unknown ({type(e).__name__})"
        found[state] = found.get(state, 0) + 1
    return found


async def check(run: Run, top: int) -> dict[str, Any]:
    hashes: dict[int, set[str]] = {}
    stamps: dict[int, int] = {}
    gaps = 0
    supply_ok = True
    lost = 0
    unreachable: list[str] = []
    for proc in run.procs:
        if await status(proc) is None:
            unreachable.append(proc.name)
            continue
        async with proc.rpc() as rpc:
            for height in range(0, top + 1):
                try:
                    header = (await rpc._call("GET", f"/v1/blocks/{height}"))["header"]
                except RpcError:
                    gaps += 1
                    continue
                hashes.setdefault(height, set()).add(header["hash"])
                stamps.setdefault(height, header["timestamp_ms"])
            s = await rpc.supply()
            parts = s["balances"] + s["escrowed"] + s["staked"] + s["unbonding"] + s["burned"]
            supply_ok &= s["total"] == s["genesis_total"] == parts
            for tx_hash, height in run.committed.items():
                if height > top:
                    continue
                try:
                    found = await rpc.tx_status(tx_hash)
                except RpcError:
                    found = {}
                if found.get("status") != "committed" or found.get("height") != height:
                    lost += 1
    divergent = sum(1 for seen in hashes.values() if len(seen) > 1)
    stops = [(b - a) / 1000 for a, b in itertools.pairwise(stamps[h] for h in sorted(stamps) if h > 0)]
    return {
        "committed_lost": lost,
        "divergent_heights": divergent,
        "height_gaps": gaps,
        "supply_conserved": supply_ok and not unreachable,
        "stall_s_max": round(max(stops, default=0.0), 2),
        "unreachable_at_end": unreachable,
    }


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--consensus", choices=sorted(NODES), default="pos")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument(
        "--fault-count", type=int, help="inject exactly this many faults (however long they take) instead of --minutes"
    )
    parser.add_argument(
        "--peers", type=int, help="poa: this many authorities (4 or more: nodes/devnet's three and more); pos: 4"
    )
    parser.add_argument("--seed", type=int, default=20261203)
    parser.add_argument("--fault-every", type=float, nargs=2, default=(20.0, 30.0), metavar=("MIN_S", "MAX_S"))
    parser.add_argument(
        "--faults",
        default="all",
        help=f"fault kinds, comma-separated, from {', '.join(KINDS)}; all: every kind this machine allows",
    )
    parser.add_argument("--tps", type=float, default=5.0, help="transfers a second")
    parser.add_argument("--job-every", type=float, default=30.0, help="seconds between echo jobs")
    args = parser.parse_args()
    wanted = list(KINDS) if args.faults == "all" else [k for k in args.faults.split(",") if k]
    if not wanted or set(wanted) - set(KINDS):
        parser.error(f"--faults takes all or some of {', '.join(KINDS)}")
    if "disk" in wanted and os.geteuid() == 0 and not os.environ.get(MOUNT_NS_ENV) and shutil.which("unshare"):
        # Each peer's data directory becomes a small tmpfs, mounted where only this run sees it.
        argv = ["unshare", "--mount", "--propagation", "private", sys.executable, *sys.argv]
        os.execvpe("unshare", argv, {**os.environ, MOUNT_NS_ENV: "1"})
    nodes = NODES[args.consensus]
    if args.peers is not None and args.peers != len(devnet.peer_configs(nodes)):
        if args.consensus != "poa" or args.peers < 3:
            parser.error("--peers: poa takes 3 or more; pos runs its devnet's 4")
        nodes = poa_devnet(Path(tempfile.mkdtemp(prefix="aitbc-chaos-nodes-")) / "devnet", args.peers)
    lab = Lab(len(devnet.peer_configs(nodes)), wanted)
    kinds = lab.kinds(wanted)
    if args.faults != "all" and len(kinds) < len(wanted):
        parser.error(f"cannot inject here: {lab.unavailable}")
    if lab.unavailable:
        say(f"not injected on this machine: {lab.unavailable}")
    rng = random.Random(args.seed)
    faults_rng = random.Random(args.seed)
    """The faults' own draws (victim, kind, timing): the same for a seed whatever the load's
    tasks draw meanwhile."""
    key = load_key_file(nodes / "wallets" / "client.json", DEVNET_WALLET_PASSWORD)
    order = kind_rounds(kinds, faults_rng)
    with tempfile.TemporaryDirectory(prefix="aitbc-chaos-") as tmp, ExitStack() as cleanup:
        run_dir = Path(tmp) / "run"
        cleanup.callback(lab.down)  # after the peers stop (below), before the directory goes
        lab.up()
        where = "each in its own network namespace" if lab.nets else "on 127.0.0.1"
        say(f"starting the {args.consensus} devnet ({len(devnet.peer_configs(nodes))} peers, {where}) in {run_dir}")
        run = Run(lab.start(nodes, run_dir, disk="disk" in kinds))
        try:
            await devnet.wait_ready(run.procs, progress=lambda s: None, timeout=120)
            started = time.monotonic()
            async with trio.open_nursery() as background:
                background.start_soon(load, run, key, rng, args.tps)
                background.start_soon(confirm, run, rng)
                background.start_soon(jobs, run, key, rng, args.job_every)
                background.start_soon(watch_finality, run)
                background.start_soon(supervise, run, run_dir)
                async with trio.open_nursery() as catch_ups:
                    while (
                        len(run.faults) < args.fault_count
                        if args.fault_count is not None
                        else time.monotonic() - started < args.minutes * 60
                    ):
                        await trio.sleep(faults_rng.uniform(*args.fault_every))
                        await inject(run, run_dir, lab, faults_rng, next(order), catch_ups)
                    took = (time.monotonic() - started) / 60
                    say(f"{len(run.faults)} faults in {took:.1f} min; waiting for the peers to agree")
                    top = await settle(run)
                background.cancel_scope.cancel()
            with trio.fail_after(30):  # the last confirmations, from a settled chain
                await confirm_once(run)
            figures = await check(run, top)
            figures["jobs_now"] = await job_outcomes(run)
        finally:
            logs = Path(tempfile.mkdtemp(prefix="aitbc-chaos-logs-"))
            for p in run.procs:
                shutil.copy(p.log, logs / p.log.name)
            say(f"peer logs kept in {logs}")
            for p in run.procs:  # a paused peer would not stop
                try:
                    os.kill(p.pid, signal.SIGCONT)
                except ProcessLookupError:
                    pass
            devnet.stop(run_dir)
    result = {
        "bench": "chaos",
        "consensus": args.consensus,
        "peers": len(run.procs),
        "minutes": round(took, 2),  # faults included (with --fault-count, however long they took)
        "seed": args.seed,
        "faults": len(run.faults),
        "faults_by_kind": {k: sum(1 for f in run.faults if f["kind"] == k) for k in kinds},
        "kinds_unavailable": lab.unavailable,
        "disk_exits": sum(1 for f in run.faults if "exited" in f),
        "exits": run.exits,
        "unexpected_exits": [e for e in run.exits if "No space left on device" not in e["last_line"]],
        "txs_submitted": run.submitted,
        "txs_committed": len(run.committed),
        **figures,
        "catch_up_s_max": round(max(run.catch_ups, default=0.0), 2),
        "never_caught_up": run.never_caught_up,
        "final_stall_s_max": round(max(run.final_stalls, default=0.0), 2),
        "jobs": run.jobs,
        "job_errors": run.job_errors[:5],
        "height": top,
    }
    ok = (
        result["committed_lost"] == 0
        and result["divergent_heights"] == 0
        and result["height_gaps"] == 0
        and result["supply_conserved"]
        and not run.never_caught_up
        and not result["unreachable_at_end"]
        and not result["unexpected_exits"]
    )
    say(
        f"{result['faults']} faults; {result['txs_committed']} of {result['txs_submitted']} transfers committed; "
        f"lost {result['committed_lost']}, divergent heights {result['divergent_heights']}, "
        f"supply {'conserved' if result['supply_conserved'] else 'NOT conserved'}; catch-up max "
        f"{result['catch_up_s_max']} s, longest stop {result['stall_s_max']} s; jobs {run.jobs}"
    )
    print(json.dumps(result))
    return 0 if ok else 1


async def confirm_once(run: Run) -> None:
    """One pass over the pending transactions against the settled peers."""
    for tx_hash in list(run.pending):
        for proc in run.procs:
            if await ask(run, proc, tx_hash) is not None:
                break


if __name__ == "__main__":
    sys.exit(trio.run(main))
