"""The stateless stage: decode, chain id and signatures of encoded transactions."""

import multiprocessing
import os
import pickle
import subprocess
import sys
import time
from functools import partial

import pytest
import trio
import trio_parallel

from aitbc_p2p.chain import Block, Transaction
from aitbc_p2p.chain.batch import Checked, CheckedBlock, check_encoded
from aitbc_p2p.chain.transition import ChainRules
from aitbc_p2p.codec import encode
from aitbc_p2p.exceptions import TxRejected
from aitbc_p2p.node import verify
from aitbc_p2p.node.verify import (
    MIN_PARALLEL,
    MIN_PARALLEL_BLOCK_BYTES,
    admit_pipelined,
    decode_and_verify,
    decode_block,
    pipelined,
    verify_signatures,
)
from aitbc_p2p.testing import ChainBuilder, make_genesis, make_key, make_tx

RULES = ChainRules.of(make_genesis([make_key("verify-authority")], {}))


def _forged(tx: Transaction, thief_address: str) -> bytes:
    """``tx`` claiming another sender: the signature no longer recovers to it."""
    body = dict(tx.body(), **{"from": thief_address})
    return Transaction.from_wire({"body": body, "sig": tx.signature}).encode()


async def test_every_refusal_is_reported_in_input_order(alice, bob):
    good = [make_tx(alice, nonce=n, to=bob.address) for n in range(3)]
    other_chain = Transaction.create(
        alice, chain_id="ait-other", kind="transfer", nonce=0, fee=10**6, payload={"to": bob.address, "amount": 1}
    )
    cheap = make_tx(alice, nonce=5, to=bob.address, fee=RULES.min_fee - 1)
    batch = [good[0].encode(), b"\xff\x00", good[1].encode(), other_chain.encode(), _forged(good[2], bob.address)]
    batch += [good[2].encode(), cheap.encode()]
    out = await decode_and_verify(batch, RULES)
    assert [tx.hash for tx in out.txs] == [good[0].hash, good[1].hash, good[2].hash]
    assert [(i, e.reason) for i, e in out.rejected] == [
        (1, "Malformed"),
        (3, "WrongChain"),
        (4, "BadSignature"),
        (6, "Underpriced"),
    ]


async def test_large_batches_split_across_worker_processes_keep_order_and_catch_forgeries(alice, bob):
    senders = [make_key(f"verify-{i}") for i in range(4)]
    txs = [make_tx(k, nonce=n, to=bob.address) for n in range(MIN_PARALLEL) for k in senders]
    encoded = [tx.encode() for tx in txs]
    encoded[100] = _forged(txs[100], alice.address)
    out = await decode_and_verify(encoded, RULES, parallel=3)
    assert [tx.hash for tx in out.txs] == [tx.hash for i, tx in enumerate(txs) if i != 100]
    assert [(i, e.reason) for i, e in out.rejected] == [(100, "BadSignature")]


async def test_pipelined_admission_sees_every_batch_once_in_order(alice, bob):
    txs = [make_tx(alice, nonce=n, to=bob.address) for n in range(10)]
    batches = [[tx.encode() for tx in txs[i : i + 3]] for i in range(0, 10, 3)]
    seen: list[Checked] = []

    async def admit(verified: Checked) -> None:
        seen.append(verified)

    await admit_pipelined(batches, RULES, admit)
    assert [tx.hash for v in seen for tx in v.txs] == [tx.hash for tx in txs]
    assert len(seen) == 4


async def test_pipelined_checks_run_ahead_and_each_result_is_consumed_in_order():
    started: list[int] = []
    consumed: list[tuple[int, int]] = []

    async def check(i: int) -> int:
        started.append(i)
        await trio.sleep(0.05 * (6 - i))  # later items finish first
        return i * i

    async def consume(i: int, square: int) -> None:
        if i == 0:
            assert started == [0, 1, 2, 3]  # the next ``ahead`` items are being checked already
        consumed.append((i, square))

    await pipelined(range(6), check, consume, ahead=3)
    assert consumed == [(i, i * i) for i in range(6)]


async def test_a_failing_consumer_stops_the_pipeline_and_its_error_comes_out_as_it_is():
    finished: list[int] = []

    async def check(i: int) -> int:
        await trio.sleep(0.01 if i < 2 else 5)
        finished.append(i)
        return i

    def consume(i: int, _: int) -> None:
        if i == 1:
            raise ValueError("item 1 is bad")

    with trio.fail_after(3), pytest.raises(ValueError, match="item 1 is bad"):
        await pipelined(range(10), check, consume, ahead=4)
    assert sorted(finished) == [0, 1]  # the slow checks behind it were cancelled, not awaited


def _block_of(txs: list[Transaction]) -> Block:
    """A block (for a decoding test: the header is some other block's) holding ``txs``."""
    authority = make_key("verify-authority")
    builder = ChainBuilder(make_genesis([authority], {}), [authority])
    return Block(builder.add_block([]).block.header, tuple(txs))


async def test_a_synced_block_is_decoded_and_its_signatures_checked_in_a_worker(alice, bob):
    senders = [make_key(f"verify-{i}") for i in range(2)]
    txs = [make_tx(k, nonce=n, to=bob.address) for n in range(MIN_PARALLEL) for k in senders]
    txs[5] = Transaction.decode(_forged(txs[5], alice.address))
    block = _block_of(txs)
    assert len(block.encode()) >= MIN_PARALLEL_BLOCK_BYTES
    checked = await decode_block(block.encode())
    assert checked.block == block and checked.error == ""
    assert [(i, e.reason) for i, e in checked.bad] == [(5, "BadSignature")]
    assert checked.verified() == {tx.hash for tx in txs} - {txs[5].hash}
    for garbage in (b"", b"\xff", block.encode()[:-1], block.encode() + b"\x00", encode_noncanonical(block)):
        refused = await decode_block(garbage)
        assert refused.block is None and refused.error.startswith("malformed block"), garbage[:8]
        assert refused.verified() == set()


def encode_noncanonical(block: Block) -> bytes:
    """The block's fields, in the wrong map order."""
    wire = block.to_wire()
    return b"\xa3" + b"".join(encode(k) + encode(wire[k]) for k in ("header", "sig", "txs"))


def _checker_pid(data: bytes) -> CheckedBlock:
    return CheckedBlock(error=str(os.getpid()))


async def test_a_big_block_goes_to_a_worker_process_and_a_small_one_to_a_thread(monkeypatch):
    monkeypatch.setattr(verify, "check_block", _checker_pid)
    assert (await decode_block(b"x" * MIN_PARALLEL_BLOCK_BYTES)).error != str(os.getpid())
    assert (await decode_block(b"x" * (MIN_PARALLEL_BLOCK_BYTES - 1))).error == str(os.getpid())


def _die_in_a_worker(encoded: list[bytes], rules: ChainRules, start: int) -> Checked:
    """check_encoded, except that a worker process running it dies at once."""
    if multiprocessing.parent_process() is not None:
        os._exit(3)
    return check_encoded(encoded, rules, start)


async def test_a_chunk_whose_worker_dies_is_checked_again_in_a_thread(alice, bob, monkeypatch, caplog):
    txs = [make_tx(alice, nonce=n, to=bob.address) for n in range(2 * MIN_PARALLEL)]
    encoded = [tx.encode() for tx in txs]
    encoded[7] = _forged(txs[7], bob.address)
    monkeypatch.setattr(verify, "check_encoded", _die_in_a_worker)
    out = await decode_and_verify(encoded, RULES, parallel=2)
    assert [tx.hash for tx in out.txs] == [tx.hash for i, tx in enumerate(txs) if i != 7]
    assert [(i, e.reason) for i, e in out.rejected] == [(7, "BadSignature")]
    assert "verifying worker process died" in caplog.text


async def test_block_signatures_are_checked_in_worker_processes(alice, bob):
    senders = [make_key(f"verify-{i}") for i in range(3)]
    txs = [make_tx(k, nonce=n, to=bob.address) for n in range(MIN_PARALLEL) for k in senders]
    forged = Transaction.decode(_forged(txs[130], alice.address))
    txs[130] = forged
    good, bad = await verify_signatures(txs, parallel=2)
    assert good == {tx.hash for tx in txs} - {forged.hash}
    assert [(tx.hash, e.reason) for tx, e in bad] == [(forged.hash, "BadSignature")]


async def test_workers_start_together_and_run_below_the_node_s_priority():
    await verify.warm_up(verify.WORKERS_PER_CORE * (os.cpu_count() or 2))
    stats = trio_parallel.default_context_statistics()
    assert stats.idle_workers + stats.running_workers >= verify.WORKERS_PER_CORE * (os.cpu_count() or 2)
    own = os.nice(0)
    pieces = [(0,)] * (verify.WORKERS_PER_CORE * (os.cpu_count() or 2))
    workers = await verify._in_workers(os.nice, pieces)  # os.nice(0): a process's niceness
    assert workers == [min(19, own + verify.WORKER_NICENESS)] * len(pieces)
    assert os.nice(0) == own  # the node's own process keeps its priority


async def test_worker_jobs_in_flight_are_capped_at_two_per_core(alice, bob, monkeypatch):
    monkeypatch.setattr(verify, "check_encoded", _slow_check)
    txs = [make_tx(alice, nonce=n, to=bob.address) for n in range(2 * MIN_PARALLEL)]
    batch = [tx.encode() for tx in txs]
    cap = verify.WORKERS_PER_CORE * (os.cpu_count() or 2)
    limiter = verify._limiter()
    peak = [0]

    async def watch() -> None:
        while True:
            peak[0] = max(peak[0], limiter.borrowed_tokens)
            await trio.sleep(0.01)

    async with trio.open_nursery() as outer:
        outer.start_soon(watch)
        async with trio.open_nursery() as jobs:
            for _ in range(cap):  # two chunks (worker jobs) each: twice the cap
                jobs.start_soon(partial(decode_and_verify, batch, RULES, parallel=2))
        outer.cancel_scope.cancel()
    assert peak[0] == cap
    assert limiter.borrowed_tokens == 0


async def test_a_big_batch_is_split_across_free_workers_and_sent_whole_when_they_are_busy():
    cores = os.cpu_count() or 2
    n = 4 * cores * MIN_PARALLEL
    assert len(verify._chunks(n, None)) == cores  # idle: split, for latency
    limiter = verify._limiter()
    holders = [object() for _ in range(int(limiter.total_tokens))]
    for holder in holders:
        await limiter.acquire_on_behalf_of(holder)
    try:
        assert verify._chunks(n, None) == [(0, n)]  # busy: one job, for throughput
    finally:
        for holder in holders:
            limiter.release_on_behalf_of(holder)
    assert verify._chunks(MIN_PARALLEL - 1, None) == [(0, MIN_PARALLEL - 1)]
    # One big chunk still goes to a worker process; only a small batch runs in a thread.
    assert await verify._in_workers(os.getpid, [()]) != [os.getpid()]
    assert await verify._in_workers(os.getpid, [()], small=True) == [os.getpid()]


def _slow_check(encoded: list[bytes], rules: ChainRules, start: int) -> Checked:
    time.sleep(0.2)
    return check_encoded(encoded, rules, start)


def test_transactions_and_refusals_survive_the_trip_back_from_a_worker(alice, bob):
    tx = make_tx(alice, nonce=4, to=bob.address, amount=9)
    back = pickle.loads(pickle.dumps(tx))
    assert back == tx
    assert (back.raw, back.hash, back.body_raw) == (tx.raw, tx.hash, tx.body_raw)
    back.verify_signature()
    refusal = pickle.loads(pickle.dumps(TxRejected("NonceTooLow", "nonce 3 already used", expected=4)))
    assert (refusal.reason, refusal.message, refusal.details) == (
        "NonceTooLow",
        "nonce 3 already used",
        {"expected": 4},
    )
    assert str(refusal) == "NonceTooLow: nonce 3 already used"


def test_importing_the_chain_core_does_not_load_the_network_stack():
    # Each verifying worker process imports the chain core; libp2p and Quart would cost
    # it a second of start-up and tens of megabytes.
    code = (
        "import sys, aitbc_p2p.chain.batch, aitbc_p2p.cli.peer;"
        "print(sorted({'libp2p', 'quart', 'hypercorn'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


async def test_peers_sharing_a_host_check_everything_in_threads(alice, bob, monkeypatch):
    """use_worker_processes(False) (NodeConfig.verify_in_workers = False): big batches and
    big blocks alike are checked in this process, with the same verdicts, and warm_up
    starts no worker."""
    verify.use_worker_processes(False)
    seen_pids: list[int] = []

    def recording(encoded, rules, start):
        seen_pids.append(os.getpid())
        return check_encoded(encoded, rules, start)

    monkeypatch.setattr(verify, "check_encoded", recording)
    monkeypatch.setattr(verify, "check_block", _checker_pid)
    monkeypatch.setattr(trio_parallel, "run_sync", None)  # any use of a worker would fail
    txs = [make_tx(alice, nonce=n, to=bob.address, amount=1) for n in range(4 * MIN_PARALLEL)]
    encoded = [tx.encode() for tx in txs]
    encoded[100] = _forged(txs[100], bob.address)
    checked = await decode_and_verify(encoded, RULES)
    assert seen_pids == [os.getpid()]
    assert [i for i, _ in checked.rejected] == [100] and len(checked.txs) == len(encoded) - 1
    assert (await decode_block(b"x" * MIN_PARALLEL_BLOCK_BYTES)).error == str(os.getpid())
    await verify.warm_up()
