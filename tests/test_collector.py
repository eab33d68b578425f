"""collector.py: set-up's objects leave the collector for the block and come back; a paused
collector runs again after the block; what a kept block made stays frozen until a
frozen_heap block gives it back."""

from __future__ import annotations

import gc
import weakref

import pytest

from clustersim.collector import (
    COLLECT_AFTER_REQUESTS,
    collector_paused,
    frozen_heap,
    kept_frozen,
    simulation_ended,
)


def test_objects_alive_at_entry_are_frozen_for_the_block_only() -> None:
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    alive = [object() for _ in range(10)]
    with frozen_heap():
        assert gc.get_freeze_count() > 0
    assert gc.get_freeze_count() == 0
    assert len(alive) == 10


def test_unfrozen_after_an_error() -> None:
    gc.unfreeze()
    with pytest.raises(RuntimeError), frozen_heap():
        raise RuntimeError("boom")
    assert gc.get_freeze_count() == 0


def test_cycles_made_inside_are_still_collected() -> None:
    with frozen_heap():

        class Node:
            partner: object

        a, b = Node(), Node()
        a.partner, b.partner = b, a
        n_before = len(gc.get_objects())
        del a, b
        assert gc.collect() >= 2
        assert len(gc.get_objects()) < n_before


def test_paused_collector_resumes_and_collects_what_waited() -> None:
    assert gc.isenabled()
    with collector_paused():
        assert not gc.isenabled()
        with collector_paused():  # nested: the outer block still pauses it
            pass
        assert not gc.isenabled()

        class Node:
            partner: object

        a, b = Node(), Node()
        a.partner, b.partner = b, a
        del a, b
    assert gc.isenabled()
    assert gc.collect() >= 2  # the cycle waited for the first pass after the block


def test_a_disabled_collector_stays_disabled() -> None:
    gc.disable()
    try:
        with collector_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_resumed_after_an_error() -> None:
    with pytest.raises(RuntimeError), collector_paused():
        raise RuntimeError("boom")
    assert gc.isenabled()


def test_a_kept_block_pauses_then_freezes_what_it_made() -> None:
    gc.unfreeze()
    with kept_frozen():
        assert not gc.isenabled()
        kept = {"schema": [object() for _ in range(10)]}
    assert gc.isenabled()
    assert gc.is_tracked(kept) and gc.get_freeze_count() > 0
    assert not any(o is kept for o in gc.get_objects())  # (frozen: no pass walks it)
    with frozen_heap():
        pass
    assert gc.get_freeze_count() == 0  # given back with everything else
    assert any(o is kept for o in gc.get_objects())


def test_a_kept_block_that_fails_freezes_nothing() -> None:
    gc.unfreeze()
    with pytest.raises(RuntimeError), kept_frozen():
        raise RuntimeError("boom")
    assert gc.isenabled()
    assert gc.get_freeze_count() == 0


def test_a_kept_block_collects_what_ended_simulations_left_first() -> None:
    """A simulation's object graph is cycles: once simulations of COLLECT_AFTER_REQUESTS
    requests have ended, a kept block collects before freezing, so that repeated runs in
    one process do not keep each run's memory; before that it freezes them."""

    class Node:
        partner: object

    def garbage_cycle() -> weakref.ref[Node]:
        a, b = Node(), Node()
        a.partner, b.partner = b, a
        return weakref.ref(a)

    with kept_frozen():  # (whatever ended before this test: collected or not, reset below)
        pass
    simulation_ended(COLLECT_AFTER_REQUESTS)
    with kept_frozen():
        pass
    probe = garbage_cycle()
    simulation_ended(COLLECT_AFTER_REQUESTS - 1)  # not enough to pay a pass for
    with kept_frozen():
        pass
    assert probe() is not None  # frozen with the rest
    gc.unfreeze()
    probe = garbage_cycle()
    simulation_ended(1)  # now enough
    with kept_frozen():  # the next run's set-up
        pass
    assert probe() is None  # collected, not frozen
    gc.unfreeze()
