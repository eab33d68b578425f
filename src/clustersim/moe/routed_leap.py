"""Decode leaps of a sampled-routing stage (moe/sampled_stage.py SampledStageCost): the
routing of a leap's steps drawn in one vectorised call (serving/decode_leap.py plans it).

A stepped decode step of such a stage draws its per-(layer, rank) loads at its start
(`MoEGroup.route`), so its time is random. A leap may still hold a run of them, as far as the
randomness allows:
- the draws must be the ones stepping makes, in the same order: the group draws alone from
  its stream (`MoEGroup.draws_alone`: it has one rank and draws nothing, or it is the only
  sampling group of its traffic), so drawing k steps ahead changes no other draw;
- the routing must not change under the run: its steps start before the next EPLB rebalance
  or hot-set change (`MoEGroup.next_change_s`, the leap's `until`), and no step finds one due
  at the leap's start (that step is stepped: the rebalance moves weights over the fabric);
- the expert seconds are booked at full speed (no slowed rank: faults step every step).

`run_s` draws k steps' loads in one call (routing_draws.sample_rank_loads_steps: the same numbers
and the same stream state as k draws one by one), prices them at once
(MoELayerCost.steps_s, bit for bit) and adds the dense part (DecodeStepCost.dense_run_s) and
the host time as `SampledStageCost.compute_s` does. When the leap's steps are known (its end
or an outside cut: `DecodeLeap._settle`), `settle` books the steps that ran in the group's
ledger at their start times, and puts the stream where stepping would have left it: back to
its state before the draw, then drawing the steps that ran again (the draws past them were
never made when stepping).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from clustersim.model.decode_run import DecodeStepCost
from clustersim.model.kernels import step_seqs
from clustersim.model.stage_cost import StageCostModel
from clustersim.moe.moe_group import MoEGroup
from clustersim.moe.routing_draws import sample_rank_loads_steps

F64 = npt.NDArray[np.float64]


class RoutedLeap:
    """The routing side of one sampled-routing stage's decode leaps (module docstring)."""

    def __init__(self, base: StageCostModel, group: MoEGroup) -> None:
        self.base = base  # the stage's dense part (DecodeStepCost prices it in closed form)
        self.group = group
        self._state: Mapping[str, Any] | None = None  # the stream before the last leap's draw
        self._loads: F64 = np.zeros(0)  # (steps drawn, layers, ranks) of the last leap
        self._tokens = 0  # tokens a step of the last leap routed

    def blocked(self, now: float) -> bool:
        """Whether a leap starting at `now` (s) must be stepped instead: another group
        draws from the stream, a rank is slowed, or a rebalance or a hot-set change is due."""
        group = self.group
        if not group.draws_alone or group.times_ranks:
            return True
        group.refresh(now)  # as the first step's `route` would
        return group.next_change_s() <= now

    def until_s(self) -> float:
        """No leap step starts at or after this time (s): the routing may change there."""
        return self.group.next_change_s()

    def floor_s(self, dense: DecodeStepCost, ctx_tokens: int, n: int) -> float:
        """A lower bound of every step of a leap starting with n sequences reading
        `ctx_tokens` tokens of context (s): its first step without routed experts."""
        return self.base.with_host(dense.dense_run_s(ctx_tokens, n, 1)[0], step_seqs(0, n, 0))

    def run_s(self, dense: DecodeStepCost, ctx_tokens: int, n: int, k: int) -> list[float]:
        """Seconds of k decode steps of n sequences, the first reading `ctx_tokens` tokens of
        context: the k steps' routing drawn in one call (call `blocked` first, at the leap's
        start). Entries past the steps the leap runs are unused; `settle` undoes their draws."""
        routed = self.group.cost.steps_s(self.draw(n, k), n).tolist()
        dense_s = dense.dense_run_s(ctx_tokens, n, k)
        with_host, seqs = self.base.with_host, step_seqs(0, n, 0)
        return [with_host(d + m, seqs) for d, m in zip(dense_s, routed, strict=True)]

    def draw(self, tokens: int, k: int) -> F64:
        """k steps' (layers, ranks) loads of `tokens` tokens each, drawn in one call (call
        `blocked` first); `settle` books the steps that ran and undoes the rest's draws."""
        group = self.group
        rng = group.rng
        # one rank draws nothing: others may draw from the stream meanwhile (hot-set moves)
        self._state = rng.bit_generator.state if len(group.ranks) > 1 else None
        self._loads = loads = sample_rank_loads_steps(rng, tokens * group.top_k, group.q, k)
        self._tokens = tokens
        return loads

    def settle(self, start: float, ends: Sequence[float], steps: int) -> None:
        """The leap ran its first `steps` steps, from `start` (s), ending at `ends`: book
        them at their starts, and leave the stream as stepping would (module docstring)."""
        group, loads, n = self.group, self._loads, self._tokens
        if steps < len(loads) and self._state is not None:
            rng = group.rng
            rng.bit_generator.state = self._state
            sample_rank_loads_steps(rng, n * group.top_k, group.q, steps)
        if steps:
            group.book_steps([start, *ends[: steps - 1]], loads[:steps], n)
        self._state = None
        self._loads = np.zeros(0)
