"""Build-time side of faults: the schedule resolved against the cluster, and what layouts
the fault model covers (checked before any simulation, so `validate` reports it)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from clustersim.config.schema import Experiment
from clustersim.deployment.build import Build, BuildError
from clustersim.faults import FaultTargetError, ResolvedFault, fault_schedule
from clustersim.network.detours import detours
from clustersim.sim.streams import Streams

GPU_KINDS = ("gpu_slowdown", "gpu_down", "node_down")


def with_faults(exp: Experiment, built: Build) -> Build:
    """`built` with the experiment's fault schedule (the run's `faults` stream draws the
    random failures); BuildError naming the key of a bad target or an unsupported case."""
    spec = exp.faults
    if spec is None:
        return built
    try:
        schedule = fault_schedule(
            spec, built.cluster, exp.horizon.duration_s, Streams(exp.seed).get("faults")
        )
    except FaultTargetError as err:
        raise BuildError(str(err)) from err
    except ValueError as err:
        raise BuildError(str(err)) from err
    gpu_faults = [f for f in schedule.faults if f.event.kind in GPU_KINDS]
    if built.pools is not None:
        _check_pools(built, schedule.faults)
        for pool in built.pools:
            _check_gpu_faults(pool.exp, pool.built, gpu_faults)
    else:
        _check_gpu_faults(exp, built, gpu_faults)
    for f in schedule.faults:
        if f.event.kind == "link_down":
            _, stranded = detours(built.cluster, f.target.links)
            switch = [i for i in stranded if not _node_local(built, i)]
            if switch:
                name = built.cluster.links[switch[0]].name
                raise BuildError(
                    f"{f.event.key}.target: link {name} has no alternative path and joins "
                    f"switches: every node behind it would be cut off (not simulated)"
                )
    return dataclasses.replace(built, faults=schedule)


def _check_gpu_faults(exp: Experiment, built: Build, gpu_faults: Sequence[ResolvedFault]) -> None:
    """The layouts GPU faults are not simulated with (one pool's, or the experiment's)."""
    if exp.layout.cp > 1 and gpu_faults:
        raise BuildError(
            f"{gpu_faults[0].event.key}.kind: {gpu_faults[0].event.kind} with layout cp > 1 "
            f"is not simulated (link faults are)"
        )
    # DP-attention: a lost GPU stops the whole lock-step EP group, a slow one slows its DP
    # rank's dense part and its experts (moe/ep_group.py); the speculative drafter's passes
    # are priced once for the group, so a slow rank's drafter is not
    slow = [f for f in gpu_faults if f.event.kind == "gpu_slowdown"]
    dp_attention = built.ep is not None and built.ep.dp_attention
    if dp_attention and slow and exp.serving.speculative is not None:
        raise BuildError(
            f"{slow[0].event.key}.kind: gpu_slowdown with layout dp_attention and "
            f"serving.speculative is not simulated (gpu_down / node_down and link faults are)"
        )


def _check_pools(built: Build, faults: Sequence[ResolvedFault]) -> None:
    """Disaggregated pools take GPU faults and link faults that cut no GPU off (a lost DP
    rank of a DP-attention pool is not simulated)."""
    for f in faults:
        dp_attention = [p for p in built.pools or () if p.built.ep and p.built.ep.dp_attention]
        if f.event.stops_gpus and dp_attention:
            raise BuildError(
                f"{f.event.key}.kind: {f.event.kind} with a DP-attention pool "
                f"({dp_attention[0].name}) is not simulated (gpu_slowdown and link faults are)"
            )
        if f.event.kind == "link_down" and detours(built.cluster, f.target.links)[1]:
            raise BuildError(
                f"{f.event.key}.target: link_down of {f.event.target} cuts GPUs off (no "
                f"detour); with disaggregated pools only link faults that stop no GPU are "
                f"simulated"
            )


def _node_local(built: Build, link: int) -> bool:
    lk = built.cluster.links[link]
    kinds = [built.cluster.kind_of(v) for v in (lk.src, lk.dst)]
    return "gpu" in kinds or any(v.startswith("n") and "." in v for v in (lk.src, lk.dst))
