"""When a one-stage lane tries a decode leap (serving/decode_leap.py): always, unless its
recent leaps covered few steps.

A leap has a fixed cost beyond the steps it replaces: a DecodeLeap, its plan, a timer and a
wake event, a re-armed timer when an arrival cuts it, its rows written in a batch. On the
fast TP1 lane (serving/tp1_lane.py) a stepped step is one timeout, and a leap costs about as
much CPU as 10–15 of them: leaps of the 100k-request floor (8 × 8B TP1 at 70 % load) cover
4.4 steps on average, and leaping each one took 19 % more CPU than pausing (2.23 → 1.81
CPU-s a run); at 13 % load on 2 replicas leaps cover 9.7 steps and still cost CPU; only
light load (3 %) leaps long enough to gain. So the lane keeps a running mean of the steps
its leaps covered (weight MEAN_WEIGHT on the newest); while it is below `worth_steps` the
lane steps the next `pause` batches after each leap, the pause doubling (up to the lane's
maximum) while the mean stays low and resetting once it recovers. Leaping and stepping give
the same results (tests/test_leap_equivalence.py), so this only moves CPU time. TP > 1 never
pauses: a stepped step there is several events.
"""

from __future__ import annotations

from clustersim.serving.decode_leap import DecodeLeap

# TP1: the mean steps a leap must cover to beat stepping them. CPU-s of a run (in process, min
# of 5) with worth 3 judged on each leap alone (the previous rule), then 5 / 12 / 16 on the
# mean: the floor (8 × 8B TP1, 70 % load) 1.88, 1.58 / 1.55 / 1.56; 2 replicas at 13 % load
# 1.02, 1.05 / 0.93 / 0.84; at 3 % 0.95, 0.97 / 0.95 / 0.94. With TP > 1 a stepped step is
# several events: always leap.
TP1_WORTH_STEPS = 16
MEAN_WEIGHT = 0.125  # of the newest leap in the running mean of steps covered
MAX_PAUSE = 16  # batches stepped at most before the next try


class LeapBackoff:
    """The lane's leap attempts: `try_now` before planning one, `ran` with what it covered."""

    __slots__ = ("max_pause", "mean_steps", "pause", "skip", "worth_steps")

    def __init__(self, worth_steps: int, max_pause: int = MAX_PAUSE) -> None:
        self.worth_steps = worth_steps
        self.mean_steps = float(worth_steps)  # running mean of the steps leaps covered
        self.max_pause = max_pause
        self.pause = 0  # batches to step after the next short leap
        self.skip = 0  # batches still to step before trying again

    def try_now(self) -> bool:
        if self.skip:
            self.skip -= 1
            return False
        return True

    def ran(self, leap: DecodeLeap | None) -> None:
        """`leap` ended (its steps 0..last ran); None: no leap was planned."""
        if leap is not None:
            self.mean_steps += (leap.last + 1 - self.mean_steps) * MEAN_WEIGHT
        if leap is None or self.mean_steps >= self.worth_steps:
            self.pause = 0
        else:
            self.pause = min(self.max_pause, 2 * self.pause + 1)
            self.skip = self.pause
