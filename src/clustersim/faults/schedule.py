"""The run's faults in time order, resolved to GPUs and links, with the state at any time.

`change_points()` lists the instants where some effect starts or ends; between two of them
every GPU's speed and every link's capacity factor are constant. Overlapping faults on one
target compose by multiplication (two 0.5× slowdowns leave 0.25×); a down fault wins.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from clustersim.faults.events import FaultEvent
from clustersim.faults.targets import Target, resolve_target
from clustersim.topology.graph import Cluster


@dataclass(frozen=True)
class ResolvedFault:
    event: FaultEvent
    target: Target


class FaultSchedule:
    """Every fault of one run; queries are O(number of faults) and meant for change points."""

    def __init__(self, faults: Sequence[ResolvedFault]) -> None:
        self.faults = tuple(sorted(faults, key=lambda f: (f.event.start_s, f.event.end_s)))

    @classmethod
    def build(cls, cluster: Cluster, events: Iterable[FaultEvent]) -> FaultSchedule:
        return cls([ResolvedFault(e, resolve_target(cluster, e)) for e in events])

    def __len__(self) -> int:
        return len(self.faults)

    def change_points(self) -> list[float]:
        """Sorted distinct finite instants (s) where an effect starts or ends."""
        times = {f.event.start_s for f in self.faults}
        times |= {f.event.end_s for f in self.faults if math.isfinite(f.event.end_s)}
        return sorted(times)

    def active(self, t: float) -> list[ResolvedFault]:
        return [f for f in self.faults if f.event.active_at(t)]

    def gpu_factors(self, t: float) -> tuple[dict[str, float], dict[str, float]]:
        """GPU → (compute factor, HBM factor) at time t, for GPUs that are slowed."""
        compute: dict[str, float] = {}
        hbm: dict[str, float] = {}
        for f in self.active(t):
            if f.event.kind != "gpu_slowdown":
                continue
            for gpu in f.target.gpus:
                compute[gpu] = compute.get(gpu, 1.0) * f.event.compute_factor
                hbm[gpu] = hbm.get(gpu, 1.0) * f.event.hbm_factor
        return compute, hbm

    def down_gpus(self, t: float) -> frozenset[str]:
        return frozenset(g for f in self.active(t) if f.event.stops_gpus for g in f.target.gpus)

    def link_state(self, t: float) -> tuple[dict[int, float], dict[int, float], frozenset[int]]:
        """(link id → bandwidth factor, link id → extra latency s, links down) at time t."""
        factor: dict[int, float] = {}
        latency: dict[int, float] = {}
        down: set[int] = set()
        for f in self.active(t):
            if f.event.kind == "link_down":
                down.update(f.target.links)
            elif f.event.kind == "link_degrade":
                for link in f.target.links:
                    factor[link] = factor.get(link, 1.0) * f.event.bandwidth_factor
                    latency[link] = latency.get(link, 0.0) + f.event.extra_latency_s
        return factor, latency, frozenset(down)

    def windows(self) -> list[tuple[float, float]]:
        """Merged [start, end) intervals during which any fault is active."""
        merged: list[tuple[float, float]] = []
        for f in self.faults:
            start, end = f.event.start_s, f.event.end_s
            if merged and start <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], end))
            else:
                merged.append((start, end))
        return merged
