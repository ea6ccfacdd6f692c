"""Every fuzz target (fuzz/targets.py) under hypothesis: the only outcomes a
stranger's bytes may have are success and the target's typed error.

Inputs are structure-aware mutations of valid ones (the wire vectors and each target's
seeds): bytes flipped, cut, inserted or spliced; a CBOR head declaring a huge length; one
field of the decoded structure replaced, removed or added, or nested deep; a JSON or TOML
value replaced. Examples are derandomized, so a run in CI is the run on this machine;
``AITBC_FUZZ_EXAMPLES`` raises their number, and ``make fuzz`` runs atheris for as long
as asked.
"""

from __future__ import annotations

import importlib.util
import json
import os
import random
import sys
from pathlib import Path
from typing import Any

import cbor2
import httpx
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st


def _targets() -> Any:
    """fuzz/targets.py, which lives beside the package (as bench/ does), loaded by path."""
    path = Path(__file__).resolve().parents[1] / "fuzz" / "targets.py"
    spec = importlib.util.spec_from_file_location("aitbc_fuzz_targets", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


fuzz_targets = _targets()
TARGETS, check, seeds_for = fuzz_targets.TARGETS, fuzz_targets.check, fuzz_targets.seeds_for
VECTORS = fuzz_targets.load_vectors(Path(__file__).with_name("vectors") / "wire.json")
EXAMPLES = int(os.environ.get("AITBC_FUZZ_EXAMPLES", "250"))

HUGE_HEADS = [
    b"\x5b" + b"\xff" * 8,  # a byte string of 2^64 - 1 bytes
    b"\x7a\xff\xff\xff\xff",  # a text string of 4 GiB
    b"\x9b" + b"\x7f" + b"\xff" * 7,  # an array of 2^63 - 1 items
    b"\xbb" + b"\x00\x00\x00\x01" + b"\x00" * 4,  # a map of 2^32 pairs
    b"\x5f" + b"\x41\x00" * 8,  # an indefinite-length byte string
    b"\x9f" * 64,  # indefinite arrays, nested
]

leaves = (
    st.none()
    | st.booleans()
    | st.integers(-(2**64), 2**64 - 1)
    | st.floats(allow_nan=True)
    | st.binary(max_size=80)
    | st.text(max_size=40)
)
values = st.recursive(
    leaves,
    lambda kids: (
        st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8) | st.integers(0, 9), kids, max_size=4)
    ),
    max_leaves=12,
)
NEST = "\u0000nest-here\u0000"
TOML_VALUES = ['"x"', "-1", "1e999", "[[[[1]]]]", "true", "{a = 1}", "18446744073709551616", '"../../etc"', "", "="]


def _paths(obj: Any, here: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [here]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, (*here, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _paths(v, (*here, i))
    return out


def _set(obj: Any, path: tuple[Any, ...], value: Any, *, delete: bool = False) -> Any:
    if not path:
        return value
    head, rest = path[0], path[1:]
    copy: Any = dict(obj) if isinstance(obj, dict) else list(obj)
    if delete and not rest:
        del copy[head]
    else:
        copy[head] = _set(copy[head], rest, value, delete=delete)
    return copy


def _structured(draw: Any, seed: bytes) -> bytes | None:
    """One field of the seed's structure changed, for CBOR and JSON seeds (None: neither)."""
    dump: Any
    try:
        if seed[:1] in (b"{", b"["):
            obj, dump = json.loads(seed), (lambda o: json.dumps(o).encode())
        else:
            obj, dump = cbor2.loads(seed), cbor2.dumps
    except (ValueError, cbor2.CBORDecodeError):
        return None
    path = draw(st.sampled_from(_paths(obj)))
    op = draw(st.sampled_from(["replace", "delete", "add", "nest"]))
    if op == "delete" and path:
        obj = _set(obj, path, None, delete=True)
    elif op == "add":
        target = obj
        for p in path:
            target = target[p]
        extra = draw(values)
        if isinstance(target, dict):
            obj = _set(obj, path, {**target, draw(st.text(max_size=8)): extra})
        elif isinstance(target, list):
            obj = _set(obj, path, [*target, extra])
        else:
            obj = _set(obj, path, [target, extra])
    elif op == "nest":  # a value nested thousands deep, spliced in as text or bytes after encoding
        obj = _set(obj, path, NEST)
    else:
        obj = _set(obj, path, draw(values))
    try:
        data = bytes(dump(obj))
    except (ValueError, TypeError, RecursionError, cbor2.CBOREncodeError):
        return None  # floats and the like that the format cannot carry
    depth = draw(st.sampled_from([100, 5_000, 100_000]))
    if dump is cbor2.dumps:
        return data.replace(cbor2.dumps(NEST), b"\x81" * depth + b"\x80")
    return data.replace(json.dumps(NEST).encode(), b"[" * depth + b"]" * depth)


def _toml(draw: Any, seed: bytes) -> bytes:
    lines = seed.decode().splitlines()
    i = draw(st.integers(0, len(lines) - 1))
    name = lines[i].split("=", 1)[0]
    lines[i] = f"{name}= {draw(st.sampled_from(TOML_VALUES))}" if "=" in lines[i] else draw(st.text(max_size=20))
    return "\n".join(lines).encode(errors="surrogatepass")


@st.composite
def mutated(draw: Any, seeds: list[bytes], toml: bool) -> bytes:
    seed = draw(st.sampled_from(seeds))
    how = draw(st.sampled_from(["flip", "truncate", "insert", "splice", "huge", "structure", "raw", "same"]))
    n = len(seed)
    at = draw(st.integers(0, max(n - 1, 0)))
    if how == "flip" and n:
        data = bytearray(seed)
        for i in draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=4)):
            data[i] ^= draw(st.integers(1, 255))
        return bytes(data)
    if how == "truncate":
        return seed[:at]
    if how == "insert":
        return seed[:at] + draw(st.binary(min_size=1, max_size=16)) + seed[at:]
    if how == "splice":
        end = draw(st.integers(at, n))
        return seed[:at] + draw(st.binary(max_size=32)) + seed[end:]
    if how == "huge":
        return seed[:at] + draw(st.sampled_from(HUGE_HEADS)) + seed[at + 1 :]
    if how == "structure":
        changed = _toml(draw, seed) if toml else _structured(draw, seed)
        return seed if changed is None else changed
    if how == "raw":
        return draw(st.binary(max_size=256))
    return seed


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_a_target_takes_its_seeds(name: str) -> None:
    """The seeds are valid inputs (a fuzzer that starts from garbage tests little)."""
    target = TARGETS[name]
    seeds = seeds_for(target, VECTORS)
    assert seeds, f"{name} has no seed"
    for data in seeds:
        target.run(data)


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_a_stranger_s_bytes_give_success_or_the_typed_error(name: str) -> None:
    target = TARGETS[name]
    seeds = seeds_for(target, VECTORS)

    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(mutated(seeds, toml=name == "peer_config"))
    def fuzz(data: bytes) -> None:
        check(target, data)

    fuzz()


# ------------------------------------------------------------------ the RPC's routes
def _mutate_json(rng: random.Random, value: Any, depth: int = 0) -> Any:
    """A JSON document with one value somewhere replaced (seeded: reproducible)."""
    junk = [None, True, -1, 2**70, 1.5e308, "", "zz", "00" * 40, "ab" * 3000, [], {}, [[[[1]]]], {"a": {"b": {}}}]
    if isinstance(value, dict) and value and rng.random() < 0.8:
        key = rng.choice(sorted(value))
        op = rng.random()
        if op < 0.15:
            return {k: v for k, v in value.items() if k != key}
        if op < 0.3:
            return {**value, rng.choice(["x", key + "_", "__proto__"]): rng.choice(junk)}
        return {**value, key: _mutate_json(rng, value[key], depth + 1)}
    if isinstance(value, str) and value and rng.random() < 0.5:
        cut = rng.randrange(len(value))
        return value[:cut] + rng.choice(["", "g", "0", "\u0000", "é"])
    return rng.choice(junk)


async def test_the_rpc_answers_mutated_bodies_and_paths_with_a_4xx_envelope_and_changes_nothing(rpc_server):
    """Seeded mutations of valid requests to every route that reads a body, a path or a
    query: never a 500, always the error envelope, and afterwards the peer still serves
    and the client's account is untouched."""
    from aitbc_p2p.chain import TxKind
    from aitbc_p2p.market import JobOffer, params_hash
    from aitbc_p2p.testing import make_key, make_tx
    from aitbc_p2p.types import aitbc
    from conftest import RPC_TOKEN

    node, url = rpc_server
    client = make_key("client")
    tx = make_tx(client, TxKind.TRANSFER, nonce=0, fee=1000, to=make_key("bob").address, amount=1)
    offer = JobOffer.create(
        client, node.genesis.chain_id, workload="echo", params_hash=params_hash("echo", {"message": "x"}),
        max_price=aitbc(1), max_runtime_s=10, verification="none", timestamp_ms=node.clock_ms(),
    )  # fmt: skip
    bodies = {
        "/v1/transactions": {"tx": tx.encode().hex()},
        "/v1/jobs": {"offer": offer.encode().hex(), "workload": "echo", "params": {"message": "x"}},
    }
    gets = [
        "/v1/accounts/{a}", "/v1/accounts/{a}/history?limit={n}", "/v1/accounts/{a}/proof", "/v1/transactions/{h}",
        "/v1/transactions/{h}/proof", "/v1/blocks/{n}", "/v1/jobs/{j}", "/v1/jobs/{j}/result",
        "/v1/jobs/{j}/events?after={n}", "/v1/jobs/{j}/proof",
    ]  # fmt: skip
    rng = random.Random(20261202)
    before = node.account(client.address)
    auth = {"Authorization": f"Bearer {RPC_TOKEN}", "Content-Type": "application/json"}
    statuses: dict[int, int] = {}
    with trio.fail_after(240):
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            for i in range(EXAMPLES):
                if i % 3:
                    path = rng.choice(sorted(bodies))
                    body = json.dumps(_mutate_json(rng, bodies[path])).encode()
                    if rng.random() < 0.2:
                        body = body[: rng.randrange(len(body) + 1)]
                    resp = await http.post(path, content=body, headers=auth)
                else:
                    values = [client.address, tx.hash.hex(), offer.job_id.hex(), "7"]
                    a, h, j, n = (_mutate_json(rng, v) if rng.random() < 0.7 else v for v in values)
                    path = rng.choice(gets).format(a=a, h=h, j=j, n=n)
                    try:
                        resp = await http.get(path, headers=auth, timeout=3)
                    except httpx.ReadTimeout:  # an event stream of a job that exists: it waits, as it should
                        assert "/events" in path, path
                        continue
                    except httpx.InvalidURL:
                        continue  # the client itself refuses to send it
                statuses[resp.status_code] = statuses.get(resp.status_code, 0) + 1
                assert resp.status_code < 500, (path, resp.status_code, resp.text[:300])
                if resp.status_code >= 400:
                    assert resp.json()["error"]["code"], resp.text[:300]
            assert (await http.get("/v1/health")).json() == {"status": "ok"}
    assert statuses.get(200, 0) + statuses.get(404, 0) > 0 and any(400 <= s < 500 for s in statuses), statuses
    after = node.account(client.address)
    assert (after.account.balance, after.pending_nonce) == (before.account.balance, before.pending_nonce)
