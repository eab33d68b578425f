"""Layout × Cluster × ModelSpec → Placement: which GPUs hold which shard (pure, no simpy).

Allocation unit: one TP group (tp GPUs). Units are handed out in the order
replica r → pipeline stage s → CP rank c, to the cluster's locality groups (NVLink domains,
or nodes on PCIe-only hosts) in GPU order:
- tp ≤ locality size: each group offers ⌊size / tp⌋ contiguous slots, so no TP group straddles
  a domain; if those slots are too few (tp does not divide the domain size), units are taken
  contiguously over all GPUs instead and straddling groups are flagged in `warnings`.
- tp > locality size: contiguous; every TP group spans several domains (flagged).
Consequences: a replica that fits in a node stays in it (PP handoff on NVLink); a replica
larger than a node puts its next stage on the next node; DP replicas follow one another and
never share a GPU.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field

from clustersim.config.schema import Layout, ModelSpec
from clustersim.topology.graph import Cluster

Group = tuple[str, ...]


class PlacementError(ValueError):
    """A layout that cannot be placed; the message is one line with the numbers."""


@dataclass(frozen=True)
class ReplicaPlacement:
    """GPUs of one DP replica.

    `stages[s]` is the TP group of stage s (CP rank 0), in TP-rank order.
    `cp_groups[s][c]` is the TP group of CP rank c at stage s (`cp_groups[s][0] == stages[s]`).
    """

    index: int
    stages: tuple[Group, ...]
    cp_groups: tuple[tuple[Group, ...], ...]

    @property
    def gpus(self) -> Group:
        """Every GPU of the replica, stage-major, then CP rank, then TP rank."""
        return tuple(g for stage in self.cp_groups for grp in stage for g in grp)

    def stage_gpus(self, stage: int) -> Group:
        """All tp × cp GPUs of one stage."""
        return tuple(g for grp in self.cp_groups[stage] for g in grp)

    def cp_ring(self, stage: int, tp_rank: int) -> Group:
        """The CP ring of one TP rank at one stage (GPU of that TP rank in every CP rank)."""
        return tuple(grp[tp_rank] for grp in self.cp_groups[stage])

    def handoff_pairs(self, stage: int) -> list[tuple[str, str]]:
        """PP handoff stage → stage+1: TP rank i sends to TP rank i (CP rank 0 groups)."""
        return list(zip(self.stages[stage], self.stages[stage + 1], strict=True))


@dataclass(frozen=True)
class Placement:
    layout: Layout
    topology: str
    replicas: tuple[ReplicaPlacement, ...]
    warnings: tuple[str, ...] = field(default=())

    @property
    def gpus_used(self) -> int:
        return sum(len(r.gpus) for r in self.replicas)

    def replica_of(self, gpu: str) -> int | None:
        for r in self.replicas:
            if gpu in r.gpus:
                return r.index
        return None

    def ep_groups(self, stage: int = 0) -> list[Group]:
        """EP groups at one pipeline stage: the stage's GPUs of every replica (replica-major),
        cut into consecutive groups of `layout.ep`. The MoE model owns the semantics (which
        experts each rank holds); this only fixes which GPUs form a group.
        """
        ep = self.layout.ep
        flat = [g for r in self.replicas for g in r.stage_gpus(stage)]
        if len(flat) % ep != 0:
            raise PlacementError(
                f"ep = {ep} does not divide the {len(flat)} GPUs of stage {stage} "
                f"(tp×cp×dp = {self.layout.tp}×{self.layout.cp}×{self.layout.dp})"
            )
        return [tuple(flat[i : i + ep]) for i in range(0, len(flat), ep)]

    def ep_group(self, replica: int, stage: int = 0) -> Group:
        """The EP group holding replica `replica`'s first GPU of `stage`."""
        first = self.replicas[replica].stages[stage][0]
        for grp in self.ep_groups(stage):
            if first in grp:
                return grp
        raise AssertionError("unreachable: every stage GPU is in an EP group")


def check_layout(layout: Layout, cluster: Cluster, model: ModelSpec, excluded: int = 0) -> None:
    """Raise PlacementError for a layout the cluster or the model cannot take.

    `excluded`: GPUs of the cluster already taken (by another pool of a disaggregated run)."""
    need, have = layout.gpus, cluster.num_gpus - excluded
    if need > have:
        taken = f" free ({excluded} taken by other pools)" if excluded else ""
        raise PlacementError(
            f"layout needs tp×pp×cp×dp = {layout.tp}×{layout.pp}×{layout.cp}×{layout.dp} = "
            f"{need} GPUs; topology {cluster.name} has {have}{taken}"
        )
    tp, heads, kv = layout.tp, model.num_attention_heads, model.num_kv_heads
    if heads % tp != 0:
        raise PlacementError(
            f"tp = {tp} does not divide num_attention_heads = {heads} (model {model.name})"
        )
    if kv % tp != 0 and tp % kv != 0:
        raise PlacementError(
            f"tp = {tp} neither divides num_kv_heads = {kv} nor is a multiple of it "
            f"(model {model.name}): KV heads cannot be split or replicated evenly"
        )
    if layout.pp > model.num_layers:
        raise PlacementError(
            f"pp = {layout.pp} exceeds num_layers = {model.num_layers} (model {model.name})"
        )


def _slots(
    cluster: Cluster, tp: int, units: int, exclude: frozenset[str] = frozenset()
) -> tuple[list[Group], bool]:
    """`units` TP groups of `tp` GPUs, in allocation order; True if locality-aligned.
    GPUs in `exclude` are skipped (locality groups keep their remaining GPUs, in order)."""
    groups = [tuple(g for g in grp if g not in exclude) for grp in cluster.locality_groups()]
    groups = [grp for grp in groups if grp]
    if groups and tp <= min(len(g) for g in groups):
        aligned = [grp[i : i + tp] for grp in groups for i in range(0, len(grp) - tp + 1, tp)]
        if len(aligned) >= units:
            return aligned[:units], True
    flat = [g for g in cluster.gpus if g not in exclude]
    return [tuple(flat[i * tp : (i + 1) * tp]) for i in range(units)], False


def _warnings(layout: Layout, cluster: Cluster, units: list[Group]) -> list[str]:
    out: list[str] = []
    if layout.tp > 1 and cluster.nvlink_domain_size == 0:
        out.append(
            f"topology {cluster.name} has no NVLink: TP all-reduce (tp = {layout.tp}) goes "
            "over PCIe"
        )
    spans = [len(dict.fromkeys(cluster.locality_of(g) for g in grp)) for grp in units]
    crossing = sum(1 for s in spans if s > 1)
    if crossing:
        where = "NVLink domains" if cluster.nvlink_domain_size else "nodes"
        size = cluster.nvlink_domain_size or cluster.gpus_per_node
        out.append(
            f"{crossing} of {len(units)} TP groups (tp = {layout.tp}) span up to {max(spans)} "
            f"{where} of {size} GPUs: their all-reduce crosses the network"
        )
    return out


def place(
    layout: Layout, cluster: Cluster, model: ModelSpec, *, exclude: Collection[str] = ()
) -> Placement:
    """Assign GPUs to every (replica, stage, CP rank) TP group. See module docstring.

    `exclude`: GPUs not to use (taken by the other pool of a disaggregated deployment)."""
    skip = frozenset(exclude)
    check_layout(layout, cluster, model, len(skip))
    tp, pp, cp, dp = layout.tp, layout.pp, layout.cp, layout.dp
    units, _aligned = _slots(cluster, tp, dp * pp * cp, skip)
    replicas: list[ReplicaPlacement] = []
    it = iter(units)
    for r in range(dp):
        cp_groups = tuple(tuple(next(it) for _c in range(cp)) for _s in range(pp))
        stages = tuple(stage[0] for stage in cp_groups)
        replicas.append(ReplicaPlacement(index=r, stages=stages, cp_groups=cp_groups))
    return Placement(
        layout=layout,
        topology=cluster.name,
        replicas=tuple(replicas),
        warnings=tuple(_warnings(layout, cluster, units)),
    )
