"""The decode leap: a lane's run of steady decode steps simulated as one event.

After a lane forms a pure-decode batch, its next steps are fixed until something changes the
batch: a request finishing (the decode set's heap top), a step that would preempt (the
cumulative new blocks exceed the free ones), or anything from outside the lane (an arrival,
a disaggregated request's KV landing, blocks kept for a KV transfer being released, a
fault). A waiting head that could not be admitted into this batch stays blocked throughout:
free blocks only shrink while the set decodes, and the token budget and sequence count stay
the same. `plan_leap` computes the run's step times (model/decode_run.py) and the lane waits
once, until the last of them ends.

The run is replayed in a tight scalar loop (a few operations a step, no simpy event, no
fabric entity): vectorising it with numpy was measured slower, its fixed cost per leap being
worth more steps than the typical leap holds (3–10 at light load). A leap plans at most
`LeapPricing.horizon` steps: it doubles (up to MAX_LEAP_STEPS) after a leap that ran to
its end and halves (down to MIN_LEAP_STEPS) after one an outside event cut, so that busy
replicas, cut every few steps, do not plan steps they will not run; a longer run is several
leaps back to back.

A leap is a commitment that an outside event can cut: `DecodeLeap.cut(now)` ends it after
the step running at `now` (the step boundary at which the lane, stepping, would have seen
the event) and brings the scheduler's state to what stepping would hold at `now` (the
blocks of every started step allocated, the decode step counter at the running step), so
the caller may then change the lane. Once the lane wakes it records the leap's steps as
rows, exactly the rows stepping writes, and completes the last step as usual.

Exactness: the clock is advanced with the simpy clock's own additions (compute, then each
all-reduce phase's move and latency: network/private_allreduce.py); a leap holds only steps
ending at t ≤ 2·start, so that for every instant `now` in it t − now is exact (Sterbenz) and
a timer armed at `now` for t − now fires at t. (Two groups' transfers ending within the fluid
engine's completion tolerance of each other, 1e-12 s, would complete together when stepped:
the one way a TP > 1 leap could differ, never seen in the equivalence tests.)

`CLUSTERSIM_DECODE_LEAP=0` in the environment disables leaping (tests/test_leap_equivalence.py
compares both ways byte for byte).
"""

from __future__ import annotations

import heapq
import math
import os
from bisect import bisect_left

import simpy

from clustersim.metrics.recorder import Recorder
from clustersim.serving.batch import Batch
from clustersim.serving.decode_set import DecodeSet
from clustersim.serving.leap_pricing import MIN_LEAP_STEPS, LeapPrice, LeapPricing, LeapRouting
from clustersim.serving.leap_pricing import max_step_tokens as max_step_tokens  # re-export
from clustersim.serving.scheduler import Scheduler


def leaping_enabled() -> bool:
    """Whether decode leaps are on (the default; CLUSTERSIM_DECODE_LEAP=0 turns them off)."""
    return os.environ.get("CLUSTERSIM_DECODE_LEAP", "1") != "0"


class CommittedSteps:
    """A run of steps ending at `ends` that a process waits for as one timer, and that an
    outside event may cut after the step running then (a lane's decode leap below; a
    DP-attention group's, moe/ep_leap.py). Subclasses bring their state to the cut in
    `_settle` (called once: at the cut, or by the owner at the end)."""

    __slots__ = ("allocated", "cut_short", "ends", "last", "timer")

    def __init__(self) -> None:
        self.ends: list[float] = []
        self.last = -1  # the step the run ends with (lowered by `cut`)
        self.allocated = False  # whether `_settle` has run
        self.cut_short = False  # whether an outside event cut it before its planned end
        self.timer: simpy.Timeout | None = None  # what the owner waits on (`wait`)

    @property
    def end_s(self) -> float:
        return self.ends[self.last]

    def step_at(self, now: float) -> int:
        """The step running at `now` (the first whose end is at or after it)."""
        return min(bisect_left(self.ends, now), self.last)

    def wait(self, env: simpy.Environment) -> simpy.Timeout:
        """The timer the owner waits on, at the last step's end (exact: Sterbenz)."""
        self.timer = env.timeout(self.end_s - env.now)
        return self.timer

    def cut(self, now: float) -> None:
        """End the run after the step running at `now` and settle it there. The owner,
        waiting for a later end, then waits for this one: the waiter's callbacks move to a
        timer at that end (the one `wait` returned fires to no one)."""
        if self.allocated:
            return
        j = self.step_at(now)
        self.cut_short = j < self.last
        self.last = j
        self._settle()
        timer = self.timer
        if self.cut_short and timer is not None:
            sooner = timer.env.timeout(self.ends[j] - now)  # exact: Sterbenz
            sooner.callbacks, timer.callbacks = timer.callbacks, []
            self.timer = sooner

    def _settle(self) -> None:
        raise NotImplementedError


class DecodeLeap(CommittedSteps):
    """A committed run of pure-decode steps of one lane (see module docstring).

    Step i (0 ≤ i ≤ last) is the lane's decode step d0 + i, from ends[i − 1] (`start` for
    step 0) to ends[i]: `compute_s[i]` of compute, then the all-reduce phases' moves and
    latencies (`adds`); step 0's batch was formed (and its blocks allocated) by the scheduler
    as usual. Planning keeps only what an outside cut needs (ends, blocks in use): the rows'
    communication times and the entities' times are added again, the same floats, for the
    steps that ran. `_settle` allocates the blocks of steps 1..last."""

    __slots__ = (
        "adds",
        "allreduce",
        "compute_s",
        "cycle",
        "d0",
        "kv_used",
        "n",
        "phases",
        "routing",
        "scheduler",
        "start",
    )

    def __init__(self, scheduler: Scheduler, batch: Batch, price: LeapPrice, start: float) -> None:
        super().__init__()
        self.scheduler = scheduler
        self.n = batch.decode_tokens
        self.d0 = batch.decode_step
        self.phases = price.phases  # all-reduce phases after each step's compute (TP > 1)
        self.cycle = price.cycle  # what they add to the link ledger inside one bin
        self.allreduce = price.allreduce
        self.adds = price.adds  # seconds added after each step's compute, in order
        self.start = start
        self.compute_s: list[float] = []
        self.kv_used: list[int] = []  # blocks in use during step i (its allocation included)
        self.routing: LeapRouting | None = None  # a sampled-routing stage's draws ahead

    def kv_used_at(self, now: float) -> int:
        """Blocks the lane holds at `now`, as stepping would show them."""
        return self.kv_used[self.step_at(now)]

    def _settle(self) -> None:
        """Allocate the blocks of steps 1..last; the lane is at decode step d0 + last."""
        self.allocated = True
        sched = self.scheduler
        grown = self.kv_used[self.last] - self.kv_used[0]
        if grown:
            sched.kv.allocate(grown)
        sched.decodes.d = self.d0 + self.last
        if self.routing is not None:  # book the steps that ran; undo the draws past them
            self.routing.settle(self.start, self.ends, self.last + 1)

    def complete(self, now: float, recorder: Recorder, replica: int) -> None:
        """At the leap's end: settle the scheduler, book its all-reduces, write the steps'
        rows and complete the last step (its finishing requests leave)."""
        if not self.allocated:
            self._settle()
        if self.allreduce is not None:
            self.allreduce.book_steps(
                self.start, self.ends[: self.last + 1], self.compute_s, self.phases, self.cycle
            )
        self._record(recorder, replica)
        batch = Batch()
        batch.decode_tokens = batch.num_seqs = self.n
        batch.decode_step = self.d0 + self.last
        self.scheduler.complete(batch, now)

    def _record(self, recorder: Recorder, replica: int) -> None:
        """Hand the recorder steps 0..last as the rows a stepping lane (PP = 1) writes
        (metrics/decode_runs.py). The last row shows the blocks in use now: a change from
        outside during that step (which cut the leap) shows in it, as in the row stepping
        writes at the step's end."""
        kv = self.scheduler.kv
        recorder.on_decode_run(
            (replica, self.n, self.start, self.ends, self.compute_s, self.last + 1,
             bool(self.phases), self.kv_used, kv.used, kv.capacity)
        )  # fmt: skip


def _drop_stale_finishes(decodes: DecodeSet, sched: Scheduler) -> None:
    """Pop heap entries of preempted requests (stepping skips them when it reaches them)."""
    heap, version = decodes.finish_heap, sched.state.version
    while heap and heap[0][2] != version[heap[0][1]]:
        heapq.heappop(heap)


def plan_leap(
    sched: Scheduler,
    batch: Batch,
    price_of: LeapPricing,
    now: float,
    until: float = math.inf,
) -> DecodeLeap | None:
    """A leap starting with `batch` (just formed at `now`), or None when fewer than
    MIN_LEAP_STEPS steps are certain to run unchanged. It ends with the step running at
    `until` (the next arrival, when announced: serving/next_arrival.py), where the arrival
    cuts it."""
    if batch.prefill or batch.decode_step < 0 or sched.prefills.prefilling or sched.arrived:
        return None
    decodes = sched.decodes
    if not isinstance(decodes, DecodeSet):  # speculative decoding: steps are random draws
        return None
    _drop_stale_finishes(decodes, sched)
    d0 = batch.decode_step
    k = min(decodes.finish_heap[0][0] - d0 + 1, price_of.horizon)  # the last step finishes
    if k < MIN_LEAP_STEPS:
        return None
    routing = price_of.routing
    if routing is not None:  # sampled routing: no step may find it changed (routed_leap.py)
        if routing.blocked(now):
            return None
        until = min(until, routing.until_s())
    price = price_of.of(batch.decode_tokens)
    n, ctx = batch.decode_tokens, batch.decode_ctx_tokens
    limit = 2.0 * now  # Sterbenz: every end ≤ 2·start keeps the timers exact
    if until < limit:  # each step lasts ≥ the first's compute: ≤ room / c0 end before it
        first = price.step.step_s(ctx) if routing is None else routing.floor_s(price.step, ctx, n)
        k = min(k, int((until - now) / first) + 2)
        if k < MIN_LEAP_STEPS:
            return None
    leap = DecodeLeap(sched, batch, price, now)
    kv = sched.kv
    grows = not sched.admission.reserve_full
    free, used, grown = kv.free, kv.used, 0
    residue, bs = decodes.residue, decodes.block_size
    ends, kv_used = leap.ends, leap.kv_used
    if routing is None:
        leap.compute_s = costs = price.step.run_s(ctx, n, k)  # entries past `last` unused
    else:  # k steps' routing drawn now; `_settle` undoes the draws past `last`
        leap.compute_s = costs = routing.run_s(price.step, ctx, n, k)
        leap.routing = routing
    adds = price.adds  # after each compute: each phase's move, then its latency
    a0, a1 = adds if len(adds) == 2 else (0.0, 0.0)  # one phase: its move and latency
    two = len(adds) == 2
    t = now
    for i, c in enumerate(costs):
        if i and grows:
            g = residue[(d0 + i) % bs]
            if grown + g > free:
                break  # this step would preempt
            grown += g
        if two:
            end = t + c + a0 + a1  # the clock's additions, in its order
        else:
            end = t + c
            for x in adds:
                end = end + x
        if end > limit:
            break
        ends.append(end)
        kv_used.append(used + grown)
        if end >= until:
            break  # the step running when the next arrival lands (it cuts the leap there)
        t = end
    if len(ends) < MIN_LEAP_STEPS:
        if routing is not None:
            routing.settle(now, ends, 0)  # nothing ran: the stream back where it was
        return None
    leap.last = len(ends) - 1
    return leap
