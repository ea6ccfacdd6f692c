"""Where the node's blocking work runs: LevelDB batches, block validation and building,
signature checks.

By default in a worker thread, off the Trio thread (STYLE.md). A simulation under Trio's
``MockClock(autojump_threshold=0)`` runs it inline instead (:func:`run_blocking_inline`):
the autojump clock leaps to the next timer whenever the event loop waits, and a wait for
a thread is such a wait, so a block being validated in a thread would let round timeouts
and backup slots fire in virtual time that no real peer would have seen pass.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import trio

T = TypeVar("T")

_INLINE: trio.lowlevel.RunVar[bool] = trio.lowlevel.RunVar("aitbc_blocking_inline", default=False)


def run_blocking_inline(enabled: bool = True) -> None:
    """For this Trio run, run the node's blocking work on the Trio thread (simulations and
    virtual-time tests), or again in threads (``False``)."""
    _INLINE.set(enabled)


def inline() -> bool:
    """Whether this Trio run keeps blocking work on the Trio thread."""
    return _INLINE.get()


async def blocking(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` in a worker thread (or inline, see :func:`run_blocking_inline`)."""
    if _INLINE.get():
        await trio.lowlevel.checkpoint()
        return fn(*args)
    return await trio.to_thread.run_sync(fn, *args)
