"""Completions the fluid engine merges, for closed-form transfers (serving/pipeline_leap.py).

`FlowEngine._on_timer`, firing at T (the earliest pending finish), completes at T every
entity registered by then whose finish is ≤ T + max(1e-12, 16 ulp(T)). In a pipeline such
near-ties are structural: two stages' transfers end at sums of the same step times added in
another order, an ulp apart. So an entity started at s with finish f completes at the
earliest *firing* T (the finish of an entity not completed earlier) with s ≤ T and
f ≤ due(T); an entity completed at its own finish is itself a firing.

`Completions` holds one replica's closed-form entities as (finish, start, completion, owner)
sorted by finish. `completion` holds a new one and gives its completion against the firings
held; when, a firing itself, it would complete an entity held earlier than that one records,
it sets `tied` (that entity's owner must then be computed again: PipelineLeap does so until
nothing changes, and clears `tied`). `complete` gives both at once.
"""

from __future__ import annotations

import math
from bisect import bisect_left

from clustersim.network.flows import _TIME_TOL_S

_EXACT_TOL_BELOW_S = 256.0  # below it 16 ulp(t) < 1e-12: the tolerance is 1e-12 itself


def due_s(t: float) -> float:
    """The latest finish an engine timer firing at t completes (FlowEngine._on_timer)."""
    if t < _EXACT_TOL_BELOW_S:
        return t + _TIME_TOL_S
    return t + max(_TIME_TOL_S, 16 * math.ulp(t))


class Completions:
    """Closed-form entities of one replica (see module docstring)."""

    def __init__(self) -> None:
        # (finish, start, completion, owner), sorted; `_finish`: their finishes (bisected)
        self._entries: list[tuple[float, float, float, int]] = []
        self._finish: list[float] = []
        self.tied = False  # set by `complete` (a tie to compute again), cleared by the caller

    def complete(self, start: float, finish: float, owner: int) -> tuple[float, bool]:
        """`completion`, and whether this entity is a tie (leaves `tied` as it was)."""
        before, self.tied = self.tied, False
        done = self.completion(start, finish, owner)
        tie, self.tied = self.tied, before or self.tied
        return done, tie

    def completion(self, start: float, finish: float, owner: int) -> float:
        """Hold a new entity started at `start`, finishing alone at `finish`: when it
        completes; sets `tied` when, completing at its finish, it is a firing that
        completes an entity held earlier than that one records."""
        finishes = self._finish
        if finish < _EXACT_TOL_BELOW_S:  # due_s(finish), inline
            last = finish + _TIME_TOL_S
        else:
            last = finish + max(_TIME_TOL_S, 16 * math.ulp(finish))
        reach = finish - 2.0 * (last - finish)  # below every firing that could take it
        i = bisect_left(finishes, reach)
        if i == len(finishes) or finishes[i] > last:  # no entity near it: the usual case
            finishes.insert(i, finish)
            self._entries.insert(i, (finish, start, finish, owner))
            return finish
        entries = self._entries
        k = i
        n = len(entries)
        done = finish
        tie = False
        while i < n:
            t, s, c, _owner = entries[i]
            if t > last:
                break
            if t < finish:
                k = i + 1
                if done == finish and c == t and t >= start and finish <= due_s(t):
                    done = t  # the earliest firing that takes it
            elif t > finish and s <= finish < c:
                tie = True
            i += 1
        finishes.insert(k, finish)
        entries.insert(k, (finish, start, done, owner))
        if tie and done == finish:  # a firing
            self.tied = True
        return done

    def drop(self, owner: int) -> None:
        """Forget the entities of `owner` (it is computed again)."""
        self._entries = [e for e in self._entries if e[3] != owner]
        self._finish = [e[0] for e in self._entries]

    def prune(self, before_s: float) -> None:
        """Forget entities finishing before `before_s`: no entity starting after it can
        complete at their finishes."""
        k = bisect_left(self._finish, before_s)
        if k:
            del self._entries[:k]
            del self._finish[:k]
