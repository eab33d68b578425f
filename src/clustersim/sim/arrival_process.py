"""Open-loop arrivals: each request admitted at its engine time, in order.

With one replica receiving every arrival, the timer also announces the next arrival's time
(serving/next_arrival.py) so that the replica's decode leaps are planned up to it and no
further.

`ArrivalTimer` is the process "for each request: wait until its time (a timeout of t − now),
admit it at the clock's time" without a simpy process: one event object, re-armed for each
next arrival time, whose callback admits. It schedules its events where that process would
schedule its Initialize event and its timeouts, with the same priorities and delays, so every
other event keeps its place in simpy's (time, priority, insertion) order; the process's final
event, which nothing waits on, is the one it leaves out (tests/test_arrival_timer.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from heapq import heappush

import simpy
from simpy.events import NORMAL, URGENT, EventPriority

from clustersim.serving.next_arrival import NextArrival
from clustersim.serving.replica import Replica

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


class ArrivalTimer:
    """The arrival process as one re-armed event (see module docstring); `start` it where
    the process would be created."""

    __slots__ = (
        "_admit",
        "_announce",
        "_arrival_s",
        "_callbacks",
        "_env",
        "_event",
        "_next",
    )

    def __init__(
        self,
        env: simpy.Environment,
        arrival_s: list[float],
        admit: Admit,
        announce: NextArrival | None,
    ) -> None:
        self._env = env
        self._arrival_s = arrival_s
        self._admit = admit
        self._announce = announce
        self._next = 0  # the next request to admit
        self._event = simpy.Event(env)  # succeeded with None each time it is armed
        self._event._ok = True
        self._event._value = None
        # the event's callbacks each time it is armed: one list, as nothing else waits on it
        # (the event loop reads the list it replaces by None; _fire puts it back)
        self._callbacks: list[Callable[[simpy.Event], None]] = [self._fire]

    def start(self) -> None:
        """Run the first arrivals where simpy would initialise the process (now, urgent)."""
        self._callbacks[0] = self._begin
        self._arm(URGENT, 0.0)

    def _arm(self, priority: EventPriority, delay: float) -> None:
        """`Environment.schedule(event, priority, delay)`, its queue entry inline."""
        env, event = self._env, self._event
        event.callbacks = self._callbacks
        heappush(env._queue, (env._now + delay, priority, next(env._eid), event))

    def _begin(self, _event: simpy.Event) -> None:
        """The process's Initialize: admit every request due now, arm for the next one."""
        self._callbacks[0] = self._fire
        self._admit_from(0, self._env._now)

    def _fire(self, _event: simpy.Event) -> None:
        """Admit the request the timer was armed for (at the time it landed, as the process
        does after its timeout), then every request due by now; arm for the next one."""
        env = self._env
        now = env._now
        rid = self._next
        self._admit(rid, now)
        rid += 1
        if rid < len(self._arrival_s):  # `_admit_from`'s usual first turn, inline
            t = self._arrival_s[rid]
            if t > now:
                if self._announce is not None:
                    self._announce.at_s = t
                self._next = rid
                event = self._event
                event.callbacks = self._callbacks  # _arm(NORMAL, t − now), inline
                heappush(env._queue, (now + (t - now), NORMAL, next(env._eid), event))
                return
        self._admit_from(rid, now)

    def _admit_from(self, rid: int, now: float) -> None:
        """Admit requests from `rid` on while they are due by `now`; arm for the next one."""
        arrival_s, admit = self._arrival_s, self._admit
        n = len(arrival_s)
        while rid < n:
            t = arrival_s[rid]
            if t > now:
                if self._announce is not None:
                    self._announce.at_s = t
                self._next = rid
                self._arm(NORMAL, t - now)
                return
            admit(rid, now)
            rid += 1
        self._next = n
        if self._announce is not None:
            self._announce.at_s = math.inf
