"""Offline receipt proofs (consensus/proofs.py): a wallet saves a job's proof from the
peer's RPC, and later checks it from the file against the genesis alone, with no peer
running, through the library and through ``aitbc job verify``. Any change to the proof,
or another chain's genesis, fails it naming the check."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

from aitbc_p2p import JobProof, ValidationError, genesis_from_json, verify_receipt
from aitbc_p2p.chain.genesis import genesis_to_json
from aitbc_p2p.codec import decode, encode
from aitbc_p2p.rpc import RpcClient, serve_rpc
from aitbc_p2p.testing import make_genesis, make_key, open_test_network
from aitbc_p2p.types import aitbc
from conftest import RPC_TOKEN

CLIENT = make_key("client")


async def _saved_proof(tmp_path: Path) -> tuple[Path, Path, dict[str, Any]]:
    """Run an echo job through a real Hypercorn RPC, save its proof and the genesis to
    files, and stop every peer: ``(proof file, genesis file, the escrow as it ended)``."""
    alloc = {CLIENT.address: aitbc(100), make_key("peer1").address: aitbc(1_000)}
    with trio.fail_after(120):
        async with open_test_network(2, providers=[1], alloc=alloc) as nodes, trio.open_nursery() as server:
            url = await server.start(
                lambda task_status: serve_rpc(nodes[0], token=RPC_TOKEN, port=0, task_status=task_status)
            )
            while not nodes[0].market.providers:
                await trio.sleep(0.05)
            async with RpcClient(url, token=RPC_TOKEN) as rpc:
                params = {"message": "prove me"}
                job_id = await rpc.submit_job(CLIENT, "echo", params, max_price=aitbc(1), max_runtime_s=10)
                job = await rpc.wait_job(job_id, timeout=60)
                assert job["status"] == "settled", job
                proof = await rpc.job_proof(job_id[:12])  # a prefix finds it, as for the other job routes
            assert proof == nodes[0].job_proof(job_id).to_json()
            genesis = genesis_to_json(nodes[0].genesis)
            server.cancel_scope.cancel()
    (tmp_path / "proof.json").write_text(json.dumps(proof))
    (tmp_path / "genesis.json").write_text(genesis)
    return tmp_path / "proof.json", tmp_path / "genesis.json", job["escrow"]


def _verify_cli(proof: Path, genesis: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "aitbc_p2p.cli.main", "job", "verify", str(proof), "--genesis", str(genesis), *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


async def test_a_saved_receipt_proof_verifies_offline_and_any_change_fails(tmp_path: Path) -> None:
    proof_file, genesis_file, escrow = await _saved_proof(tmp_path)
    # No peer runs from here on: the file and the genesis are all there is.
    wire = json.loads(proof_file.read_text())
    genesis = genesis_from_json(genesis_file.read_text())
    checked = verify_receipt(JobProof.from_json(wire), genesis)
    assert checked.job_id.hex() == escrow["job_id"] and checked.provider == escrow["provider"]
    assert (checked.result_hash.hex(), checked.cost) == (escrow["result_hash"], escrow["cost"])
    out = _verify_cli(proof_file, genesis_file, "--json")
    assert out.returncode == 0, out.stderr
    shown = json.loads(out.stdout)
    assert shown["verified"] is True and shown["cost"] == escrow["cost"] and shown["height"] == checked.height

    def flip(hex_text: str, at: int = 10) -> str:
        raw = bytearray(bytes.fromhex(hex_text))
        raw[at % len(raw)] ^= 1
        return raw.hex()

    def edit(name: str, change: dict[str, Any], *inner: str) -> str:
        """The canonical CBOR in ``wire[name]`` with fields changed (in its map at path ``inner``)."""
        obj = decode(bytes.fromhex(wire[name]))
        target = obj
        for key in inner:
            target = target[key]
        target.update(change)
        return encode(obj).hex()

    tampered = {
        "path": ({**wire, "path": [*wire["path"], [False, "00" * 32]]}, "does not reach the header's receipts_root"),
        "receipt": ({**wire, "receipt": edit("receipt", {"fee": 1})}, "does not reach the header's receipts_root"),
        "cost": ({**wire, "tx": edit("tx", {"cost": escrow["cost"] + 1}, "body", "payload")}, "BadSignature"),
        "sig": ({**wire, "sig": flip(wire["sig"], 5)}, "block"),
        "header": ({**wire, "header": edit("header", {"timestamp_ms": 1})}, "block"),
    }
    for name, (bad, why) in tampered.items():
        with pytest.raises(ValidationError) as caught:
            verify_receipt(JobProof.from_json(bad), genesis)
        assert why in str(caught.value), (name, caught.value)
        (tmp_path / f"{name}.json").write_text(json.dumps(bad))
        out = _verify_cli(tmp_path / f"{name}.json", genesis_file)
        assert out.returncode == 1 and out.stderr.startswith("aitbc: ") and "Traceback" not in out.stderr, name
    other = make_genesis([make_key("someone else")], chain_id="ait-othernet")
    with pytest.raises(ValidationError, match="chain"):
        verify_receipt(JobProof.from_json(wire), other)
    impostor = make_genesis([make_key("someone else")])  # same chain id, another authority
    with pytest.raises(ValidationError, match="proposer"):
        verify_receipt(JobProof.from_json(wire), impostor)
    for junk in ({}, {**wire, "version": 2}, {**wire, "path": "x"}, {**wire, "tx": "zz"}):
        with pytest.raises(ValidationError):
            JobProof.from_json(junk)
