"""When a one-stage lane tries a decode leap (serving/decode_leap.py): always, unless its
recent leaps covered few steps.

A leap has a fixed cost beyond the steps it replaces: planning, a timer and a wake event,
and a re-armed timer when an arrival cuts it. A stepped TP1 step is one timeout, so at high
load, where arrivals and finishes change the batch every one or two steps, leaping costs
more than it saves (the issue 15 floor case: ≈ 10 % more simulation work than stepping).
After a leap of fewer than `worth_steps` steps the lane steps the next `pause` batches, the
pause doubling while leaps stay short (up to MAX_PAUSE) and resetting after one that was
worth it. Leaping and stepping give the same results (tests/test_leap_equivalence.py), so
this only moves CPU time. Measured (instructions of the simulation, valgrind): 8 × 8B TP1
at 70 % load −9 %; 2 replicas at 13 % load +2 % (its long leaps now and then wait out a
pause); TP > 1 never pauses.
"""

from __future__ import annotations

from clustersim.serving.decode_leap import DecodeLeap

# TP1: a leap must cover this many steps to beat stepping them (two events and planning
# against one timeout a step; 6 paused more at light load for a little more at high load);
# with TP > 1 a stepped step is several events: always leap
TP1_WORTH_STEPS = 3
MAX_PAUSE = 16  # batches stepped at most before the next try


class LeapBackoff:
    """The lane's leap attempts: `try_now` before planning one, `ran` with what it covered."""

    __slots__ = ("max_pause", "pause", "skip", "worth_steps")

    def __init__(self, worth_steps: int, max_pause: int = MAX_PAUSE) -> None:
        self.worth_steps = worth_steps
        self.max_pause = max_pause
        self.pause = 0  # batches to step after the next short leap
        self.skip = 0  # batches still to step before trying again

    def try_now(self) -> bool:
        if self.skip:
            self.skip -= 1
            return False
        return True

    def ran(self, leap: DecodeLeap | None) -> None:
        """`leap` ended (its steps 0..last ran)."""
        if leap is None or leap.last + 1 >= self.worth_steps:
            self.pause = 0
        else:
            self.pause = min(self.max_pause, 2 * self.pause + 1)
            self.skip = self.pause
