"""A market that cannot be cheated, with real ``aitbc-peer`` processes (specs/market.md,
"Verification"): cheating providers (up to eight, one per cheat), each cheaper than the
one honest provider, an arbiter's peer, and a client that asks for ``spot`` verification
on every job. Jobs are echo, a small product (torch), a generation of a tiny model
named by its content hash (torch + transformers; every peer holds that model and a
cheaper one, which the ``other_model`` cheat runs instead) and an image of a tiny Stable
Diffusion pipeline named by its content hash (diffusers).

Each cheater wins jobs until one of its results fails the client agent's check; the
dispute carries the evidence, the arbiter rules on chain, the cheater's stake is slashed
and its registration struck, and no escrow names it again. Then the honest provider runs
50 jobs under the same checks and is never disputed. Balances and supply are read over
RPC; supply is conserved throughout.
"""

from pathlib import Path
from typing import Any

import pytest
import trio

from aitbc_p2p.cli import devnet
from aitbc_p2p.compute import torch_available
from aitbc_p2p.compute.context import module_available
from aitbc_p2p.crypto import load_key_file
from aitbc_p2p.testing.devnets import ProviderSpec, write_devnet
from aitbc_p2p.types import aitbc

NODES = Path(__file__).resolve().parents[1] / "nodes" / "devnet"
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]  # eleven peers on two cores: about 8 minutes

TORCH = torch_available()
LLM = TORCH and module_available("transformers")
SD = LLM and module_available("diffusers")
CHEATS = [
    "random_output",
    "inflated_metering",
    *(["wrong_rows", "withheld_audits"] if TORCH else []),
    *(["truncated_generation", "substituted_generation", "other_model"] if LLM else []),
    *(["fewer_steps"] if SD else []),
]
"""Cheapest first: each wins the jobs until it is struck off. Without torch, only the
cheats an echo job shows."""

WORKLOADS = ["echo", *(["torch_bench"] if TORCH else []), *(["llm_gen"] if LLM else []), *(["sd_infer"] if SD else [])]
SHOWS_ON = {
    "random_output": set(WORKLOADS),
    "inflated_metering": set(WORKLOADS),  # held to the chain's time from escrow to receipt
    "wrong_rows": {"torch_bench"},
    "withheld_audits": {"torch_bench"},
    "truncated_generation": {"llm_gen"},
    "substituted_generation": {"llm_gen"},
    "other_model": {"llm_gen"},
    "fewer_steps": {"sd_infer"},
}
"""The workloads each cheat shows in: on the others the cheater is an honest provider
(those this machine runs: each cheater of CHEATS has at least one)."""
HONEST_JOBS = 50
WITHIN = 10
"""A cheater is caught within its first this many jobs of a workload its cheat shows in."""


def _job(i: int, named: dict[str, str], workloads: list[str] = WORKLOADS) -> tuple[str, dict[str, Any]]:
    """Job ``i`` of a rotation through ``workloads``: echo, a small product (torch), a
    seeded generation of 16 tokens (transformers), a 64 x 64 image of 6 steps (diffusers);
    ``named``: the content hash of the model each names."""
    workload = workloads[i % len(workloads)]
    if workload == "torch_bench":
        return "torch_bench", {"n": 64, "iters": 1, "seed": i}
    if workload == "llm_gen":
        return "llm_gen", {"prompt": f"Job {i}:", "model": named["llm_gen"], "max_tokens": 16,
                           "temperature_milli": 700, "seed": i}  # fmt: skip
    if workload == "sd_infer":
        return "sd_infer", {"prompt": f"job {i}: a red cube", "model": named["sd_infer"], "steps": 6, "width": 64,
                            "height": 64, "seed": i}  # fmt: skip
    return "echo", {"message": f"job {i}"}


def _models(root: Path) -> tuple[dict[str, str], dict[str, str]]:
    """The models every peer holds, and the content hash of the one jobs of each workload name."""
    if not LLM:
        return {}, {}
    from aitbc_p2p.compute.context import model_digest
    from aitbc_p2p.testing.models import build_tiny_causal_lm, build_tiny_sd_pipeline

    tiny, cheap = build_tiny_causal_lm(root / "tiny"), build_tiny_causal_lm(root / "cheap", seed=1)
    models, named = {"tiny": str(tiny), "cheap": str(cheap)}, {"llm_gen": model_digest(str(tiny))}
    if SD:
        models["tiny-sd"] = str(build_tiny_sd_pipeline(root / "tiny-sd"))
        named["sd_infer"] = model_digest(models["tiny-sd"])
    return models, named


async def _run_job(proc: devnet.PeerProcess, job: tuple[str, dict[str, Any]]) -> dict[str, Any]:
    client = load_key_file(NODES / "wallets" / "client.json", "devnet")
    workload, params = job
    async with proc.rpc() as rpc:
        # 90 s: a worker's first generation loads the model, tens of seconds on two busy cores.
        job_id = await rpc.submit_job(
            client, workload, params, max_price=aitbc(5), max_runtime_s=90, verification="spot"
        )
        job = await rpc.wait_job(job_id, timeout=180)
    assert job["status"] in ("settled", "refunded"), job
    return job


async def _account(proc: devnet.PeerProcess, address: str) -> dict[str, Any]:
    async with proc.rpc() as rpc:
        return await rpc.account(address)


async def test_each_cheater_is_caught_slashed_and_dropped_and_the_honest_provider_never_is(tmp_path: Path) -> None:
    specs = [ProviderSpec(10_000_000 + i * 1_000_000, cheat=c) for i, c in enumerate(CHEATS)]
    specs.append(ProviderSpec(20_000_000, slots=2))
    models, named = _models(tmp_path / "models")
    net = write_devnet(tmp_path / "nodes", NODES, specs, arbiter=True, rules={"dispute_blocks": 10}, models=models)
    cheaters, honest = dict(zip(net.providers, CHEATS, strict=False)), net.providers[-1]
    procs = devnet.start(net.nodes, tmp_path / "run")
    try:
        with trio.fail_after(180):
            await devnet.wait_ready(procs, progress=lambda s: None)
            async with procs[0].rpc() as rpc:
                while len(await rpc.providers()) < len(specs):
                    await trio.sleep(0.3)
        stake = (await _account(procs[0], honest))["stake"]
        # 1. The cheaters, cheapest first, until the honest provider wins a job. Each job is
        # of a workload the cheapest standing cheater's cheat shows in (a client cannot
        # know that: it only makes the test short), though any bidder may win it.
        jobs_of: dict[str, int] = dict.fromkeys(cheaters, 0)
        struck_at: dict[str, int] = {}
        i = 0
        while True:
            target = next((c for a, c in cheaters.items() if a not in struck_at), "")
            workload, params = _job(i, named, sorted(SHOWS_ON[target] & set(WORKLOADS)) if target else WORKLOADS)
            job = await _run_job(procs[0], (workload, params))
            i += 1
            provider, escrow = job["escrow"]["provider"], job["escrow"]
            assert provider not in struck_at, f"an escrow named {cheaters.get(provider)} after it was struck off"
            if provider == honest:
                assert job["status"] == "settled" and "challenger" not in escrow, job
                assert job["check"]["verdict"] == "provider", job
                break
            jobs_of[provider] += workload in SHOWS_ON[cheaters[provider]]
            assert jobs_of[provider] <= WITHIN, f"{cheaters[provider]} not caught within {WITHIN} jobs"
            if job["status"] == "refunded":
                assert escrow["challenger"] == net.agent and job["check"]["verdict"] == "client", job
                account = await _account(procs[0], provider)
                assert (account["provider"], account["stake"]) == (False, stake - stake // 10), account
                struck_at[provider] = i
            assert i < WITHIN * len(CHEATS) + 5, "the cheaters kept winning"
        assert set(struck_at) == set(cheaters), f"not caught: {set(cheaters) - set(struck_at)}"
        # 2. The honest provider, under the same checks, over HONEST_JOBS jobs (five clients at once).
        done: list[dict[str, Any]] = [job]

        async def client_stream(start: int) -> None:
            for k in range(start, start + HONEST_JOBS // 5):
                done.append(await _run_job(procs[0], _job(1000 + k, named)))

        async with trio.open_nursery() as nursery:
            for s in range(5):
                nursery.start_soon(client_stream, s * (HONEST_JOBS // 5))
        assert len(done) > HONEST_JOBS
        for job in done:
            assert job["status"] == "settled" and job["escrow"]["provider"] == honest, job
            assert "challenger" not in job["escrow"], job
        account = await _account(procs[0], honest)
        assert account["provider"] and account["stake"] == stake
        async with procs[0].rpc() as rpc:
            supply = await rpc.supply()
        assert supply["total"] == supply["genesis_total"] and supply["escrowed"] == 0, supply
        arbiter_log = procs[-1].log.read_text()
        assert arbiter_log.count("for the client") == len(cheaters) and "for the provider" not in arbiter_log
    finally:
        devnet.stop(tmp_path / "run")
