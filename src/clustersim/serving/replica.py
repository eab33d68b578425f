"""One DP replica as simpy processes: scheduler lanes feeding a pipeline of stages.

With PP = 1 a replica has one lane whose process runs each step inline (compute, then the
step's TP all-reduces over the fabric). With PP = p there are p lanes (vLLM's virtual
engines), so up to p batches are in flight; each stage is a process taking batches FIFO,
and a batch's activations travel to the next stage as point-to-point flows over the fabric
(TP rank i of stage s → TP rank i of stage s+1, 1/tp of the hidden states each).
Bubble time of a stage = the gap between its previous batch's end and this batch's start.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Generator, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import simpy

from clustersim.config.schema import ServingSpec
from clustersim.metrics.recorder import Recorder
from clustersim.model.stage_cost import StageCost
from clustersim.serving.batch import Batch
from clustersim.serving.kv_cache import KVPool
from clustersim.serving.lane_leaps import LaneLeaps
from clustersim.serving.lane_process import LaneProcess
from clustersim.serving.leap_backoff import TP1_WORTH_STEPS, LeapBackoff
from clustersim.serving.prefix_lane_choice import lane_for
from clustersim.serving.request_state import RequestState
from clustersim.serving.scheduler import Scheduler, scheduler_requests
from clustersim.serving.tp1_lane import tp1_lane, tp1_lane_enabled

if TYPE_CHECKING:  # (speculative decoding's modules load for runs that use it)
    from clustersim.serving.speculative_decode import SpeculativeDecoding


class FabricLike(Protocol):
    def transfer(
        self, flows: Sequence[tuple[str, str, float]], latency_s: float = 0.0
    ) -> simpy.Event: ...

    def transfer_same(
        self, pairs: tuple[tuple[str, str], ...], nbytes: float, latency_s: float = 0.0
    ) -> simpy.Event: ...

    def allreduce(self, group: Sequence[str], nbytes: float, count: int = 1) -> simpy.Event: ...


Process = Generator[simpy.Event, Any, None]


def _compute_s(cost: StageCost, batch: Batch) -> float:
    """Seconds of `batch`'s compute on a stage."""
    return cost.compute_s(
        batch.prefill_tokens,
        batch.prefill_attn_pairs,
        batch.decode_tokens,
        batch.decode_ctx_tokens,
        len(batch.prefill),
    )


def _sleep(lane: Lane, env: simpy.Environment) -> Generator[simpy.Event, Any, None]:
    """The lane has nothing to run: it waits until `submit` (or `wake_lane`) wakes it."""
    lane.idle = True
    lane.wake = env.event()
    yield lane.wake


class Lane:
    __slots__ = ("idle", "index", "scheduler", "wake")

    def __init__(self, index: int, scheduler: Scheduler, env: simpy.Environment) -> None:
        self.index = index
        self.scheduler = scheduler
        self.idle = True
        self.wake = env.event()


class _InFlight:
    """A batch travelling through the pipeline, with the event its lane waits on; `epoch`:
    the replica's epoch when it started (a stopped replica's batches are dropped)."""

    __slots__ = ("batch", "done", "epoch", "lane")

    def __init__(self, batch: Batch, lane: Lane, done: simpy.Event, epoch: int) -> None:
        self.batch = batch
        self.lane = lane
        self.done = done
        self.epoch = epoch


class _Stage:
    __slots__ = ("busy_until", "idle", "index", "queue", "wake")

    def __init__(self, index: int, env: simpy.Environment) -> None:
        self.index = index
        self.queue: deque[_InFlight] = deque()
        self.idle = True
        self.wake = env.event()
        self.busy_until = 0.0


class Replica(LaneLeaps):
    def __init__(
        self,
        env: simpy.Environment,
        index: int,
        stage_groups: Sequence[tuple[str, ...]],
        costs: Sequence[StageCost],
        fabric: FabricLike,
        serving: ServingSpec,
        kv_blocks_per_lane: int,
        state: RequestState,
        recorder: Recorder,
        on_finish: Callable[[int, float], None],
        speculative: SpeculativeDecoding | None = None,
    ) -> None:
        self.env = env
        self.index = index
        self.groups = tuple(stage_groups)
        self.costs = tuple(costs)
        self.fabric = fabric
        self.recorder = recorder
        self.speculative = speculative is not None  # rows record their emitted tokens
        self.pp = len(self.groups)
        self.tp = len(self.groups[0])
        self.lanes = [
            Lane(
                i,
                Scheduler(serving, KVPool(kv_blocks_per_lane), state, on_finish, speculative),
                env,
            )
            for i in range(self.pp)
        ]
        # faults (sim/replica_health.py): `stop` bumps the epoch, so steps in flight when
        # the replica's GPUs failed are dropped, and gives each lane a fresh scheduler
        self.epoch = 0
        self._fresh_scheduler = lambda: Scheduler(
            serving, KVPool(kv_blocks_per_lane), state, on_finish, speculative
        )
        self.kv_capacity_blocks = kv_blocks_per_lane * self.pp
        one_lane = self.pp == 1 and speculative is None and type(self)._execute is Replica._execute
        self._init_leaps(one_lane, fabric, serving, kv_blocks_per_lane)  # serving/lane_leaps.py
        if one_lane and tp1_lane_enabled():
            LaneProcess(env, tp1_lane(self, self.lanes[0]))  # its hot path: serving/tp1_lane.py
        elif self.pp == 1:
            env.process(self._single_stage_lane(self.lanes[0]))
        else:
            self.stages = [_Stage(s, env) for s in range(self.pp)]
            # TP rank i of stage s → TP rank i of stage s+1
            self._handoff_pairs = [
                tuple(zip(self.groups[s], self.groups[s + 1], strict=False))
                for s in range(self.pp - 1)
            ]
            self._init_trips(fabric, self._handoff_pairs, serving, kv_blocks_per_lane)
            for lane in self.lanes:
                env.process(self._pipelined_lane(lane))
            for stage in self.stages:
                env.process(self._stage(stage))

    # ------------------------------------------------------------------ admission

    def fits_ever(self, rid: int) -> bool:
        return self.lanes[0].scheduler.fits_ever(rid)

    def submit(self, rid: int) -> None:
        lanes = self.lanes
        lane = lanes[0] if len(lanes) == 1 else lanes[lane_for(rid, [ln.scheduler for ln in lanes])]
        lane.scheduler.add(rid)
        if lane.idle:
            lane.idle = False
            lane.wake.succeed()

    def wake_lane(self, index: int) -> None:
        """Wake lane `index` if it sleeps (work was handed to its scheduler directly, e.g. a
        disaggregated request whose KV arrived: disagg/pools.py)."""
        lane = self.lanes[index]
        if lane.idle:
            lane.idle = False
            lane.wake.succeed()

    def stop(self) -> list[int]:
        """The replica's GPUs failed: drop every step in flight and every lane's state; the
        requests it held (ids, in lane order) are returned for retry or failure."""
        self.epoch += 1
        held: list[int] = []
        for lane in self.lanes:
            held += scheduler_requests(lane.scheduler)
            lane.scheduler = self._fresh_scheduler()
        return held

    # ------------------------------------------------------------------ one step

    def _execute(
        self, cost: StageCost, group: tuple[str, ...], batch: Batch
    ) -> Generator[simpy.Event, Any, tuple[float, float]]:
        """Run one step on a stage's TP group: compute, then its all-reduces on the fabric;
        returns (compute seconds, communication seconds)."""
        start, compute = self.env.now, _compute_s(cost, batch)
        if self.tp > 1 and (end := self._closed_step(start, compute, batch.tokens)) is not None:
            yield self.env.timeout(end - start)  # all-reduces alone on their links: one timer
            return compute, end - (start + compute)  # lands on `end` exactly (leap_pricing.py)
        return (yield from self._compute_then_allreduce(cost, group, compute, batch.tokens))

    def _await_batch(self, lane: Lane) -> Generator[simpy.Event, Any, Batch]:
        """The lane's next batch; while it has nothing to run it sleeps until `submit`."""
        while True:
            batch = lane.scheduler.next_batch(self.env.now)
            if batch is not None:
                prefix = lane.scheduler.prefix
                if prefix is not None and prefix.reload_s > 0:  # host-tier KV copied back
                    yield self.env.timeout(prefix.take_reload_s())
                return batch
            yield from _sleep(lane, self.env)

    # ------------------------------------------------------------------ PP = 1

    def _single_stage_lane(self, lane: Lane) -> Process:
        env = self.env
        group = self.groups[0]
        record = self.recorder.on_iteration
        replica = self.index
        compute_only = self.tp == 1 and type(self)._execute is Replica._execute
        backoff = LeapBackoff(self._leap_worth_steps(TP1_WORTH_STEPS))  # when to try leaps
        while True:
            sched = lane.scheduler
            # _await_batch's first try, inline (no generator a step)
            batch = sched.next_batch(env.now) if sched.prefix is None else None
            if batch is None:
                if sched.prefix is None:  # nothing to run: sleep until `submit`
                    yield from _sleep(lane, env)
                batch = yield from self._await_batch(lane)
            sched, epoch = lane.scheduler, self.epoch
            kv = sched.kv
            start = env.now
            if (
                self._pricing is not None
                and not batch.prefill
                and backoff.try_now()
                and (leap := self._leap_from(sched, batch, start)) is not None
            ):
                yield from leap
                backoff.ran(self._leap_done)
                continue
            # costs are read per step: a fault may slow the stage (serving/replica_faults.py)
            if compute_only:  # _execute of a TP1 stage, inline
                compute, comm = _compute_s(self.costs[0], batch), 0.0
                yield env.timeout(compute)
            else:
                compute, comm = yield from self._execute(self.costs[0], group, batch)
            end = env.now
            if self.epoch != epoch:  # the replica stopped during the step: its work is lost
                continue
            pt, dt = batch.prefill_tokens, batch.decode_tokens
            record(
                (replica, 0, 0, start, end, pt, dt, batch.num_seqs, pt + dt, compute, comm, 0.0,
                 kv.used, kv.capacity)
            )  # fmt: skip
            if self.speculative:
                self.recorder.on_emitted(max(batch.emitted_tokens, 0))
            sched.complete(batch, end)

    # ------------------------------------------------------------------ PP > 1

    def _pipelined_lane(self, lane: Lane) -> Process:
        env = self.env
        first = self.stages[0]
        while True:
            sched = lane.scheduler
            # _await_batch's first try, inline (no generator a trip)
            batch = sched.next_batch(env.now) if sched.prefix is None else None
            if batch is None:
                if sched.prefix is None:  # nothing to run: sleep until `submit`
                    yield from _sleep(lane, env)
                batch = yield from self._await_batch(lane)
            sched, epoch = lane.scheduler, self.epoch
            if self._trip(lane, batch) is not None:
                # the trips end without this loop: `_trip_ended` completes each batch and
                # starts the lane's next trip, or leaves the lane asleep on this event
                lane.wake = env.event()
                yield lane.wake
                continue
            done = env.event()
            self._enqueue(first, _InFlight(batch, lane, done, epoch))
            yield done
            if self.epoch == epoch:
                sched.complete(batch, env.now)

    def _enqueue(self, stage: _Stage, item: _InFlight) -> None:
        stage.queue.append(item)
        if stage.idle:
            stage.idle = False
            stage.wake.succeed()

    def _stage(self, stage: _Stage) -> Process:
        env = self.env
        s = stage.index
        group = self.groups[s]
        last = s == self.pp - 1
        record = self.recorder.on_iteration
        while True:
            if not stage.queue:
                stage.idle = True
                stage.wake = env.event()
                yield stage.wake
                continue
            item = stage.queue.popleft()
            batch = item.batch
            if item.epoch != self.epoch:  # queued before the replica stopped: dropped
                item.done.succeed()
                continue
            start = env.now
            bubble = max(0.0, start - stage.busy_until) if stage.busy_until > 0 else 0.0
            compute, comm = yield from self._execute(self.costs[s], group, batch)
            end = env.now
            if item.epoch != self.epoch:
                item.done.succeed()
                continue
            stage.busy_until = end
            kv = item.lane.scheduler.kv
            record(
                (
                    self.index,
                    s,
                    item.lane.index,
                    start,
                    end,
                    batch.prefill_tokens,
                    batch.decode_tokens,
                    batch.num_seqs,
                    batch.tokens,
                    compute,
                    comm,
                    bubble,
                    kv.used,
                    kv.capacity,
                )
            )
            if self.speculative:
                self.recorder.on_emitted(max(batch.emitted_tokens, 0))
            if last:
                item.done.succeed()
            else:
                self._hand_off(s, item)

    def _hand_off(self, s: int, item: _InFlight) -> None:
        """Send the batch's activations to stage s+1; it is queued there on arrival."""
        per_rank = self.costs[s].handoff_bytes(item.batch.tokens) / self.tp
        arrived = self.fabric.transfer_same(self._handoff_pairs[s], per_rank)
        nxt = self.stages[s + 1]
        arrived.callbacks.append(lambda _ev: self._enqueue(nxt, item))
