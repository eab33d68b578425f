"""What a one-stage lane's decode leaps and closed-form steps cost (serving/decode_leap.py):
step times by decode batch size (model/decode_run.py) and, with TP > 1, the step's
all-reduce in closed form (network/private_allreduce.py), cached per batch shape.

A TP group's all-reduces may be priced in closed form once they are alone on their links
and the fabric has settled (`LeapPricing.usable`); from then on the group's links are leased
for good (a transfer of anyone else starting there raises: FlowEngine.start_many) and its
twin links are booked as one (network/twin_links.py). A stepped step is then one timer
(`closed_step`): its end is the clock's additions — compute, each phase's move, its latency
— and one timeout from a start ≥ end / 2 lands on it exactly (Sterbenz).
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from typing import Any, NamedTuple, Protocol, runtime_checkable

import simpy

from clustersim.config.schema import ServingSpec
from clustersim.model.decode_run import DecodeStepCost
from clustersim.model.stage_cost import StageCostModel
from clustersim.network.fabric import Fabric
from clustersim.network.ledger import Cycle, cycle_of
from clustersim.network.private_allreduce import (
    Phase,
    PrivateAllReduce,
    book_entities,
    clock_adds,
    moving,
)

MIN_LEAP_STEPS = 2  # a single step is stepped
MAX_LEAP_STEPS = 64  # planned at once at most


class LeapPrice(NamedTuple):
    """What a leap's steps cost for one decode batch size."""

    step: DecodeStepCost
    allreduce: PrivateAllReduce | None  # the stage's TP group (TP > 1)
    phases: list[Phase]  # of each step's all-reduces, after its compute
    cycle: Cycle  # what `phases` add to the link ledger inside one time bin (ledger.py)
    adds: tuple[float, ...]  # seconds the clock adds after a step's compute, in order


class StepAllReduce(NamedTuple):
    """The all-reduces of a step of some token count, in closed form."""

    phases: list[Phase]
    adds: tuple[float, ...]  # seconds the clock adds after the step's compute, in order


class LeapRouting(Protocol):
    """The routing of a sampled-routing stage's leaps (moe/routed_leap.py RoutedLeap): its
    steps' routed-expert times are drawn, k steps in one call, when the leap is planned."""

    def blocked(self, now: float) -> bool: ...

    def until_s(self) -> float: ...

    def floor_s(self, dense: DecodeStepCost, ctx_tokens: int, n: int) -> float: ...

    def run_s(self, dense: DecodeStepCost, ctx_tokens: int, n: int, k: int) -> list[float]: ...

    def settle(self, start: float, ends: Sequence[float], steps: int) -> None: ...


@runtime_checkable
class RoutedStageCost(Protocol):
    """A stage cost whose routed experts are sampled (moe/sampled_stage.py): the dense part
    is `base`'s; its leaps draw their routing through `leap_routing()`."""

    base: StageCostModel
    allreduces_per_step: int

    def leap_routing(self) -> LeapRouting: ...

    def allreduce_bytes(self, tokens: int) -> float: ...


class LeapPricing:
    """Step costs of one lane's stage by decode batch size (cached: batches recur).
    `routing`: a sampled-routing stage's (None: the analytic cost prices whole steps)."""

    def __init__(
        self,
        cost: StageCostModel,
        allreduce: PrivateAllReduce | None,
        routing: LeapRouting | None = None,
    ) -> None:
        self.cost = cost
        self.allreduce = allreduce
        self.routing = routing
        self._by_n: dict[int, LeapPrice] = {}
        self._steps: dict[int, StepAllReduce | None] = {}  # a step's tokens → its all-reduce
        self.horizon = MAX_LEAP_STEPS  # steps the next leap plans at most (adaptive)
        self._ready = allreduce is None  # `usable` from now on (it stays so once it is)

    def ran(self, cut_short: bool) -> None:
        """Adapt the horizon to how the finished leap went (cut by an outside event or not)."""
        if cut_short:
            self.horizon = max(MIN_LEAP_STEPS, self.horizon // 2)
        else:
            self.horizon = min(MAX_LEAP_STEPS, self.horizon * 2)

    @classmethod
    def build(
        cls,
        cost: StageCostModel | RoutedStageCost,
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
        if isinstance(cost, StageCostModel):
            return cls(cost, allreduce)
        return cls(cost.base, allreduce, cost.leap_routing())

    def usable(self, now: float) -> bool:
        """Whether a leap may start now: TP1, or TP all-reduces alone on their links once
        the fabric has settled (PrivateAllReduce.settled; `now` only grows, so it stays
        usable). From then on the group's links are leased and its twin links booked as one."""
        if self._ready:
            return True
        ar = self.allreduce
        if ar is None or not (ar.private() and ar.settled(now)):
            return False
        ar.lease(True)
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
        step = self._step_allreduce(tokens)
        return None if step is None else ar.run(env, step.phases)

    def closed_step(self, start: float, compute_s: float, tokens: int) -> float | None:
        """The end of a stepped step of `tokens` tokens computing for `compute_s` from
        `start`, its all-reduces in closed form (booked in the ledger now), when one timer
        from `start` lands on it exactly (end ≤ 2·start); None: `closed_allreduce` after
        the compute, or the fabric."""
        ar = self.allreduce
        if ar is None or not (self._ready or self.usable(start)):
            return None
        step = self._step_allreduce(tokens)
        if step is None:
            return None
        end = start + compute_s
        for x in step.adds:  # the clock's additions (PrivateAllReduce.run)
            end = end + x
        if not end <= 2.0 * start:
            return None
        book_entities(ar.fabric.ledger, start + compute_s, step.phases)
        return end

    def _step_allreduce(self, tokens: int) -> StepAllReduce | None:
        """The all-reduces of a step of `tokens` tokens (None: none), cached."""
        if tokens not in self._steps:
            cost, ar = self.cost, self.allreduce
            phases = None
            if ar is not None:
                phases = ar.phases(cost.allreduce_bytes(tokens), cost.allreduces_per_step)
            self._steps[tokens] = (
                None if phases is None else StepAllReduce(phases, clock_adds(phases))
            )
        return self._steps[tokens]

    def of(self, n: int) -> LeapPrice:
        """The price of a decode step of n sequences (cached)."""
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
