"""Verification level ``replicate`` (specs/market.md, "Replicate"): the comparison of two
results per the determinism table, and, inside one process, a client's peer with two
providers and an arbiter over the in-memory network: a pair that agrees is acked at once,
a pair that differs is settled by the spot check (the made-up result disputed and ruled
against on chain), and where the peer cannot check, the difference is reported and
nothing is acked. tests/test_devnet_replicate.py does it with real processes and the SDK.
"""

from __future__ import annotations

import math
import struct
from typing import Any

import pytest

from aitbc_p2p.chain.payloads import Verdict
from aitbc_p2p.codec import encode
from aitbc_p2p.compute import torch_available
from aitbc_p2p.compute.context import module_available
from aitbc_p2p.exceptions import MarketError
from aitbc_p2p.market.audit import check_level
from aitbc_p2p.market.replicate import compare
from aitbc_p2p.network.memory import MemoryHub
from aitbc_p2p.node.cheats import Cheat, Cheater
from aitbc_p2p.testing import make_key, open_test_network
from aitbc_p2p.testing.market import make_offer, open_escrow, wait_for
from aitbc_p2p.types import JobId, aitbc


def _packed(vectors: list[list[float]]) -> bytes:
    return b"".join(struct.pack(f"<{len(v)}f", *v) for v in vectors)


def _embedding(vectors: list[list[float]]) -> bytes:
    doc = {"model": "m", "count": len(vectors), "dim": len(vectors[0]), "dtype": "float32le"}
    return encode({**doc, "vectors": _packed(vectors), "digest": b"", "texts_per_s": 1})


def _product(digest: bytes, device: str) -> bytes:
    doc = {"n": 64, "iters": 1, "dtype": "float32", "elapsed_us": 7, "gflops": 3}
    return encode({**doc, "device": device, "digest": digest, "rows_root": digest})


def test_echo_results_agree_only_when_equal() -> None:
    hello = encode({"message": "hello", "length": 5})
    assert compare("echo", hello, encode({"message": "hello", "length": 5})) == ""
    assert compare("echo", hello, encode({"message": "hellO", "length": 5})) == "message differs"


def test_products_agree_on_their_digest_and_a_difference_names_the_device_classes() -> None:
    assert compare("torch_bench", _product(b"a" * 32, "cpu"), _product(b"a" * 32, "cuda")) == ""
    assert "same device class (cpu)" in compare("torch_bench", _product(b"a" * 32, "cpu"), _product(b"b" * 32, "cpu"))
    across = compare("torch_bench", _product(b"a" * 32, "cpu"), _product(b"b" * 32, "cuda"))
    assert "cpu and cuda" in across and "across classes" in across


def test_embeddings_agree_within_the_cosine_bound_not_bit_for_bit() -> None:
    vectors = [[1.0, 2.0, 3.0], [0.5, -1.0, 0.25]]
    nudged = [[1.0, 2.0, 3.0001], [0.5, -1.0, 0.2501]]  # another batch's last bits
    assert compare("embed", _embedding(vectors), _embedding(nudged)) == ""
    turned = [[1.0, 2.0, 3.0], [-1.0, 0.5, 0.25]]
    assert compare("embed", _embedding(vectors), _embedding(turned)).startswith("text 1: cosine")
    longer = [[2.0, 4.0, 6.0], vectors[1]]
    assert "norms" in compare("embed", _embedding(vectors), _embedding(longer))
    nan = [[math.nan, 2.0, 3.0], vectors[1]]
    assert "not finite" in compare("embed", _embedding(vectors), _embedding(nan))
    short = encode({"model": "m", "count": 2, "dim": 3, "dtype": "float32le", "vectors": b"\0" * 20})
    assert "not count x dim" in compare("embed", _embedding(vectors), short)


def test_generations_and_images_agree_on_what_the_table_says_repeats() -> None:
    gen = {"backend": "torch", "model": "sha256:" + "0" * 64, "text": "a b", "ids": [4, 9], "tokens": 2}
    assert compare("llm_gen", encode({**gen, "ttft_ms": 3}), encode({**gen, "ttft_ms": 80})) == ""
    assert "ids differs" in compare("llm_gen", encode(gen), encode({**gen, "ids": [4, 8]}))
    image = {"model": "m", "width": 64, "height": 64, "steps": 4, "seed": 1, "pixels_digest": b"p" * 32}
    assert compare("sd_infer", encode({**image, "digest": b"x" * 32}), encode({**image, "digest": b"y" * 32})) == ""
    assert "pixels differ" in compare("sd_infer", encode(image), encode({**image, "pixels_digest": b"q" * 32}))
    assert "steps differs" in compare("sd_infer", encode(image), encode({**image, "steps": 2}))


def test_an_unreadable_output_is_a_difference_not_an_error() -> None:
    hello = encode({"message": "hello", "length": 5})
    assert "not canonical CBOR" in compare("echo", hello, b"\xff\x00")
    assert "not a map" in compare("echo", encode([1]), hello)
    assert "no comparison" in compare("mine_btc", hello, hello)


def test_replicate_takes_models_named_by_name_that_spot_refuses() -> None:
    by_name = {"prompt": "hi", "model": "llama3", "backend": "ollama"}
    check_level("llm_gen", "replicate", by_name)
    check_level("sd_infer", "replicate", {"prompt": "a cat"})
    with pytest.raises(MarketError):
        check_level("llm_gen", "spot", by_name)
    with pytest.raises(MarketError, match="no replicate comparison"):
        check_level("mine_btc", "replicate", {})


CLIENT = make_key("client")
BENCH = ("torch_bench", {"n": 64, "iters": 1, "seed": 5})
needs_torch = pytest.mark.skipif(not torch_available(), reason="torch not installed (pip install '.[compute]')")
AGENT, CHEAP, DEAR, ARBITER = make_key("peer0"), make_key("peer1"), make_key("peer2"), make_key("peer3")
ALLOC = {CLIENT.address: aitbc(10_000), AGENT.address: aitbc(10), ARBITER.address: aitbc(1)}


def _network() -> Any:
    return open_test_network(
        4, providers=[1, 2], alloc=ALLOC, hub=MemoryHub(), genesis_params={"arbiters": [ARBITER.address]},
        per_peer={1: {"provider": {"price_per_s": 10_000_000}}, 2: {"provider": {"price_per_s": 20_000_000}}},
    )  # fmt: skip


async def _replicated(node: Any, workload: str, params: dict[str, Any]) -> tuple[JobId, JobId]:
    """Offer a job and its replica through ``node`` and open their escrows, as the SDK
    does: the first to the cheapest bid, the replica to the cheapest other provider."""
    first = make_offer(node, CLIENT, workload, params, verification="replicate")
    second = make_offer(node, CLIENT, workload, params, verification="replicate")
    a = await node.submit_job(first, workload, params)
    b = await node.market.submit(second, workload, params, replica_of=a)
    jobs = node.market.client_jobs
    await wait_for(lambda: all(len(jobs[j].bids) == 2 and jobs[j].phase == "bids_ready" for j in (a, b)))
    chosen = await open_escrow(node, CLIENT, a, first)
    del jobs[b].bids[chosen.signer]  # as the SDK leaves out the first job's provider
    await open_escrow(node, CLIENT, b, second)
    return a, b


async def test_a_replicated_job_that_agrees_is_acked_and_paid_at_once() -> None:
    async with _network() as (client_node, cheap, dear, _arbiter):
        await wait_for(lambda: cheap.market.registered() and dear.market.registered())
        await wait_for(lambda: {CHEAP.address, DEAR.address} <= set(client_node.market.providers))
        a, b = await _replicated(client_node, "echo", {"message": "twice"})
        await wait_for(lambda: all(client_node.job_status(j).status == "settled" for j in (a, b)), timeout=60)
        escrows = [client_node.store.state.job(j) for j in (a, b)]
        assert {e.provider for e in escrows} == {CHEAP.address, DEAR.address}
        info = client_node.job_status(a)
        assert info.replica == b and client_node.job_status(b).replica == a
        assert info.check == ("provider", f"agrees with its replica {b.hex()[:16]}")
        for escrow in escrows:  # acked: settled well inside the dispute window
            assert escrow.receipt_height + client_node.genesis.dispute_blocks > client_node.head.height
        # The pairing survives a restart: it is in the client job's journal record.
        from aitbc_p2p.node.market import ClientJob

        assert ClientJob.from_record(client_node.market.client_jobs[a].to_record()).twin == b


@pytest.mark.parametrize(
    ("job", "why"),
    [
        # An echo is recomputed before anything is compared: disputed at once.
        pytest.param(("echo", {"message": "which one is right?"}), "not the message sent", id="echo"),
        # A product's digests differ: the spot check asks the made-up one for rows.
        pytest.param(BENCH, "not under its rows_root", marks=needs_torch, id="torch_bench"),
    ],
)
async def test_a_pair_that_differs_is_settled_by_the_spot_check(
    job: tuple[str, dict[str, Any]], why: str, monkeypatch: Any
) -> None:
    monkeypatch.setattr("aitbc_p2p.node.audit.ARBITER_PATIENCE_S", 3.0)
    async with _network() as (client_node, cheap, dear, arbiter):
        await wait_for(lambda: cheap.market.registered() and dear.market.registered())
        await wait_for(lambda: {CHEAP.address, DEAR.address} <= set(client_node.market.providers))
        cheap.market.cheater = Cheater(Cheat.RANDOM_OUTPUT)
        stake = client_node.genesis.min_provider_stake
        a, b = await _replicated(client_node, *job)
        await wait_for(lambda: client_node.job_status(a).status == "refunded", timeout=90)
        await wait_for(lambda: client_node.job_status(b).status == "settled", timeout=60)
        assert client_node.store.state.job(a).provider == CHEAP.address
        assert client_node.store.state.job(a).challenger == AGENT.address
        assert arbiter.audit.rulings[a].verdict is Verdict.CLIENT and why in arbiter.audit.rulings[a].why
        assert client_node.job_status(a).check[0] == "client" and why in client_node.job_status(a).check[1]
        assert client_node.job_status(b).check[0] == "provider"
        account = client_node.account(CHEAP.address).account
        assert (account.provider, account.stake) == (False, stake - stake // 10)
        assert client_node.account(DEAR.address).account.provider
        supply = client_node.supply()
        assert supply.total == supply.genesis_total and supply.escrowed == 0


@needs_torch
async def test_a_difference_this_peer_cannot_check_is_reported_and_not_acked(monkeypatch: Any) -> None:
    async with _network() as (client_node, cheap, dear, arbiter):
        await wait_for(lambda: cheap.market.registered() and dear.market.registered())
        await wait_for(lambda: {CHEAP.address, DEAR.address} <= set(client_node.market.providers))
        cheap.market.cheater = Cheater(Cheat.RANDOM_OUTPUT)

        async def cannot(workload: str, params: dict[str, Any]) -> str:
            return "no model here"

        monkeypatch.setattr(client_node.audit, "cannot_check", cannot)
        a, b = await _replicated(client_node, *BENCH)
        settled_at: dict[JobId, int] = {}

        def settled() -> bool:
            for j in (a, b):
                if j not in settled_at and client_node.job_status(j).status == "settled":
                    settled_at[j] = client_node.head.height
            return len(settled_at) == 2

        await wait_for(settled, timeout=90)
        for job_id, other in ((a, b), (b, a)):
            verdict, why = client_node.job_status(job_id).check
            assert verdict == "undecided" and f"differs from its replica {other.hex()[:16]}" in why, why
            assert "digests differ on the same device class" in why and "no model here" in why
            escrow = client_node.store.state.job(job_id)
            assert not escrow.challenger  # no dispute: a difference alone proves nothing
            # Not acked: the provider settled only once the dispute window was over.
            assert settled_at[job_id] >= escrow.receipt_height + client_node.genesis.dispute_blocks
        assert not arbiter.audit.rulings


async def test_a_replica_must_repeat_a_tracked_job_of_the_same_client_and_parameters() -> None:
    async with _network() as (client_node, *_):
        params = {"message": "one"}
        first = make_offer(client_node, CLIENT, "echo", params, verification="replicate")
        a = await client_node.submit_job(first, "echo", params)
        other = {"message": "two"}
        with pytest.raises(MarketError, match="other parameters"):
            await client_node.market.submit(
                make_offer(client_node, CLIENT, "echo", other, verification="replicate"), "echo", other, replica_of=a
            )
        with pytest.raises(MarketError, match="only an offer at replicate"):
            await client_node.market.submit(
                make_offer(client_node, CLIENT, "echo", params), "echo", params, replica_of=a
            )
        stranger = make_key("stranger")
        with pytest.raises(MarketError, match="another client's"):
            await client_node.market.submit(
                make_offer(client_node, stranger, "echo", params, verification="replicate"), "echo", params,
                replica_of=a,
            )  # fmt: skip
        with pytest.raises(MarketError, match="tracks no other job"):
            await client_node.market.submit(
                make_offer(client_node, CLIENT, "echo", params, verification="replicate"), "echo", params,
                replica_of=JobId(b"\x01" * 32),
            )  # fmt: skip
        second = make_offer(client_node, CLIENT, "echo", params, verification="replicate")
        b = await client_node.market.submit(second, "echo", params, replica_of=a)
        with pytest.raises(MarketError, match="has a replica already"):
            await client_node.market.submit(
                make_offer(client_node, CLIENT, "echo", params, verification="replicate"), "echo", params,
                replica_of=a,
            )  # fmt: skip
        assert client_node.market.client_jobs[a].twin == b


needs_llm = pytest.mark.skipif(
    not (torch_available() and module_available("transformers")), reason="torch + transformers not installed"
)


@needs_llm
@pytest.mark.parametrize("cheat", [None, Cheat.SUBSTITUTED_GENERATION], ids=["honest", "substituted"])
async def test_a_generation_by_model_name_is_replicated_without_a_model_at_the_client(
    cheat: Cheat | None, tmp_path: Any
) -> None:
    """What spot cannot take: llm_gen naming its model by name, and a client's peer that
    holds no model. The two providers' greedy generations agree (one device class) and
    both are acked; a substituted one differs, which this peer cannot check: reported on
    both jobs, neither acked nor disputed (nobody is slashed on a difference alone)."""
    from aitbc_p2p.testing.models import build_tiny_causal_lm

    models = {"tiny": str(build_tiny_causal_lm(tmp_path / "tiny"))}
    params = {"prompt": "Two providers", "model": "tiny", "max_tokens": 12, "backend": "torch"}
    selling = {1: {"price_per_s": 10_000_000, "models": models}, 2: {"price_per_s": 20_000_000, "models": models}}
    async with open_test_network(
        4, providers=[1, 2], alloc=ALLOC, hub=MemoryHub(), genesis_params={"arbiters": [ARBITER.address]},
        per_peer={i: {"provider": p} for i, p in selling.items()},
    ) as (client_node, cheap, dear, arbiter):  # fmt: skip
        assert not client_node.audit.models  # the client's peer holds no model
        with pytest.raises(MarketError, match="needs the model named by its content hash"):
            check_level("llm_gen", "spot", params)
        await wait_for(lambda: cheap.market.registered() and dear.market.registered())
        await wait_for(lambda: {CHEAP.address, DEAR.address} <= set(client_node.market.providers))
        cheap.market.cheater = Cheater(cheat) if cheat is not None else None
        a, b = await _replicated(client_node, "llm_gen", params)
        await wait_for(lambda: all(client_node.job_status(j).status == "settled" for j in (a, b)), timeout=120)
        for job_id, other in ((a, b), (b, a)):
            verdict, why = client_node.job_status(job_id).check
            escrow = client_node.store.state.job(job_id)
            assert not escrow.challenger
            if cheat is None:
                assert (verdict, why) == ("provider", f"agrees with its replica {other.hex()[:16]}")
            else:
                assert verdict == "undecided" and "ids differs" in why and f"replica {other.hex()[:16]}" in why, why
        assert not arbiter.audit.rulings
        assert client_node.account(CHEAP.address).account.provider  # not struck off: nothing was proved
