"""Named crash points for durability tests (specs/wire.md, "Storage").

Off unless armed: by ``AITBC_CRASH_AT`` in the environment when the process starts (the
multi-process tests do this), or by :func:`arm` in-process. ``AITBC_CRASH_AT=commit.after_batch``
kills the process with SIGKILL the first time that point is reached; ``...:3`` the third
time; ``a,b:2`` arms two points (a peer of a multi-process test dies at whichever of its
points it reaches). Nothing is flushed or cleaned up: the test then reopens the store and checks that
it is at the last whole block. Unarmed, a crash point costs one comparison: the
environment is read once, not on every commit and vote.
"""

from __future__ import annotations

import os
import signal

CRASH_ENV = "AITBC_CRASH_AT"

CRASH_POINTS = (
    "commit.before_batch",  # block validated, nothing written
    "commit.after_batch",  # block, state, indexes, undo written and synced; memory not updated
    "commit.after_head",  # in-memory head moved; mempool and peers not told
    "vote.before_persist",  # vote signed in memory, not recorded
    "vote.after_persist",  # vote recorded and synced, not released to the network
    "vote.after_release",  # vote handed to the network
    "market.result_saved",  # client's peer: a delivered result journaled, its ack not sent
    "market.result_held",  # provider: result computed and journaled; not answered, not receipted
    "market.receipt_posted",  # provider: result journaled and receipted, not settled
    "payouts.signed",  # miners' peer: a miner's payout transfer signed and journaled, not submitted
)

_hits: dict[str, int] = {}
_armed: dict[str, int] = {}


def arm(name: str | None, count: int = 1) -> None:
    """Kill this process the ``count``-th time crash point ``name`` is reached (``None``:
    disarm all). Several points may be armed at once: the first reached kills."""
    if name is None:
        _armed.clear()
        _hits.clear()
        return
    if name not in CRASH_POINTS:
        raise ValueError(f"unknown crash point {name!r}; known: {', '.join(CRASH_POINTS)}")
    _armed[name] = count
    _hits.pop(name, None)


def _arm_from_environment() -> None:
    for spec in filter(None, os.environ.get(CRASH_ENV, "").split(",")):
        target, _, count = spec.partition(":")
        arm(target, int(count or 1))


def crash_point(name: str) -> None:
    """SIGKILL this process if it is armed at ``name`` (and the hit count is reached)."""
    if not _armed or name not in _armed:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] >= _armed[name]:
        os.kill(os.getpid(), signal.SIGKILL)


_arm_from_environment()
