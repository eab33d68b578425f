"""One batch's trip through a pipelined replica's stages, computed in closed form
(serving/pipeline_leap.py), and the one timer of a replica's trips."""

from __future__ import annotations

import math
from collections.abc import Callable
from heapq import heappush

import simpy
from simpy.events import NORMAL

from clustersim.metrics.trip_rows import STEP_VALUES
from clustersim.serving.batch import Batch
from clustersim.serving.scheduler import Scheduler


class Trip:
    """A batch's stage steps (as iteration rows) and transfers; `free0` / `done0`: the
    stages' last ends and the hand-offs' last moves before it (to compute it again)."""

    __slots__ = (
        "batch",
        "done0",
        "eid",
        "formed",
        "free0",
        "lane",
        "rows",
        "sched",
        "seq",
        "times",
    )

    def __init__(
        self,
        seq: int,
        lane: int,
        sched: Scheduler,
        batch: Batch,
        free0: list[float],
        done0: list[float],
    ) -> None:
        self.seq = seq
        self.lane = lane
        self.sched = sched
        self.batch = batch
        self.free0 = free0
        self.done0 = done0
        # its stage steps' (start, end, compute, bubble), one after another
        # (serving/trip_stages.py), and the rest of their rows (Recorder.on_trip)
        self.rows: list[float] = []
        self.times: list[float] = []  # its transfers' (start, end), one after another
        self.eid = 0  # the event id ordering its end among events of that time (TripTimer)
        self.formed = 0.0  # when its lane formed it (it reaches stage 0 then)

    @property
    def end_s(self) -> float:
        return self.rows[1 - STEP_VALUES]  # the last stage's (start, end, …): its end


class TripTimer:
    """The one queue entry of a replica's trips: at the earliest trip's end, ordered among
    events of the same time by the event id its trip drew when it started (or last moved),
    where its own timeout would have been queued; `arm` re-queues it when that trip or its
    end changes (the entry queued before is then stale, and rings no one)."""

    def __init__(self, env: simpy.Environment, ring: Callable[[], None]) -> None:
        self.env = env
        self._ring_cb = ring
        self._event = self._fresh()
        self._armed: Trip | None = None  # the trip queued for (None: nothing queued)
        self._at = math.nan  # its end when queued (seconds)

    def _fresh(self) -> simpy.Event:
        event = simpy.Event(self.env)  # succeeded with None, as a timeout is
        event._ok = True
        event._value = None
        return event

    def arm(self, trip: Trip) -> None:
        """Ring at `trip.end_s` (the clock set exactly there)."""
        if self._armed is trip and self._at == trip.end_s:
            return
        if self._armed is not None:  # the queued entry is stale: a fresh event
            self._event = self._fresh()
        self._armed, self._at = trip, trip.end_s
        event = self._event
        event.callbacks = [self._ring]
        heappush(self.env._queue, (trip.end_s, NORMAL, trip.eid, event))

    def _ring(self, event: simpy.Event) -> None:
        if event is self._event:
            self._armed = None
            self._ring_cb()
