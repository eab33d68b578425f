"""The faults side of one running simulation: replica health and the fault injector."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import simpy

from clustersim.config.schema import Experiment
from clustersim.deployment.build import Build, BuildError
from clustersim.deployment.degraded import DegradedCosts
from clustersim.deployment.units import Unit
from clustersim.disagg.runtime import DisaggRuntime
from clustersim.metrics.recorder import Recorder
from clustersim.moe.ep_group import DPRank
from clustersim.network.fabric import Fabric
from clustersim.serving.cp_replica import CPReplica
from clustersim.serving.replica import Replica
from clustersim.serving.request_state import RequestState
from clustersim.serving.router import Router
from clustersim.sim.fault_injector import FaultInjector
from clustersim.sim.replica_health import ReplicaHealth


@dataclass(frozen=True)
class FaultRuntime:
    health: ReplicaHealth
    injector: FaultInjector


def fault_runtime(
    exp: Experiment,
    built: Build,
    env: simpy.Environment,
    units: Sequence[Unit],
    router: Router,
    outstanding: list[int],
    recorder: Recorder,
    state: RequestState,
    fabric: Fabric,
    end_one: Callable[[], None],
) -> FaultRuntime:
    """Health and injector over the run's replicas (plain or MoE replicas, DP ranks of a
    DP-attention group: fault_build.py refuses the other unit kinds for GPU faults; link
    faults need no replica hooks)."""
    assert exp.faults is not None and built.faults is not None
    replicas: list[Replica | DPRank] = [
        u
        for u in units
        if (isinstance(u, Replica) and not isinstance(u, CPReplica)) or isinstance(u, DPRank)
    ]
    if len(replicas) != len(units):
        if any(
            f.event.kind != "link_degrade" and f.event.kind != "link_down"
            for f in built.faults.faults
        ):
            raise BuildError("faults: GPU faults need plain (or MoE) replicas as router units")
        replicas = []
    health = ReplicaHealth(
        env,
        exp.faults,
        replicas,
        router,
        outstanding,
        recorder,
        state,
        fabric,
        built.memory.weights_per_gpu_bytes,
        end_one,
        units=len(units),
    )
    injector = FaultInjector(env, built.faults, replicas, DegradedCosts(exp, built), fabric, health)
    return FaultRuntime(health, injector)


def pool_link_faults(
    exp: Experiment,
    built: Build,
    env: simpy.Environment,
    disagg: DisaggRuntime,
    fabric: Fabric,
) -> FaultRuntime:
    """Link faults under disaggregated pools (fault_build.py refuses the rest): the injector
    sets the fabric's link state; no pool instance stops, so health has no units to watch and
    its retry / failure counts stay zero. Decode leaps of the pools' replicas are forbidden:
    a leap prices its steps' all-reduces ahead, before a link changes."""
    for member in (*disagg.prefill, *disagg.decode):
        if isinstance(member.unit, Replica):
            member.unit.forbid_leaps()
    return fault_runtime(
        exp,
        built,
        env,
        [],
        disagg.p_router,
        [],
        disagg.recorder,
        disagg.decode_state,
        fabric,
        lambda: None,
    )
