"""A private TP group's closed-form all-reduces, booked in the link ledger in bulk.

A group whose all-reduces are alone on their links (network/private_allreduce.py) books each
phase's entity in the ledger as `LinkLedger.record(links, weights, t0, t1, size)` would at
its completion. Booking step by step costs several Python calls a step; instead the steps
are journaled — a stepped step as (start, compute), a decode leap's steps as its own lists
(serving/decode_leap.py) — and booked in bulk before the ledger is read
(`Fabric.before_read`) and whenever HELD_ENTRIES are held (bounding the lists kept alive).

The bulk booking computes every entity's start and finish with the clock's operations — the
all-reduce starts at start + compute, then each phase adds its move (an entity) and its
latency (when > 0) — elementwise in float64 (the same IEEE additions), their bins as
int(t / bin_s), and hands them to `LinkLedger.record_columns` in completion order. Only this
group loads its links, so each cell receives the same additions in the same order as when
booked one by one (tests/test_leap_equivalence.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from clustersim.network.ledger import Entity, LinkLedger


class Phase(Protocol):
    """An all-reduce phase (network/private_allreduce.py: Phase)."""

    @property
    def links(self) -> tuple[int, ...] | None: ...  # its entity's links (None: no entity)
    @property
    def weights(self) -> tuple[float, ...]: ...
    @property
    def size(self) -> float: ...  # bytes
    @property
    def move_s(self) -> float: ...
    @property
    def delay_s(self) -> float: ...  # latency after the move (none when 0)


HELD_ENTRIES = 4096  # journaled steps or leaps held before they are booked

# (start, ends or None, compute (a list with ends, else seconds), steps, phases key)
_Entry = tuple[float, list[float] | None, list[float] | float, int, int]


class AllReduceJournal:
    """The closed-form all-reduces of one group not yet in the ledger (see module)."""

    def __init__(self, ledger: LinkLedger) -> None:
        self.ledger = ledger
        self._entries: list[_Entry] = []
        self._phases: list[Sequence[Phase]] = []  # by key; kept alive so that ids stay unique
        self._keys: dict[int, int] = {}  # id(phases) → key

    def _key(self, phases: Sequence[Phase]) -> int:
        key = self._keys.get(id(phases))
        if key is None:
            key = self._keys[id(phases)] = len(self._phases)
            self._phases.append(phases)
        return key

    def step(self, start: float, compute_s: float, phases: Sequence[Phase]) -> None:
        """A step from `start` computing for `compute_s`, then all-reducing (`phases`)."""
        self._entries.append((start, None, compute_s, 1, self._key(phases)))
        if len(self._entries) >= HELD_ENTRIES:
            self.flush()

    def steps(
        self,
        start: float,
        ends: list[float],
        compute_s: list[float],
        count: int,
        phases: Sequence[Phase],
    ) -> None:
        """`count` consecutive steps, step i from ends[i − 1] (`start` for step 0) to
        ends[i], computing for compute_s[i], then all-reducing (`phases`). The lists are
        read, not copied, when booked: their first `count` entries must not change."""
        self._entries.append((start, ends, compute_s, count, self._key(phases)))
        if len(self._entries) >= HELD_ENTRIES:
            self.flush()

    def flush(self) -> None:
        """Book every journaled step's entities in the ledger, in completion order."""
        if not self._entries:
            return
        entries, self._entries = self._entries, []
        phases, self._phases, self._keys = self._phases, [], {}
        starts: list[float] = []
        compute: list[float] = []
        keys: list[int] = []
        for start, ends, c, k, key in entries:
            starts.append(start)
            if ends is None:
                assert isinstance(c, float)
                compute.append(c)
                keys.append(key)
            else:
                assert not isinstance(c, float)
                starts += ends[: k - 1]
                compute += c[:k]
                keys += [key] * k
        self._book(phases, starts, compute, keys)

    def _book(
        self,
        phases: list[Sequence[Phase]],
        starts: list[float],
        compute: list[float],
        keys: list[int],
    ) -> None:
        """Entity times of each step (the clock's additions, elementwise), then the ledger."""
        slots = max(len(p) for p in phases)
        key = np.asarray(keys, dtype=np.int64)
        t = np.asarray(starts, dtype=np.float64) + np.asarray(compute, dtype=np.float64)
        t0s, t1s, moving = [], [], []
        shapes: list[Entity] = []
        for j in range(slots):
            has = np.array([j < len(p) and p[j].links is not None for p in phases])[key]
            move = np.array([p[j].move_s if j < len(p) else 0.0 for p in phases])[key]
            delay = np.array([p[j].delay_s if j < len(p) else 0.0 for p in phases])[key]
            t0s.append(t)
            t = np.where(has, t + move, t)
            t1s.append(t)
            t = np.where(delay > 0, t + delay, t)
            moving.append(has)
        for p in phases:  # shape index key · slots + j
            for j in range(slots):
                ph = p[j] if j < len(p) else None
                if ph is None or ph.links is None:
                    shapes.append(((), (), 0.0))
                else:
                    shapes.append((ph.links, ph.weights, ph.size))
        # entities in completion order: step after step, phase after phase
        mask = np.stack(moving, axis=1).ravel()
        t0 = np.stack(t0s, axis=1).ravel()[mask]
        t1 = np.stack(t1s, axis=1).ravel()[mask]
        which = (key[:, None] * slots + np.arange(slots)[None, :]).ravel()[mask]
        bin_s = self.ledger.bin_s
        self.ledger.record_columns(
            shapes,
            which.tolist(),
            t0.tolist(),
            t1.tolist(),
            (t0 / bin_s).astype(np.int64).tolist(),
            (t1 / bin_s).astype(np.int64).tolist(),
        )
