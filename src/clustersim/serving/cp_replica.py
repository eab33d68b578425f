"""A DP replica with context parallelism (cp > 1): cp TP groups run every step together.

One step (model/cp_cost.py gives the numbers of one CP rank; every rank is symmetric):
1. `serial_s` of compute (each rank: ceil(P/cp) prefill tokens, 1/cp of the attention pairs,
   every decode token, 1/cp of the decode KV read);
2. with prefill tokens: the ring-attention exchange — one fabric transfer carrying, for every
   TP rank t, the CP ring cp_ring(stage, t) (CP rank c → c+1 mod cp) of all layers' KV blocks,
   with one ring-hop latency per layer-step — runs alongside `overlap_s` of attention compute;
   the step waits for both (max(compute, comm) per layer-step, docs/disaggregation.md §2);
3. with decode tokens: the merge of partial attention outputs over the same rings (after the
   attention it merges: not overlapped);
4. every CP rank's TP all-reduces of its ceil(P/cp) + D tokens, in parallel.

The scheduler, KV pool (cp × the per-GPU KV tokens, memory.py) and iterations rows are the
replica's, as for cp = 1; `compute_s` of a row is serial + overlapped compute, `comm_s` what
the step took beyond it.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from typing import Any

import simpy

from clustersim.config.schema import ServingSpec
from clustersim.metrics.recorder import Recorder
from clustersim.model.cp_cost import CPStageCost
from clustersim.model.stage_cost import StageCost
from clustersim.network.fabric import Fabric
from clustersim.network.routing import FlowSpec
from clustersim.serving.batch import Batch
from clustersim.serving.replica import Replica
from clustersim.serving.request_state import RequestState

Group = tuple[str, ...]


def ring_pairs(cp_groups: Sequence[Group]) -> list[tuple[str, str]]:
    """(sender, successor) of every CP ring of one stage: TP rank t of CP rank c sends to TP
    rank t of CP rank (c + 1) mod cp (placement.cp_ring order)."""
    cp, tp = len(cp_groups), len(cp_groups[0])
    return [(cp_groups[c][t], cp_groups[(c + 1) % cp][t]) for t in range(tp) for c in range(cp)]


class CPReplica(Replica):
    def __init__(
        self,
        env: simpy.Environment,
        index: int,
        cp_groups: Sequence[Sequence[Group]],
        costs: Sequence[CPStageCost],
        fabric: Fabric,
        serving: ServingSpec,
        kv_blocks_per_lane: int,
        state: RequestState,
        recorder: Recorder,
        on_finish: Callable[[int, float], None],
    ) -> None:
        stages = [tuple(groups[0]) for groups in cp_groups]
        base: list[StageCost] = [c.base for c in costs]
        super().__init__(
            env,
            index,
            stages,
            base,
            fabric,
            serving,
            kv_blocks_per_lane,
            state,
            recorder,
            on_finish,
        )
        self.cp_costs = tuple(costs)
        self.cp_groups = tuple(tuple(tuple(g) for g in groups) for groups in cp_groups)
        self.cp_fabric = fabric
        self._stage_of = {g: s for s, g in enumerate(stages)}
        self._rings = [ring_pairs(groups) for groups in self.cp_groups]
        lat = fabric.cluster.path_latency_s
        self._hop_s = [max(lat(a, b) for a, b in ring) for ring in self._rings]

    def _ring_transfer(self, s: int, nbytes: float) -> simpy.Event:
        """`nbytes` from every ring member to its successor, one coflow, with one ring-hop
        latency per layer-step (the transfer itself adds the first)."""
        flows: list[FlowSpec] = [(a, b, nbytes) for a, b in self._rings[s]]
        extra = (self.cp_costs[s].ring_layer_steps - 1) * self._hop_s[s]
        return self.cp_fabric.transfer(flows, extra)

    def _execute(
        self, cost: StageCost, group: Group, batch: Batch
    ) -> Generator[simpy.Event, Any, tuple[float, float]]:
        env = self.env
        s = self._stage_of[group]
        cp_cost = self.cp_costs[s]
        step = cp_cost.step(
            batch.prefill_tokens,
            batch.prefill_attn_pairs,
            batch.prefill_ctx_tokens,
            batch.decode_tokens,
            batch.decode_ctx_tokens,
            len(batch.prefill),
        )
        start = env.now
        yield env.timeout(step.serial_s)
        if step.ring_bytes > 0:
            ring = self._ring_transfer(s, step.ring_bytes)
            yield env.all_of([env.timeout(step.overlap_s), ring])
        elif step.overlap_s > 0:
            yield env.timeout(step.overlap_s)
        if step.combine_bytes > 0:
            yield self._ring_transfer(s, step.combine_bytes)
        if self.tp > 1 and step.rank_tokens > 0:
            nbytes = cp_cost.allreduce_bytes(step.rank_tokens)
            count = cp_cost.allreduces_per_step
            yield env.all_of(
                [self.cp_fabric.allreduce(g, nbytes, count) for g in self.cp_groups[s]]
            )
        compute = step.compute_s
        return compute, max(0.0, env.now - start - compute)
