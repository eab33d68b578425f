"""Decode leaps of a one-stage replica (serving/decode_leap.py), as a base class of Replica:
the leap in flight, the pricing of its steps, the outside cut, and the closed-form all-reduce
of its stepped steps (network/private_allreduce.py). Replica calls `_init_leaps` when built,
`_leap_from` after forming a batch, `_closed_step` before a step's compute (the whole step
as one timer) or else `_closed_allreduce` after it, and `_leap_kv_used` when asked for its
blocks; faults call `interrupt` / `forbid_leaps`.
"""

from __future__ import annotations

import math
from collections.abc import Generator
from typing import Any

import simpy

from clustersim.config.schema import ServingSpec
from clustersim.metrics.recorder import Recorder
from clustersim.model.stage_cost import StageCost, StageCostModel
from clustersim.network.fabric import Fabric
from clustersim.serving.batch import Batch
from clustersim.serving.decode_leap import DecodeLeap, leaping_enabled, plan_leap
from clustersim.serving.leap_pricing import LeapPricing, RoutedStageCost
from clustersim.serving.next_arrival import NextArrival
from clustersim.serving.pipeline_leap import PipelineLeap, pipeline_leap
from clustersim.serving.pipeline_trip import Trip
from clustersim.serving.scheduler import Scheduler, no_leap

Process = Generator[simpy.Event, Any, None]


class LaneLeaps:
    """The decode leaps of a replica's single lane (none: `_pricing` is None)."""

    env: simpy.Environment
    index: int
    tp: int
    fabric: Any  # serving/replica.py FabricLike: .allreduce(group, bytes, count)
    recorder: Recorder
    costs: tuple[Any, ...]
    groups: tuple[tuple[str, ...], ...]
    lanes: list[Any]  # serving/replica.py Lane: .scheduler, .idle, .index
    stages: list[Any]  # PP > 1: serving/replica.py _Stage: .busy_until
    _trips: PipelineLeap | None = None  # PP > 1: batches' trips in closed form
    next_arrival: NextArrival | None = None  # set when every arrival comes here, announced

    def _init_leaps(
        self, eligible: bool, fabric: object, serving: ServingSpec, kv_blocks: int
    ) -> None:
        """`eligible`: one lane (PP = 1), no speculative decoding, the plain step; leaps
        also need the roofline cost model (analytic, or with sampled routing: then the
        routing is drawn ahead, moe/routed_leap.py) and, with TP > 1, the shared-link
        fabric."""
        cost, group, scheduler = self.costs[0], self.groups[0], self.lanes[0].scheduler
        self._leap: DecodeLeap | None = None
        self._leap_done: DecodeLeap | None = None  # the last leap that ended (its steps, cut)
        self._pricing: LeapPricing | None = None
        self._leap_scheduler = scheduler
        tp_fabric = fabric if len(group) > 1 and isinstance(fabric, Fabric) else None
        if (
            eligible
            and leaping_enabled()
            and isinstance(cost, StageCostModel | RoutedStageCost)
            and (len(group) == 1 or tp_fabric is not None)
        ):
            self._pricing = LeapPricing.build(cost, tp_fabric, group, id(self), serving, kv_blocks)
            scheduler.interrupt = self.interrupt

    def _init_trips(
        self,
        fabric: object,
        handoff_pairs: list[tuple[tuple[str, str], ...]],
        serving: ServingSpec,
        kv_blocks: int,
    ) -> None:
        """PP > 1: the pipeline leap's trips (serving/pipeline_leap.py), if it may run."""
        self._trips = pipeline_leap(
            self.env, fabric, self.groups, self.costs, handoff_pairs, serving, kv_blocks,
            self.recorder, self.index, self._trip_ended,
        )  # fmt: skip

    def _trip_ended(self, trip: Trip) -> None:
        """A trip has ended (its rows written): complete its batch, as the lane's loop would
        after a step, then start the lane's next trip; with nothing to run the lane sleeps
        (on the event its loop waits on, until `submit`), and a lane that may not go on in
        trips (leaps forbidden since, prefix caching) is handed back to its loop."""
        sched, now = trip.sched, self.env._now
        sched.complete(trip.batch, now)
        lane, trips = self.lanes[trip.lane], self._trips
        if trips is None or sched.prefix is not None or lane.scheduler is not sched:
            lane.wake.succeed()
            return
        batch = sched.next_batch(now)
        if batch is None:
            lane.idle = True
            return
        trips.start(lane.index, sched, batch)

    def _trip(self, lane: Any, batch: Batch) -> Trip | None:
        """A PP batch's trip in closed form (it ends in `_trip_ended`, the lane's loop
        waiting meanwhile), or None: step it through the stages. Trips start when the
        pipeline is empty (every other lane idle) and stay on."""
        trips = self._trips
        if trips is None:
            return None
        if not trips.on:
            if not all(other.idle for other in self.lanes if other is not lane):
                return None
            if not trips.usable(self.env.now):
                return None
            trips.switch_on([stage.busy_until for stage in self.stages])
        return trips.start(lane.index, lane.scheduler, batch)

    def _leap_worth_steps(self, tp1_worth: int) -> int:
        """The mean steps a leap must cover before the lane pauses leaping (LeapBackoff):
        `tp1_worth` on a TP1 lane, whose stepped step is one timer; 0 (always leap) with
        TP > 1, where a stepped step is several events, or with sampled routing, where it
        draws its routing (≈ 40 µs) while a leap draws its steps' in one call."""
        routed = self._pricing is not None and self._pricing.routing is not None
        return tp1_worth if len(self.groups[0]) == 1 and not routed else 0

    @property
    def kv_used_blocks(self) -> int:
        if (leaping := self._leap_kv_used()) is not None:
            return leaping
        return sum(lane.scheduler.kv.used for lane in self.lanes)

    def interrupt(self, now: float | None = None, reprice: bool = False) -> None:
        """Cut a decode leap in progress at the step running now (`now`, if given, is the
        current time): call before changing the replica from outside its lane (its
        scheduler does so on every outside change); `reprice`: also forget the step costs
        and all-reduce phases leaps cached (step times or link rates changed)."""
        if self._leap is not None:
            self._leap.cut(self.env.now)
        if reprice and self._pricing is not None:
            self._pricing.forget()
        if reprice and self._trips is not None:
            self._trips.forget()

    def forbid_leaps(self) -> None:
        """Step every step (a run with faults: its replicas stop and slow down mid-run)."""
        self.interrupt()
        self._pricing = None
        self._trips = None
        self._leap_scheduler.interrupt = no_leap

    def _leap_kv_used(self) -> int | None:
        """Blocks in use now while a leap is in flight (None: read the KV pools)."""
        leap = self._leap
        if leap is not None and not leap.allocated:
            return leap.kv_used_at(self.env.now)
        return None

    def _closed_step(self, start: float, compute_s: float, tokens: int) -> float | None:
        """The end of a stepped step whose all-reduces run in closed form, booked (one
        timer for the whole step), or None: `_closed_allreduce` or the fabric."""
        pricing = self._pricing
        return None if pricing is None else pricing.closed_step(start, compute_s, tokens)

    def _compute_then_allreduce(
        self, cost: StageCost, group: tuple[str, ...], compute: float, tokens: int
    ) -> Generator[simpy.Event, Any, tuple[float, float]]:
        """A stepped step's compute, then (TP > 1) its all-reduces in closed form or on the
        fabric; returns (compute seconds, communication seconds)."""
        yield self.env.timeout(compute)
        if self.tp == 1:
            return compute, 0.0
        t = self.env.now
        if (closed := self._closed_allreduce(tokens)) is not None:
            yield from closed  # all-reduces alone on their links: network/private_allreduce.py
        else:
            nbytes = cost.allreduce_bytes(tokens)
            yield self.fabric.allreduce(group, nbytes, cost.allreduces_per_step)
        return compute, self.env.now - t

    def _closed_allreduce(self, tokens: int) -> Process | None:
        """A stepped step's all-reduces in closed form, when its TP group may (else None)."""
        pricing = self._pricing
        return None if pricing is None else pricing.closed_allreduce(self.env, tokens)

    def _leap_from(self, sched: Scheduler, batch: Batch, start: float) -> Process | None:
        """A leap starting with `batch` (just formed at `start`), or None: step it."""
        pricing = self._pricing
        if pricing is None or batch.prefill or not pricing.usable(start):
            return None
        announced = self.next_arrival
        until = math.inf if announced is None else announced.at_s
        leap = plan_leap(sched, batch, pricing, start, until)
        return None if leap is None else self._leap_through(leap, pricing)

    def _leap_through(self, leap: DecodeLeap, pricing: LeapPricing) -> Process:
        """Wait for the leap's (possibly cut: DecodeLeap.cut) end, then write its rows and
        complete it."""
        env = self.env
        self._leap = leap
        yield leap.wait(env)
        self._leap = None
        self._leap_done = leap
        leap.complete(env.now, self.recorder, self.index)
        pricing.ran(leap.cut_short)
