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
import os
from bisect import bisect_left
from collections.abc import Callable, Generator
from typing import Any, NamedTuple

import simpy

from clustersim.config.schema import ServingSpec
from clustersim.metrics.recorder import Recorder
from clustersim.model.decode_run import DecodeStepCost
from clustersim.model.stage_cost import StageCostModel
from clustersim.network.fabric import Fabric
from clustersim.network.ledger import Cycle, cycle_of
from clustersim.network.private_allreduce import (
    Phase,
    PrivateAllReduce,
    clock_adds,
    closed_step_end,
    moving,
)
from clustersim.serving.batch import Batch
from clustersim.serving.decode_set import DecodeSet
from clustersim.serving.scheduler import Scheduler

MIN_LEAP_STEPS = 2  # a single step is stepped
MAX_LEAP_STEPS = 64  # planned at once at most


class LeapPrice(NamedTuple):
    """What a leap's steps cost for one decode batch size."""

    step: DecodeStepCost
    allreduce: PrivateAllReduce | None  # the stage's TP group (TP > 1)
    phases: list[Phase]  # of each step's all-reduces, after its compute
    cycle: Cycle  # what `phases` add to the link ledger inside one time bin (ledger.py)
    adds: tuple[float, ...]  # seconds the clock adds after a step's compute, in order


class LeapPricing:
    """Step costs of one lane's stage by decode batch size (cached: batches recur)."""

    def __init__(self, cost: StageCostModel, allreduce: PrivateAllReduce | None) -> None:
        self.cost = cost
        self.allreduce = allreduce
        self._by_n: dict[int, LeapPrice] = {}
        self._steps: dict[int, list[Phase] | None] = {}  # a step's tokens → its all-reduce
        self.horizon = MAX_LEAP_STEPS  # steps the next leap plans at most (adaptive)
        self._ready = allreduce is None  # `usable` from now on (it stays so once it is)

    def ran(self, leap: DecodeLeap) -> None:
        """Adapt the horizon to how the finished leap went (cut or not)."""
        if leap.cut_short:
            self.horizon = max(MIN_LEAP_STEPS, self.horizon // 2)
        else:
            self.horizon = min(MAX_LEAP_STEPS, self.horizon * 2)

    @classmethod
    def build(
        cls,
        cost: StageCostModel,
        fabric: Fabric | None,
        group: tuple[str, ...],
        owner: int,
        serving: ServingSpec,
        kv_blocks: int,
    ) -> LeapPricing:
        """The pricing of a one-stage lane on `group`; `fabric`: where its TP all-reduces
        run (None: TP1, no all-reduce); `owner`: a unique id of the lane's replica."""
        allreduce = None
        if fabric is not None:
            max_bytes = cost.allreduce_bytes(max_step_tokens(serving, kv_blocks))
            allreduce = PrivateAllReduce(fabric, group, owner, max_bytes, cost.allreduces_per_step)
        return cls(cost, allreduce)

    def usable(self, now: float) -> bool:
        """Whether a leap may start now: TP1, or TP all-reduces alone on their links once
        the fabric has settled (PrivateAllReduce.settled; `now` only grows, so it stays
        usable). From then on the group books its twin links as one (twin_links.py)."""
        if self._ready:
            return True
        ar = self.allreduce
        if ar is None or not (ar.private() and ar.settled(now)):
            return False
        ar.book_twins()
        self.forget()
        self._ready = True
        return True

    def forget(self) -> None:
        """Drop the cached prices (step times or link rates changed)."""
        self._by_n.clear()
        self._steps.clear()

    def closed_allreduce(
        self, env: simpy.Environment, tokens: int
    ) -> Generator[simpy.Event, Any, None] | None:
        """A step's all-reduces in closed form (PrivateAllReduce.run) when its group's are
        alone on their links and the fabric has settled; None: run them on the fabric."""
        ar = self.allreduce
        if ar is None or not self.usable(env.now):
            return None
        phases = self.step_allreduce(tokens)
        return None if phases is None else ar.run(env, phases)

    def closed_step(self, start: float, compute_s: float, tokens: int) -> float | None:
        """The end of a stepped step of `tokens` tokens computing for `compute_s` from
        `start`, its all-reduces in closed form and booked (private_allreduce.py:
        closed_step_end); None: `closed_allreduce` after the compute, or the fabric."""
        ar = self.allreduce
        if ar is None or not self.usable(start):
            return None
        phases = self.step_allreduce(tokens)
        if phases is None:
            return None
        return closed_step_end(ar.fabric.ledger, start, compute_s, phases)

    def step_allreduce(self, tokens: int) -> list[Phase] | None:
        """The phases of the all-reduces of a step of `tokens` tokens (None: none)."""
        if tokens not in self._steps:
            cost, ar = self.cost, self.allreduce
            phases = None
            if ar is not None:
                phases = ar.phases(cost.allreduce_bytes(tokens), cost.allreduces_per_step)
            self._steps[tokens] = phases
        return self._steps[tokens]

    def of(self, n: int) -> LeapPrice:
        price = self._by_n.get(n)
        if price is None:
            cost, ar = self.cost, self.allreduce
            phases: list[Phase] = []
            if ar is not None:
                phases = ar.phases(cost.allreduce_bytes(n), cost.allreduces_per_step) or []
            step = DecodeStepCost(cost, n)
            price = LeapPrice(step, ar, phases, cycle_of(moving(phases)), clock_adds(phases))
            self._by_n[n] = price
        return price


def max_step_tokens(serving: ServingSpec, kv_blocks: int) -> int:
    """Most tokens one step of a lane can run. Chunked prefill: the token budget, or every
    running sequence decoding when there are more of them. Otherwise a whole prompt may
    exceed the budget, beside the decodes; every token of a step holds KV, so the lane's KV
    pool bounds it, and max_model_len (when set) bounds the prompt."""
    if serving.chunked_prefill:
        return max(serving.max_num_batched_tokens, serving.max_num_seqs)
    bound = kv_blocks * serving.block_size
    if serving.max_model_len is not None:
        longest = serving.max_model_len + serving.max_num_seqs
        bound = min(bound, max(serving.max_num_batched_tokens, longest))
    return bound


def leaping_enabled() -> bool:
    """Whether decode leaps are on (the default; CLUSTERSIM_DECODE_LEAP=0 turns them off)."""
    return os.environ.get("CLUSTERSIM_DECODE_LEAP", "1") != "0"


class DecodeLeap:
    """A committed run of pure-decode steps of one lane (see module docstring).

    Step i (0 ≤ i ≤ last) is the lane's decode step d0 + i, from ends[i − 1] (`start` for
    step 0) to ends[i]: `compute_s[i]` of compute, then the all-reduce phases' moves and
    latencies (`adds`); step 0's batch was formed (and its blocks allocated) by the scheduler
    as usual. Planning keeps only what an outside cut needs (ends, blocks in use): the rows'
    communication times and the entities' times are added again, the same floats, for the
    steps that ran."""

    __slots__ = (
        "adds",
        "allocated",
        "allreduce",
        "compute_s",
        "cut_short",
        "cycle",
        "d0",
        "ends",
        "kv_used",
        "last",
        "n",
        "phases",
        "scheduler",
        "start",
        "wake",
    )

    def __init__(self, scheduler: Scheduler, batch: Batch, price: LeapPrice, start: float) -> None:
        self.scheduler = scheduler
        self.n = batch.decode_tokens
        self.d0 = batch.decode_step
        self.phases = price.phases  # all-reduce phases after each step's compute (TP > 1)
        self.cycle = price.cycle  # what they add to the link ledger inside one bin
        self.allreduce = price.allreduce
        self.adds = price.adds  # seconds added after each step's compute, in order
        self.start = start
        self.ends: list[float] = []
        self.compute_s: list[float] = []
        self.kv_used: list[int] = []  # blocks in use during step i (its allocation included)
        self.last = -1  # the step the leap ends with (lowered by `cut`)
        self.allocated = False  # whether steps 1..last's blocks are in the KV pool yet
        self.cut_short = False  # whether an outside event cut it before its planned end
        self.wake: Callable[[float], None] | None = None  # (re)arms the lane's timer

    @property
    def end_s(self) -> float:
        return self.ends[self.last]

    def step_at(self, now: float) -> int:
        """The step running at `now` (the first whose end is at or after it)."""
        return min(bisect_left(self.ends, now), self.last)

    def kv_used_at(self, now: float) -> int:
        """Blocks the lane holds at `now`, as stepping would show them."""
        return self.kv_used[self.step_at(now)]

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
        if self.allreduce is not None:
            self.allreduce.lease(True)
        arm(self.end_s)
        return woke

    def cut(self, now: float) -> None:
        """End the leap after the step running at `now` and settle the scheduler to `now`."""
        if self.allocated:
            return
        j = self.step_at(now)
        self.cut_short = j < self.last
        self.last = j
        self._settle()
        if self.wake is not None:
            self.wake(self.ends[j])

    def _settle(self) -> None:
        """Allocate the blocks of steps 1..last; the lane is at decode step d0 + last."""
        self.allocated = True
        sched = self.scheduler
        grown = self.kv_used[self.last] - self.kv_used[0]
        if grown:
            sched.kv.allocate(grown)
        sched.decodes.d = self.d0 + self.last

    def complete(self, now: float, recorder: Recorder, replica: int) -> None:
        """At the leap's end: settle the scheduler, book its all-reduces, write the steps'
        rows and complete the last step (its finishing requests leave)."""
        if not self.allocated:
            self._settle()
        if self.allreduce is not None:
            self.allreduce.lease(False)
            last = self.last
            self.allreduce.book_steps(
                self.start, self.ends[: last + 1], self.compute_s, self.phases, self.cycle
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


def _fire(event: simpy.Event, live: bool) -> None:
    if live and not event.triggered:
        event.succeed()


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
) -> DecodeLeap | None:
    """A leap starting with `batch` (just formed at `now`), or None when fewer than
    MIN_LEAP_STEPS steps are certain to run unchanged."""
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
    price = price_of.of(batch.decode_tokens)
    leap = DecodeLeap(sched, batch, price, now)
    kv = sched.kv
    grows = not sched.admission.reserve_full
    free, used, grown = kv.free, kv.used, 0
    residue, bs = decodes.residue, decodes.block_size
    n, ctx = batch.decode_tokens, batch.decode_ctx_tokens
    limit = 2.0 * now  # Sterbenz: every end ≤ 2·start keeps the timers exact
    ends, compute_s, kv_used = leap.ends, leap.compute_s, leap.kv_used
    step_s, adds = price.step.step_s, price.adds
    t = now
    for i in range(k):
        if i and grows:
            g = residue[(d0 + i) % bs]
            if grown + g > free:
                break  # this step would preempt
            grown += g
        c = step_s(ctx)
        end = t + c
        for x in adds:  # the clock's additions: each phase's move, then its latency
            end = end + x
        if end > limit:
            break
        ends.append(end)
        compute_s.append(c)
        kv_used.append(used + grown)
        t = end
        ctx += n
    if len(ends) < MIN_LEAP_STEPS:
        return None
    leap.last = len(ends) - 1
    return leap
