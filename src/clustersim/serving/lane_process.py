"""A lane's simpy process with a leaner resume: the hot loop of serving/tp1_lane.py is
resumed once an engine step.

`simpy.Process._resume` looks up its generator's `send` and creates a new bound method of
itself for every event the process waits on. `LaneProcess` binds both once; everything
else is simpy's, step for step: the active process set around the resume, failed events
thrown into the generator as a copy of their exception (and defused), the process
triggered (scheduled) with the generator's return value or exception, an already
processed event's value sent at once, a non-event yield reported as simpy reports it
(tests/test_lane_process.py runs both on the same generators).
"""

from __future__ import annotations

from typing import Any

import simpy
from simpy.events import Event, ProcessGenerator


class LaneProcess(simpy.Process):
    """simpy.Process for a lane's loop (see the module docstring)."""

    def __init__(self, env: simpy.Environment, generator: ProcessGenerator) -> None:
        self._send = generator.send
        super().__init__(env, generator)
        self._resume_once = self._resume  # the callback it leaves on each awaited event

    def _resume(self, event: Event) -> None:
        env = self.env
        env._active_proc = self
        while True:
            try:
                if event._ok:
                    event = self._send(event._value)
                else:
                    event._defused = True
                    exc = type(event._value)(*event._value.args)
                    exc.__cause__ = event._value
                    event = self._generator.throw(exc)
            except StopIteration as stop:
                event = None  # type: ignore[assignment]
                self._ok = True
                self._value = stop.args[0] if len(stop.args) else None
                env.schedule(self)
                break
            except BaseException as err:
                event = None  # type: ignore[assignment]
                self._ok = False
                err.__traceback__ = err.__traceback__.tb_next  # type: ignore[union-attr]
                self._value = err
                env.schedule(self)
                break
            try:
                if event.callbacks is not None:  # not yet processed: resume when it is
                    event.callbacks.append(self._resume_once)
                    break
            except AttributeError:
                _not_an_event(self, event)
        self._target = event
        env._active_proc = None


def _not_an_event(process: LaneProcess, value: Any) -> None:
    """simpy's error for a yield that is not an event."""
    from simpy.events import _describe_frame

    descr = _describe_frame(process._generator.gi_frame)  # type: ignore[attr-defined]
    raise RuntimeError(f'\n{descr}Invalid yield value "{value}"') from None
