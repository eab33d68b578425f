"""Completions the fluid engine merges, for closed-form transfers (serving/pipeline_leap.py).

`FlowEngine._on_timer`, firing at T (the earliest pending finish), completes at T every
entity registered by then whose finish is ≤ T + max(1e-12, 16 ulp(T)). In a pipeline such
near-ties are structural: two stages' transfers end at sums of the same step times added in
another order, an ulp apart. So an entity started at s with finish f completes at the
earliest *firing* T (the finish of an entity not completed earlier) with s ≤ T and
f ≤ due(T); an entity completed at its own finish is itself a firing.

`Completions` holds one replica's closed-form entities as [finish, start, completion, owner]
sorted by finish. `complete` gives a new entity's completion against the firings held;
`conflicts` tells when a new firing would complete an entity held earlier than recorded (its
owner must then be computed again: PipelineLeap does so until nothing changes).
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right, insort
from operator import itemgetter

from clustersim.network.flows import _TIME_TOL_S

_finish = itemgetter(0)


def due_s(t: float) -> float:
    """The latest finish an engine timer firing at t completes (FlowEngine._on_timer)."""
    return t + max(_TIME_TOL_S, 16 * math.ulp(t))


class Completions:
    """Closed-form entities of one replica (see module docstring)."""

    def __init__(self) -> None:
        self._entries: list[list[float]] = []  # [finish, start, completion, owner]

    def complete(self, start: float, finish: float) -> float:
        """When an entity started at `start`, finishing alone at `finish`, completes."""
        entries = self._entries
        reach = 2.0 * (finish - due_s(finish)) + finish  # below every firing that could take it
        i = bisect_left(entries, reach, key=_finish)
        n = len(entries)
        while i < n:
            t, _s, c, _owner = entries[i]
            if t >= finish:
                break
            if c == t and t >= start and finish <= due_s(t):
                return t
            i += 1
        return finish

    def conflicts(self, start: float, finish: float) -> bool:
        """Whether a firing at `finish` completes an entity held earlier than it records."""
        entries = self._entries
        last = due_s(finish)
        i = bisect_right(entries, finish, key=_finish)
        n = len(entries)
        while i < n and entries[i][0] <= last:
            _t, s, c, _owner = entries[i]
            if s <= finish < c:
                return True
            i += 1
        return False

    def add(self, start: float, finish: float, completion: float, owner: int) -> None:
        insort(self._entries, [finish, start, completion, float(owner)], key=_finish)

    def drop(self, owner: int) -> None:
        """Forget the entities of `owner` (it is computed again)."""
        key = float(owner)
        self._entries = [e for e in self._entries if e[3] != key]

    def prune(self, before_s: float) -> None:
        """Forget entities finishing before `before_s`: no entity starting after it can
        complete at their finishes."""
        k = bisect_left(self._entries, before_s, key=_finish)
        if k:
            del self._entries[:k]
