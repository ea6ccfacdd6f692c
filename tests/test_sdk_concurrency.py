"""One agent's key, many jobs at once, through the SDK and a real RPC server.

Before: concurrent ``submit_job`` calls read the same pending nonce and half their escrows
were refused (REPLACEMENT_UNDERPRICED), and identical offers made in one block period were
one offer (the job id is the offer's hash), so all but one failed with DUPLICATE.
"""

import pytest
import trio

from aitbc_p2p.rpc import RpcClient, serve_rpc
from aitbc_p2p.testing import make_key, open_test_network
from aitbc_p2p.types import aitbc

TOKEN = "sdk-token-" + "z" * 20
CLIENT = make_key("client")
PROVIDER = make_key("peer1")


@pytest.mark.parametrize(("jobs", "identical"), [(5, True), (5, False), (50, False)])
async def test_concurrent_jobs_from_one_key_all_settle(nursery, jobs, identical):
    alloc = {CLIENT.address: aitbc(10_000), PROVIDER.address: aitbc(1_000)}
    with trio.fail_after(240):
        # One authority: this test is about the SDK and the market, and two poa authorities
        # under this load can fork deeper than poa's reorg limit (see the closing note).
        async with open_test_network(
            2, providers=[1], alloc=alloc, authorities=1, genesis_params={"dispute_blocks": 1}
        ) as nodes:
            url = await nursery.start(
                lambda task_status: serve_rpc(nodes[0], token=TOKEN, port=0, task_status=task_status)
            )
            while not nodes[0].market.providers:
                await trio.sleep(0.05)
            done: dict[int, dict] = {}
            async with RpcClient(url, token=TOKEN, timeout=30) as rpc:

                async def one(i: int) -> None:
                    params = {"message": "same" if identical else f"job {i}"}
                    # The SDK's deadline is 4 x max_runtime_s blocks: at this network's 0.3 s
                    # blocks, 10 s gave 12 s for all 50 jobs to queue through one provider,
                    # and a loaded 2-core CI machine missed it (receipts too late, escrows
                    # refunded). 60 s gives 72 s; the test is about nonces, not deadlines.
                    job_id = await rpc.submit_job(CLIENT, "echo", params, max_price=aitbc(2), max_runtime_s=60)
                    done[i] = await rpc.wait_job(job_id, timeout=200)
                    done[i]["job_id"] = job_id

                async with trio.open_nursery() as inner:
                    for i in range(jobs):
                        inner.start_soon(one, i)
            assert len(done) == jobs
            assert len({d["job_id"] for d in done.values()}) == jobs  # identical jobs are distinct jobs
            assert {d["status"] for d in done.values()} == {"settled"}, [d["status"] for d in done.values()]
