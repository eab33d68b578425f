"""The decode leap: a lane's run of steady decode steps simulated as one event.

After a lane forms a pure-decode batch, its next steps are fixed until something changes the
batch: a request finishing (the decode set's heap top), a step that would preempt (the
cumulative new blocks exceed the free ones), or anything from outside the lane (an arrival,
a disaggregated request's KV landing, blocks kept for a KV transfer being released, a
fault). A waiting head that could not be admitted into this batch stays blocked throughout:
free blocks only shrink while the set decodes, and the token budget and sequence count stay
the same. `plan_leap` computes the run's step times at once (model/decode_run.py) and the
lane waits once, until the last of them ends.

A leap is a commitment that an outside event can cut: `DecodeLeap.cut(now)` ends it after
the step running at `now` (the step boundary at which the lane, stepping, would have seen
the event) and brings the scheduler's state to what stepping would hold at `now` (the
blocks of every started step allocated, the decode step counter at the running step), so
the caller may then change the lane. Once the lane wakes it records the leap's steps as
rows, exactly the rows stepping writes (`record`), and completes the last step as usual.

Exactness: step ends are a sequential cumulative sum of the step times, as the simpy clock
adds them; a leap is taken only while every end t satisfies t ≤ 2·start, so that for every
instant `now` in it, t − now is exact (Sterbenz) and now + (t − now) lands on t.

`CLUSTERSIM_DECODE_LEAP=0` in the environment disables leaping (tests/test_leap_equivalence.py
compares both ways byte for byte).
"""

from __future__ import annotations

import heapq
import os
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import simpy

from clustersim.metrics.recorder import Recorder
from clustersim.model.decode_run import decode_run_s
from clustersim.model.stage_cost import StageCostModel
from clustersim.network.private_allreduce import Phase, PrivateAllReduce
from clustersim.serving.batch import Batch
from clustersim.serving.scheduler import Scheduler

MIN_LEAP_STEPS = 3  # shorter runs are stepped: a leap's fixed cost is a few steps' worth
MAX_LEAP_STEPS = 1 << 16  # bounds the arrays of one leap


def leaping_enabled() -> bool:
    """Whether decode leaps are on (the default; CLUSTERSIM_DECODE_LEAP=0 turns them off)."""
    return os.environ.get("CLUSTERSIM_DECODE_LEAP", "1") != "0"


class DecodeLeap:
    """A committed run of pure-decode steps of one lane (see module docstring).

    Step i (0 ≤ i ≤ last) is the lane's decode step d0 + i, from starts[i] to ends[i];
    step 0's batch was formed (and its blocks allocated) by the scheduler as usual."""

    __slots__ = (
        "allocated",
        "comm",
        "comm_s",
        "compute",
        "d0",
        "ends",
        "kv_used",
        "last",
        "n",
        "phase_ends",
        "phase_starts",
        "phases",
        "scheduler",
        "starts",
        "wake",
    )

    def __init__(
        self,
        scheduler: Scheduler,
        batch: Batch,
        compute: np.ndarray,
        starts: np.ndarray,
        ends: np.ndarray,
        kv_used: np.ndarray,
        comm: LeapComm | None = None,
    ) -> None:
        self.scheduler = scheduler
        self.n = batch.decode_tokens
        self.d0 = batch.decode_step
        self.compute = compute
        self.starts = starts
        self.ends = ends
        self.kv_used = kv_used  # blocks in use during step i (its own allocation included)
        k = len(ends)
        self.comm: PrivateAllReduce | None = None
        self.comm_s = np.zeros(k)
        self.phases: list[Phase] = []
        self.phase_starts = self.phase_ends = np.zeros((k, 0))
        if comm is not None:
            self.comm, self.phases = comm.allreduce, comm.phases
            self.comm_s, self.phase_starts, self.phase_ends = comm.comm_s, comm.starts, comm.ends
            comm.allreduce.lease(True)
        self.last = len(ends) - 1  # the step the leap ends with (lowered by `cut`)
        self.allocated = False  # whether steps 1..last's blocks are in the KV pool yet
        self.wake: Callable[[float], None] | None = None  # (re)arms the lane's timer

    def timer(self, env: simpy.Environment) -> simpy.Event:
        """The event the lane waits on: it fires at the last step's end, or at the end of
        the step a `cut` stops the leap at (each cut re-arms it; older timers are no-ops)."""
        woke = env.event()
        armed = [0]  # generation of the live timer

        def arm(at_s: float) -> None:
            armed[0] += 1
            gen = armed[0]
            timer = env.timeout(at_s - env.now)  # exact: Sterbenz (module docstring)
            timer.callbacks.append(lambda _ev: _fire(woke, gen == armed[0]))

        self.wake = arm
        arm(self.end_s)
        return woke

    @property
    def end_s(self) -> float:
        return float(self.ends[self.last])

    def step_at(self, now: float) -> int:
        """The step running at `now` (the first whose end is at or after it)."""
        return min(int(np.searchsorted(self.ends, now, side="left")), self.last)

    def kv_used_at(self, now: float) -> int:
        """Blocks the lane holds at `now`, as stepping would show them."""
        return int(self.kv_used[self.step_at(now)])

    def cut(self, now: float) -> None:
        """End the leap after the step running at `now` and settle the scheduler to `now`."""
        if self.allocated:
            return
        j = self.step_at(now)
        self.last = j
        self._settle()
        if self.wake is not None:
            self.wake(float(self.ends[j]))

    def _settle(self) -> None:
        """Allocate the blocks of steps 1..last; the lane is at decode step d0 + last."""
        self.allocated = True
        sched = self.scheduler
        grown = int(self.kv_used[self.last] - self.kv_used[0])
        if grown:
            sched.kv.allocate(grown)
        sched.decodes.d = self.d0 + self.last

    def complete(self, now: float, recorder: Recorder, replica: int) -> None:
        """At the leap's end: settle the scheduler, write the steps' rows and complete the
        last step (its finishing requests leave; the lane forms its next batch after)."""
        if not self.allocated:
            self._settle()
        k = self.last + 1
        if self.comm is not None:
            self.comm.lease(False)
            self.comm.book(self.phases, self.phase_starts[:k], self.phase_ends[:k])
        self.record(recorder, replica, self.scheduler.kv.capacity)
        batch = Batch()
        batch.decode_tokens = batch.num_seqs = self.n
        batch.decode_step = self.d0 + self.last
        self.scheduler.complete(batch, now)

    def record(self, recorder: Recorder, replica: int, capacity: int) -> None:
        """Append rows for steps 0..last, the rows a stepping lane (PP = 1) writes. The last
        row shows the blocks in use now: a change from outside during that step (which cut
        the leap) shows in it, as in the row stepping writes at the step's end."""
        k = self.last + 1
        rows = np.empty((k, 14), dtype=np.float64)
        rows[:, 0] = replica
        rows[:, 1:3] = 0.0
        rows[:, 3] = self.starts[:k]
        rows[:, 4] = self.ends[:k]
        rows[:, 5] = 0.0
        rows[:, 6:9] = self.n
        rows[:, 9] = self.compute[:k]
        rows[:, 10] = self.comm_s[:k]
        rows[:, 11] = 0.0
        rows[:, 12] = self.kv_used[:k]
        rows[k - 1, 12] = self.scheduler.kv.used
        rows[:, 13] = capacity
        recorder.on_iterations(rows)


def _fire(event: simpy.Event, live: bool) -> None:
    if live and not event.triggered:
        event.succeed()


def _drop_stale_finishes(sched: Scheduler) -> None:
    """Pop heap entries of preempted requests (stepping skips them when it reaches them)."""
    heap, version = sched.decodes.finish_heap, sched.state.version
    while heap and heap[0][2] != version[heap[0][1]]:
        heapq.heappop(heap)


class LeapComm(NamedTuple):
    """The all-reduces of a leap's steps (TP > 1): each phase's entity start and finish,
    (k, phases) arrays, and each step's communication seconds."""

    allreduce: PrivateAllReduce
    phases: list[Phase]
    starts: np.ndarray
    ends: np.ndarray
    comm_s: np.ndarray


def leap_clock(
    now: float, compute: np.ndarray, phases: list[Phase]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The simpy clock through k steps: each step's compute, then per all-reduce phase its
    entity's move and its latency (a timeout only when > 0), one sequential fold as the
    clock adds them. Returns the (k, 1 + increments) clock after each increment, the
    columns of the phases' entity starts and finishes."""
    cols: list[float | None] = [None]  # None: the step's compute
    t0: list[int] = []
    t1: list[int] = []
    for ph in phases:
        if ph.links is not None:
            t0.append(len(cols))  # the clock before this column: the entity's start
            cols.append(ph.move_s)
            t1.append(len(cols))
        if ph.delay_s > 0:
            cols.append(ph.delay_s)
    k, m = len(compute), len(cols)
    steps = np.empty((k, m), dtype=np.float64)
    steps[:, 0] = compute
    for j in range(1, m):
        steps[:, j] = cols[j]
    clock = np.empty(k * m + 1, dtype=np.float64)
    clock[0] = now
    clock[1:] = steps.ravel()
    np.cumsum(clock, out=clock)  # a sequential fold: start + c0 + … as simpy adds
    before = clock[:-1].reshape(k, m)  # clock before each increment
    return clock[1:].reshape(k, m), before[:, t0], before[:, t1]


def plan_leap(
    sched: Scheduler,
    batch: Batch,
    cost: StageCostModel,
    now: float,
    allreduce: PrivateAllReduce | None = None,
) -> DecodeLeap | None:
    """A leap starting with `batch` (just formed at `now`), or None when fewer than
    MIN_LEAP_STEPS steps are certain to run unchanged. `allreduce`: the stage's TP group
    (TP > 1), whose all-reduces the steps run after their compute."""
    if batch.prefill or batch.decode_step < 0 or sched.prefills.prefilling or sched.arrived:
        return None
    decodes = sched.decodes
    _drop_stale_finishes(sched)
    d0 = batch.decode_step
    k = min(decodes.finish_heap[0][0] - d0 + 1, MAX_LEAP_STEPS)  # the last step finishes
    if k < MIN_LEAP_STEPS:
        return None
    kv = sched.kv
    used = np.full(k, kv.used, dtype=np.int64)
    if not sched.admission.reserve_full:
        bs = decodes.block_size
        steps = np.arange(d0 + 1, d0 + k, dtype=np.int64)
        grown = np.cumsum(np.asarray(decodes.residue, dtype=np.int64)[steps % bs])
        k = min(k, 1 + int(np.searchsorted(grown, kv.free, side="right")))  # no preemption
        if k < MIN_LEAP_STEPS:
            return None
        used[1:k] += grown[: k - 1]
        used = used[:k]
    n = batch.decode_tokens
    ctx = decodes.ctx_offset + n * np.arange(d0, d0 + k, dtype=np.int64)
    compute = decode_run_s(cost, n, ctx)
    phases: list[Phase] = []
    if allreduce is not None:
        phases = allreduce.phases(cost.allreduce_bytes(n), cost.allreduces_per_step) or []
    clock, phase_t0, phase_t1 = leap_clock(now, compute, phases)
    ends = clock[:, -1]
    k = min(k, int(np.searchsorted(ends, 2.0 * now, side="right")))
    if k < MIN_LEAP_STEPS:
        return None
    starts = np.empty(k, dtype=np.float64)
    starts[0] = now
    starts[1:] = ends[: k - 1]
    comm = None
    if allreduce is not None:
        comm_s = ends[:k] - clock[:k, 0]  # the clock after the all-reduces − after compute
        comm = LeapComm(allreduce, phases, phase_t0[:k], phase_t1[:k], comm_s)
    return DecodeLeap(sched, batch, compute[:k], starts, ends[:k], used[:k], comm)
