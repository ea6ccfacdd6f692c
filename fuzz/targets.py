"""Fuzz targets: every decoder a stranger's bytes reach, and the files a person edits.

A target takes bytes and either returns or raises one of the errors it is allowed to
raise (the exception tree's typed errors; none at all for the parsers documented to
never raise). Any other exception is a defect, and so is a hang or an allocation the
input's declared lengths could blow up: each target's input is bounded, and every
decoder bounds what it reads before it allocates.

``tests/test_fuzz.py`` runs them under hypothesis in ``make test``: structure-aware
mutations (byte flips, truncations, splices, huge declared lengths, a field replaced by
another CBOR value) of the valid messages in ``tests/vectors/wire.json`` and of seeds
built here. ``fuzz/run.py`` runs them under atheris for long runs (``make fuzz``). This
module sits outside the package, as bench/ does: it reaches every layer, the CLI's config
loader included, which no layer of the package may import from below.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from aitbc_p2p.chain.batch import check_block_message
from aitbc_p2p.chain.genesis import genesis_from_json, genesis_to_json
from aitbc_p2p.chain.models import Block, Transaction, TxKind
from aitbc_p2p.chain.state import Job, JobStatus
from aitbc_p2p.chain.votes import Vote
from aitbc_p2p.cli.config import load_peer_config
from aitbc_p2p.codec import decode, encode
from aitbc_p2p.compute import check_params
from aitbc_p2p.consensus.tendermint import Proposal, decode_certificate
from aitbc_p2p.crypto.keyfile import encrypt_key, load_key_file
from aitbc_p2p.exceptions import AitbcError
from aitbc_p2p.market import CapabilityRecord, JobResult, params_hash
from aitbc_p2p.market.audit import AuditAnswer, AuditRequest, Evidence, Facts, judge
from aitbc_p2p.market.jobs import FetchAnswer, JobEvent, decode_job_request, decode_release_answer
from aitbc_p2p.market.messages import Bid, JobOffer, decode_job_message
from aitbc_p2p.node.bundles import decode_bundle
from aitbc_p2p.node.peers import PeerBook
from aitbc_p2p.node.wire import Status, decode_consensus_message, decode_sync_item, decode_sync_request
from aitbc_p2p.testing.factories import make_genesis, make_key
from aitbc_p2p.types import Hash32, JobId

MAX_INPUT = 1 << 16
"""The largest input a fuzz run feeds a target (the decoders' own bounds are larger; what
is tested is that a declared length is never trusted, not the bound itself)."""

PASSWORD = "fuzz"
TYPED: tuple[type[BaseException], ...] = (AitbcError,)


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    run: Callable[[bytes], object]
    allowed: tuple[type[BaseException], ...] = TYPED
    """The errors it may raise; ``()``: it never raises."""
    vectors: tuple[str, ...] = ()
    """Seeds from tests/vectors/wire.json, by name (those present)."""
    seeds: Callable[[], list[bytes]] = field(default=lambda: [])
    """Seeds built here (for inputs that have no wire vector)."""


def _block_message(data: bytes) -> object:
    checked, certificate = check_block_message(data)  # never raises
    return decode_certificate(certificate) if checked.block is not None else None


def _consensus(data: bytes) -> object:
    obj = decode_consensus_message(data)
    return Vote.from_wire(obj["vote"]) if "vote" in obj else Proposal.from_wire(obj["proposal"])


def _bundle(data: bytes) -> object:
    return [Transaction.decode(item) for item in decode_bundle(data)]


def _peers(data: bytes) -> object:
    return PeerBook("16Uiu2HAmSelf").heard_all(decode(data))  # malformed entries are skipped


@cache
def _scratch() -> Path:
    """A directory for the file targets: a key file, a config and the genesis it names."""
    root = Path(tempfile.mkdtemp(prefix="aitbc-fuzz-"))
    key = make_key("fuzz-node")
    (root / "node.key").write_text(key.secret.hex())
    (root / "genesis.json").write_text(genesis_to_json(make_genesis([key])))
    return root


def _key_file(data: bytes) -> object:
    path = _scratch() / "wallet.json"
    path.write_bytes(data)
    return load_key_file(path, PASSWORD)


def _peer_config(data: bytes) -> object:
    path = _scratch() / "peer.toml"
    path.write_bytes(data)
    return load_peer_config(path)


def _genesis(data: bytes) -> object:
    return genesis_from_json(data.decode("utf-8", errors="replace"))


HASH = Hash32(b"\x5a" * 32)
JOB = JobId(HASH)
PEER = "16Uiu2HAmExamplePeer"


@cache
def _audited() -> tuple[Job, Facts, Bid]:
    """A receipted echo job, what was delivered, and its provider's bid: the ruling target's case."""
    client, provider = make_key("fuzz-client"), make_key("fuzz-provider")
    params = {"message": "audit me"}
    offer = JobOffer.create(
        client, "ait-devnet", workload="echo", params_hash=params_hash("echo", params), max_price=10**9,
        max_runtime_s=30, verification="spot", timestamp_ms=1, nonce=1,
    )  # fmt: skip
    result = JobResult(offer.job_id, True, encode({"message": "audit me", "length": 8}), "", {"compute_ms": 3})
    job = Job(
        offer.job_id, client.address, provider.address, 10**9, 99, 1, client.address, status=JobStatus.RECEIPTED,
        result_hash=result.result_hash, cost=10, metrics=dict(result.metrics), receipt_height=5,
    )  # fmt: skip
    bid = Bid.for_offer(provider, offer, peer_id=PEER, price=100, price_per_s=1, gflops=1, wait_ms=0)
    return job, Facts(offer, params, result), bid


def _never_a_row(params: object, index: int, row: bytes) -> bool:
    return False


def _ruling(data: bytes) -> object:
    """A challenger's evidence, decoded and judged: the arbiter's path for any dispute."""
    job = _audited()[0]
    evidence = Evidence.decode(data)
    return judge(job, evidence, None, _never_a_row, check_params, gflops=1)


def _audit_answer(data: bytes) -> object:
    """A provider's answer, decoded and judged: the client agent's and arbiter's path."""
    job = _audited()[0]
    answer = AuditAnswer.decode(data)
    return judge(job, None, answer, _never_a_row, check_params, asked=(0, 1))

TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target("transaction", Transaction.decode, vectors=tuple(f"tx_{kind.value}" for kind in TxKind)),
        Target("block", Block.decode, vectors=("block",)),
        Target("block_message", _block_message, vectors=("block_message",)),
        Target("sync_item", lambda b: decode_sync_item(decode(b)), vectors=("sync_item",)),
        Target("tx_bundle", _bundle, vectors=("tx_bundle",)),
        Target("vote", lambda b: Vote.from_wire(decode(b)), vectors=("vote",)),
        Target("consensus_message", _consensus, vectors=("proposal",)),
        Target("job_message", lambda b: decode_job_message(b, max_size=64 * 1024), vectors=("offer", "bid")),
        Target("capability_record", CapabilityRecord.decode, vectors=("capability_record",)),
        Target("job_request", decode_job_request, vectors=("job_payload", "job_fetch", "job_ack", "job_release")),
        Target("job_result", JobResult.decode, vectors=("job_result",)),
        Target("fetch_answer", FetchAnswer.decode, vectors=("job_fetch_answer",)),
        Target("job_event", JobEvent.decode, seeds=lambda: [JobEvent(JOB, 3, {"token": "hi", "at_ms": 5}).encode()]),
        Target("release_answer", decode_release_answer, seeds=lambda: [encode({"release": b"\x01" * 65})]),
        Target("status", Status.decode, seeds=lambda: [Status("ait-devnet", HASH, 7, HASH).encode()]),
        Target("sync_request", decode_sync_request, seeds=lambda: [encode({"from": 1, "to": 9})]),
        Target(
            "peer_exchange",
            _peers,
            seeds=lambda: [encode([[PEER, [f"/ip4/127.0.0.1/tcp/4001/p2p/{PEER}"]]])],
        ),
        Target(
            "key_file",
            _key_file,
            seeds=lambda: [encrypt_key(make_key("fuzz-wallet"), PASSWORD, scrypt_n=2**10).encode()],
        ),
        Target(
            "peer_config",
            _peer_config,
            seeds=lambda: [
                b'data_dir = "data"\nkey_file = "node.key"\ngenesis = "genesis.json"\n'
                b'listen = ["/ip4/127.0.0.1/tcp/0"]\n\n[rpc]\nport = 8006\n\n'
                b'[provider]\nminer_id = "m"\nprice_per_s = 1\n'
            ],
        ),
        Target("genesis", _genesis, seeds=lambda: [genesis_to_json(make_genesis([make_key("fuzz-a")])).encode()]),
        Target("audit_request", AuditRequest.decode, seeds=lambda: [AuditRequest(JOB, (1, 7)).encode()]),
        Target(
            "audit_answer",
            _audit_answer,
            seeds=lambda: [
                AuditAnswer(_audited()[0].job_id, _audited()[1], ((0, b"\x00" * 16, ((True, HASH),)),)).encode(),
                AuditAnswer(JOB, error="busy").encode(),
            ],
        ),
        Target(
            "evidence_ruling",
            _ruling,
            seeds=lambda: [
                Evidence("spot check", _audited()[1], bid=_audited()[2]).encode(),
                Evidence("rows", None, ((3, b"\x01" * 8, ((False, HASH),)),)).encode(),
            ],
        ),
    )
}


def seeds_for(target: Target, vectors: Mapping[str, bytes]) -> list[bytes]:
    """The target's valid inputs: its wire vectors and its own seeds."""
    named = [vectors[name] for name in target.vectors if name in vectors]
    return named + target.seeds()


def load_vectors(path: Path) -> dict[str, bytes]:
    """tests/vectors/wire.json as name -> bytes."""
    return {name: bytes.fromhex(text) for name, text in json.loads(path.read_text()).items()}


def check(target: Target, data: bytes) -> None:
    """Run ``target`` on ``data``; raise AssertionError (chained to the cause) for any
    outcome other than success or an allowed error."""
    try:
        target.run(data[:MAX_INPUT])
    except target.allowed:
        pass
    except Exception as e:
        raise AssertionError(f"{target.name}: {type(e).__name__}: {e} on input {data[:64].hex()}...") from e
