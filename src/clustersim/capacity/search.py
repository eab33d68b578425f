"""Bisection over the arrival rate (pure: the probe is a callback).

1. Bracket: probe the start rate; while probes pass, double the rate; while they fail, halve
   it — until one passing rate `lo` and one failing rate `hi` are known.
2. Bisect: probe (lo + hi) / 2 and keep the half holding the knee, until
   (hi − lo) / (hi + lo) <= rel_tol: the knee, taken as the midpoint, is then known to
   ± rel_tol (±5 % by default).
`capacity_rps` is `lo`, the highest rate seen to pass. A probe is one (replicated) simulation.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

REL_TOL = 0.05  # the knee is known to ±5 %
MAX_PROBES = 40  # the search gives up (capacity unknown beyond the bracket) after this many


@dataclass(frozen=True)
class Probe:
    """One probed rate (requests/s): passed the SLO test, why not, its (pooled) summary."""

    rate_rps: float
    passed: bool
    reasons: tuple[str, ...] = ()
    summary: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Capacity:
    """The search's result; rates in requests/s. `lo` None: nothing passed; `hi` None:
    nothing failed (the knee is above every probed rate)."""

    lo: float | None
    hi: float | None
    probes: tuple[Probe, ...]
    rel_tol: float

    @property
    def capacity_rps(self) -> float | None:
        return self.lo

    @property
    def knee_rps(self) -> float | None:
        """The knee estimate: the bracket's midpoint (None while unbracketed)."""
        if self.lo is None or self.hi is None:
            return None
        return 0.5 * (self.lo + self.hi)

    @property
    def half_width(self) -> float | None:
        """(hi − lo) / (hi + lo): the knee is knee_rps × (1 ± this)."""
        if self.lo is None or self.hi is None:
            return None
        return (self.hi - self.lo) / (self.hi + self.lo)

    @property
    def converged(self) -> bool:
        width = self.half_width
        return width is not None and width <= self.rel_tol


def find_capacity(
    probe: Callable[[float], Probe],
    start_rps: float,
    rel_tol: float = REL_TOL,
    max_probes: int = MAX_PROBES,
    rate_range: tuple[float, float] = (0.0, math.inf),
) -> Capacity:
    """Bracket then bisect the knee (module doc); probes sorted by rate in the result.
    Rates stay inside `rate_range` (requests/s): a pass at its top leaves `hi` None (the
    capacity is at least that), a failure at its bottom leaves `lo` None."""
    if not start_rps > 0:
        raise ValueError(f"start rate must be > 0, got {start_rps}")
    min_rps, max_rps = rate_range
    start_rps = min(max(start_rps, min_rps), max_rps)
    probes: list[Probe] = []

    def run(rate: float) -> bool:
        result = probe(rate)
        probes.append(result)
        return result.passed

    lo: float | None = None
    hi: float | None = None
    rate = start_rps
    while len(probes) < max_probes and (lo is None or hi is None):
        if run(rate):
            lo = rate
            if rate >= max_rps:
                break
            rate = min(rate * 2.0, max_rps)
        else:
            hi = rate
            if rate <= min_rps:
                break
            rate = max(rate * 0.5, min_rps)
    while lo is not None and hi is not None and len(probes) < max_probes:
        if (hi - lo) / (hi + lo) <= rel_tol:
            break
        mid = 0.5 * (lo + hi)
        if run(mid):
            lo = mid
        else:
            hi = mid
    ordered = tuple(sorted(probes, key=lambda p: p.rate_rps))
    return Capacity(lo, hi, ordered, rel_tol)
