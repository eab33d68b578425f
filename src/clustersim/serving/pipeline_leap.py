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

Hence when a lane forms a batch, its whole trip is known: `PipelineLeap.start` computes
every stage's start, compute, all-reduce and hand-off with the simpy clock's own additions.
At the last stage's end the rows of the p stage steps are written and their link bytes
booked — the rows and bytes stepping writes (the iteration table is sorted at the end; per
link cell the bookings come in the same order: a channel's transfers in batch order) — and
the replica completes the batch and forms the lane's next one, as stepping does
(`LaneLeaps._trip_ended`). Nothing from outside can change a trip: an arrival only queues a
request for the lane's next batch, and the lane's blocks change only when it forms or
completes a batch (faults and prefix caching step every step: `LaneLeaps.forbid_leaps`).

Trips end in the order they start, so one timer (serving/pipeline_trip.py TripTimer) is
queued at a time, for the first trip's end, where that trip's own timeout would be queued
(its event id drawn when it started). When it rings, `_ring` ends that trip and then each
next one while no other event is queued before or with its end, setting the clock to it as
the event loop would: the same work in the same order, without a queue entry, a simpy
event and a resumed lane process a trip.

A replica switches to trips for good at a batch formation that finds its pipeline empty
once the fabric has settled (PrivateAllReduce.settled): from then on no stepped transfer of
its own is in flight, and leaving its entities out of the fluid engine changes no other
entity's completion time. The one conceivable difference from stepping is the all-reduce
leap's: two units' transfers ending within the fluid engine's completion tolerance (1e-12 s)
complete together when stepped. `CLUSTERSIM_DECODE_LEAP=0` steps every stage step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import simpy

from clustersim.config.schema import ServingSpec
from clustersim.metrics.recorder import Recorder
from clustersim.model.stage_cost import StageCost, StageCostModel
from clustersim.network.completion_ties import Completions
from clustersim.network.fabric import Fabric
from clustersim.network.held_transfers import HeldTransfers
from clustersim.serving.batch import Batch
from clustersim.serving.decode_leap import leaping_enabled
from clustersim.serving.pipeline_trip import Trip, TripTimer
from clustersim.serving.scheduler import Scheduler
from clustersim.serving.trip_prices import TripPrices
from clustersim.serving.trip_stages import one_phase_steps, stage_steps

HELD_BOOKINGS = 4096  # transfers booked in the ledger at once
MAX_TIE_ROUNDS = 16  # computing the trips in flight again settles in one or two rounds
# a trip's end prunes the completions held once they exceed the transfers (2p − 1 each) of
# this many trips more than the p in flight and one ended: fewer merges than pruning every
# trip, shorter lists than pruning seldom (pp8: 165 held; 0.9 % fewer instructions)
PRUNE_SPARE_TRIPS = 2


class PipelineLeap:
    """Trips of one pipelined replica's batches through its stages (see module docstring)."""

    def __init__(
        self,
        env: simpy.Environment,
        fabric: Fabric,
        prices: TripPrices,
        recorder: Recorder,
        replica: int,
        ended: Callable[[Trip], None],
    ) -> None:
        self.env = env
        self.fabric = fabric
        costs = prices.costs
        self.stages = len(costs)
        self.recorder = recorder
        self.replica = replica
        self.on = False  # switched to trips (for good)
        self.prices = prices
        self.tp = prices.tp
        self._private: bool | None = None
        self.free_s = [0.0] * len(costs)  # end of each stage's last step (its busy_until)
        # end of each hand-off channel's last move
        self._handoff_done = [0.0] * len(self.prices.handoffs)
        self._flying: list[Trip] = []  # trips in flight, in the order they started
        self._seq = 0  # trips started
        self._ties = Completions()  # their transfers' completions (completion_ties.py)
        p = self.stages
        self._prune_above = (p + 1 + PRUNE_SPARE_TRIPS) * (2 * p - 1)  # held finishes
        self._held = HeldTransfers(fabric.ledger)  # ended trips' transfers, not yet booked
        self._shape_ids: dict[int, tuple[int, ...]] = {}  # a trip's transfers', by tokens
        # the replica's: complete a trip's batch and start its lane's next trip (or not)
        self.ended: Callable[[Trip], None] = ended
        self._timer = TripTimer(env, self._ring)  # queued for the first trip's end
        self._ringing = False  # ending trips (`_ring`): the timer is queued after
        fabric.before_read(self._held.book)

    def usable(self, now: float) -> bool:
        """Whether trips may start now (their transfers alone, the fabric settled)."""
        if self._private is None:
            self._private = self.prices.private()
        return self._private and now >= 2.0 * self.fabric.settle_s

    def switch_on(self, busy_until: list[float]) -> None:
        """Take over from the stepped stages (pipeline empty), whose last ends these are;
        from now on the channels' links are leased for good (TripPrices.lease)."""
        self.on = True
        self.free_s = list(busy_until)
        self.prices.lease()

    def forget(self) -> None:
        """Drop cached prices (step times or link rates changed)."""
        self.prices.forget()
        self._shape_ids.clear()

    def _shapes_of(self, tokens: int) -> tuple[int, ...]:
        """The ids of a trip's transfers' shapes, in the order it computes them."""
        ids = self._shape_ids.get(tokens)
        if ids is None:
            ids = self._shape_ids[tokens] = self._held.shape_ids(self.prices.shapes(tokens))
        return ids

    def start(self, lane: int, sched: Scheduler, batch: Batch) -> Trip:
        """Send `batch` (lane `lane`'s, just formed) through every stage: its trip. At its
        end (`_ring`) its rows are written, then `ended` completes the batch and forms
        the lane's next one."""
        self._seq += 1
        env = self.env
        trip = Trip(self._seq, lane, sched, batch, list(self.free_s), list(self._handoff_done))
        trip.formed = env._now
        trip.eid = next(env._eid)  # where its own timeout would be queued (TripTimer)
        flying = self._flying
        flying.append(trip)
        if self._compute(trip):
            self._settle_ties()
        if not self._ringing:
            self._timer.arm(flying[0])
        return trip

    def _ring(self) -> None:
        """The clock is at the first trip's end: end it (its rows and link bytes; the held
        completions pruned once they are many), and each next one while no other event comes
        before (or with) it — the clock set to each end as the event loop sets it — then
        queue the timer for the next."""
        env, flying, ties = self.env, self._flying, self._ties
        queue = env._queue
        ended, write, prune_above = self.ended, self._write, self._prune_above
        self._ringing = True
        try:
            while True:
                trip = flying[0]
                del flying[0]  # (trips end in the order they started)
                if len(ties.finishes) > prune_above:  # (stale ones change no completion)
                    ties.prune(flying[0].free0[0] if flying else env._now)
                write(trip)
                ended(trip)
                if not flying:
                    return
                at = flying[0].end_s
                if queue and queue[0][0] <= at:
                    break
                env._now = at
        finally:
            self._ringing = False
        self._timer.arm(flying[0])

    def _settle_ties(self) -> None:
        """Compute the trips in flight again, in order, until their transfers' completions
        agree with each other (network/completion_ties.py); a trip whose end moved draws a
        new event id, as its moved timeout would."""
        flying = self._flying
        ends = [trip.end_s for trip in flying]
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
        for trip, end_s in zip(flying, ends, strict=True):
            if trip.end_s != end_s:  # moved: queued anew (TripTimer)
                trip.eid = next(self.env._eid)

    def _compute(self, trip: Trip) -> bool:
        """The trip's stage steps from the stages' state now (which it advances; `trip.free0`
        and `done0` hold it as it was), as its stage steps (`trip.rows`); True when
        one of its transfers would complete one of another trip's earlier (a tie). Each
        transfer is first taken to complete at its finish, which holds unless one lies near
        another (tested by `one_phase_steps` as it computes the stages, else by
        `Completions.hold_clear`); else the trip is computed again, transfer by transfer
        (`Completions.completion`)."""
        rows, times = trip.rows, trip.times
        rows.clear()
        times.clear()
        batch = trip.batch
        if batch.prefill:
            pre, ctx = batch.prefill_tokens, batch.decode_ctx_tokens
            n, attn, seqs = batch.decode_tokens, batch.prefill_attn_pairs, len(batch.prefill)
            computes = [c.compute_s(pre, attn, n, ctx, seqs) for c in self.prices.costs]
        else:
            funcs, each_stage = self.prices.decode_steps(batch.decode_tokens)
            ctx = batch.decode_ctx_tokens
            computes = each_stage([f(ctx) for f in funcs])
        tokens = batch.tokens
        free_s, done_s = self.free_s, self._handoff_done
        ties, seq, formed = self._ties, trip.seq, trip.formed
        plan = self.prices.plan(tokens)
        if plan is not None:
            wide = ties.wide_s(formed)  # (the window at its latest finish if no wider)
            if one_phase_steps(
                plan, computes, free_s, done_s, formed, rows, times, ties.finishes, wide
            ) and ties.hold_checked(times, seq, wide):
                return False
        else:
            stage_steps(self.prices.price(tokens), computes, free_s, done_s, formed, rows,
                        times, None, seq)  # fmt: skip
            if ties.hold_clear(times, seq):
                return False
        prices = self.prices.price(tokens)
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
        self.recorder.on_trip(trip.rows, head, self.stages)


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
    ended: Callable[[Trip], None],
) -> PipelineLeap | None:
    """The pipeline leap of a plain pipelined replica (roofline costs, the shared fabric),
    or None: step every stage step."""
    if not leaping_enabled() or not isinstance(fabric, Fabric):
        return None
    models = tuple(c for c in costs if isinstance(c, StageCostModel))
    if len(models) != len(costs):
        return None
    prices = TripPrices(fabric, groups, models, handoff_pairs, serving, kv_blocks)
    return PipelineLeap(env, fabric, prices, recorder, replica, ended)
