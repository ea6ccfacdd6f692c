"""Named crash points for durability tests (specs/wire.md, "Storage").

Off unless ``AITBC_CRASH_AT`` is set. ``AITBC_CRASH_AT=commit.after_batch`` kills the
process with SIGKILL the first time that point is reached; ``...:3`` the third time.
Nothing is flushed or cleaned up: the test then reopens the store and checks that it is
at the last whole block.
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


def crash_point(name: str) -> None:
    """SIGKILL this process if ``AITBC_CRASH_AT`` names ``name`` (and its hit count is reached)."""
    spec = os.environ.get(CRASH_ENV)
    if not spec:
        return
    target, _, count = spec.partition(":")
    if target != name:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] >= int(count or 1):
        os.kill(os.getpid(), signal.SIGKILL)
