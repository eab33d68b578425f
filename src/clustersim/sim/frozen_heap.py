"""The cyclic garbage collector's view of a simulation: what set-up built stays out of it.

A run allocates millions of short-lived objects (simpy events, batches, rows), so the
collector runs its young-generation passes throughout and, every so often, a full pass over
every tracked object — including everything imports and the build left alive (modules,
schemas, catalog entries, cost tables), which the simulation never frees. `frozen_heap`
moves those objects to the permanent generation (`gc.freeze`) for the simulation, so full
passes walk only what the simulation itself created, and gives them back afterwards.
Nothing is collected that would not be: frozen objects are alive when frozen; objects they
come to reference are tracked as usual.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def frozen_heap() -> Iterator[None]:
    """Freeze the objects alive now for the duration of the block (nested use is harmless:
    the inner exit unfreezes early, which only costs the outer block some speed)."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
