"""The simpy units that serve one built layout: replicas, CP replicas, or the DP ranks of a
DP-attention group, with their stage cost models and MoE runtime."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TypeAlias

import numpy as np
import simpy

from clustersim.catalog.engines import serving_engine
from clustersim.config.schema import Experiment, HardwareSpec, ServingSpec
from clustersim.deployment.build import Build
from clustersim.metrics.recorder import Recorder
from clustersim.model.cp_cost import CPStageCost
from clustersim.model.stage_cost import StageCost, StageCostModel
from clustersim.network.fabric import Fabric
from clustersim.serving.cp_replica import CPReplica
from clustersim.serving.replica import Replica
from clustersim.serving.request_state import RequestState
from clustersim.workload.arrivals import StateTimeline

if TYPE_CHECKING:  # (MoE modules load for MoE runs only)
    from clustersim.moe.ep_group import DPRank
    from clustersim.moe.moe_runtime import MoERuntime

Unit: TypeAlias = "Replica | DPRank"  # what a router chooses between
GpuGrid = tuple[tuple[tuple[str, ...], ...], ...]  # [stage][cp rank] → TP group
FinishCallback = Callable[[int, float], None]


def stage_costs(
    exp: Experiment, built: Build, hardware: HardwareSpec | None = None
) -> list[StageCostModel]:
    """Analytic cost model of each pipeline stage's TP shard (on `hardware`: a degraded GPU,
    deployment/degraded.py; None: the experiment's)."""
    layout = exp.layout
    spec = exp.serving.speculative
    return [
        StageCostModel(
            exp.model,
            hardware or exp.hardware,
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
            queries_per_seq=1 if spec is None else spec.num_tokens + 1,
        )
        for s, layers in enumerate(built.stage_layers)
    ]


def speculative_rng(
    serving: ServingSpec, rng: Callable[[str], np.random.Generator]
) -> np.random.Generator | None:
    """The acceptance draws' stream (`rng` gives a named stream, sim/streams.py) where
    serving.speculative is set, else None: `make_units`' `speculative_rng` (speculative
    decoding's modules load only then)."""
    if serving.speculative is None:
        return None
    from clustersim.serving.speculative import RNG_STREAM

    return rng(RNG_STREAM)


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
    speculative_rng: np.random.Generator | None = None,
) -> tuple[list[Unit], MoERuntime | None]:
    """The router's units of one layout (replicas, or DP-attention ranks) and its MoE side.
    `speculative_rng`: the "speculative" stream, used when serving.speculative is set
    (replicas and DP-attention ranks: the schema refuses it with CP)."""
    layout = exp.layout
    costs = stage_costs(exp, built)
    blocks_per_lane = built.memory.kv_blocks_per_replica // layout.pp
    moe: MoERuntime | None = None
    if built.ep is not None:
        from clustersim.moe.moe_runtime import MoERuntime

        moe = MoERuntime(exp, built.ep, built.cluster, env, fabric, experts_rng, phases)
    spec = exp.serving.speculative
    decoding = None
    if spec is not None and speculative_rng is not None:  # (its modules load only then)
        from clustersim.model.speculative_cost import lockstep_verify, speculative_stage_costs
        from clustersim.serving.speculative_decode import SpeculativeDecoding

        decoding = SpeculativeDecoding.from_spec(spec, speculative_rng)
    units: list[Unit]
    if moe is not None and moe.dp_attention:
        ranks = moe.dp_group(
            costs[0],
            [rp.stages[0] for rp in built.placement.replicas],
            blocks_per_lane,
            state,
            recorder,
            on_finish,
            None if decoding is None else (decoding, lockstep_verify(exp)),
        )
        units = list(ranks)
    elif layout.cp > 1:  # dense, pp = 1 (check_cp)
        cp_costs = [CPStageCost(c, exp.model, exp.precision, layout.cp) for c in costs]
        units = [
            CPReplica(
                env,
                r,
                rp.cp_groups,
                cp_costs,
                fabric,
                exp.serving,
                blocks_per_lane,
                state,
                recorder,
                on_finish,
            )
            for r, rp in enumerate(built.placement.replicas)
        ]
    else:
        units = []
        for r, rp in enumerate(built.placement.replicas):
            targets: Sequence[StageCost] = (
                costs if moe is None else moe.stage_costs(r, costs, built.stage_layers)
            )
            if decoding is not None:
                targets = speculative_stage_costs(exp, targets, costs)
            units.append(
                Replica(
                    env,
                    r,
                    rp.stages,
                    targets,
                    fabric,
                    exp.serving,
                    blocks_per_lane,
                    state,
                    recorder,
                    on_finish,
                    decoding,
                )
            )
    return units, moe


def unit_shards(unit: Unit, built: Build) -> tuple[tuple[range, ...], GpuGrid]:
    """Where one unit's KV cache lives: (layers of each stage, GPU grid [stage][cp rank] = TP
    group in TP-rank order). A DP-attention rank is one stage (pp = 1) of one TP group."""
    if not isinstance(unit, Replica):  # a DP-attention rank (moe/ep_group.py DPRank)
        return built.stage_layers, ((unit.group.rank_gpus[unit.index],),)
    return built.stage_layers, built.placement.replicas[unit.index].cp_groups
