"""Process-wide settings for a long-running peer (the daemon applies them at start).

Only the daemon calls :func:`tune_gc`: a program that imports the library owns its
process and its collector.
"""

from __future__ import annotations

import gc

GEN0_THRESHOLD = 50_000
"""Net container allocations between two collections of the youngest generation (the
interpreter's default is 700)."""


def tune_gc(gen0: int = GEN0_THRESHOLD) -> None:
    """Tune the cyclic garbage collector for block building and admission.

    - Everything alive now (imported modules, the opened store, the configuration) moves
      to the permanent generation, so full collections stop walking it again and again.
    - The youngest generation is collected every ``gen0`` allocations instead of every
      700: a block of 1000 transfers allocates tens of thousands of short-lived tuples,
      dicts and records, and each early collection also ages the survivors into the
      older generations, whose collections walk every tracked object.

    Measured with bench/ledger.py's node path (20,000 transfers, 2 cores): the main
    process's CPU time drops by about a tenth (bench/README.md).
    """
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(gen0, gen1, gen2)
