"""The cyclic garbage collector's view of a run: what set-up built stays out of it.

A run allocates millions of short-lived objects (simpy events, batches, rows), so the
collector runs its young-generation passes throughout and, every so often, a full pass over
every tracked object — including everything imports and the build left alive (modules,
schemas, catalog entries, cost tables), which the simulation never frees. `frozen_heap`
moves those objects to the permanent generation (`gc.freeze`) for the simulation, so full
passes walk only what the simulation itself created, and gives them back afterwards.
Nothing is collected that would not be: frozen objects are alive when frozen; objects they
come to reference are tracked as usual.

`collector_paused` keeps the collector from running at all through a phase that allocates
many containers but leaves few cycles to free: a command's imports (modules, classes,
schemas, all kept) and a run's summary and result files (numpy and arrow work). Its passes
there would walk what the imports left alive (≈ 5 % of the CPU of the issue 15 floor's
100k-request run); the garbage they would find is collected by the first pass after the
block. `kept_frozen` pauses it through a command's imports and a run's set-up and then
freezes what they left: the first pass after either would walk every object they made (on
the issue 15 floor a 14 ms pass after the imports, which found ≈ 500 garbage objects, and a
6 ms one after the set-up, which found none). A top-level module with no imports of its
own, so that the command line can pause the collector before it imports the rest.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

# kept_frozen collects before it freezes once simulations of this many requests in all have
# ended since its last collection (their object graphs are garbage then): the memory they
# hold stays bounded, and a pass (10–50 ms, by what the process holds) is paid at most once
# per this many requests simulated (≈ 0.5 CPU-s of a plain run), never by a single run
COLLECT_AFTER_REQUESTS = 50_000


class _Ended:
    """Requests of the simulations that ended since kept_frozen last collected."""

    requests = 0


def simulation_ended(requests: int) -> None:
    """Note that a simulation of `requests` requests ended: its object graph (cycles of
    replicas, schedulers and lane processes holding the per-request lists) is garbage once
    its caller lets go of it."""
    _Ended.requests += requests


@contextmanager
def frozen_heap() -> Iterator[None]:
    """Freeze the objects alive now for the duration of the block (nested use is harmless:
    the inner exit unfreezes early, which only costs the outer block some speed)."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


@contextmanager
def collector_paused() -> Iterator[None]:
    """No collection inside the block; the collector is enabled after it if it was before
    (nested use is harmless)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


@contextmanager
def kept_frozen() -> Iterator[None]:
    """`collector_paused` for a block whose objects are kept (a command's imports, a run's
    set-up), then everything alive frozen (`gc.freeze`), so that no pass walks them. Frozen
    objects are still freed by reference counting; a cycle among them waits for a
    `gc.unfreeze` (`frozen_heap` gives everything back after a simulation).

    Simulations that ended in this process before (replicates, sweep points, capacity
    probes) left garbage that freezing would keep out of every pass until the next block
    froze it again, a run's worth of memory more each run; so once they add up to
    COLLECT_AFTER_REQUESTS requests (`simulation_ended`) the block collects first."""
    with collector_paused():
        yield
        if _Ended.requests >= COLLECT_AFTER_REQUESTS:
            gc.collect()
            _Ended.requests = 0
        gc.freeze()
