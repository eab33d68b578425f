"""The experiment's `faults:` block → fault events and the resolved schedule of one run.

Scheduled events keep their YAML key path (`faults.events.<i>`) for messages; random
failures are drawn on the run's named `faults` stream over the arrival horizon.
"""

from __future__ import annotations

import math

import numpy as np

from clustersim.config.schema import FaultsSpec
from clustersim.faults.events import FaultEvent
from clustersim.faults.random_failures import ComponentFailures, draw_failures
from clustersim.faults.schedule import FaultSchedule
from clustersim.topology.graph import Cluster


def scheduled_events(spec: FaultsSpec) -> list[FaultEvent]:
    """The `faults.events` list as FaultEvents (duration absent: until the end)."""
    events = []
    for i, ev in enumerate(spec.events):
        end = math.inf if ev.duration_s is None else ev.at_s + ev.duration_s
        events.append(
            FaultEvent(
                ev.kind,
                ev.target,
                ev.at_s,
                end,
                compute_factor=ev.compute_factor,
                hbm_factor=ev.hbm_factor,
                bandwidth_factor=ev.bandwidth_factor,
                extra_latency_s=ev.extra_latency_us * 1e-6,
                key=f"faults.events.{i}",
            )
        )
    return events


def failure_laws(spec: FaultsSpec) -> list[ComponentFailures]:
    return [
        ComponentFailures(
            law.component,
            law.mtbf_seconds,
            law.repair_mean_s,
            law.dist,
            law.sigma,
            key=f"faults.random.{i}",
        )
        for i, law in enumerate(spec.random)
    ]


def fault_schedule(
    spec: FaultsSpec, cluster: Cluster, horizon_s: float | None, rng: np.random.Generator
) -> FaultSchedule:
    """Every fault of one run resolved against `cluster` (FaultTargetError naming the key
    of a target the cluster does not have). Random failures need a finite horizon."""
    events = scheduled_events(spec)
    if spec.random:
        if horizon_s is None:
            raise ValueError(
                "faults.random: random failures need horizon.duration_s (a request count "
                "gives no time span to draw failures over)"
            )
        events += draw_failures(cluster, failure_laws(spec), horizon_s, rng)
    return FaultSchedule.build(cluster, events)
