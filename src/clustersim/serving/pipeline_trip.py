"""One batch's trip through a pipelined replica's stages, computed in closed form
(serving/pipeline_leap.py), and the re-armable alarm its lane waits on."""

from __future__ import annotations

import simpy

from clustersim.metrics.recorder import STEP_VALUES
from clustersim.serving.batch import Batch
from clustersim.serving.scheduler import Scheduler


class Trip:
    """A batch's stage steps (as iteration rows) and transfers; `free0` / `done0`: the
    stages' last ends and the hand-offs' last moves before it (to compute it again)."""

    __slots__ = (
        "alarm",
        "batch",
        "done0",
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
        self.alarm: Alarm | None = None
        self.formed = 0.0  # when its lane formed it (it reaches stage 0 then)

    @property
    def end_s(self) -> float:
        return self.rows[1 - STEP_VALUES]  # the last stage's (start, end, …): its end


class Alarm:
    """An event fired when the clock reads exactly `at`; `arm` moves it.

    simpy lands a timeout at now + delay: with now ≥ at / 2 the delay at − now is exact
    (Sterbenz) and so is the landing, and the alarm's event is that timeout itself; earlier in
    the run one intermediate timeout first brings now past at / 2. Moving an alarm hands its
    waiters (the event's callbacks) to a fresh event, fired at the new `at`."""

    def __init__(self, env: simpy.Environment, at: float) -> None:
        self.env = env
        self.at = at
        self._gen = 0
        now = env.now
        if now + (at - now) == at:
            self.event: simpy.Event = env.timeout(at - now)
        else:
            self.event = env.event()
            self._hop(at, 0)

    def arm(self, at: float) -> None:
        """Fire at `at` instead (the old event, if it still fires, wakes no one)."""
        self._gen += 1
        self.at = at
        old, self.event = self.event, self.env.event()
        self.event.callbacks, old.callbacks = old.callbacks, []
        self._hop(at, self._gen)

    def _hop(self, at: float, gen: int) -> None:
        if gen != self._gen:
            return  # re-armed since
        env = self.env
        now = env.now
        if now + (at - now) == at:
            env.timeout(at - now).callbacks.append(lambda _ev: self._ring(gen))
        else:
            env.timeout((at - now) * 0.75).callbacks.append(lambda _ev: self._hop(at, gen))

    def _ring(self, gen: int) -> None:
        if gen == self._gen and not self.event.triggered:
            self.event.succeed()
