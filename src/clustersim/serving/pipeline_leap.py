"""The pipeline leap: a PP replica's batch crosses its p stages as one event.

A pipelined replica (serving/replica.py) steps each batch through its stages as processes:
per stage a compute timeout, the TP all-reduces on the fabric, a hand-off to the next stage
on the fabric, a wake-up there — about eight simpy events and two fabric entities a stage
step. When the replica's all-reduce and hand-off links are its own (no other unit, and no
other of its channels — a stage's all-reduces, a stage's hand-off — claims them: a
co-located dense run, `Fabric.only_tp_allreduces`) every transfer runs alone at its solo
rate, so a stage step's times follow in closed form (network/private_allreduce.py,
network/private_handoff.py), and the stages are a flow shop: batches enter stage 0 in the
order their lanes form them and keep that order at every stage (FIFO queues, and a
hand-off's move is shorter than any step, so a later batch never overtakes), so stage s
starts batch k at max(its arrival from stage s − 1, the end of stage s's previous batch).

Hence when a lane forms a batch, its whole trip is known: `PipelineLeap.trip` computes every
stage's start, compute, all-reduce and hand-off with the simpy clock's own additions, the
lane waits on one alarm landing exactly on the last stage's end (serving/pipeline_trip.py), then the
rows of the p stage steps are written and their link bytes booked — the rows and bytes
stepping writes (the iteration table is sorted at the end; per link cell the bookings come
in the same order: a channel's transfers in batch order) — and the lane completes the batch
as stepping does. Nothing from outside can change a trip: an arrival only queues a request
for the lane's next batch, and the lane's blocks change only when it forms or completes a
batch (faults and prefix caching step every step: `LaneLeaps.forbid_leaps`).

A replica switches to trips for good at a batch formation that finds its pipeline empty
once the fabric has settled (PrivateAllReduce.settled): from then on no stepped transfer of
its own is in flight, and leaving its entities out of the fluid engine changes no other
entity's completion time. The one conceivable difference from stepping is the all-reduce
leap's: two units' transfers ending within the fluid engine's completion tolerance (1e-12 s)
complete together when stepped. `CLUSTERSIM_DECODE_LEAP=0` steps every stage step.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from operator import itemgetter
from typing import Any, NamedTuple

import simpy

from clustersim.config.schema import ServingSpec
from clustersim.metrics.recorder import Recorder
from clustersim.model.decode_run import DecodeStepCost
from clustersim.model.stage_cost import StageCost, StageCostModel
from clustersim.network.completion_ties import Completions
from clustersim.network.fabric import Fabric
from clustersim.network.held_transfers import HeldTransfers, Shape
from clustersim.network.private_allreduce import Phase, PrivateAllReduce
from clustersim.network.private_handoff import PrivateHandoff, Transfer
from clustersim.network.twin_links import booked_links, twin_classes
from clustersim.serving.batch import Batch
from clustersim.serving.decode_leap import leaping_enabled, max_step_tokens
from clustersim.serving.pipeline_trip import Alarm, Trip
from clustersim.serving.scheduler import Scheduler
from clustersim.serving.trip_stages import OnePhase, one_phase_plan, one_phase_steps, stage_steps

HELD_BOOKINGS = 4096  # transfers booked in the ledger at once
MAX_TIE_ROUNDS = 16  # computing the trips in flight again settles in one or two rounds

_OWNERS = itertools.count(1)  # link claims of trips' channels (PP1 groups claim as id(replica))


def shortest_step_s(cost: StageCostModel) -> float:
    """A lower bound on any step of `cost`'s stage (seconds): one token, decode or prefill,
    eager or graph (compute_s does not decrease as a batch grows within a mode)."""
    graph_max = cost._graph_max_batch
    return min(
        cost.compute_s(0, 0.0, 1, 0, 0),
        cost.compute_s(1, 0.0, 0, 0, 1),
        cost.compute_s(0, 0.0, graph_max + 1, 0, 0),
        cost.compute_s(graph_max + 1, 0.0, 0, 0, 1),
    )


def alike_decode_steps(
    costs: Sequence[StageCostModel], n: int
) -> tuple[list[Callable[[int], float]], list[int]]:
    """The distinct `step_s(ctx)` of the stages for a pure-decode batch of n
    (model/decode_run.py: compute_s(0, 0.0, n, ctx, 0), bit for bit), and each stage's
    index among them: stages whose step terms are equal (the middle stages of a pipeline)
    share one, so a trip computes their step time once."""
    distinct: dict[tuple[object, ...], int] = {}
    funcs: list[Callable[[int], float]] = []
    index: list[int] = []
    for cost in costs:
        step = DecodeStepCost(cost, n)
        terms = tuple(getattr(step, name) for name in DecodeStepCost.__slots__)
        if terms not in distinct:
            distinct[terms] = len(funcs)
            funcs.append(step.step_s)
        index.append(distinct[terms])
    return funcs, index


class StagePrice(NamedTuple):
    """What a stage step of some token count moves: its all-reduce phases, its hand-off,
    the hand-off's latency after its move (seconds)."""

    phases: tuple[Phase, ...]
    hand_off: Transfer | None
    latency_s: float


class PipelineLeap:
    """Trips of one pipelined replica's batches through its stages (see module docstring)."""

    def __init__(
        self,
        env: simpy.Environment,
        fabric: Fabric,
        groups: tuple[tuple[str, ...], ...],
        costs: tuple[StageCostModel, ...],
        handoff_pairs: Sequence[tuple[tuple[str, str], ...]],
        serving: ServingSpec,
        kv_blocks: int,
        recorder: Recorder,
        replica: int,
    ) -> None:
        self.env = env
        self.fabric = fabric
        self.costs = costs
        self.recorder = recorder
        self.replica = replica
        self.tp = len(groups[0])
        self.on = False  # switched to trips (for good)
        max_tokens = max_step_tokens(serving, kv_blocks)
        self.allreduces = [
            PrivateAllReduce(
                fabric,
                group,
                next(_OWNERS),
                cost.allreduce_bytes(max_tokens),
                cost.allreduces_per_step,
            )
            if self.tp > 1
            else None
            for group, cost in zip(groups, costs, strict=True)
        ]
        self.handoffs = [PrivateHandoff(fabric, pairs, next(_OWNERS)) for pairs in handoff_pairs]
        # every hand-off's move is shorter than any step of its stage, with room for the
        # clock's rounding: a stage's next hand-off starts after its previous one ended
        self._ordered = True
        for s, h in enumerate(self.handoffs):
            if h.links is None:
                self._ordered = False
                continue
            longest = h.of(costs[s].handoff_bytes(max_tokens) / self.tp).move_s
            fabric.settle_s = max(fabric.settle_s, longest)
            self._ordered &= longest <= shortest_step_s(costs[s]) * (1.0 - 1e-6)
        self._private: bool | None = None
        self.free_s = [0.0] * len(groups)  # end of each stage's last step (its busy_until)
        self._handoff_done = [0.0] * len(self.handoffs)  # end of each channel's last move
        self._prices: dict[int, list[StagePrice]] = {}  # by a step's tokens
        self._plans: dict[int, tuple[OnePhase, ...] | None] = {}  # one_phase_plan, by tokens
        # by decode n: the distinct stages' step_s, each stage's among them
        # (each stage's step time from the distinct ones: an itemgetter of their indices)
        self._decode_steps: dict[int, tuple[list[Callable[[int], float]], itemgetter[Any]]] = {}
        self._twins: list[dict[int, tuple[int, ...]]] = [{} for _ in groups]  # all-reduces
        self._flying: list[Trip] = []  # trips in flight, in the order they started
        self._seq = 0  # trips started
        self._ties = Completions()  # their transfers' completions (completion_ties.py)
        self._held = HeldTransfers(fabric.ledger)  # ended trips' transfers, not yet booked
        self._shape_ids: dict[int, tuple[int, ...]] = {}  # a trip's transfers', by tokens
        fabric.before_read(self._held.book)

    def usable(self, now: float) -> bool:
        """Whether trips may start now (their transfers alone, the fabric settled)."""
        if self._private is None:
            self._private = self._ordered and all(h.private() for h in self.handoffs)
            self._private &= all(ar is None or ar.private() for ar in self.allreduces)
        return self._private and now >= 2.0 * self.fabric.settle_s

    def switch_on(self, busy_until: list[float]) -> None:
        """Take over from the stepped stages (pipeline empty), whose last ends these are;
        from now on the channels' links are leased for good (FlowEngine.start_many raises
        if any other transfer starts there) and each channel books its twin links as one
        (network/twin_links.py)."""
        self.on = True
        self.free_s = list(busy_until)
        leased = self.fabric.flows.leased  # a transfer starting on them now raises
        for h in self.handoffs:
            leased.update(h.links or ())
        for ar in self.allreduces:
            leased.update(ar.links if ar is not None else ())
        for h in self.handoffs:
            h.book_twins()
        for s, ar in enumerate(self.allreduces):
            if ar is not None:
                self._twins[s] = twin_classes(ar.shapes())
                self.fabric.book_twins(self._twins[s])

    def forget(self) -> None:
        """Drop cached prices (step times or link rates changed)."""
        self._prices.clear()
        self._plans.clear()
        self._decode_steps.clear()
        self._shape_ids.clear()

    def _price(self, tokens: int) -> list[StagePrice]:
        """Each stage's all-reduce phases and hand-off for a step of `tokens` tokens."""
        prices = self._prices.get(tokens)
        if prices is None:
            prices = self._prices[tokens] = [
                StagePrice(
                    self._allreduce(s, tokens),
                    self._hand_off(s, tokens),
                    self.handoffs[s].latency_s if s < len(self.handoffs) else 0.0,
                )
                for s in range(len(self.costs))
            ]
        return prices

    def _allreduce(self, s: int, tokens: int) -> tuple[Phase, ...]:
        """Stage s's all-reduce phases (booking its twin links as one), () at TP1."""
        ar, cost = self.allreduces[s], self.costs[s]
        if ar is None:
            return ()
        phases = ar.phases(cost.allreduce_bytes(tokens), cost.allreduces_per_step) or []
        return tuple(self._booked(s, ph) for ph in phases)

    def _booked(self, s: int, phase: Phase) -> Phase:
        """`phase` booking only the representatives of stage s's twin links."""
        if phase.links is None or not self._twins[s]:
            return phase
        links, weights = booked_links(phase.links, phase.weights, self._twins[s])
        return phase._replace(links=links, weights=weights)

    def _hand_off(self, s: int, tokens: int) -> Transfer | None:
        """The hand-off from stage s (None: the last stage, or no bytes to move)."""
        if s == len(self.costs) - 1:
            return None
        nbytes = float(self.costs[s].handoff_bytes(tokens) / self.tp)
        return self.handoffs[s].of(nbytes) if nbytes > 0 else None

    def _shapes_of(self, tokens: int) -> tuple[int, ...]:
        """The ids of a trip's transfers' shapes, in the order it computes them."""
        ids = self._shape_ids.get(tokens)
        if ids is None:
            shapes: list[Shape] = []
            for phases, hand_off, _latency in self._price(tokens):
                shapes += [(p.links, p.weights, p.size) for p in phases if p.links is not None]
                if hand_off is not None:
                    shapes.append((hand_off.links, hand_off.weights, hand_off.size))
            ids = self._shape_ids[tokens] = self._held.shape_ids(shapes)
        return ids

    def _decode_steps_of(self, n: int) -> tuple[list[Callable[[int], float]], itemgetter[Any]]:
        """`alike_decode_steps` of the stages for a pure-decode batch of n (cached), the
        indices as a getter of each stage's time from the distinct times (p ≥ 2: a tuple)."""
        steps = self._decode_steps.get(n)
        if steps is None:
            funcs, index = alike_decode_steps(self.costs, n)
            steps = self._decode_steps[n] = (funcs, itemgetter(*index))
        return steps

    def start(self, lane: int, sched: Scheduler, batch: Batch) -> Trip:
        """Send `batch` (lane `lane`'s, just formed) through every stage: its trip, whose
        `alarm.event` the lane waits on (the alarm may move: its waiters move with it), then
        `end`s, then completes the batch."""
        self._seq += 1
        trip = Trip(self._seq, lane, sched, batch, list(self.free_s), list(self._handoff_done))
        trip.formed = self.env.now
        self._flying.append(trip)
        if self._compute(trip):
            self._settle_ties()
        trip.alarm = Alarm(self.env, trip.end_s)
        return trip

    def end(self, trip: Trip) -> None:
        """The trip has reached its last stage's end: its rows and link bytes."""
        flying = self._flying
        flying.remove(trip)  # the oldest: trips end in the order they started
        self._ties.prune(flying[0].free0[0] if flying else self.env.now)
        self._write(trip)

    def _settle_ties(self) -> None:
        """Compute the trips in flight again, in order, until their transfers' completions
        agree with each other (network/completion_ties.py); move the alarms that changed."""
        flying = self._flying
        for _ in range(MAX_TIE_ROUNDS):
            self.free_s, self._handoff_done = list(flying[0].free0), list(flying[0].done0)
            changed = False
            for trip in flying:
                before = trip.times[1::2]  # its transfers' completions
                trip.free0, trip.done0 = list(self.free_s), list(self._handoff_done)
                self._ties.drop(trip.seq)
                self._compute(trip)
                changed |= trip.times[1::2] != before
            if not changed:
                break
        else:
            raise RuntimeError("closed-form PP transfers: completion ties did not settle")
        for trip in flying:
            if trip.alarm is not None and trip.alarm.at != trip.end_s:
                trip.alarm.arm(trip.end_s)

    def _compute(self, trip: Trip) -> bool:
        """The trip's stage steps from the stages' state now (which it advances; `trip.free0`
        and `done0` hold it as it was), as its stage steps (`trip.rows`); True when
        one of its transfers would complete one of another trip's earlier (a tie). Each
        transfer is first taken to complete at its finish, which holds unless one lies near
        another (`Completions.hold_clear`); else the trip is computed again, transfer by
        transfer (`Completions.completion`)."""
        rows, times = trip.rows, trip.times
        rows.clear()
        times.clear()
        batch = trip.batch
        if batch.prefill:
            pre, ctx = batch.prefill_tokens, batch.decode_ctx_tokens
            n, attn, seqs = batch.decode_tokens, batch.prefill_attn_pairs, len(batch.prefill)
            computes = [c.compute_s(pre, attn, n, ctx, seqs) for c in self.costs]
        else:
            funcs, each_stage = self._decode_steps_of(batch.decode_tokens)
            ctx = batch.decode_ctx_tokens
            computes = each_stage([f(ctx) for f in funcs])
        tokens = batch.tokens
        prices = self._price(tokens)
        free_s, done_s = self.free_s, self._handoff_done
        ties, seq, formed = self._ties, trip.seq, trip.formed
        plans = self._plans
        plan = (
            plans[tokens] if tokens in plans else plans.setdefault(tokens, one_phase_plan(prices))
        )
        if plan is not None:
            one_phase_steps(plan, computes, free_s, done_s, formed, rows, times)
        else:
            stage_steps(prices, computes, free_s, done_s, formed, rows, times, None, seq)
        if ties.hold_clear(times, seq):
            return False
        rows.clear()
        times.clear()
        free_s[:], done_s[:] = trip.free0, trip.done0  # the stages' state before it
        stage_steps(prices, computes, free_s, done_s, formed, rows, times, ties.completion, seq)
        tie, ties.tied = ties.tied, False
        return tie

    def _write(self, trip: Trip) -> None:
        """The rows the stages write and the bytes the fabric books, as stepping does."""
        held = self._held  # booked in the order held (per link cell, the order stepping
        held.hold(self._shapes_of(trip.batch.tokens), trip.times)  # books: batch order)
        if held.count >= HELD_BOOKINGS:
            held.book()
        batch, kv = trip.batch, trip.sched.kv  # the lane's blocks: unchanged since it formed
        head = (
            self.replica, trip.lane, self.tp > 1,
            batch.prefill_tokens, batch.decode_tokens, batch.num_seqs, batch.tokens,
            kv.used, kv.capacity,
        )  # fmt: skip
        self.recorder.on_trip(trip.rows, head, len(self.costs))


def pipeline_leap(
    env: simpy.Environment,
    fabric: object,
    groups: tuple[tuple[str, ...], ...],
    costs: tuple[StageCost, ...],
    handoff_pairs: Sequence[tuple[tuple[str, str], ...]],
    serving: ServingSpec,
    kv_blocks: int,
    recorder: Recorder,
    replica: int,
) -> PipelineLeap | None:
    """The pipeline leap of a plain pipelined replica (roofline costs, the shared fabric),
    or None: step every stage step."""
    if not leaping_enabled() or not isinstance(fabric, Fabric):
        return None
    models = tuple(c for c in costs if isinstance(c, StageCostModel))
    if len(models) != len(costs):
        return None
    return PipelineLeap(
        env, fabric, groups, models, handoff_pairs, serving, kv_blocks, recorder, replica
    )
