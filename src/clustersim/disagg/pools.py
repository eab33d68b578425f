"""Disaggregated prefill / decode pools, built (docs/disaggregation.md §1).

Each pool is the experiment seen with the pool's layout, serving (the experiment's,
overridden key by key) and experts block; the prefill pool is placed first, the decode pool
on the GPUs left (`place(..., exclude=...)`), each checked like a co-located layout. How a
request moves between the pools at run time: disagg/runtime.py.
"""

from __future__ import annotations

from dataclasses import dataclass

from clustersim.config.schema import Experiment, PoolServing, PoolSpec
from clustersim.deployment.build import Build, BuildError, PoolBuild, build_layout
from clustersim.topology.graph import build_cluster

POOL_NAMES = ("prefill", "decode")


@dataclass(frozen=True)
class PoolInfo:
    """What metrics need of a pool (RunOutput.pools)."""

    name: str
    gpus: int
    replicas: int
    nodes: float
    replica_offset: int
    stages: int  # pipeline stages per replica


def pool_experiment(exp: Experiment, pool: PoolSpec) -> Experiment:
    """`exp` as one pool sees it: its layout, the serving keys it overrides, its experts."""
    overrides = {
        name: value
        for name in PoolServing.model_fields
        if (value := getattr(pool.serving, name)) is not None
    }  # values as validated (a nested spec stays a model, not model_dump's dict)
    serving = exp.serving.model_copy(update=overrides)
    experts = pool.experts if pool.experts is not None else exp.experts
    return exp.model_copy(
        update={
            "layout": pool.layout,
            "serving": serving,
            "experts": experts,
            "disaggregation": None,
        }
    )


def build_pools(exp: Experiment) -> Build:
    """Check and place both pools (prefill first); BuildError with the numbers."""
    spec = exp.disaggregation
    if spec is None:
        raise ValueError("build_pools needs an experiment with a disaggregation block")
    cluster = build_cluster(exp.topology, exp.hardware)
    views = [pool_experiment(exp, spec.prefill), pool_experiment(exp, spec.decode)]
    lays = [v.layout for v in views]
    need = [lay.gpus for lay in lays]
    if lays[1].cp > 1:
        raise BuildError(
            f"disaggregation.decode.layout.cp = {lays[1].cp}: context parallelism splits a "
            f"prompt's prefill and does not speed up decode; use cp: 1 in the decode pool "
            f"(CP belongs in the prefill pool)"
        )
    if sum(need) > cluster.num_gpus:
        parts = " + ".join(
            f"{name} tp×pp×cp×dp = {lay.tp}×{lay.pp}×{lay.cp}×{lay.dp} = {n}"
            for name, lay, n in zip(POOL_NAMES, lays, need, strict=True)
        )
        raise BuildError(
            f"disaggregation: pools need {parts} = {sum(need)} GPUs; topology "
            f"{cluster.name} has {cluster.num_gpus}"
        )
    pools: list[PoolBuild] = []
    taken: list[str] = []
    offset = 0
    for name, view in zip(POOL_NAMES, views, strict=True):
        built = build_layout(view, cluster, exclude=taken, prefix=f"disaggregation.{name}: ")
        pools.append(PoolBuild(name, view, built, offset))
        taken.extend(g for rp in built.placement.replicas for g in rp.gpus)
        offset += view.layout.dp
    decode = pools[1].built
    return Build(
        cluster,
        decode.placement,
        decode.memory,
        decode.stage_layers,
        decode.ep,
        pools=tuple(pools),
    )


def pool_infos(pools: tuple[PoolBuild, ...]) -> tuple[PoolInfo, ...]:
    return tuple(
        PoolInfo(p.name, p.gpus, p.replicas, p.nodes, p.replica_offset, p.exp.layout.pp)
        for p in pools
    )
