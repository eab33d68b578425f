"""The simulation's event loop: simpy's `Environment.run(until=event)` with
`Environment.step` inlined (one method call and one try block fewer an event).

Events are processed exactly as simpy processes them: popped in (time, priority, insertion)
order, the clock set to the event's time, its callbacks run in order, a failed event that no
one defused raised as a copy of its exception. The loop stops after the event in whose
processing `until` fired, as `run(until=…)` stops on the StopSimulation its callback raises
(simpy then requeues `until` with the callbacks after its own, for a later `run`; the
simulation ends there, so nothing reads it) (tests/test_event_loop.py).
"""

from __future__ import annotations

from heapq import heappop

import simpy


def run_until(env: simpy.Environment, until: simpy.Event) -> None:
    """Process `env`'s events until `until` has been processed (at once if it was)."""
    if until.callbacks is None:
        return
    stopped: list[bool] = []
    until.callbacks.append(lambda _event: stopped.append(True))
    queue = env._queue
    while not stopped:
        try:
            now, _, _, event = heappop(queue)
        except IndexError:
            raise RuntimeError(
                f'No scheduled events left but "until" event was not triggered: {until}'
            ) from None
        env._now = now
        callbacks, event.callbacks = event.callbacks, None  # type: ignore[assignment]
        for callback in callbacks:
            callback(event)
        if not event._ok and not hasattr(event, "_defused"):
            exc = type(event._value)(*event._value.args)
            exc.__cause__ = event._value
            raise exc
