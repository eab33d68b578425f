"""Random failures: per-component MTBF and repair-time distributions → fault events.

Each component instance fails as an alternating renewal process: up-time ~ Exp(mean
mtbf_s), down-time ~ the repair distribution (exponential by default), independently of
every other instance. Draws come from the one Generator passed in (the run's named
`faults` stream), instance by instance in graph order, so a seed fixes every event.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from clustersim.faults.events import FaultEvent, FaultKind
from clustersim.topology.graph import Cluster

Component = Literal["gpu", "node", "nic", "leaf", "spine"]
RepairDist = Literal["exponential", "fixed", "lognormal"]

EVENT_KIND: dict[Component, FaultKind] = {
    "gpu": "gpu_down",
    "node": "node_down",
    "nic": "link_down",
    "leaf": "link_down",
    "spine": "link_down",
}


@dataclass(frozen=True)
class ComponentFailures:
    """Failure law of one component class. Times in seconds; sigma of log(repair time)."""

    component: Component
    mtbf_s: float
    repair_mean_s: float
    repair_dist: RepairDist = "exponential"
    repair_sigma: float = 0.5
    key: str = "faults.random"

    def __post_init__(self) -> None:
        if not (self.mtbf_s > 0 and self.repair_mean_s > 0 and self.repair_sigma >= 0):
            raise ValueError(f"{self.key}: mtbf and repair time must be > 0")

    def repair_s(self, rng: np.random.Generator) -> float:
        if self.repair_dist == "fixed":
            return self.repair_mean_s
        if self.repair_dist == "lognormal":
            mu = np.log(self.repair_mean_s) - self.repair_sigma**2 / 2  # mean = repair_mean_s
            return float(rng.lognormal(mu, self.repair_sigma))
        return float(rng.exponential(self.repair_mean_s))


def component_names(cluster: Cluster, component: Component) -> list[str]:
    """Instances of a component class, as fault targets, in graph (build) order."""
    if component == "gpu":
        return list(cluster.gpus)
    if component == "node":
        return [f"n{n}" for n in range(cluster.num_nodes)]
    return [v for v in cluster.vertices if cluster.kind_of(v) == component]


def draw_failures(
    cluster: Cluster,
    laws: list[ComponentFailures],
    horizon_s: float,
    rng: np.random.Generator,
) -> list[FaultEvent]:
    """Failure events starting before `horizon_s`, ordered by law, instance, then time."""
    events: list[FaultEvent] = []
    for law in laws:
        for name in component_names(cluster, law.component):
            events.extend(_renewals(law, name, horizon_s, rng))
    return events


def _renewals(
    law: ComponentFailures, name: str, horizon_s: float, rng: np.random.Generator
) -> list[FaultEvent]:
    events = []
    t = float(rng.exponential(law.mtbf_s))
    while t < horizon_s:
        down = law.repair_s(rng)
        events.append(
            FaultEvent(
                EVENT_KIND[law.component],
                name,
                t,
                t + down,
                source="random",
                key=f"{law.key}[{law.component}]",
            )
        )
        t += down + float(rng.exponential(law.mtbf_s))
    return events
