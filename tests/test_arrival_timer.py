"""sim/arrival_process.py: `ArrivalTimer` admits every request when the arrival process it
replaces would, and every other event keeps its place in simpy's order: same clock times,
same ties (arrivals at the same time as each other and as other processes' timeouts, at t = 0,
a timeout landing an ulp off its target), the same next-arrival announcements."""

from __future__ import annotations

import math
from collections.abc import Callable, Generator
from typing import Any

import numpy as np
import simpy
from hypothesis import given, settings
from hypothesis import strategies as st

from clustersim.serving.next_arrival import NextArrival
from clustersim.sim.arrival_process import ArrivalTimer

Log = list[tuple[float, str, int, float]]


def arrival_process(
    env: simpy.Environment,
    arrival_s: list[float],
    admit: Callable[[int, float], object],
    announce: NextArrival,
) -> Generator[simpy.Event, Any, None]:
    """The process the timer replaces (clustersim's open-loop arrivals until 2026-12-04)."""
    for rid, t in enumerate(arrival_s):
        now = env.now
        if t > now:
            announce.at_s = t
            yield env.timeout(t - now)
            now = env.now
        admit(rid, now)
    announce.at_s = math.inf


def lane(env: simpy.Environment, log: Log, delays: list[float], announce: NextArrival) -> Any:
    """Another process: timeouts that tie with arrivals, logging what it sees."""
    for k, delay in enumerate(delays):
        yield env.timeout(delay)
        log.append((env.now, "lane", k, announce.at_s))


def run(arrival_s: list[float], delays: list[float], timer: bool) -> Log:
    env = simpy.Environment()
    log: Log = []
    announce = NextArrival(arrival_s[0] if arrival_s else math.inf)
    env.process(lane(env, log, delays, announce))  # created first, as replicas' lanes are

    def admit(rid: int, now: float) -> None:
        log.append((now, "admit", rid, announce.at_s))
        woken = env.timeout(0.0)  # a lane woken by the arrival: its place among the ties
        woken.callbacks.append(lambda _ev: log.append((env.now, "woken", rid, announce.at_s)))

    if timer:
        ArrivalTimer(env, arrival_s, admit, announce).start()
    else:
        env.process(arrival_process(env, arrival_s, admit, announce))
    env.process(lane(env, log, delays[::-1], announce))  # and one created after
    env.run()
    log.append((env.now, "end", 0, announce.at_s))
    return log


def test_the_timer_admits_as_the_process_does() -> None:
    rng = np.random.default_rng(7)
    # ties at t = 0 and later; a timeout from 0.77052… lands an ulp before 6.31693…: the
    # process admits that request at the landing time, before its arrival time
    early = [0.0, 0.0, 0.7705231398308006, 6.31693958759823, 6.31693958759823]
    later = np.sort(rng.uniform(6.8, 40.0, 200)).tolist()
    arrival_s = early + later + [later[-1]] * 3 + [97.25]
    delays = rng.choice([0.0, 0.1, 0.2, 1 / 3, 2.5], size=200).tolist()
    reference = run(arrival_s, delays, timer=False)
    admitted = {rid: now for now, kind, rid, _at in reference if kind == "admit"}
    assert len(admitted) == len(arrival_s)
    assert any(now < arrival_s[rid] for rid, now in admitted.items())  # landed before it
    assert run(arrival_s, delays, timer=True) == reference


@settings(max_examples=60, deadline=None)
@given(
    gaps=st.lists(st.sampled_from([0.0, 0.25, 0.5, 1 / 3, 1e-12, 0.1]), max_size=40),
    delays=st.lists(st.sampled_from([0.0, 0.25, 0.5, 1 / 3, 0.1]), max_size=20),
)
def test_any_arrivals_keep_the_event_order(gaps: list[float], delays: list[float]) -> None:
    arrival_s = np.cumsum(gaps).tolist() if gaps else []
    assert run(arrival_s, delays, timer=True) == run(arrival_s, delays, timer=False)
