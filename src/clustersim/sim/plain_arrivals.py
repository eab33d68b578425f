"""The arrival path of a plain co-located run, in one function call a request.

`_Simulation._admit` serves every kind of run: disaggregated pools, faults (replica health
chooses), least_kv (KV fractions refreshed a request), prefix-aware routers, replicas of any
kind. A run with none of these — every unit a one-lane `Replica` without prefix caching, a
router reading only the outstanding counts — admits a request with the same decisions in
the same order, inline: the router's choice (least_outstanding's scan as `min` + `index`),
the arrival record, the drop checks (too long for `max_model_len`, the replica's queue full,
more KV than the replica's lane can ever hold) and `Replica.submit` → `Scheduler.add` (its
`interrupt` called only while the replica has a decode leap in flight: without one it does
nothing).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from clustersim.metrics.recorder import Recorder
from clustersim.serving.replica import Replica
from clustersim.serving.request_state import RequestState
from clustersim.serving.router import LeastOutstandingRouter, Router

Admit = Callable[[int, float], bool]


class PlainRun(Protocol):
    """What the arrival path reads of sim/engine.py's _Simulation."""

    @property
    def disagg(self) -> object | None: ...
    @property
    def faults(self) -> object | None: ...
    @property
    def router(self) -> Router: ...
    @property
    def replicas(self) -> Sequence[Any]: ...
    @property
    def outstanding(self) -> list[int]: ...
    @property
    def kv_fraction(self) -> list[float]: ...
    @property
    def recorder(self) -> Recorder: ...
    @property
    def state(self) -> RequestState: ...
    @property
    def max_model_len(self) -> int: ...
    @property
    def max_queue(self) -> int | None: ...

    def _end_one(self) -> None: ...


def _plain_replicas(replicas: Sequence[Any]) -> list[Replica] | None:
    """The replicas if each is a one-lane Replica whose scheduler has no prefix cache."""
    if not all(type(u) is Replica for u in replicas):
        return None
    plain: list[Replica] = list(replicas)
    if any(len(u.lanes) != 1 or u.lanes[0].scheduler.prefix is not None for u in plain):
        return None
    return plain


def plain_admit(run: PlainRun) -> Admit | None:
    """`run._admit`'s equivalent for a plain run (see the module docstring), or None."""
    if run.disagg is not None or run.faults is not None:  # (a pooled run has no .router)
        return None
    router = run.router
    if router.uses_kv or router.uses_prefix:
        return None
    replicas = _plain_replicas(run.replicas)
    if replicas is None:
        return None
    lanes = [u.lanes[0] for u in replicas]
    # Scheduler.fits_ever: blocks_for(prompt + output + lookahead) <= the lane's capacity,
    # i.e. prompt + output <= capacity · block_size − lookahead; with max_model_len: drop
    # when prompt + output exceeds the smaller of the two
    limits = []
    for lane in lanes:
        adm = lane.scheduler.admission
        fits = adm.kv.capacity * adm.block_size - adm.lookahead
        limits.append(min(fits, run.max_model_len))
    prompt, output = run.state.prompt, run.state.output
    outstanding, kv_fraction = run.outstanding, run.kv_fraction
    scan = type(router) is LeastOutstandingRouter and router.scans(outstanding)
    choose = router.choose
    rec, max_queue, end_one = run.recorder, run.max_queue, run._end_one
    arrival_s, replica_of, frontend_s = rec.arrival_s, rec.replica, rec.frontend_s

    def admit(rid: int, now: float) -> bool:
        r = outstanding.index(min(outstanding)) if scan else choose(outstanding, kv_fraction)
        arrival_s[rid] = now - frontend_s  # Recorder.on_arrival, inline
        replica_of[rid] = r
        if prompt[rid] + output[rid] > limits[r] or (
            max_queue is not None and outstanding[r] >= max_queue
        ):
            rec.on_drop(rid)
            end_one()
            return False
        outstanding[r] += 1
        lane = lanes[r]
        sched = lane.scheduler
        if replicas[r]._leap is not None:  # (else `Scheduler.interrupt` has no leap to cut)
            sched.interrupt()
        sched.prefills.waiting.append(rid)
        if lane.idle:
            lane.idle = False
            lane.wake.succeed()
        return True

    return admit
