"""Everything MoE of one run, wired for the engine: the shared routing popularity, one MoEGroup
per EP group, the replica stage costs or the lock-step DP-attention group, and the tables
(experts.parquet, eplb.parquet) at the end.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import simpy

from clustersim.config.schema import Experiment
from clustersim.metrics.recorder import Recorder
from clustersim.model.moe_cost import (
    MoELayerCost,
    combine_bytes_per_pair,
    dispatch_bytes_per_pair,
    expert_weight_bytes,
)
from clustersim.model.speculative_cost import LockstepVerify
from clustersim.model.stage_cost import StageCostModel
from clustersim.moe.ep_group import DPRank, EPGroup
from clustersim.moe.ep_layout import EPGroupSpec, EPLayout
from clustersim.moe.ep_leap import GroupLeaps
from clustersim.moe.eplb import ExpertPlacement, linear_placement, rebalance
from clustersim.moe.experts import (
    ExpertLedger,
    ExpertTraffic,
    empty_experts_frame,
    phase_change_times,
)
from clustersim.moe.moe_group import MoEGroup
from clustersim.moe.routed_leap import RoutedLeap
from clustersim.moe.sampled_stage import SampledStageCost
from clustersim.network.all_to_all import AllToAllPlan
from clustersim.network.fabric import Fabric
from clustersim.serving.decode_leap import leaping_enabled
from clustersim.serving.request_state import RequestState
from clustersim.serving.speculative_decode import SpeculativeDecoding
from clustersim.topology.graph import Cluster
from clustersim.workload.arrivals import StateTimeline

if TYPE_CHECKING:
    import pandas as pd

EPLB_COLUMNS = (
    "time_s",
    "group",
    "imbalance_before",
    "imbalance_after",
    "experts_moved",
    "bytes_moved",
    "duration_s",
)


def moe_layers_of(model_first_dense: int, layers: range) -> range:
    """MoE-layer indices (0 = first MoE layer) of a stage holding model `layers`."""
    start = max(layers.start, model_first_dense) - model_first_dense
    stop = max(layers.stop, model_first_dense) - model_first_dense
    return range(start, max(start, stop))


def initial_placement(
    layers: int,
    num_experts: int,
    ranks: int,
    slots: int,
    algorithm: str | None,
    rank_node: np.ndarray,
    groups: int | None,
) -> ExpertPlacement:
    """Linear placement without EPLB; with EPLB, its algorithm fitted to uniform loads."""
    linear = linear_placement(layers, num_experts, ranks, slots)
    if algorithm is None:
        return linear
    flat = np.ones((layers, num_experts))
    return rebalance(flat, linear, algorithm, rank_node, groups).placement


class MoERuntime:
    """The MoE side of one simulation (see module docstring)."""

    def __init__(
        self,
        exp: Experiment,
        layout: EPLayout,
        cluster: Cluster,
        env: simpy.Environment,
        fabric: Fabric,
        rng: np.random.Generator,
        phases: StateTimeline | None,
    ) -> None:
        model = exp.model
        self.exp, self.layout, self.cluster = exp, layout, cluster
        self.env, self.fabric, self.rng = env, fabric, rng
        changes = None if phases is None else phase_change_times(phases.start_s, phases.state)
        self.traffic = ExpertTraffic(
            layout.experts.routing,
            model.num_moe_layers,
            model.num_experts,
            model.experts_per_token,
            rng,
            layout.table,
            changes,
        )
        self.groups: list[MoEGroup] = []

    @property
    def dp_attention(self) -> bool:
        return self.layout.dp_attention

    def _group(self, spec: EPGroupSpec, layers: range, cost: StageCostModel) -> MoEGroup:
        exp, lay = self.exp, self.layout
        model = exp.model
        ranks = len(spec.ranks)
        rank_node = np.asarray([self.cluster.node_of(r[0]) for r in spec.ranks], dtype=np.int64)
        eplb = lay.experts.eplb
        placement = initial_placement(
            len(layers),
            model.num_experts,
            ranks,
            lay.physical,
            eplb.algorithm if eplb is not None else None,
            rank_node,
            eplb.expert_groups if eplb is not None else None,
        )
        group = MoEGroup(
            index=spec.index,
            traffic=self.traffic,
            layers=layers,
            layer_cost=MoELayerCost(cost.moe, lay.physical // ranks),
            ranks=spec.ranks,
            rank_node=rank_node,
            placement=placement,
            eplb=eplb,
            rng=self.rng,
            ledger=ExpertLedger(spec.index, ranks, model.num_experts, exp.output.time_bin_s),
            expert_bytes=expert_weight_bytes(model, exp.precision, lay.moe_tp),
        )
        self.groups.append(group)
        return group

    def stage_costs(
        self, replica: int, costs: Sequence[StageCostModel], stage_layers: Sequence[range]
    ) -> list[StageCostModel | SampledStageCost]:
        """Replica `replica`'s stage costs with sampled routing (layouts other than
        DP-attention); a stage without MoE layers keeps its analytic cost."""
        out: list[StageCostModel | SampledStageCost] = []
        specs = {(g.replica, g.stage): g for g in self.layout.groups}
        for s, (cost, layers) in enumerate(zip(costs, stage_layers, strict=True)):
            moe_layers = moe_layers_of(self.exp.model.first_dense_layers, layers)
            if len(moe_layers) == 0:
                out.append(cost)
                continue
            group = self._group(specs[(replica, s)], moe_layers, cost)
            out.append(SampledStageCost(cost, group, self.env, self.fabric))
        return out

    def dp_group(
        self,
        cost: StageCostModel,
        rank_gpus: Sequence[tuple[str, ...]],
        kv_blocks_per_rank: int,
        state: RequestState,
        recorder: Recorder,
        on_finish: Callable[[int, float], None],
        speculative: tuple[SpeculativeDecoding, LockstepVerify] | None = None,
    ) -> list[DPRank]:
        """The lock-step DP-attention group; returns its DP ranks (the router's replicas).
        `speculative`: the run's speculative decoding and the group's verify pricing."""
        exp = self.exp
        spec = self.layout.groups[0]
        layers = range(exp.model.num_moe_layers)
        group = self._group(spec, layers, cost)
        a2a = AllToAllPlan(self.cluster, [r[0] for r in spec.ranks], len(layers))
        ep_group = EPGroup(
            self.env,
            rank_gpus,
            cost,
            group,
            a2a,
            self.fabric,
            exp.serving,
            kv_blocks_per_rank,
            state,
            recorder,
            on_finish,
            dispatch_bytes_per_pair(exp.model, exp.precision),
            combine_bytes_per_pair(exp.model, exp.precision),
            self.layout.experts.two_batch_overlap,
            exp.hardware.sm_count,
            speculative,
        )
        self.ep_group = ep_group
        return ep_group.ranks

    def allow_group_leaps(self) -> None:
        """Let the DP-attention group leap over steady decode (moe/ep_leap.py): call only
        when its exchanges are the fabric's only transfers (a co-located run, no faults).
        Not with two-batch overlap, speculative decoding or TP > 1 ranks, nor when
        CLUSTERSIM_DECODE_LEAP=0."""
        group = self.ep_group
        if group.tp != 1 or group.tbo or group.verify is not None or not leaping_enabled():
            return
        leaps = GroupLeaps(
            group.cost,
            group.dense,
            RoutedLeap(group.cost, group.moe),
            group.flows,
            group.a2a,
            self.fabric,
            group.recorder,
        )
        group.leaps = leaps
        for rank in group.ranks:
            rank.scheduler.interrupt = leaps.interrupt

    # ------------------------------------------------------------------ tables

    def experts_frame(self) -> pd.DataFrame:
        """experts.parquet: every group's ledger, ordered by bin, group, rank, expert."""
        import pandas as pd

        frames = [g.ledger.frame() for g in self.groups]
        if not frames:
            return empty_experts_frame()
        df = pd.concat(frames, ignore_index=True)
        df = df.sort_values(["bin_start_s", "group", "rank", "expert"], kind="stable")
        return df.reset_index(drop=True)

    def eplb_frame(self) -> pd.DataFrame | None:
        """eplb.parquet rows (one per rebalance), or None when EPLB is off."""
        import pandas as pd

        if self.layout.experts.eplb is None:
            return None
        rows = [
            (
                e.time_s,
                e.group,
                e.imbalance_before,
                e.imbalance_after,
                e.experts_moved,
                e.bytes_moved,
                e.duration_s,
            )
            for g in self.groups
            for e in g.events
        ]
        df = pd.DataFrame(rows, columns=list(EPLB_COLUMNS))
        df = df.astype({"group": np.int64, "experts_moved": np.int64})
        return df.sort_values(["time_s", "group"], kind="stable").reset_index(drop=True)
