"""One layout on a cluster: build-time checks (placement, EP layout, CP support, memory) and
the simpy units that serve it (replicas, or the DP ranks of a DP-attention group).

Used once by the engine for a co-located experiment and once per pool by disagg/pools.py for a
disaggregated one; both see the experiment through `exp.layout` / `exp.serving` /
`exp.experts` (a pool passes a view of the experiment with its own values in those fields).
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import simpy

from clustersim.catalog.engines import serving_engine
from clustersim.config.schema import Experiment
from clustersim.metrics.recorder import Recorder
from clustersim.model.cost import StageCostModel
from clustersim.model.cp_cost import CPStageCost
from clustersim.model.memory import MemoryPlan, plan_memory, stage_layer_ranges
from clustersim.moe.ep_group import DPRank
from clustersim.moe.ep_layout import EPLayout, EPLayoutError, resolve_ep_layout
from clustersim.moe.moe_runtime import MoERuntime
from clustersim.network.fabric import Fabric
from clustersim.serving.cp_replica import CPReplica
from clustersim.serving.replica import Replica
from clustersim.serving.request_state import RequestState
from clustersim.topology.graph import Cluster
from clustersim.topology.placement import Placement, PlacementError, place
from clustersim.workload.arrivals import StateTimeline

if TYPE_CHECKING:
    from clustersim.disagg.pools import PoolBuild

Unit = Replica | DPRank  # what a router chooses between
GpuGrid = tuple[tuple[tuple[str, ...], ...], ...]  # [stage][cp rank] → TP group
FinishCallback = Callable[[int, float], None]


class BuildError(ValueError):
    """The experiment is well-formed but cannot be built (placement, memory, support)."""


@dataclass(frozen=True)
class Build:
    """Everything static about an experiment, checked: the cluster and where work runs.

    A disaggregated experiment has `pools` (prefill, decode: disagg/pools.py); its top-level
    placement / memory / stage_layers / ep are the decode pool's."""

    cluster: Cluster
    placement: Placement
    memory: MemoryPlan
    stage_layers: tuple[range, ...]  # the same split the memory plan uses
    ep: EPLayout | None = None  # MoE models: EP groups and ranks (moe/ep_layout.py)
    pools: tuple[PoolBuild, ...] | None = None  # disaggregated: (prefill, decode)

    @property
    def gpus(self) -> int:
        """GPUs the deployment uses (both pools when disaggregated)."""
        if self.pools is not None:
            return sum(p.gpus for p in self.pools)
        return self.placement.gpus_used


def check_cp(exp: Experiment, key: str = "layout") -> None:
    """BuildError for context parallelism combined with what is not simulated."""
    lay = exp.layout
    if lay.cp <= 1:
        return
    if lay.pp > 1:
        raise BuildError(
            f"{key}.cp = {lay.cp} with pp = {lay.pp}: context parallelism with pipeline "
            f"parallelism is not simulated (use pp: 1)"
        )
    if exp.model.is_moe:
        raise BuildError(
            f"{key}.cp = {lay.cp}: context parallelism with an MoE model ({exp.model.name}) "
            f"is not simulated (use cp: 1)"
        )


def build_layout(
    exp: Experiment, cluster: Cluster, *, exclude: Collection[str] = (), prefix: str = ""
) -> Build:
    """Check `exp.layout` and place it on `cluster` (GPUs in `exclude` are not used).

    `prefix` starts every error message (e.g. "disaggregation.decode: ")."""
    layout = exp.layout
    check_cp(exp, prefix.removesuffix(": ") + ".layout" if prefix else "layout")
    try:
        placement = place(layout, cluster, exp.model, exclude=exclude)
        ep = resolve_ep_layout(exp, placement)
    except (PlacementError, EPLayoutError) as err:
        raise BuildError(prefix + str(err)) from err
    redundant = ep.redundant if ep is not None else 0
    memory = plan_memory(exp.model, exp.hardware, exp.precision, layout, exp.serving, redundant)
    if not memory.fits:
        raise BuildError(prefix + memory.reason)
    if memory.kv_blocks_per_replica < layout.pp:
        raise BuildError(
            f"{prefix}KV cache holds {memory.kv_blocks_per_replica} blocks per replica; "
            f"pp = {layout.pp} lanes need at least one each"
        )
    return Build(
        cluster, placement, memory, tuple(stage_layer_ranges(exp.model.num_layers, layout.pp)), ep
    )


def stage_costs(exp: Experiment, built: Build) -> list[StageCostModel]:
    """Analytic cost model of each pipeline stage's TP shard."""
    layout = exp.layout
    return [
        StageCostModel(
            exp.model,
            exp.hardware,
            exp.precision,
            layout.tp,
            len(layers),
            first_stage=s == 0,
            last_stage=s == layout.pp - 1,
            ep=layout.ep,
            moe_tp=layout.moe_tp,
            first_layer=layers.start,
            engine=serving_engine(exp.serving),
            cuda_graphs=exp.serving.cuda_graphs,
        )
        for s, layers in enumerate(built.stage_layers)
    ]


def make_units(
    exp: Experiment,
    built: Build,
    env: simpy.Environment,
    fabric: Fabric,
    state: RequestState,
    recorder: Recorder,
    on_finish: FinishCallback,
    experts_rng: np.random.Generator,
    phases: StateTimeline | None,
) -> tuple[list[Unit], MoERuntime | None]:
    """The router's units of one layout (replicas, or DP-attention ranks) and its MoE side."""
    layout = exp.layout
    costs = stage_costs(exp, built)
    blocks_per_lane = built.memory.kv_blocks_per_replica // layout.pp
    moe: MoERuntime | None = None
    if built.ep is not None:
        moe = MoERuntime(exp, built.ep, built.cluster, env, fabric, experts_rng, phases)
    units: list[Unit]
    if moe is not None and moe.dp_attention:
        ranks = moe.dp_group(
            costs[0],
            [rp.stages[0] for rp in built.placement.replicas],
            blocks_per_lane,
            state,
            recorder,
            on_finish,
        )
        units = list(ranks)
    elif layout.cp > 1:  # dense, pp = 1 (check_cp)
        cp_costs = [CPStageCost(c, exp.model, exp.precision, layout.cp) for c in costs]
        units = [
            CPReplica(
                env, r, rp.cp_groups, cp_costs, fabric, exp.serving, blocks_per_lane, state,
                recorder, on_finish,
            )
            for r, rp in enumerate(built.placement.replicas)
        ]
    else:
        units = [
            Replica(
                env,
                r,
                rp.stages,
                costs if moe is None else moe.stage_costs(r, costs, built.stage_layers),
                fabric,
                exp.serving,
                blocks_per_lane,
                state,
                recorder,
                on_finish,
            )
            for r, rp in enumerate(built.placement.replicas)
        ]
    return units, moe


def unit_shards(unit: Unit, built: Build) -> tuple[tuple[range, ...], GpuGrid]:
    """Where one unit's KV cache lives: (layers of each stage, GPU grid [stage][cp rank] = TP
    group in TP-rank order). A DP-attention rank is one stage (pp = 1) of one TP group."""
    if isinstance(unit, DPRank):
        return built.stage_layers, ((unit.group.rank_gpus[unit.index],),)
    return built.stage_layers, built.placement.replicas[unit.index].cp_groups
