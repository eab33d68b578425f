"""LeapBackoff: a lane steps a doubling number of batches after leaps while the running mean
of the steps its leaps covered is short, and tries again at once when the mean recovers."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from clustersim.serving.leap_backoff import MAX_PAUSE, MEAN_WEIGHT, TP1_WORTH_STEPS, LeapBackoff


def leap(steps: int) -> Any:
    return SimpleNamespace(last=steps - 1)


def tries(backoff: LeapBackoff, batches: int) -> list[bool]:
    return [backoff.try_now() for _ in range(batches)]


def test_short_leaps_pause_longer_and_longer() -> None:
    b = LeapBackoff(worth_steps=3)
    assert tries(b, 3) == [True] * 3
    b.ran(leap(2))  # mean 3 → 2.875
    assert tries(b, 2) == [False, True]  # one batch stepped
    b.ran(leap(2))
    assert tries(b, 4) == [False, False, False, True]
    for _ in range(10):
        b.ran(leap(1))
    assert b.pause == MAX_PAUSE
    assert tries(b, MAX_PAUSE + 1) == [False] * MAX_PAUSE + [True]


def test_the_mean_not_one_leap_decides() -> None:
    b = LeapBackoff(worth_steps=8)
    for _ in range(30):
        b.ran(leap(12))  # long leaps: the mean nears 12
    b.ran(leap(2))  # one short leap: the mean stays above 8
    assert b.mean_steps > 8 and b.pause == 0 and tries(b, 1) == [True]
    expected = 8.0
    c = LeapBackoff(worth_steps=8)
    for steps in (2, 20):
        c.ran(leap(steps))
        expected += (steps - expected) * MEAN_WEIGHT
    assert c.mean_steps == expected


def test_a_recovered_mean_resets_the_pause() -> None:
    b = LeapBackoff(worth_steps=3)
    b.ran(leap(2))
    b.ran(leap(2))
    assert b.pause == 3 and tries(b, 4) == [False, False, False, True]
    while b.mean_steps < 3:
        b.ran(leap(40))  # long enough
    assert b.pause == 0 and tries(b, 1) == [True]
    b.ran(None)  # (no leap recorded)
    assert tries(b, 1) == [True]


def test_no_backoff_when_every_leap_is_worth_it() -> None:
    b = LeapBackoff(worth_steps=0)  # TP > 1
    b.ran(leap(2))
    assert tries(b, 5) == [True] * 5


def test_a_lane_may_pause_longer() -> None:
    b = LeapBackoff(worth_steps=3, max_pause=100)
    for _ in range(10):
        b.ran(leap(1))
    assert b.pause == 100  # 1, 3, 7, ..., 511 capped
    assert tries(b, 101) == [False] * 100 + [True]


def test_tp1_lanes_start_neutral() -> None:
    b = LeapBackoff(TP1_WORTH_STEPS)
    assert b.mean_steps == TP1_WORTH_STEPS and tries(b, 1) == [True]
