"""serving/lane_process.py: a LaneProcess runs a generator as simpy.Process runs it."""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any

import pytest
import simpy

from clustersim.serving.lane_process import LaneProcess

Make = Callable[[simpy.Environment, Generator[simpy.Event, Any, Any]], simpy.Process]
KINDS: list[Make] = [simpy.Process, LaneProcess]


def _trace(make: Make) -> list[tuple[float, str]]:
    """Timeouts, a failed event caught, an already processed event, a return value, a
    waiting process: what happened when, in one environment."""
    env = simpy.Environment()
    seen: list[tuple[float, str]] = []
    done = env.event()
    done.succeed("early")

    def worker() -> Generator[simpy.Event, Any, str]:
        for delay in (1.0, 0.5, 2.25):
            value = yield env.timeout(delay, value=delay)
            seen.append((env.now, f"timeout {value}"))
        bad = env.event()
        bad.fail(ValueError("boom"))
        try:
            yield bad
        except ValueError as err:
            seen.append((env.now, f"caught {err} from {type(err.__cause__).__name__}"))
        value = yield done  # processed before it is yielded: its value at once
        seen.append((env.now, f"done {value}"))
        return "finished"

    def waiter(proc: simpy.Process) -> Generator[simpy.Event, Any, None]:
        value = yield proc
        seen.append((env.now, f"worker returned {value}"))

    proc = make(env, worker())
    make(env, waiter(proc))
    env.run()
    return seen


def test_the_same_history_as_simpy() -> None:
    assert _trace(LaneProcess) == _trace(simpy.Process)
    assert _trace(LaneProcess)[-1] == (3.75, "worker returned finished")


@pytest.mark.parametrize("make", KINDS)
def test_an_exception_fails_the_process(make: Make) -> None:
    env = simpy.Environment()

    def broken() -> Generator[simpy.Event, Any, None]:
        yield env.timeout(1)
        raise KeyError("lost")

    make(env, broken())
    with pytest.raises(KeyError, match="lost"):
        env.run()
    assert env.now == 1


@pytest.mark.parametrize("make", KINDS)
def test_a_yield_that_is_not_an_event(make: Make) -> None:
    env = simpy.Environment()

    def wrong() -> Generator[Any, Any, None]:
        yield 42

    make(env, wrong())
    with pytest.raises(RuntimeError, match='Invalid yield value "42"'):
        env.run()


def test_each_awaited_event_gets_the_one_bound_callback() -> None:
    env = simpy.Environment()
    timers: list[simpy.Event] = []

    def loop() -> Generator[simpy.Event, Any, None]:
        for _ in range(3):
            timer = env.timeout(1)
            timers.append(timer)
            yield timer

    proc = LaneProcess(env, loop())
    env.run(until=0.5)
    (callback,) = timers[0].callbacks
    assert callback is proc._resume_once
    assert env.active_process is None
