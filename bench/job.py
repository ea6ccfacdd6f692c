"""Job latency: the devnet's three ``aitbc-peer`` processes on 127.0.0.1, echo jobs from
the client's wallet through the SDK, as an agent would send them.

For each job: submit (offer, bids, choice, escrow) until the result is at the client's
peer (``result_available`` in the job's event stream, ``GET /v1/jobs/<id>/events``), minus
the provider's compute time (the result's ``compute_ms``): the market's **overhead**. Also the
time until the escrow is settled (the provider settles at once with the client peer's
delivery ack, instead of after ``dispute_blocks``). First ``--jobs`` jobs one at a time,
then ``--concurrent`` jobs in flight at once (twice as many jobs): overhead p50/p99 and
jobs per second. The jobs sent one at a time start at a random moment of the block
interval, as an agent's would (back to back, each would start just after a block).

Time to first token: ``--jobs`` echo jobs streamed in 4 chunks 50 ms apart; each chunk
carries the worker's wall clock when it was made (the peers share this machine's clock),
so the client's time to first token minus the provider's is the first chunk's arrival at
the SDK minus that stamp: ``ttft_overhead_ms`` (p50; the issue's bound is 100 ms).

Baselines in the same run: the devnet's block interval (measured from the heights seen)
and an RPC round trip (``GET /v1/status``).

Prints progress and a table to stderr; its last line is JSON:
{"bench": "job", "overhead_ms_p50": ..., "overhead_ms_p99": ..., "ttft_overhead_ms": ...,
 "jobs_per_s": ..., "block_interval_ms": ..., "overhead_blocks_p50": ..., ...}
Run: .venv/bin/python bench/job.py [--jobs 10] [--concurrent 20]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from contextlib import aclosing
from pathlib import Path
from typing import Any

import trio

from aitbc_p2p.cli import devnet
from aitbc_p2p.cli.devnet import DEVNET_WALLET_PASSWORD
from aitbc_p2p.crypto import PrivateKey, load_key_file
from aitbc_p2p.rpc.client import RpcClient
from aitbc_p2p.types import aitbc

NODES = Path(__file__).resolve().parents[1] / "nodes" / "devnet"


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def one_job(rpc: RpcClient, key: PrivateKey, i: int, *, stream: bool = False) -> dict[str, float]:
    params: dict[str, Any] = {"message": f"bench {i}"}
    if stream:
        params.update(chunks=4, interval_ms=50)
    start = time.perf_counter()
    job_id = await rpc.submit_job(key, "echo", params, max_price=aitbc(5), max_runtime_s=10)
    escrowed = time.perf_counter()
    delivered = settled = 0.0
    first_token_ms = -1.0
    with trio.fail_after(60):
        async with aclosing(rpc.stream_job(job_id)) as events:
            async for event in events:
                data = event["data"]
                if event["event"] == "progress":
                    if first_token_ms < 0:
                        first_token_ms = time.time_ns() / 1e6 - data["at_ms"]
                    continue
                if data["status"] in ("failed", "refunded"):
                    raise RuntimeError(f"job {job_id[:16]} {data['status']}: {data.get('error')}")
                if data.get("result_available") and not delivered:
                    delivered = time.perf_counter()
                if data["status"] == "settled":
                    settled = time.perf_counter()
    compute_ms = (await rpc.job_result(job_id))["metrics"]["compute_ms"]
    total_ms = (delivered - start) * 1000
    return {
        "total_ms": total_ms,
        "compute_ms": compute_ms,
        "overhead_ms": total_ms - compute_ms,
        "escrow_ms": (escrowed - start) * 1000,
        "settle_ms": (settled - delivered) * 1000,
        "token_ms": first_token_ms,
    }


async def run(jobs: int, concurrent: int, run_dir: Path) -> dict[str, Any]:
    procs = devnet.start(NODES, run_dir)
    try:
        await devnet.wait_ready(procs, progress=say)
        key = load_key_file(NODES / "wallets" / "client.json", DEVNET_WALLET_PASSWORD)
        async with procs[0].rpc() as rpc:
            with trio.fail_after(30):
                while True:
                    if await rpc.providers():
                        break
                    await trio.sleep(0.2)
            rtts = []
            for _ in range(20):
                t = time.perf_counter()
                await rpc.status()
                rtts.append((time.perf_counter() - t) * 1000)
            h0, t0 = (await rpc.status())["height"], time.monotonic()
            say(f"{jobs} jobs one at a time, each at a random moment of the block interval ...")
            phase = random.Random(7)
            serial = []
            for i in range(jobs):
                # Jobs sent back to back would all start just after a block (their
                # predecessor's result comes with one) and wait a whole interval for
                # their escrow's; an agent's job comes at any moment.
                await trio.sleep(phase.uniform(0, 1))
                serial.append(await one_job(rpc, key, i))
            say(f"{jobs} jobs streaming their output, one at a time ...")
            streamed = []
            for i in range(jobs):
                await trio.sleep(phase.uniform(0, 1))
                streamed.append(await one_job(rpc, key, 10_000 + i, stream=True))
            say(f"{2 * concurrent} jobs, {concurrent} in flight ...")
            parallel: list[dict[str, float]] = []
            limit = trio.Semaphore(concurrent)

            async def bounded(i: int) -> None:
                async with limit:
                    parallel.append(await one_job(rpc, key, jobs + i))

            wall = time.perf_counter()
            async with trio.open_nursery() as nursery:
                for i in range(2 * concurrent):
                    nursery.start_soon(bounded, i)
            wall = time.perf_counter() - wall
            h1, t1 = (await rpc.status())["height"], time.monotonic()
    finally:
        for line in devnet.stop(run_dir):
            say(f"  {line}")
    block_ms = (t1 - t0) * 1000 / max(1, h1 - h0)
    overhead = [j["overhead_ms"] for j in serial]
    crowd = [j["overhead_ms"] for j in parallel]
    return {
        "bench": "job",
        "workload": "echo",
        "jobs": jobs,
        "concurrent": concurrent,
        "overhead_ms_p50": round(statistics.median(overhead), 1),
        "overhead_ms_p99": round(pct(overhead, 0.99), 1),
        "overhead_ms_p50_concurrent": round(statistics.median(crowd), 1),
        "overhead_ms_p99_concurrent": round(pct(crowd, 0.99), 1),
        "escrow_ms_p50": round(statistics.median(j["escrow_ms"] for j in serial), 1),
        "settle_ms_p50": round(statistics.median(j["settle_ms"] for j in serial), 1),
        "compute_ms_p50": round(statistics.median(j["compute_ms"] for j in serial), 1),
        "ttft_overhead_ms": round(statistics.median(j["token_ms"] for j in streamed), 1),
        "ttft_overhead_ms_p99": round(pct([j["token_ms"] for j in streamed], 0.99), 1),
        "jobs_per_s": round(len(parallel) / wall, 2),
        "block_interval_ms": round(block_ms, 1),
        "rpc_rtt_ms": round(statistics.median(rtts), 2),
        "overhead_blocks_p50": round(statistics.median(overhead) / block_ms, 2),
        "settle_blocks_p50": round(statistics.median(j["settle_ms"] for j in serial) / block_ms, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=10, help="jobs sent one at a time")
    parser.add_argument("--concurrent", type=int, default=20, help="jobs in flight at once (twice as many sent)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="aitbc-bench-job-") as tmp:
        out = trio.run(run, args.jobs, args.concurrent, Path(tmp) / "run")
    rows = [
        ("overhead p50 / p99, one at a time", f"{out['overhead_ms_p50']} / {out['overhead_ms_p99']} ms"),
        (f"overhead p50 / p99, {args.concurrent} in flight",
         f"{out['overhead_ms_p50_concurrent']} / {out['overhead_ms_p99_concurrent']} ms"),
        ("of which to escrow committed (p50)", f"{out['escrow_ms_p50']} ms"),
        ("first token, client minus provider (p50 / p99)",
         f"{out['ttft_overhead_ms']} / {out['ttft_overhead_ms_p99']} ms"),
        ("result to settled (p50)", f"{out['settle_ms_p50']} ms = {out['settle_blocks_p50']} blocks"),
        ("jobs/s", str(out["jobs_per_s"])),
        ("baseline: block interval, RPC round trip", f"{out['block_interval_ms']} ms, {out['rpc_rtt_ms']} ms"),
    ]  # fmt: skip
    width = max(len(r[0]) for r in rows)
    for name, value in rows:
        say(f"  {name:<{width}}  {value}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
