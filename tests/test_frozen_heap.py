"""sim/frozen_heap.py: set-up's objects leave the collector for the block and come back."""

from __future__ import annotations

import gc

import pytest

from clustersim.sim.frozen_heap import frozen_heap


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
