"""One EP group's MoE state during a run: expert placement, per-rank routing probabilities,
per-step sampling and pricing, EPLB windows and rebalances, and its expert ledger.

Used by both EP layouts (docs/moe.md §1): the lock-step DP-attention group (moe/ep_group.py)
and replicas whose EP group is their own TP group (moe/sampled_stage.py `SampledStageCost`,
a drop-in StageCost for serving/replica.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from clustersim.config.schema import EPLBSpec
from clustersim.model.moe_cost import MoELayerCost
from clustersim.moe.eplb import ExpertPlacement, imbalance, rank_loads, rebalance
from clustersim.moe.experts import ExpertLedger, ExpertTraffic
from clustersim.moe.routing_draws import sample_rank_loads
from clustersim.network.routing import FlowSpec

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


@dataclass
class RebalanceEvent:
    """One EPLB rebalance of one EP group (a row of eplb.parquet)."""

    time_s: float  # when the new placement was computed (s)
    group: int
    imbalance_before: float  # max/mean rank load of the fitted window, old placement
    imbalance_after: float  # ... new placement (= before when the placement was kept)
    experts_moved: int  # (layer, expert) weight copies moved between ranks
    bytes_moved: float  # weight bytes carried over the fabric
    duration_s: float = 0.0  # serving paused for the weight transfer (s)
    flows: list[FlowSpec] = field(default_factory=list, repr=False)


class MoEGroup:
    """Routing, pricing and balancing of one EP group (see module docstring).

    traffic: the deployment's popularity (shared); layers: the MoE layers (indices into the
    traffic's layers) this group runs; ranks: the GPUs of each EP rank (one GPU each, or the
    moe_tp GPUs sharing its experts); rank_node: node of each rank; placement: the initial
    placement; expert_bytes: one expert's weights on one GPU for one layer (bytes).

    A slow rank (docs/faults.md): `set_rank_speed` slows its expert GEMMs; from then on each
    step books every rank's expert seconds at full speed and as run, and a rebalance weighs
    each rank by the speed it showed over the window (full-speed / actual seconds) — what a
    balancer that sees per-rank step times would measure.
    """

    def __init__(
        self,
        index: int,
        traffic: ExpertTraffic,
        layers: range,
        layer_cost: MoELayerCost,
        ranks: Sequence[Sequence[str]],
        rank_node: I64,
        placement: ExpertPlacement,
        eplb: EPLBSpec | None,
        rng: np.random.Generator,
        ledger: ExpertLedger,
        expert_bytes: float,
    ) -> None:
        if placement.layers != len(layers) or placement.ranks != len(ranks):
            raise ValueError(
                f"placement of {placement.layers} layers × {placement.ranks} ranks does not "
                f"match {len(layers)} layers × {len(ranks)} ranks"
            )
        self.index = index
        self.traffic = traffic
        self._rows = np.arange(layers.start, layers.stop, dtype=np.int64)
        self.cost = layer_cost
        self.ranks = tuple(tuple(r) for r in ranks)
        self.rank_node = np.asarray(rank_node, dtype=np.int64)
        self.placement = placement
        self.eplb = eplb
        self.rng = rng
        self.ledger = ledger
        self.expert_bytes = expert_bytes
        self.top_k = traffic.top_k
        self.events: list[RebalanceEvent] = []
        self._window = np.zeros((len(layers), traffic.num_experts))  # Σ expected pairs
        self._pending = 0.0  # pairs routed since the last window flush
        self._epoch = -1
        self._share_used: F64 = traffic.pair_share[self._rows]
        self.q: F64 = np.zeros((len(layers), len(ranks)))
        # Σ over a rank's slots of log(1 − π_slot): a token misses rank r with exp(this)
        self.rank_miss_log: F64 = np.zeros((len(layers), len(ranks)))
        self.version = 0  # bumps whenever q / rank_miss_log change
        interval = eplb.rebalance_interval_s if eplb is not None else 0.0
        self._interval = interval
        self._next_rebalance = interval if interval > 0 else math.inf
        self._timed = False  # per-rank expert seconds are being booked for the window
        self._nominal_s: F64 = np.zeros(len(ranks))  # Σ full-speed expert seconds per rank
        self._actual_s: F64 = np.zeros(len(ranks))  # Σ expert seconds as run per rank
        if len(self.ranks) > 1:
            traffic.samplers += 1
        self.refresh(0.0)

    # ------------------------------------------------------------------ routing

    def refresh(self, now: float) -> None:
        """Follow hot-set changes due by `now` (s; the first thing `route` does): book the
        window under the old shares, recompute q."""
        self.traffic.advance(now)
        if self.traffic.epoch == self._epoch:
            return
        self._flush_window()
        self._epoch = self.traffic.epoch
        self._share_used = self.traffic.pair_share[self._rows]
        self._recompute()

    def _recompute(self) -> None:
        """Per-rank probabilities q and per-slot shares for the current placement."""
        pl = self.placement
        p_slot = pl.slot_loads(self._share_used)  # (layers, slots): p / replicas
        q = p_slot.reshape(pl.layers, pl.ranks, pl.slots_per_rank).sum(axis=2)
        q /= q.sum(axis=1, keepdims=True)
        self.q = q
        slot_rank = pl.slot_rank()
        denom = q[:, slot_rank]
        # each slot's share of its rank's load (the shares of one rank's slots sum to 1)
        share = np.divide(p_slot, denom, out=np.zeros_like(p_slot), where=denom > 0)
        self.ledger.set_context(slot_rank, pl.logical, share)
        # a token picks a given replica of expert e with probability π_e / replicas = k · p_slot
        pi_slot = np.clip(self.top_k * p_slot, 0.0, 1.0 - 1e-12)
        self.rank_miss_log = np.log1p(-pi_slot).reshape(q.shape[0], q.shape[1], -1).sum(axis=2)
        self.version += 1

    def _flush_window(self) -> None:
        if self._pending > 0:
            self._window += self._pending * self._share_used
            self._pending = 0.0

    def route(self, now: float, tokens: int) -> F64:
        """Sample one step's routed pairs per (layer, rank) for `tokens` tokens at `now` (s)."""
        self.refresh(now)
        pairs = tokens * self.top_k
        loads = sample_rank_loads(self.rng, pairs, self.q)
        if pairs > 0:
            self.ledger.record(now, loads)
            self._pending += pairs
        return loads

    def book_steps(self, starts: Sequence[float], loads: F64, tokens: int) -> None:
        """Book steps of `tokens` tokens routed at `starts` (s) whose (steps, layers, ranks)
        loads were drawn ahead (moe/routed_leap.py), as `route` books the loads it draws."""
        self.ledger.record_steps(starts, loads)
        pairs = tokens * self.top_k
        for _ in starts:  # one addition a step, as `route` makes them
            self._pending += pairs

    @property
    def times_ranks(self) -> bool:
        """Whether each step books every rank's expert seconds (a rank was slowed)."""
        return self._timed

    @property
    def draws_alone(self) -> bool:
        """Whether no other EP group draws from this group's stream (it draws nothing, with
        one rank, or it is its traffic's only sampling group): then its steps' routing may
        be drawn ahead of time, several steps in one call, without changing any draw."""
        return len(self.ranks) == 1 or self.traffic.samplers == 1

    def next_change_s(self) -> float:
        """The earliest time (s) a step may find the routing changed: the next EPLB
        rebalance or hot-set change (inf: none)."""
        nxt = self.traffic.next_change_s()
        return nxt if nxt < self._next_rebalance else self._next_rebalance

    def moe_s(self, loads: F64, tokens: float) -> float:
        """Routed-expert seconds of a step: Σ_layers max_ranks (model/moe_cost.py)."""
        if self._timed:
            nominal, actual = self.cost.rank_seconds(loads, tokens)
            self._nominal_s += nominal
            self._actual_s += actual
        return self.cost.step_s(loads, tokens)

    # ------------------------------------------------------------------ slow ranks

    def set_rank_speed(self, compute: F64, hbm: F64) -> None:
        """Each rank's (compute, HBM) speed factor, (ranks,) each, from now on."""
        self.cost.set_rank_speed(compute, hbm)
        self._timed = self._timed or self.cost.slowed

    def observed_speed(self) -> F64 | None:
        """Each rank's speed over the window booked so far (None: every rank at full speed)."""
        if not self._timed:
            return None
        speed = np.divide(
            self._nominal_s,
            self._actual_s,
            out=np.ones_like(self._nominal_s),
            where=self._actual_s > 0,
        )
        return None if bool((speed == 1.0).all()) else speed

    def _restart_timing(self) -> None:
        self._nominal_s = np.zeros_like(self._nominal_s)
        self._actual_s = np.zeros_like(self._actual_s)
        self._timed = self.cost.slowed

    # ------------------------------------------------------------------ EPLB

    def rebalance_due(self, now: float) -> bool:
        return now >= self._next_rebalance

    def rebalance(self, now: float) -> RebalanceEvent:
        """Fit a placement to the loads seen since the last rebalance and switch to it.

        Returns the event with the weight-transfer flows (empty when the placement is kept);
        the caller carries them over the fabric and sets `duration_s`.
        """
        assert self.eplb is not None
        self._next_rebalance = (math.floor(now / self._interval) + 1) * self._interval
        self.refresh(now)  # hot-set changes due by now belong to the next window
        self._flush_window()
        loads = self._window
        self._window = np.zeros_like(loads)
        speed = self.observed_speed()
        self._restart_timing()
        if not loads.sum() > 0:
            before = imbalance(rank_loads(self._share_used, self.placement))
            event = RebalanceEvent(now, self.index, before, before, 0, 0.0)
            self.events.append(event)
            return event
        plan = rebalance(
            loads,
            self.placement,
            self.eplb.algorithm,
            self.rank_node,
            self.eplb.expert_groups,
            speed,
        )
        flows: list[FlowSpec] = []
        moved = int(plan.moves.sum())
        if plan.changed:
            self.placement = plan.placement
            self._recompute()
            src, dst = np.nonzero(plan.moves)
            for a, b in zip(src.tolist(), dst.tolist(), strict=True):
                nbytes = float(plan.moves[a, b]) * self.expert_bytes
                flows += [
                    (ga, gb, nbytes) for ga, gb in zip(self.ranks[a], self.ranks[b], strict=True)
                ]
        event = RebalanceEvent(
            now,
            self.index,
            plan.imbalance_before,
            plan.imbalance_after,
            moved,
            float(sum(f[2] for f in flows)),
            flows=flows,
        )
        self.events.append(event)
        return event
