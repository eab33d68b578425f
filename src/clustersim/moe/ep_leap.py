"""Decode leaps of a DP-attention group (moe/ep_group.py): a run of its lock-step decode
steps simulated as one event, as serving/decode_leap.py does for a lane.

While every DP rank decodes the batch it decoded the step before, the group's steps are
fixed but for their routing: no rank admits, finishes or preempts (each rank's finish heap
and free blocks bound the run, as a lane's do), and nothing outside the group changes
them (an arrival at any rank cuts the leap: `GroupLeap.cut`). The routing of the run's k
steps is drawn in one call (moe/routed_leap.py: the group draws alone from its stream, and
no step starts at or after a hot-set move or rebalance). Each step then costs what
`EPGroup._step` computes, with the same operations:
- compute = host time on top of (the slowest rank's dense part + the routed experts);
- the dispatch, then the combine, each one coflow on the fabric, then its latency. In a
  co-located run without faults, with TP1 ranks, the group is the fabric's only user
  (MoERuntime.allow_group_leaps): each coflow runs alone at its solo rate, ending
  size / rate after it starts, as the fluid engine computes it (network/flows.py). While a
  leap is in flight the exchanges' links are leased: a transfer of anyone else starting
  there raises.
Every end stays ≤ 2 × the leap's start, so each timer the clock would have armed lands
where the leap puts it (Sterbenz, as for a lane's leap). At its end, or at a cut, the leap
settles the ranks' schedulers, books the coflows in the link ledger (the same records,
in the same order) and writes each step's rows for every rank.
Not leapt: two-batch overlap, speculative decoding, TP > 1 ranks, prefix caching, faults.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Generator, Sequence
from operator import truediv
from typing import Any

import numpy as np
import numpy.typing as npt
import simpy

from clustersim.metrics.recorder import Recorder
from clustersim.model.decode_run import DecodeStepCost
from clustersim.model.stage_cost import StageCostModel
from clustersim.moe.rank_dense import RankDense
from clustersim.moe.routed_leap import RoutedLeap
from clustersim.network.all_to_all import AllToAllPlan
from clustersim.network.fabric import Fabric
from clustersim.network.routing import PairSet
from clustersim.serving.batch import Batch
from clustersim.serving.decode_leap import CommittedSteps
from clustersim.serving.decode_set import DecodeSet
from clustersim.serving.leap_pricing import MAX_LEAP_STEPS, MIN_LEAP_STEPS
from clustersim.serving.scheduler import Scheduler

F64 = npt.NDArray[np.float64]
Booking = tuple[tuple[int, ...], tuple[float, ...], float, float, float]  # ledger.record's
Exchange = tuple[PairSet, F64]  # routed pairs, bytes per pair (a row a step)
FlowsOf = Callable[[Sequence[Batch | None], Sequence[int], F64], tuple[Exchange, Exchange]]


class RankRun:
    """One decoding DP rank's part of a leap: its batch shape and the blocks it grows by."""

    __slots__ = ("d", "d0", "decodes", "grown", "n", "sched", "used0")

    def __init__(self, d: int, sched: Scheduler, decodes: DecodeSet, batch: Batch) -> None:
        self.d = d
        self.sched = sched
        self.decodes = decodes
        self.n = batch.decode_tokens
        self.d0 = batch.decode_step
        self.used0 = sched.kv.used  # blocks in use during step 0 (its allocation included)
        self.grown: list[int] = [0]  # blocks allocated since step 0, per step


class GroupLeap(CommittedSteps):
    """A committed run of the group's decode steps (see module docstring): step i runs from
    ends[i − 1] (`start` for step 0) to ends[i]. `scheds`: every rank's scheduler; `runs`:
    the decoding ranks' parts (the others are idle: no work, nothing changes there)."""

    def __init__(self, scheds: list[Scheduler], runs: list[RankRun], start: float) -> None:
        super().__init__()
        self.scheds = scheds
        self.runs = runs
        self.start = start
        self.compute_s: list[float] = []
        self.bookings: list[Booking] = []  # the coflows' ledger records, two a step at most
        self.booked_by: list[int] = []  # bookings made by each step's end
        self.routing: RoutedLeap | None = None

    def _settle(self) -> None:
        """Allocate each rank's blocks of steps 1..last (each is then at decode step
        d0 + last); book the routing of the steps that ran and undo the draws past them."""
        self.allocated = True
        last = self.last
        for run in self.runs:
            grown = run.grown[last]
            if grown:
                run.sched.kv.allocate(grown)
            run.decodes.d = run.d0 + last
        if self.routing is not None:
            self.routing.settle(self.start, self.ends, last + 1)

    def complete(self, now: float, fabric: Fabric, recorder: Recorder) -> None:
        """At the leap's end: settle, book the coflows, write the rows, complete each rank's
        last batch (its finishing requests leave)."""
        if not self.allocated:
            self._settle()
        fabric.ledger.record_many(self.bookings[: self.booked_by[self.last]])
        self._rows(recorder)
        for run in self.runs:
            batch = Batch()
            batch.decode_tokens = batch.num_seqs = run.n
            batch.decode_step = run.d0 + self.last
            run.sched.complete(batch, now)

    def _rows(self, recorder: Recorder) -> None:
        """Each step's row of every rank, as EPGroup._step writes them."""
        record = recorder.on_iteration
        ranks = len(self.scheds)
        by_rank: list[RankRun | None] = [None] * ranks
        for run in self.runs:
            by_rank[run.d] = run
        pools = [sched.kv for sched in self.scheds]
        t = self.start
        for i in range(self.last + 1):
            end, compute = self.ends[i], self.compute_s[i]
            comm_s = end - t - compute if end - t > compute else 0.0
            for d, part in enumerate(by_rank):
                kv = pools[d]
                if part is None:
                    row = (d, 0, 0, t, end, 0, 0, 0, 0, compute, comm_s, 0.0, kv.used, kv.capacity)
                else:
                    n, used = part.n, part.used0 + part.grown[i]
                    row = (d, 0, 0, t, end, 0, n, n, n, compute, comm_s, 0.0, used, kv.capacity)
                record(row)
            t = end


class GroupLeaps:
    """A DP-attention group's leaps: planning, the leap in flight, the outside cut. Built by
    MoERuntime.allow_group_leaps; its ranks' schedulers call `interrupt` on outside
    changes."""

    def __init__(
        self,
        cost: StageCostModel,
        dense: RankDense,
        routing: RoutedLeap,
        flows: FlowsOf,
        a2a: AllToAllPlan,
        fabric: Fabric,
        recorder: Recorder,
    ) -> None:
        """`flows`: EPGroup.flows, the exchanges of one step or several; `a2a`: their
        plan (the latency each adds, the links they use)."""
        self.cost = cost
        self.dense = dense
        self.routing = routing
        self.flows = flows
        self.extra_latency_s = a2a.extra_latency_s(1)  # + each path latency (s)
        self.links = frozenset(  # the exchanges' links, leased while a leap is in flight
            link
            for reverse in (False, True)
            for link in a2a.pair_set(normal=False, reverse=reverse).links.tolist()
        )
        self.fabric = fabric
        self.recorder = recorder
        self.horizon = MAX_LEAP_STEPS  # steps the next leap plans at most (adaptive)
        self.current: GroupLeap | None = None
        self._steps: dict[int, DecodeStepCost] = {}  # a rank's dense steps by batch size

    def interrupt(self) -> None:
        """Cut the leap in flight at the step running now (call before an outside change)."""
        if self.current is not None:
            self.current.cut(self.fabric.env.now)

    def run(self, env: simpy.Environment, leap: GroupLeap) -> Generator[simpy.Event, Any, None]:
        """Wait for the leap's (possibly cut) end, then complete it."""
        leased = self.fabric.flows.leased
        leased.update(self.links)
        self.current = leap
        yield leap.wait(env)
        self.current = None
        leased.difference_update(self.links)
        leap.complete(env.now, self.fabric, self.recorder)
        if leap.cut_short:
            self.horizon = max(MIN_LEAP_STEPS, self.horizon // 2)
        else:
            self.horizon = min(MAX_LEAP_STEPS, self.horizon * 2)

    def plan(
        self,
        scheds: list[Scheduler],
        batches: Sequence[Batch | None],
        tokens: Sequence[int],
        now: float,
    ) -> GroupLeap | None:
        """A leap starting with `batches` (just formed at `now`), or None: step them."""
        runs = _decoding_runs(scheds, batches)
        if runs is None or self.fabric.flows.active_entities:
            return None
        k = self.horizon
        for run in runs:
            k = min(k, run.decodes.finish_heap[0][0] - run.d0 + 1)  # the last finishes
        if k < MIN_LEAP_STEPS or self.routing.blocked(now):
            return None
        leap = GroupLeap(scheds, runs, now)
        loads = self.routing.draw(sum(tokens), k)  # `_settle` undoes the draws past `last`
        leap.routing = self.routing
        self._price(leap, batches, tokens, loads, now, self.routing.until_s())
        if len(leap.ends) < MIN_LEAP_STEPS:
            self.routing.settle(now, leap.ends, 0)  # nothing ran: the stream back
            return None
        leap.last = len(leap.ends) - 1
        return leap

    def _dense_run(self, runs: list[RankRun], batches: Sequence[Batch | None], k: int) -> F64:
        """The slowest rank's dense seconds of each of k steps (RankDense.step_s's values)."""
        cols: list[list[float]] = []
        for d, b in enumerate(batches):
            if b is None:
                cols.append([self.dense.rank_s(d, None)] * k)
        for run, b in zip(runs, (b for b in batches if b is not None), strict=True):
            step = self._steps.get(run.n)
            if step is None:
                step = self._steps[run.n] = DecodeStepCost(self.cost, run.n)
            cols.append(step.dense_run_s(b.decode_ctx_tokens, run.n, k))
        out: F64 = np.max(np.asarray(cols), axis=0)  # (a max: exact in any order)
        return out

    def _price(
        self,
        leap: GroupLeap,
        batches: Sequence[Batch | None],
        tokens: Sequence[int],
        loads: F64,
        now: float,
        until: float,
    ) -> None:
        """Each step's compute, coflows and end, as EPGroup._step's clock adds them, until
        a step would preempt, end past 2 × now, or run at `until`."""
        runs, total = leap.runs, sum(tokens)
        k = _grow(runs, len(loads))  # steps before one would preempt at some rank
        dense = self._dense_run(runs, batches, k).tolist()
        routed = self.routing.group.cost.steps_s(loads[:k], total).tolist()
        (dispatch, d_bytes), (combine, c_bytes) = self.flows(batches, tokens, loads[:k])
        exchanges = list(zip(dispatch.demands(d_bytes), combine.demands(c_bytes), strict=True))
        seqs = max(run.n for run in runs)
        with_host, lat, bw = self.cost.with_host, self.extra_latency_s, self.fabric.flows._bw
        limit = 2.0 * now  # Sterbenz: every end ≤ 2·start keeps the timers exact
        ends, computes = leap.ends, leap.compute_s
        bookings, booked_by = leap.bookings, leap.booked_by
        t = now
        for i in range(k):
            compute = with_host(dense[i] + routed[i], seqs)
            end = t + compute
            booked = len(bookings)
            for demand, path_latency in exchanges[i]:  # Fabric.transfer_pairs, alone
                if demand is not None:
                    links, weights, unit = demand
                    size = unit * 1.0
                    rate = min(map(truediv, map(bw.__getitem__, links), weights))
                    finish = end + size / rate  # the fluid engine's finish at its solo rate
                    bookings.append((links, weights, end, finish, size))
                    end = finish
                delay = path_latency + lat
                if delay > 0:
                    end = end + delay
            if end > limit:
                del bookings[booked:]
                break
            ends.append(end)
            computes.append(compute)
            booked_by.append(len(bookings))
            if end >= until:
                break
            t = end


def _grow(runs: list[RankRun], k: int) -> int:
    """Fill each rank's blocks grown by steps 0..k−1 (`RankRun.grown`); returns how many of
    those steps run before one would exceed some rank's free blocks (stepping would preempt
    there). A rank with reserve_full admission never grows."""
    steps = k
    for run in runs:
        if run.sched.admission.reserve_full:
            continue
        residue, bs, d0 = run.decodes.residue, run.decodes.block_size, run.d0
        free = run.sched.kv.free
        grown = run.grown  # [0]: step 0's blocks are allocated already
        for i in range(1, steps):
            g = grown[-1] + residue[(d0 + i) % bs]
            if g > free:
                steps = i
                break
            grown.append(g)
    for run in runs:
        run.grown.extend([run.grown[-1]] * (steps - len(run.grown)))
    return steps


def _decoding_runs(
    scheds: list[Scheduler], batches: Sequence[Batch | None]
) -> list[RankRun] | None:
    """Each decoding rank's part of a leap, or None when some rank may change its batch
    (it prefills, has KV arriving, serves a prefix cache, decodes speculatively, or has
    work but no batch)."""
    runs: list[RankRun] = []
    for d, (sched, batch) in enumerate(zip(scheds, batches, strict=True)):
        if batch is None:
            if sched.has_work():
                return None
            continue
        if batch.prefill or batch.decode_step < 0 or sched.prefills.prefilling:
            return None
        decodes = sched.decodes
        if sched.arrived or sched.prefix is not None or not isinstance(decodes, DecodeSet):
            return None
        heap, version = decodes.finish_heap, sched.state.version
        while heap and heap[0][2] != version[heap[0][1]]:  # preempted requests' entries
            heapq.heappop(heap)
        runs.append(RankRun(d, sched, decodes, batch))
    return runs or None
