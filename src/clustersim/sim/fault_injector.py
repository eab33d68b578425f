"""The fault injector: a simpy process applying the run's fault schedule at its change points.

At each change point (faults/schedule.py) it sets, from the faults active then:
- each replica stage's cost model: the stage runs at the pace of its slowest GPU
  (deployment/degraded.py); read per engine step, so a step in flight keeps its price;
- each sampled MoE stage's EP ranks: a rank's expert GEMMs run at its own GPUs' pace, and
  EPLB (if on) sees the slow rank (moe/moe_group.py `set_rank_speed`);
- each DP-attention EP group's ranks: a DP rank's dense part runs at the pace of its own TP
  group (moe/rank_dense.py) and its EP ranks' experts as above, so the
  lock-step step waits for the slowest rank;
- the fabric's link bandwidths, extra latencies and detours around down links
  (network/fabric.py `set_link_faults`; rates of flows in flight are solved again);
- which replicas are lost (a GPU failed, or is cut off by a down link with no detour) or
  repaired (sim/replica_health.py).
It also keeps, per fault, the replicas it took down, for faults.parquet.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import simpy

from clustersim.deployment.degraded import DegradedCosts, group_pace
from clustersim.faults import FaultSchedule
from clustersim.model.speculative_cost import SpeculativeStageCost
from clustersim.model.stage_cost import StageCost, StageCostModel
from clustersim.moe.ep_group import DPRank, EPGroup
from clustersim.moe.moe_group import MoEGroup
from clustersim.moe.sampled_stage import SampledStageCost
from clustersim.network.detours import stranded_gpus
from clustersim.network.fabric import Fabric
from clustersim.serving.replica import Process, Replica
from clustersim.sim.replica_health import FaultUnit, ReplicaHealth, cut_leap

if TYPE_CHECKING:
    import pandas as pd


class FaultInjector:
    def __init__(
        self,
        env: simpy.Environment,
        schedule: FaultSchedule,
        replicas: Sequence[FaultUnit],
        degraded: Sequence[DegradedCosts],
        fabric: Fabric,
        health: ReplicaHealth,
    ) -> None:
        """`degraded[r]`: the cost models of replica r's experiment on a degraded GPU (the
        pools of a disaggregated run each have their own)."""
        self.env = env
        self.schedule = schedule
        self.replicas = replicas
        self.degraded = degraded
        self.fabric = fabric
        self.health = health
        # units whose stages a slow GPU re-prices, and DP-attention groups whose ranks it does
        self.paced = [(r, rep) for r, rep in enumerate(replicas) if isinstance(rep, Replica)]
        self.nominal = {r: tuple(rep.costs) for r, rep in self.paced}
        groups = {
            id(u.group): (u.group, degraded[r])
            for r, u in enumerate(replicas)
            if isinstance(u, DPRank)
        }
        self.ep_groups = [(g, g.cost, costs) for g, costs in groups.values()]
        self.replica_gpus = [
            frozenset(g for group in rep.groups for g in group) for rep in replicas
        ]
        k = len(schedule)
        health.retried_by = np.zeros(k, dtype=np.int64)
        health.failed_by = np.zeros(k, dtype=np.int64)
        self.affected: list[set[int]] = [set() for _ in range(k)]
        self._index = {id(f): i for i, f in enumerate(schedule.faults)}

    def process(self) -> Process:
        for t in self.schedule.change_points():
            if t > self.env.now:
                yield self.env.timeout(t - self.env.now)
            self.apply(self.env.now)
        self.health.schedule_ended()

    def apply(self, t: float) -> None:
        """Set every effect to the faults active at time t."""
        sched = self.schedule
        compute, hbm = sched.gpu_factors(t)
        for r, rep in self.paced:
            costs = tuple(
                self.degraded[r].stage_cost(nominal, s, *group_pace(group, compute, hbm))
                for s, (nominal, group) in enumerate(zip(self.nominal[r], rep.groups, strict=True))
            )
            if costs != rep.costs:
                rep.costs = costs
                cut_leap(rep, t)
            for nominal in self.nominal[r]:
                pace_ranks(nominal, compute, hbm)
        for group, dense, degraded in self.ep_groups:
            pace_dp_ranks(group, dense, degraded, compute, hbm)
        factor, latency, down = sched.link_state(t)
        stranded = self.fabric.set_link_faults(factor, latency, down)
        cut = stranded_gpus(self.fabric.cluster, stranded)
        lost = sched.down_gpus(t) | cut
        active = sched.active(t)
        for r, gpus in enumerate(self.replica_gpus):
            for f in active:
                touches = gpus.intersection(f.target.gpus) or (
                    f.event.kind == "link_down" and gpus & cut
                )
                if touches:
                    self.affected[self._index[id(f)]].add(r)
            if gpus & lost:
                cause = next(
                    (
                        self._index[id(f)]
                        for f in active
                        if f.event.stops_gpus and gpus.intersection(f.target.gpus)
                    ),
                    next((self._index[id(f)] for f in active if f.event.kind == "link_down"), -1),
                )
                self.health.lose(r, cause)
            else:
                self.health.repair(r)

    def table(self) -> pd.DataFrame:
        """faults.parquet: one row per fault (start, end, kind, target, source, effect)."""
        import pandas as pd

        faults = self.schedule.faults
        return pd.DataFrame(
            {
                "start_s": [f.event.start_s for f in faults],
                "end_s": [f.event.end_s for f in faults],
                "kind": [f.event.kind for f in faults],
                "target": [f.event.target for f in faults],
                "source": [f.event.source for f in faults],
                "replicas_affected": [",".join(str(r) for r in sorted(a)) for a in self.affected],
                "requests_retried": self.health.retried_by.copy(),
                "requests_failed": self.health.failed_by.copy(),
            }
        )


def pace_ranks(cost: StageCost, compute: Mapping[str, float], hbm: Mapping[str, float]) -> None:
    """A sampled MoE stage's expert GEMMs: each EP rank at the pace of its own GPUs (the
    dense part, priced by the stage's cost model, runs at the whole group's pace)."""
    if isinstance(cost, SpeculativeStageCost):  # the verify step's target holds the experts
        cost = cost.target
    if isinstance(cost, SampledStageCost):
        pace_experts(cost.group, compute, hbm)


def pace_experts(group: MoEGroup, compute: Mapping[str, float], hbm: Mapping[str, float]) -> None:
    """Each EP rank's expert GEMMs at the pace of its own GPUs (EPLB sees the slow rank)."""
    paces = [group_pace(rank, compute, hbm) for rank in group.ranks]
    group.set_rank_speed(
        np.array([c for c, _ in paces], dtype=np.float64),
        np.array([h for _, h in paces], dtype=np.float64),
    )


def pace_dp_ranks(
    group: EPGroup,
    dense: StageCostModel,
    degraded: DegradedCosts,
    compute: Mapping[str, float],
    hbm: Mapping[str, float],
) -> None:
    """A DP-attention group: each DP rank's dense part (`dense` at full speed) priced at its
    own TP group's pace, each EP rank's experts at its GPU's; the lock-step step is the max."""
    group.dense.set_costs(
        [degraded.dense_cost(dense, 0, *group_pace(gpus, compute, hbm)) for gpus in group.rank_gpus]
    )
    pace_experts(group.moe, compute, hbm)
