"""What a pipeline trip's stage steps cost and move (serving/pipeline_leap.py): the
replica's private channels — each stage's all-reduce group, each hand-off between stages —
and, by a step's token count, each stage's all-reduce phases and hand-off (cached), the
stages' decode step times (stages alike share one), and the shapes of the transfers a trip
books."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from operator import itemgetter
from typing import Any, NamedTuple

from clustersim.config.schema import ServingSpec
from clustersim.model.decode_run import DecodeStepCost
from clustersim.model.stage_cost import StageCostModel
from clustersim.network.fabric import Fabric
from clustersim.network.held_transfers import Shape
from clustersim.network.private_allreduce import Phase, PrivateAllReduce
from clustersim.network.private_handoff import PrivateHandoff, Transfer
from clustersim.network.twin_links import booked_links, twin_classes
from clustersim.serving.leap_pricing import max_step_tokens
from clustersim.serving.trip_stages import OnePhase, one_phase_plan

_OWNERS = itertools.count(1)  # link claims of trips' channels (PP1 groups claim as id(replica))

DecodeSteps = tuple[list[Callable[[int], float]], "itemgetter[Any]"]


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


class TripPrices:
    """One pipelined replica's channels and its stage steps' prices (see module docstring)."""

    def __init__(
        self,
        fabric: Fabric,
        groups: tuple[tuple[str, ...], ...],
        costs: tuple[StageCostModel, ...],
        handoff_pairs: Sequence[tuple[tuple[str, str], ...]],
        serving: ServingSpec,
        kv_blocks: int,
    ) -> None:
        self.fabric = fabric
        self.costs = costs
        self.tp = len(groups[0])
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
        self._twins: list[dict[int, tuple[int, ...]]] = [{} for _ in groups]  # all-reduces
        self._prices: dict[int, list[StagePrice]] = {}  # by a step's tokens
        self._plans: dict[int, tuple[OnePhase, ...] | None] = {}  # one_phase_plan, by tokens
        # by decode n: the distinct stages' step_s, each stage's among them
        # (each stage's step time from the distinct ones: an itemgetter of their indices)
        self._decode_steps: dict[int, DecodeSteps] = {}

    def private(self) -> bool:
        """Whether every channel runs alone on its links, hand-offs in order."""
        ordered = self._ordered and all(h.private() for h in self.handoffs)
        return ordered and all(ar is None or ar.private() for ar in self.allreduces)

    def lease(self) -> None:
        """Lease the channels' links for good (FlowEngine.start_many raises if any other
        transfer starts there); each channel books its twin links as one
        (network/twin_links.py)."""
        leased = self.fabric.flows.leased
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

    def price(self, tokens: int) -> list[StagePrice]:
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

    def plan(self, tokens: int) -> tuple[OnePhase, ...] | None:
        """`one_phase_plan` of `price(tokens)` (cached)."""
        plans = self._plans
        if tokens in plans:
            return plans[tokens]
        plan = plans[tokens] = one_phase_plan(self.price(tokens))
        return plan

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

    def shapes(self, tokens: int) -> list[Shape]:
        """A trip's transfers' shapes, in the order it computes them."""
        shapes: list[Shape] = []
        for phases, hand_off, _latency in self.price(tokens):
            shapes += [(p.links, p.weights, p.size) for p in phases if p.links is not None]
            if hand_off is not None:
                shapes.append((hand_off.links, hand_off.weights, hand_off.size))
        return shapes

    def decode_steps(self, n: int) -> DecodeSteps:
        """`alike_decode_steps` of the stages for a pure-decode batch of n (cached), the
        indices as a getter of each stage's time from the distinct times (p ≥ 2: a tuple)."""
        steps = self._decode_steps.get(n)
        if steps is None:
            funcs, index = alike_decode_steps(self.costs, n)
            steps = self._decode_steps[n] = (funcs, itemgetter(*index))
        return steps
