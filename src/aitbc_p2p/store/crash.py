"""Named crash points for durability tests (specs/wire.md, "Storage").

Off unless armed: by ``AITBC_CRASH_AT`` in the environment when the process starts (the
multi-process tests do this), or by :func:`arm` in-process. ``AITBC_CRASH_AT=commit.after_batch``
kills the process with SIGKILL the first time that point is reached; ``...:3`` the third
time. Nothing is flushed or cleaned up: the test then reopens the store and checks that
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
)

_hits: dict[str, int] = {}
_armed: tuple[str, int] | None = None


def arm(name: str | None, count: int = 1) -> None:
    """Kill this process the ``count``-th time crash point ``name`` is reached (``None``: disarm)."""
    global _armed
    if name is not None and name not in CRASH_POINTS:
        raise ValueError(f"unknown crash point {name!r}; known: {', '.join(CRASH_POINTS)}")
    _armed = None if name is None else (name, count)
    _hits.clear()


def _arm_from_environment() -> None:
    spec = os.environ.get(CRASH_ENV)
    if spec:
        target, _, count = spec.partition(":")
        arm(target, int(count or 1))


def crash_point(name: str) -> None:
    """SIGKILL this process if it is armed at ``name`` (and the hit count is reached)."""
    if _armed is None or _armed[0] != name:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] >= _armed[1]:
        os.kill(os.getpid(), signal.SIGKILL)


_arm_from_environment()
