"""One fault event: a kind, a target named as in the topology graph, and a time window."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

FaultKind = Literal["gpu_slowdown", "link_degrade", "link_down", "gpu_down", "node_down"]
FAULT_KINDS: tuple[FaultKind, ...] = (
    "gpu_slowdown",
    "link_degrade",
    "link_down",
    "gpu_down",
    "node_down",
)
FaultSource = Literal["scheduled", "random"]


class FaultTargetError(ValueError):
    """A fault names a target the cluster does not have; `key` is the YAML key path."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key


@dataclass(frozen=True)
class FaultEvent:
    """A fault active on [start_s, end_s) of simulated time (end_s = inf: until the end).

    Factors are speed multipliers in (0, 1]: compute_factor 0.7 makes the GPU's
    compute-bound kernels take 1/0.7 as long; bandwidth_factor 0.25 leaves a quarter of
    the link's bytes/s. extra_latency_s is added to every transfer crossing the link.
    """

    kind: FaultKind
    target: str
    start_s: float
    end_s: float = math.inf
    compute_factor: float = 1.0
    hbm_factor: float = 1.0
    bandwidth_factor: float = 1.0
    extra_latency_s: float = 0.0
    source: FaultSource = "scheduled"
    key: str = "faults"  # YAML key path of the event, for messages

    def __post_init__(self) -> None:
        if not self.start_s >= 0.0:
            raise ValueError(f"{self.key}: at_s must be >= 0, got {self.start_s}")
        if not self.end_s > self.start_s:
            raise ValueError(f"{self.key}: the fault must end after it starts")
        for name in ("compute_factor", "hbm_factor", "bandwidth_factor"):
            value = getattr(self, name)
            if not 0.0 < value <= 1.0:
                raise ValueError(f"{self.key}: {name} must be in (0, 1], got {value}")
        if not self.extra_latency_s >= 0.0:
            raise ValueError(f"{self.key}: extra_latency_us must be >= 0")

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s

    @property
    def stops_gpus(self) -> bool:
        return self.kind in ("gpu_down", "node_down")

    @property
    def is_link_fault(self) -> bool:
        return self.kind in ("link_degrade", "link_down")

    def active_at(self, t: float) -> bool:
        return self.start_s <= t < self.end_s
