"""Completions the fluid engine merges, for closed-form transfers (serving/pipeline_leap.py).

`FlowEngine._on_timer`, firing at T (the earliest pending finish), completes at T every
entity registered by then whose finish is ≤ T + max(1e-12, 16 ulp(T)). In a pipeline such
near-ties are structural: two stages' transfers end at sums of the same step times added in
another order, an ulp apart. So an entity started at s with finish f completes at the
earliest *firing* T (the finish of an entity not completed earlier) with s ≤ T and
f ≤ due(T); an entity completed at its own finish is itself a firing.

`Completions` holds one replica's closed-form entities: their finishes sorted (bisected), and
each entity by its owner: a trip held at once as its (start, finish) list, one held by
`completion` as (finish, start, completion, owner). `completion` holds a new one and gives its
completion against the firings held; when, a firing itself, it would complete an entity
held earlier than that one records, it sets `tied` (that entity's owner must then be
computed again: PipelineLeap does so until nothing changes, and clears `tied`). `complete`
gives both at once. `hold_clear` holds a trip's entities at once when none lies near another
(a trip's usual case): one sorted merge, not two inserts and a tuple an entity; the entities
themselves are looked up only near a new one (rare). `hold_checked` holds a trip whose
stages tested that themselves, against `finishes`, as they computed it
(serving/trip_stages.py one_phase_steps).
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right, insort
from collections import deque

from clustersim.network.flows import _TIME_TOL_S

Entry = tuple[float, float, float, int]  # finish, start, completion (seconds), owner
_EXACT_TOL_BELOW_S = 256.0  # below it 16 ulp(t) < 1e-12: the tolerance is 1e-12 itself


def due_s(t: float) -> float:
    """The latest finish an engine timer firing at t completes (FlowEngine._on_timer)."""
    if t < _EXACT_TOL_BELOW_S:
        return t + _TIME_TOL_S
    return t + max(_TIME_TOL_S, 16 * math.ulp(t))


class Completions:
    """Closed-form entities of one replica (see module docstring)."""

    def __init__(self) -> None:
        self.finishes: list[float] = []  # every entity's finish, sorted (bisected)
        self._trips: dict[int, list[float]] = {}  # by owner: (start, finish, …)
        self._order: deque[tuple[float, int]] = deque()  # (last finish, owner), as held
        self._one: list[Entry] = []  # entities held by `completion`
        self.tied = False  # set by `complete` (a tie to compute again), cleared by the caller

    def held(self) -> list[Entry]:
        """(finish, start, completion, owner) of every entity held, by finish."""
        at = set(self.finishes)
        return sorted(e for e in self._entries() if e[0] in at)

    def _entries(self) -> list[Entry]:
        """Every entity, pruned or not (a pruned one's finish is not in `finishes`)."""
        entries = list(self._one)
        for owner, times in self._trips.items():
            entries += [(f, times[j - 1], f, owner) for j, f in enumerate(times) if j % 2]
        return entries

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
        finishes = self.finishes
        if finish < _EXACT_TOL_BELOW_S:  # due_s(finish), inline
            last = finish + _TIME_TOL_S
        else:
            last = finish + max(_TIME_TOL_S, 16 * math.ulp(finish))
        reach = finish - 2.0 * (last - finish)  # below every firing that could take it
        i = bisect_left(finishes, reach)
        if i == len(finishes) or finishes[i] > last:  # no entity near it: the usual case
            finishes.insert(i, finish)
            self._one.append((finish, start, finish, owner))
            return finish
        near = set(finishes[i : bisect_right(finishes, last)])  # held, none pruned
        done = finish
        tie = False
        for t, s, c, _owner in sorted(e for e in self._entries() if e[0] in near):
            if t < finish:
                if done == finish and c == t and t >= start and finish <= due_s(t):
                    done = t  # the earliest firing that takes it
            elif t > finish and s <= finish < c:
                tie = True
        insort(finishes, finish)
        self._one.append((finish, start, done, owner))
        if tie and done == finish:  # a firing
            self.tied = True
        return done

    def hold_clear(self, times: list[float], owner: int) -> bool:
        """Hold an owner's entities, `times` = (start, finish, …) in order, each completing
        at its finish — when none lies near another or near one held (then `completion`
        would give each its finish and hold it just so); else hold nothing and give False.
        "Near" is taken wider than `completion`'s window: 3 W below a finish to 2 W above
        it, W = the tolerance at the latest finish (it does not decrease with t)."""
        finishes = self.finishes
        ends = times[1::2]
        if not ends:
            return True
        wide = self.wide_s(ends[-1])
        below = 1.5 * wide  # 3 W
        n = len(finishes)
        prev = -math.inf
        for f in ends:
            lo = f - below
            if prev >= lo:  # out of order, or near the one before
                return False
            i = bisect_left(finishes, lo)
            if i < n and finishes[i] <= f + wide:
                return False
            prev = f
        self._hold(times, ends, owner)
        return True

    def hold_checked(self, times: list[float], owner: int, wide: float) -> bool:
        """`hold_clear` of a trip whose finishes were found clear of each other and of those
        held with a window of `wide` (2 W; trip_stages.one_phase_steps): holds them at once
        when that is the window at its latest finish or wider; else `hold_clear`."""
        if not times:
            return True
        if self.wide_s(times[-1]) > wide:  # (its latest finish: a transfer's)
            return self.hold_clear(times, owner)
        self._hold(times, times[1::2], owner)
        return True

    @staticmethod
    def wide_s(t: float) -> float:
        """2 W at t (seconds): `hold_clear`'s window is 1.5 of it below a finish, one above."""
        if t < _EXACT_TOL_BELOW_S:
            return 2.0 * _TIME_TOL_S
        return 2.0 * max(_TIME_TOL_S, 16 * math.ulp(t))

    def _hold(self, times: list[float], ends: list[float], owner: int) -> None:
        """Hold a trip's entities (ends = times[1::2]): one sorted merge; its `times` list
        kept as it is (a trip computed again is dropped first)."""
        finishes = self.finishes
        finishes += ends
        finishes.sort()  # a merge of two ascending runs
        self._trips[owner] = times
        self._order.append((ends[-1], owner))

    def drop(self, owner: int) -> None:
        """Forget the entities of `owner` (it is computed again)."""
        kept = [e for e in self.held() if e[3] != owner]
        self._trips.pop(owner, None)
        self._one = [e for e in self._one if e[3] != owner]
        self.finishes = [e[0] for e in kept]

    def prune(self, before_s: float) -> None:
        """Forget entities finishing before `before_s`: no entity starting after it can
        complete at their finishes."""
        finishes = self.finishes
        k = bisect_left(finishes, before_s)
        if not k:
            return
        del finishes[:k]
        order, trips = self._order, self._trips
        while order and order[0][0] < before_s:  # a trip's last finish is its latest
            owner = order.popleft()[1]
            times = trips.get(owner)
            if times is not None and times[-1] < before_s:  # not held again since
                del trips[owner]
        if self._one:
            self._one = [e for e in self._one if e[0] >= before_s]
