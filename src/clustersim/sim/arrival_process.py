"""The open-loop arrival process: each request admitted at its engine time, in order.

With one replica receiving every arrival, the process also announces the next arrival's time
(serving/next_arrival.py) so that the replica's decode leaps are planned up to it and no
further.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator, Sequence
from typing import Any

import simpy

from clustersim.serving.next_arrival import NextArrival
from clustersim.serving.replica import Replica

Process = Generator[simpy.Event, Any, None]
Admit = Callable[[int, float], object]


def announced_arrivals(
    units: Sequence[object], arrival_s: Sequence[float], pooled: bool
) -> NextArrival | None:
    """The next-arrival announcement of a run whose single unit is a Replica that receives
    every arrival (not pooled: no disaggregation, no faults), wired to that replica; else None."""
    if pooled or len(units) != 1 or not isinstance(units[0], Replica) or not len(arrival_s):
        return None
    announce = NextArrival(float(arrival_s[0]))
    units[0].next_arrival = announce
    return announce


def open_loop_arrivals(
    env: simpy.Environment,
    arrival_s: list[float],
    admit: Admit,
    announce: NextArrival | None,
) -> Process:
    """Admit request `rid` at `arrival_s[rid]` (engine seconds, non-decreasing)."""
    for rid, t in enumerate(arrival_s):
        now = env.now
        if t > now:
            if announce is not None:
                announce.at_s = t
            yield env.timeout(t - now)
            now = env.now
        admit(rid, now)
    if announce is not None:
        announce.at_s = math.inf
