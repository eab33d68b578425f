"""One layout on a cluster, checked at build time: placement, EP layout, CP support, memory.

Used once by the engine for a co-located experiment and once per pool by disagg/pools.py for a
disaggregated one; both see the experiment through `exp.layout` / `exp.serving` /
`exp.experts` (a pool passes a view of the experiment with its own values in those fields).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING

from clustersim.config.schema import Experiment
from clustersim.model.memory import MemoryPlan, plan_memory, stage_layer_ranges
from clustersim.moe.ep_layout import EPLayout, EPLayoutError, resolve_ep_layout
from clustersim.topology.graph import Cluster
from clustersim.topology.placement import Placement, PlacementError, place

if TYPE_CHECKING:
    from clustersim.faults import FaultSchedule


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
    faults: FaultSchedule | None = None  # the run's faults, targets resolved (faults/)

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


@dataclass(frozen=True)
class PoolBuild:
    """One pool of a disaggregated deployment, checked and placed (disagg/pools.py)."""

    name: str  # "prefill" | "decode"
    exp: Experiment  # the experiment as the pool sees it (its layout / serving / experts)
    built: Build
    replica_offset: int  # global replica id of the pool's first unit (prefill 0, decode Np)

    @property
    def gpus(self) -> int:
        return self.built.placement.gpus_used

    @property
    def replicas(self) -> int:
        """Router units: DP replicas (DP ranks with DP-attention)."""
        return self.exp.layout.dp

    @property
    def nodes(self) -> float:
        """GPUs / GPUs per node (fractional when the pool does not fill whole nodes)."""
        return self.gpus / self.exp.topology.gpus_per_node
