"""Offline proof that a job's receipt is on chain (specs/market.md, "Receipt proofs").

A :class:`JobProof` is what a wallet keeps: the provider's signed ``job_receipt``
transaction (result hash, cost, metrics), its receipt leaf, the leaf's Merkle path to the
block header's ``receipts_root``, the signed header and, under a BFT engine, the block's
commit certificate. :func:`verify_receipt` checks it against the chain's genesis alone: no
peer, no network. Every byte string travels as the canonical bytes that were hashed, so
nothing is re-encoded on the way.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aitbc_p2p.chain.merkle import verify_proof
from aitbc_p2p.chain.models import BlockHeader, Genesis, Transaction, TxKind
from aitbc_p2p.chain.payloads import JobReceipt
from aitbc_p2p.chain.votes import Vote
from aitbc_p2p.codec import decode, encode, fields
from aitbc_p2p.consensus.engines import engine_for
from aitbc_p2p.consensus.tendermint import decode_certificate, encode_certificate, verify_certificate
from aitbc_p2p.exceptions import CodecError, ConsensusError, TxRejected, ValidationError
from aitbc_p2p.types import Address, Hash32, JobId

PROOF_VERSION = 1
MAX_PATH = 64


@dataclass(frozen=True, slots=True)
class JobProof:
    job_id: JobId
    tx: bytes
    """The ``job_receipt`` transaction, canonical CBOR."""
    receipt: bytes
    """Its receipt leaf, canonical CBOR (``{"tx", "index", "fee", "events"}``)."""
    path: tuple[tuple[bool, bytes], ...]
    header: bytes
    """The block header's body, canonical CBOR (its SHA-256 is the block's id)."""
    sig: bytes
    certificate: bytes = b"\x80"
    """The commit certificate (CBOR list of precommits; empty outside BFT engines)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "version": PROOF_VERSION,
            "job_id": self.job_id.hex(),
            "tx": self.tx.hex(),
            "receipt": self.receipt.hex(),
            "path": [[left, h.hex()] for left, h in self.path],
            "header": self.header.hex(),
            "sig": self.sig.hex(),
            "certificate": self.certificate.hex(),
        }

    @classmethod
    def from_json(cls, obj: Any) -> JobProof:
        """A proof as :meth:`to_json` writes it. Raises ValidationError."""
        keys = ("version", "job_id", "tx", "receipt", "path", "header", "sig", "certificate")
        try:
            w = fields.record(obj, keys, "a job proof")
            if w["version"] != PROOF_VERSION:
                raise CodecError(f"version must be {PROOF_VERSION}")
            path = fields.listing(w, "path", max_items=MAX_PATH)
            steps = []
            for step in path:
                if not (isinstance(step, list) and len(step) == 2 and type(step[0]) is bool):
                    raise CodecError("a path step is [sibling_is_left, hash hex]")
                steps.append((step[0], _hex(step[1], "path hash", 32)))
            return cls(
                JobId(Hash32(_hex(w["job_id"], "job_id", 32))),
                _hex(w["tx"], "tx"),
                _hex(w["receipt"], "receipt"),
                tuple(steps),
                _hex(w["header"], "header"),
                _hex(w["sig"], "sig"),
                _hex(w["certificate"], "certificate"),
            )
        except CodecError as e:
            raise ValidationError(f"not a job proof: {e}") from e


def _hex(value: Any, name: str, size: int | None = None) -> bytes:
    if not isinstance(value, str) or len(value) > 2 << 20:
        raise CodecError(f"{name} must be hex text")
    try:
        raw = bytes.fromhex(value)
    except ValueError as e:
        raise CodecError(f"{name} must be hex text") from e
    if size is not None and len(raw) != size:
        raise CodecError(f"{name} must be {size} bytes")
    return raw


def job_proof(
    job_id: JobId, tx: Transaction, receipt: bytes, path: list[tuple[bool, Hash32]], header: BlockHeader,
    certificate: tuple[Vote, ...] = (),
) -> JobProof:  # fmt: skip
    """Assemble a proof from what a peer stores."""
    return JobProof(
        job_id, tx.encode(), receipt, tuple((left, bytes(h)) for left, h in path), encode(header.body()),
        header.signature, encode_certificate(certificate),
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class VerifiedReceipt:
    """What a checked proof shows: this provider receipted this result at this cost, in a
    block of the chain that the genesis names."""

    job_id: JobId
    provider: Address
    result_hash: Hash32
    cost: int
    metrics: Mapping[str, int]
    height: int
    block: Hash32
    chain_id: str

    def to_json(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id.hex(), "provider": self.provider, "result_hash": self.result_hash.hex(),
            "cost": self.cost, "metrics": dict(self.metrics), "height": self.height, "block": self.block.hex(),
            "chain_id": self.chain_id,
        }  # fmt: skip


def verify_receipt(proof: JobProof, genesis: Genesis) -> VerifiedReceipt:
    """Check a job proof offline against ``genesis``: the transaction is a ``job_receipt``
    of the job, signed by its sender; the receipt leaf names that transaction; the leaf's
    path reaches the header's ``receipts_root``; the header is of this chain, signed by
    its proposer, and the proposer is the one the engine names for that height and round
    (``solo``, ``poa``) or a quorum of the genesis validators' stake committed it (``pos``).

    Raises:
        ValidationError: the first check that fails, named.
    """
    try:
        tx = Transaction.decode(proof.tx)
        tx.verify_signature()
    except TxRejected as e:
        raise ValidationError(f"the receipt transaction: {e}") from e
    payload = tx.payload
    if tx.kind is not TxKind.JOB_RECEIPT or not isinstance(payload, JobReceipt):
        raise ValidationError(f"the transaction is a {tx.kind}, not a job_receipt")
    if payload.job_id != proof.job_id:
        raise ValidationError("the receipt transaction is for another job")
    if tx.chain_id != genesis.chain_id:
        raise ValidationError(f"the transaction is for chain {tx.chain_id!r}, not {genesis.chain_id!r}")
    try:
        leaf = fields.record(decode(proof.receipt), ("tx", "index", "fee", "events"), "a receipt")
        named = fields.hash32(leaf, "tx")
        body = decode(proof.header)
        header = BlockHeader.from_wire(body, proof.sig)
        votes = decode_certificate(decode(proof.certificate))
    except (CodecError, ValidationError) as e:
        raise ValidationError(f"malformed proof: {e}") from e
    if named != tx.hash:
        raise ValidationError("the receipt leaf names another transaction")
    if encode(header.body()) != proof.header:
        raise ValidationError("the header is not in canonical form")
    if header.chain_id != genesis.chain_id:
        raise ValidationError(f"the block is of chain {header.chain_id!r}, not {genesis.chain_id!r}")
    if not verify_proof(header.receipts_root, proof.receipt, proof.path):
        raise ValidationError("the receipt's path does not reach the header's receipts_root")
    try:
        header.verify_signature()
        engine = engine_for(genesis)
        if engine.kind == "bft":
            verify_certificate(engine, header.hash, header.height, votes)
        elif not engine.may_have_proposed(header):
            # poa: who is scheduled depends on the blocks below, which a proof does not carry
            raise ValidationError(f"{header.proposer} was not the proposer of block {header.height}")
    except (ConsensusError, TxRejected) as e:
        raise ValidationError(f"the block is not the chain's: {e}") from e
    return VerifiedReceipt(
        payload.job_id, tx.sender, payload.result_hash, payload.cost, payload.metrics, header.height, header.hash,
        header.chain_id,
    )  # fmt: skip
