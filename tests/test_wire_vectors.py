"""Fixed canonical-encoding vectors: bytes in, bytes out, for every message kind.

``tests/vectors/wire.json`` holds the exact bytes of each kind of object built from fixed
inputs (deterministic keys, RFC 6979 signatures). Each test builds the object again and
compares bytes, and decodes the stored bytes and re-encodes them. A change to any wire
format, to the codec or to the cbor2 version shows up here as a changed vector; only a
deliberate protocol change (with specs/ changed with it) may regenerate them:
``.venv/bin/python tests/test_wire_vectors.py --write``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from aitbc_p2p.chain import Transaction, TxKind
from aitbc_p2p.chain.models import Block
from aitbc_p2p.chain.payloads import sign_ack, sign_release
from aitbc_p2p.chain.votes import Vote, VoteStep
from aitbc_p2p.codec import decode, encode
from aitbc_p2p.consensus.tendermint import Proposal, decode_certificate, encode_certificate
from aitbc_p2p.market import Bid, CapabilityRecord, JobOffer, JobPayload, JobResult
from aitbc_p2p.market.jobs import FetchAnswer, Held, JobAck, JobFetch, ReleaseRequest, decode_job_request
from aitbc_p2p.node.bundles import decode_bundle, encode_bundle
from aitbc_p2p.node.wire import decode_sync_item, encode_block_message, encode_sync_item
from aitbc_p2p.testing import ChainBuilder, make_genesis, make_key, make_tx
from aitbc_p2p.types import Hash32, JobId

JOB_AB = JobId(Hash32(b"\xab" * 32))

VECTORS = Path(__file__).with_name("vectors") / "wire.json"
CHAIN = "ait-devnet"
ALICE, BOB, AUTH = make_key("vec-alice"), make_key("vec-bob"), make_key("vec-authority")
JOB = b"\x11" * 32
T0 = 1_767_225_600_000


def _offer() -> JobOffer:
    return JobOffer.create(
        ALICE, CHAIN, workload="echo", params_hash=b"\x33" * 32, max_price=5 * 10**9, max_runtime_s=30,
        verification="none", timestamp_ms=T0, nonce=42,
    )  # fmt: skip


def _capability() -> CapabilityRecord:
    return CapabilityRecord.create(
        BOB, CHAIN, miner_id="gpu-box-1", peer_id="16Uiu2HAm", mode="cpu", gpu=False, device="cpu", concurrency=1,
        workloads=["echo", "torch_bench"], limits={"vram_mb": 0, "ram_mb": 2048, "max_runtime_s": 300}, gflops=112,
        gflops_by_dtype={"float32": 112}, versions={"torch": "2.13.0", "cuda": "", "driver": ""},
        price_per_s=20_000_000, timestamp_ms=T0,
        load={"slots": 2, "free_slots": 1, "queued": 0, "max_queue": 8, "wait_ms": 0},
        models=["sha256:" + "5d" * 32],
    )  # fmt: skip


def _bid() -> Bid:
    return Bid.for_offer(BOB, _offer(), peer_id="16Uiu2HAm", price=600, price_per_s=20, gflops=112, wait_ms=0)


def _reencode_block_message(b: bytes) -> bytes:
    block, cert = decode(b)
    return encode_block_message(Block.from_wire(block), encode_certificate(decode_certificate(cert)))


def _reencode_sync_item(b: bytes) -> bytes:
    raw, votes = decode_sync_item(decode(b))
    return encode_sync_item(raw, encode_certificate(votes))


def _block() -> Block:
    genesis = make_genesis([AUTH], {ALICE.address: 10**12}, providers=[BOB.address], timestamp_ms=T0)
    chain = ChainBuilder(genesis, [AUTH])
    return chain.add_block([make_tx(ALICE, nonce=0, to=BOB.address, amount=5)], step_ms=1000).block


def _vote() -> Vote:
    return Vote(CHAIN, 7, 1, VoteStep.PRECOMMIT, b"\x22" * 32, AUTH.address).signed(AUTH)


def builders() -> dict[str, tuple[Callable[[], bytes], Callable[[bytes], bytes]]]:
    """name -> (build the bytes from fixed inputs, decode the bytes and encode them again)."""

    def tx(kind: TxKind, **payload: Any) -> tuple[Callable[[], bytes], Callable[[bytes], bytes]]:
        return (
            lambda: make_tx(ALICE, kind, nonce=3, fee=1000, **payload).encode(),
            lambda b: Transaction.decode(b).encode(),
        )

    return {
        "tx_transfer": tx(TxKind.TRANSFER, to=BOB.address, amount=123),
        "tx_stake": tx(TxKind.STAKE, amount=10**11),
        "tx_unstake": tx(TxKind.UNSTAKE, amount=10**9),
        "tx_withdraw": tx(TxKind.WITHDRAW),
        "tx_provider_register": tx(TxKind.PROVIDER_REGISTER),
        "tx_job_open": tx(
            TxKind.JOB_OPEN, job_id=JOB, provider=BOB.address, amount=10_000, deadline=50, agent=ALICE.address
        ),
        "tx_job_receipt": tx(TxKind.JOB_RECEIPT, job_id=JOB, result_hash=b"\x44" * 32, cost=4000, metrics={"ms": 5}),
        "tx_job_settle": tx(TxKind.JOB_SETTLE, job_id=JOB, ack=b""),
        "tx_job_dispute": tx(TxKind.JOB_DISPUTE, job_id=JOB, evidence=b"\xa1\x61v\x01"),
        "tx_job_resolve": tx(TxKind.JOB_RESOLVE, job_id=JOB, verdict="client"),
        "tx_job_refund": tx(TxKind.JOB_REFUND, job_id=JOB),
        "tx_job_cancel": tx(TxKind.JOB_CANCEL, job_id=JOB, release=sign_release(BOB, CHAIN, JOB, 1)),
        "tx_job_reassign": tx(TxKind.JOB_REASSIGN, job_id=JOB, provider=BOB.address, deadline=90, release=b""),
        "block": (lambda: _block().encode(), lambda b: Block.decode(b).encode()),
        "block_message": (
            lambda: encode_block_message(_block(), encode_certificate([_vote()])),
            _reencode_block_message,
        ),
        "sync_item": (lambda: encode_sync_item(_block().encode(), encode_certificate([_vote()])), _reencode_sync_item),
        "tx_bundle": (
            lambda: encode_bundle([make_tx(ALICE, nonce=n, to=BOB.address, amount=1).encode() for n in range(3)]),
            lambda b: encode_bundle(decode_bundle(b)),
        ),
        "vote": (lambda: _vote().encode(), lambda b: Vote.from_wire(decode(b)).encode()),
        "proposal": (
            lambda: encode({"proposal": Proposal(CHAIN, 1, 0, -1, _block(), AUTH.address).signed(AUTH).to_wire()}),
            lambda b: encode({"proposal": Proposal.from_wire(decode(b)["proposal"]).to_wire()}),
        ),
        "offer": (
            lambda: encode({"offer": _offer().to_wire()}),
            lambda b: encode({"offer": JobOffer.from_wire(decode(b)["offer"]).to_wire()}),
        ),
        "bid": (
            lambda: encode({"bid": _bid().to_wire()}),
            lambda b: encode({"bid": Bid.from_wire(decode(b)["bid"]).to_wire()}),
        ),
        "capability_record": (lambda: _capability().encode(), lambda b: CapabilityRecord.decode(b).encode()),
        "job_payload": (
            lambda: JobPayload(JOB_AB, "echo", {"message": "hi"}).encode(),
            lambda b: JobPayload.decode(b).encode(),
        ),
        "job_result": (
            lambda: JobResult(JOB_AB, True, encode({"message": "hi", "length": 2}), "", {"compute_ms": 3}).encode(),
            lambda b: JobResult.decode(b).encode(),
        ),
        "job_fetch": (lambda: JobFetch(JOB_AB).encode(), lambda b: decode_job_request(b).encode()),
        "job_release": (
            lambda: ReleaseRequest(JOB_AB, sign_release(ALICE, CHAIN, JOB_AB, 1)).encode(),
            lambda b: decode_job_request(b).encode(),
        ),
        "job_ack": (
            lambda: JobAck(JOB_AB, sign_ack(ALICE, CHAIN, JOB_AB, b"\x44" * 32)).encode(),
            lambda b: decode_job_request(b).encode(),
        ),
        "job_fetch_answer": (
            lambda: FetchAnswer(Held.DONE, JobResult(JOB_AB, True, encode({"n": 1}), "", {"compute_ms": 3})).encode(),
            lambda b: FetchAnswer.decode(b).encode(),
        ),
    }


def _stored() -> dict[str, str]:
    return json.loads(VECTORS.read_text())


@pytest.mark.parametrize("name", sorted(builders()))
def test_each_message_kind_encodes_to_its_fixed_bytes(name):
    build, roundtrip = builders()[name]
    expected = bytes.fromhex(_stored()[name])
    assert build() == expected, f"{name}: the encoding changed (a wire format change needs specs/ and new vectors)"
    assert roundtrip(expected) == expected, f"{name}: decoding and encoding again changed the bytes"


def test_every_vector_is_built_by_a_test():
    assert set(_stored()) == set(builders())


if __name__ == "__main__" and sys.argv[1:] == ["--write"]:
    VECTORS.parent.mkdir(exist_ok=True)
    VECTORS.write_text(json.dumps({name: b().hex() for name, (b, _) in sorted(builders().items())}, indent=1) + "\n")
    print(f"wrote {VECTORS}")


def _with(wire: Any, path: tuple[str, ...], value: Any) -> Any:
    """A copy of a decoded wire object with the field at ``path`` set to ``value``."""
    if not path:
        return value
    return {**wire, path[0]: _with(wire[path[0]], path[1:], value)}


@pytest.mark.parametrize("value", [True, "7", -1, 2**64, 7.0, None, b"\x07"])
def test_every_wire_parser_reads_integers_the_same_strict_way(value):
    """One set of field readers (codec/fields.py) behind every parser: a bool, a string,
    a float, a negative or an oversized number is refused everywhere, never coerced."""
    from aitbc_p2p.exceptions import CodecError, TxRejected, ValidationError
    from aitbc_p2p.node.wire import Status, decode_sync_request

    tx = make_tx(ALICE, TxKind.TRANSFER, nonce=3, fee=1000, to=BOB.address, amount=5).to_wire()
    with pytest.raises(TxRejected) as refused:
        Transaction.from_wire(_with(tx, ("body", "nonce"), value))
    assert refused.value.reason in ("Malformed", "AmountOutOfRange")
    with pytest.raises(ValidationError):
        Vote.from_wire(_with(_vote().to_wire(), ("body", "height"), value))
    block = _block()
    proposal = Proposal(CHAIN, 7, 1, -1, block, AUTH.address).signed(AUTH).to_wire()
    with pytest.raises(ValidationError):
        Proposal.from_wire(_with(proposal, ("round",), value))
    try:  # the requests' bytes, where canonical CBOR can carry the value at all
        status = encode(_with(decode(Status(CHAIN, b"\x01" * 32, 7, b"\x02" * 32).encode()), ("height",), value))
        sync = encode({"from": value, "to": 9})
    except CodecError:
        assert isinstance(value, float) or value == 2**64  # never canonical: no decoder meets them
        return
    with pytest.raises(CodecError):
        Status.decode(status)
    with pytest.raises(CodecError):
        decode_sync_request(sync)
