"""Topic names, protocol ids and stream framing (specs/wire.md, specs/topics.md)."""

from __future__ import annotations

from aitbc_p2p.codec.framing import frame

__all__ = [
    "AUDIT_PROTOCOL", "CONSENSUS_PROTOCOL", "FINAL", "INTERIM", "JOB_PROTOCOL", "MAX_FRAME", "MAX_SYNC_FRAME",
    "PEERS_PROTOCOL", "STATUS_PROTOCOL", "STREAMING_PROTOCOLS", "SYNC_PROTOCOL", "frame", "topic",
]  # fmt: skip

MAX_FRAME = 1 << 20
"""Largest frame on any request/response protocol except sync (1 MiB)."""
MAX_SYNC_FRAME = 16 << 20
"""Largest sync response: a batch of whole blocks."""

STATUS_PROTOCOL = "/aitbc/status/1"
SYNC_PROTOCOL = "/aitbc/sync/2"
JOB_PROTOCOL = "/aitbc/job/2"
"""2: the answer to a run request may be preceded by the workload's progress events."""
PEERS_PROTOCOL = "/aitbc/peers/1"
AUDIT_PROTOCOL = "/aitbc/audit/1"
"""A receipted job's facts and rows of its result, with proofs (specs/market.md, "Verification")."""
CONSENSUS_PROTOCOL = "/aitbc/consensus/1"
"""Round-state catch-up under BFT engines: the proposals and votes of a height."""


STREAMING_PROTOCOLS = frozenset({JOB_PROTOCOL})
"""Protocols whose every response frame starts with a kind byte: INTERIM frames (zero or
more) before the one FINAL frame that is the answer."""
INTERIM = b"\x01"
FINAL = b"\x00"


TOPIC_VERSIONS = {"tx": 1, "block": 1, "consensus": 1, "job": 2, "provider": 3}
"""Each topic's version, raised with any change to what it carries, so that peers of
different versions never meet on one topic (where each would REJECT the other's messages
and score it down). job/2: bids quote ``wait_ms``; provider/2: records carry ``load``;
provider/3: records list ``models``."""


def topic(chain_id: str, name: str) -> str:
    """``/aitbc/<chain-id>/<name>/<version>`` for name in tx, block, job, provider, consensus."""
    version = TOPIC_VERSIONS.get(name)
    if version is None:
        raise ValueError(f"unknown topic {name!r}")
    return f"/aitbc/{chain_id}/{name}/{version}"
