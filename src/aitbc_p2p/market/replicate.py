"""Verification level ``replicate``: the same job run by two providers, their results
compared per the determinism table of specs/market.md ("Determinism").

Pure: :func:`compare` reads the two delivered outputs (canonical CBOR of the workload's
result) and says whether they agree. Results that differ are not proof of a fault: across
device classes a product's digest, a generation's path or an image's pixels may differ
honestly. So the client's peer settles a difference with the workload's own check where it
can run one (node/audit.py), and otherwise only reports it: an agreement is worth an ack,
a difference is worth a look, never a dispute by itself.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Mapping
from typing import Any

from aitbc_p2p.codec import decode
from aitbc_p2p.exceptions import CodecError
from aitbc_p2p.market.jobs import MAX_OUTPUT

REPLICA_COSINE = 0.999
"""Two embeddings of the same text agree above this cosine, and within REPLICA_NORM in
norm: as a re-embedded text agrees with a delivered one (compute/workloads.py, EMBED_COSINE)."""
REPLICA_NORM = 0.01

Comparator = Callable[[Mapping[str, Any], Mapping[str, Any]], str]


def _fields(*names: str) -> Comparator:
    """Outputs agree when each of ``names`` is equal in both."""

    def compare(a: Mapping[str, Any], b: Mapping[str, Any]) -> str:
        for name in names:
            if a.get(name) != b.get(name):
                return f"{name} differs"
        return ""

    return compare


def _product(a: Mapping[str, Any], b: Mapping[str, Any]) -> str:
    why = _fields("n", "iters", "dtype")(a, b)
    if why:
        return why
    if (a.get("digest"), a.get("rows_root")) == (b.get("digest"), b.get("rows_root")):
        return ""
    devices = (a.get("device"), b.get("device"))
    if devices[0] != devices[1]:
        return f"the products' digests differ (run on {devices[0]} and {devices[1]}: not bit-identical across classes)"
    return f"the products' digests differ on the same device class ({devices[0]})"


def _vectors(raw: Any, count: int, dim: int) -> list[tuple[float, ...]] | None:
    if type(raw) is not bytes or len(raw) != 4 * count * dim:
        return None
    flat = struct.unpack(f"<{count * dim}f", raw)
    return [flat[i * dim : (i + 1) * dim] for i in range(count)]


def _embeddings(a: Mapping[str, Any], b: Mapping[str, Any]) -> str:
    why = _fields("model", "count", "dim", "dtype")(a, b)
    if why:
        return why
    count, dim = a.get("count"), a.get("dim")
    if type(count) is not int or type(dim) is not int or count < 0 or dim < 1:
        return "no count and dimension to compare"
    va, vb = _vectors(a.get("vectors"), count, dim), _vectors(b.get("vectors"), count, dim)
    if va is None or vb is None:
        return "the vectors are not count x dim float32 values"
    for i, (x, y) in enumerate(zip(va, vb, strict=True)):
        nx, ny = math.sqrt(math.fsum(v * v for v in x)), math.sqrt(math.fsum(v * v for v in y))
        if not (math.isfinite(nx) and math.isfinite(ny)) or nx == 0.0 or ny == 0.0:
            return f"text {i}: a vector is zero or not finite"
        if abs(nx / ny - 1) > REPLICA_NORM:
            return f"text {i}: norms {nx:.4g} and {ny:.4g} differ by more than {REPLICA_NORM:.0%}"
        cosine = math.fsum(p * q for p, q in zip(x, y, strict=True)) / (nx * ny)
        if cosine < REPLICA_COSINE:
            return f"text {i}: cosine {cosine:.5f} below {REPLICA_COSINE}"
    return ""


def _generations(a: Mapping[str, Any], b: Mapping[str, Any]) -> str:
    why = _fields("model", "ids", "text")(a, b)
    return f"the generations differ ({why}; greedy paths part on a near-tie across device classes)" if why else ""


def _images(a: Mapping[str, Any], b: Mapping[str, Any]) -> str:
    why = _fields("model", "width", "height", "steps", "seed")(a, b)
    if why:
        return why
    if a.get("pixels_digest") != b.get("pixels_digest"):
        return "the images' pixels differ (the same seed gives close, not equal, pixels across device classes)"
    return ""


COMPARATORS: dict[str, Comparator] = {
    "echo": _fields("message", "length"),
    "torch_bench": _product,
    "embed": _embeddings,
    "llm_gen": _generations,
    "sd_infer": _images,
}
"""What must agree, per workload (specs/market.md, "Replicate"): measurements (elapsed
time, rates, the PNG's own bytes) are left out, they differ between any two runs."""

REPLICABLE = frozenset(COMPARATORS)


def compare(workload: str, a: bytes, b: bytes) -> str:
    """Whether two delivered outputs of the same job agree: "" if they do, else why not.
    Outputs that cannot be read are a difference (the reason names which)."""
    comparator = COMPARATORS.get(workload)
    if comparator is None:
        return f"{workload} results have no comparison"
    docs = []
    for which, raw in (("the first", a), ("the second", b)):
        try:
            doc = decode(raw, max_size=MAX_OUTPUT)
        except CodecError as e:
            return f"{which} output is not canonical CBOR: {e}"
        if not isinstance(doc, dict):
            return f"{which} output is not a map"
        docs.append(doc)
    return comparator(docs[0], docs[1])


__all__ = ["REPLICABLE", "REPLICA_COSINE", "REPLICA_NORM", "compare"]
