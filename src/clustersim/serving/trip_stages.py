"""A pipeline trip's stage steps in closed form: the flow-shop recurrence of
serving/pipeline_leap.py, one stage after another.

Stage s starts the batch at max(its arrival from stage s − 1, stage s's previous end),
computes, runs its all-reduce phases and hands off to stage s + 1; each transfer completes
at `complete(start, finish, owner)` (network/completion_ties.py), or, with `complete` None,
at its finish (the trip is checked against the near completions afterwards:
`Completions.hold_clear`; `one_phase_steps`, the usual case, checks each stage's finishes
as it computes them). Times are seconds, added as the simpy clock adds them.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Callable, Sequence

from clustersim.network.private_allreduce import Phase
from clustersim.network.private_handoff import Transfer

Complete = Callable[[float, float, int], float]
Price = tuple[tuple[Phase, ...], Transfer | None, float]  # phases, hand-off, its latency (s)
# a stage of one all-reduce phase on links: the phase's move and delay, the hand-off's move
# (None: no hand-off) and latency (seconds)
OnePhase = tuple[float, float, float | None, float]


def one_phase_plan(prices: Sequence[Price]) -> tuple[OnePhase, ...] | None:
    """The stages' prices as `one_phase_steps` takes them, or None when a stage has no
    all-reduce phase on links or more than one (then `stage_steps`)."""
    plan = []
    for phases, hand_off, latency in prices:
        if len(phases) != 1 or phases[0].links is None:
            return None
        phase = phases[0]
        plan.append((phase.move_s, phase.delay_s, None if hand_off is None else hand_off.move_s,
                     latency))  # fmt: skip
    return tuple(plan)


def one_phase_steps(
    plan: Sequence[OnePhase],
    computes: Sequence[float],
    free_s: list[float],
    done_s: list[float],
    formed: float,
    steps: list[float],
    times: list[float],
    held: list[float],
    wide: float,
) -> bool:
    """`stage_steps` with `complete` None for stages of one all-reduce phase each (TP > 1):
    the same additions in the same order, the steps and times it appends. True when no
    transfer finishes near another — within 1.5 `wide` below to `wide` above a finish in
    `held` (sorted) or the trip's transfer before (`Completions.hold_clear`'s test, inline)."""
    below = 1.5 * wide
    n = len(held)
    clear = True
    prev = -math.inf  # the finish before (while clear)
    i = 0  # no held finish before held[i] lies near a finish to come (they ascend)
    arrival = formed
    for s, (move_s, delay_s, hand_off_s, latency) in enumerate(plan):
        free = free_s[s]
        if arrival > free:
            start = arrival
            bubble = arrival - free if free > 0 else 0.0  # max(0, start - free), > 0
        else:
            start, bubble = free, 0.0
        compute = computes[s]
        t1 = start + compute
        done = t1 + move_s
        end = done + delay_s  # (with no delay: done + 0.0 is done, bit for bit)
        free_s[s] = end
        if hand_off_s is None:
            steps += (start, end, compute, bubble)
            times += (t1, done)
            arrival = end
            if clear:  # done's window, 1.5 wide below to wide above, holds no finish
                lo = done - below
                if prev >= lo or ((i := bisect_left(held, lo, i)) < n and held[i] <= done + wide):
                    clear = False
            continue
        if end <= done_s[s]:
            raise RuntimeError("closed-form PP hand-offs overlapped on their links")
        arrival = end + hand_off_s
        done_s[s] = arrival
        steps += (start, end, compute, bubble)
        times += (t1, done, end, arrival)
        if clear:  # the windows of done and arrival hold no finish (one search for both
            lo = done - below  # when the first held past done's window is past arrival's)
            if prev >= lo or done >= arrival - below:
                clear = False
            elif (i := bisect_left(held, lo, i)) < n and (h := held[i]) <= arrival + wide:
                # h is in done's window, or arrival's, or between them: look past it
                clear = not (
                    h <= done + wide
                    or h >= arrival - below
                    or (
                        (i := bisect_left(held, arrival - below, i)) < n
                        and held[i] <= arrival + wide
                    )
                )
            prev = arrival
        arrival = arrival + latency  # (+ 0.0: the same)
    return clear


def stage_steps(
    prices: Sequence[Price],
    computes: Sequence[float],
    free_s: list[float],
    done_s: list[float],
    formed: float,
    steps: list[float],
    times: list[float],
    complete: Complete | None,
    owner: int,
) -> None:
    """Append the trip's stage steps to `steps` (recorder.STEP_VALUES each: start, end,
    compute, bubble) and its transfers' (start, completion) to `times`, advancing `free_s` (each
    stage's last end) and `done_s` (each hand-off's last completion); `formed`: when the
    batch reaches stage 0."""
    arrival = formed
    for s, (phases, hand_off, latency) in enumerate(prices):
        free = free_s[s]
        if arrival > free:
            start = arrival
            bubble = arrival - free if free > 0 else 0.0  # max(0, start - free), > 0
        else:
            start, bubble = free, 0.0
        compute = computes[s]
        t1 = start + compute
        end = t1
        for links, _weights, _size, move_s, delay_s in phases:
            if links is not None:
                done = end + move_s
                if complete is not None:
                    done = complete(end, done, owner)
                times += (end, done)
                end = done
            if delay_s > 0:
                end = end + delay_s
        free_s[s] = end
        steps += (start, end, compute, bubble)
        if hand_off is None:
            arrival = end
            continue
        if end <= done_s[s]:
            raise RuntimeError("closed-form PP hand-offs overlapped on their links")
        done = end + hand_off.move_s
        if complete is not None:
            done = complete(end, done, owner)
        done_s[s] = done
        times += (end, done)
        arrival = done + latency if latency > 0 else done
