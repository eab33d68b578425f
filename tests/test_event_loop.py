"""sim/event_loop.py `run_until` processes events as simpy's `Environment.run(until=event)`
does: the same order (ties in time and priority included), the same clock, the same stop (the
events after `until`'s left in the queue), a failed event raised, a defused one not."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import numpy as np
import pytest
import simpy

from clustersim.sim.event_loop import run_until

Log = list[tuple[float, str, int]]


def worker(env: simpy.Environment, log: Log, name: str, delays: list[float]) -> Any:
    for k, delay in enumerate(delays):
        yield env.timeout(delay)
        log.append((env.now, name, k))
        if k % 3 == 0:  # an event fired now: its waiters run after the timeouts due now
            fired = env.event()
            fired.callbacks.append(lambda _ev, k=k: log.append((env.now, name + "-fired", k)))
            fired.succeed(k)
        if k % 5 == 0:  # a failure someone handles (defused): no crash
            failed = env.event()
            failed.fail(ValueError("handled"))
            failed.defused = True


def setup(seed: int) -> tuple[simpy.Environment, Log, simpy.Event]:
    rng = np.random.default_rng(seed)
    env = simpy.Environment()
    log: Log = []
    for w in range(4):
        env.process(worker(env, log, f"w{w}", rng.choice([0.0, 0.5, 1.0, 1 / 3], 30).tolist()))
    done = env.timeout(float(rng.choice([4.0, 5.0, 6.5])))  # ties with the workers' times
    done.callbacks.append(lambda _ev: log.append((env.now, "done", 0)))
    return env, log, done


@pytest.mark.parametrize("seed", range(6))
def test_run_until_is_simpy_run(seed: int) -> None:
    env_a, log_a, done_a = setup(seed)
    env_a.run(until=done_a)
    env_b, log_b, done_b = setup(seed)
    run_until(env_b, done_b)
    assert log_b == log_a and env_b.now == env_a.now
    # the same events are left queued; simpy also requeues `until` itself (priority −1, with
    # the callbacks after its stop: none here), which a run that ends there never processes
    left_a = [(t, p) for t, p, _i, e in sorted(env_a._queue) if e is not done_a]
    assert [(t, p) for t, p, _i, _e in sorted(env_b._queue)] == left_a
    run_until(env_b, done_b)  # already processed: returns at once
    assert env_b.now == env_a.now


def test_a_failed_event_is_raised() -> None:
    env = simpy.Environment()

    def crash() -> Generator[simpy.Event, Any, None]:
        yield env.timeout(1.0)
        raise KeyError("boom")

    env.process(crash())
    with pytest.raises(KeyError, match="boom"):
        run_until(env, env.timeout(5.0))


def test_an_empty_schedule_before_until_is_an_error() -> None:
    env = simpy.Environment()
    env.timeout(1.0)
    with pytest.raises(RuntimeError, match="No scheduled events left"):
        run_until(env, env.event())
