"""Chaos: a devnet of real ``aitbc-peer`` processes under load while peers are killed,
restarted and paused on a seeded schedule; then the checks Jepsen and CometBFT's e2e
runner make (issue 21).

Load: transfers from the client's wallet to whichever peer is up (about ``--tps`` a
second), and an echo job every ``--job-every`` seconds through a live peer that does not
itself sell compute. Faults, one
every 20 to 30 s (``--fault-every``), on a peer chosen at random:

- ``kill``: SIGKILL, down 1 to 4 s, then restarted on its data directory and ports;
- ``pause``: SIGSTOP for 5 to 15 s (its connections stay open, it answers nothing), then
  SIGCONT.

After the last fault the peers get 90 s to agree. Checked:

- ``committed_lost``: transactions some peer reported committed that a peer lacks, or
  holds at another height;
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
Exit status 1 when a check fails (lost, divergent, gap, supply, or a peer that never caught up).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from aitbc_p2p.cli import devnet
from aitbc_p2p.cli.devnet import DEVNET_WALLET_PASSWORD, PeerProcess
from aitbc_p2p.crypto import PrivateKey, load_key_file
from aitbc_p2p.exceptions import AitbcError, RpcError
from aitbc_p2p.types import aitbc

ROOT = Path(__file__).resolve().parents[1]
NODES = {"poa": ROOT / "nodes" / "devnet", "pos": ROOT / "nodes" / "pos-devnet"}
SINK = "aitbc1r44jyhgqkngl74ur7234ltghvx0z578cnfwdr6"  # the devnets' genesis wallet
SETTLE_S = 90.0
CATCH_UP_LIMIT_S = 120.0


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
    job_ids: list[tuple[str, str]] = field(default_factory=list)
    """Each job submitted, with the peer it went through (which may be killed under it)."""

    def live(self) -> list[PeerProcess]:
        return [p for p in self.procs if p.name not in self.down]


async def status(proc: PeerProcess) -> dict[str, Any] | None:
    try:
        async with proc.rpc() as rpc:
            answer: dict[str, Any] = await rpc.status()
            return answer
    except (RpcError, OSError, ValueError, KeyError):
        return None


async def ask(run: Run, proc: PeerProcess, tx_hash: str) -> bool | None:
    """Whether ``proc`` reports ``tx_hash`` committed (noting its height), or None if it
    did not answer."""
    try:
        async with proc.rpc() as rpc:
            found = await rpc.tx_status(tx_hash)
    except (RpcError, OSError):
        return None
    if found.get("status") != "committed":
        return False
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


async def inject(run: Run, run_dir: Path, rng: random.Random, kinds: list[str], nursery: trio.Nursery) -> None:
    i = rng.randrange(len(run.procs))
    victim, kind = run.procs[i], rng.choice(kinds)
    run.down.add(victim.name)
    if kind == "kill":
        os.kill(victim.pid, signal.SIGKILL)
        await trio.sleep(rng.uniform(1, 4))
        run.procs[i] = victim = devnet.restart_peer(run_dir, victim.name)
        with trio.fail_after(60):
            while not (victim.data_dir / "node.json").exists():  # noqa: ASYNC110 (another process writes it)
                await trio.sleep(0.1)
    else:
        os.kill(victim.pid, signal.SIGSTOP)
        await trio.sleep(rng.uniform(5, 15))
        os.kill(victim.pid, signal.SIGCONT)
    others = [s["height"] for s in [await status(p) for p in run.live()] if s]  # as it comes back
    run.down.discard(victim.name)
    target = max([*others, 0])
    run.faults.append({"kind": kind, "peer": victim.name, "at_height": target})
    say(f"fault {len(run.faults)}: {kind} {victim.name} (others at {target})")
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
    for proc in run.procs:
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
        "supply_conserved": supply_ok,
        "stall_s_max": round(max(stops, default=0.0), 2),
    }


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--consensus", choices=sorted(NODES), default="pos")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument(
        "--fault-count", type=int, help="inject exactly this many faults (however long they take) instead of --minutes"
    )
    parser.add_argument("--seed", type=int, default=20261203)
    parser.add_argument("--fault-every", type=float, nargs=2, default=(20.0, 30.0), metavar=("MIN_S", "MAX_S"))
    parser.add_argument("--faults", default="kill,pause", help="fault kinds to draw from (kill, pause)")
    parser.add_argument("--tps", type=float, default=5.0, help="transfers a second")
    parser.add_argument("--job-every", type=float, default=30.0, help="seconds between echo jobs")
    args = parser.parse_args()
    kinds = [k for k in args.faults.split(",") if k]
    if not kinds or set(kinds) - {"kill", "pause"}:
        parser.error("--faults takes kill and/or pause")
    rng = random.Random(args.seed)
    faults_rng = random.Random(args.seed)
    """The faults' own draws (victim, kind, timing): the same for a seed whatever the load's
    tasks draw meanwhile."""
    nodes = NODES[args.consensus]
    key = load_key_file(nodes / "wallets" / "client.json", DEVNET_WALLET_PASSWORD)
    with tempfile.TemporaryDirectory(prefix="aitbc-chaos-") as tmp:
        run_dir = Path(tmp) / "run"
        say(f"starting the {args.consensus} devnet ({len(devnet.peer_configs(nodes))} peers) in {run_dir}")
        run = Run(devnet.start(nodes, run_dir))
        try:
            await devnet.wait_ready(run.procs, progress=lambda s: None, timeout=120)
            started = time.monotonic()
            async with trio.open_nursery() as background:
                background.start_soon(load, run, key, rng, args.tps)
                background.start_soon(confirm, run, rng)
                background.start_soon(jobs, run, key, rng, args.job_every)
                background.start_soon(watch_finality, run)
                async with trio.open_nursery() as catch_ups:
                    while (
                        len(run.faults) < args.fault_count
                        if args.fault_count is not None
                        else time.monotonic() - started < args.minutes * 60
                    ):
                        await trio.sleep(faults_rng.uniform(*args.fault_every))
                        await inject(run, run_dir, faults_rng, kinds, catch_ups)
                    took = (time.monotonic() - started) / 60
                    say(f"{len(run.faults)} faults in {took:.1f} min; waiting for the peers to agree")
                    top = await settle(run)
                background.cancel_scope.cancel()
            with trio.fail_after(30):  # the last confirmations, from a settled chain
                await confirm_once(run)
            figures = await check(run, top)
            figures["jobs_now"] = await job_outcomes(run)
        finally:
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
