"""SLO classes at 95 % confidence for replicated candidates (pure; docs/planner.md §4).

With `replicates: N >= 2` in the plan's experiment every candidate is simulated N times and its
pooled summary carries, per latency quantile, the replicates' mean and Student-t 95 % interval
(metrics/replicates.py). For each bound the SLO sets (p99 TTFT, p99 TPOT, p99 e2e):

- the bound holds with 95 % confidence when the interval's upper end is <= the bound;
- it fails with 95 % confidence when the interval's lower end is > the bound;
- otherwise the interval straddles the bound: not known at 95 %.

The class is `misses` when the run misses for a reason without an interval (no request
completed, dropped requests) or a bound fails with confidence; `meets` when every bound holds
with confidence; `marginal` otherwise. A single run has no interval: class null.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from clustersim.config.schema import SLOSpec

CLASSES = ("meets", "marginal", "misses")
_BOUNDS = (("ttft_s", "ttft_p99_s"), ("tpot_s", "tpot_p99_s"), ("e2e_s", "e2e_p99_s"))


def slo_class(summary: Mapping[str, Any], slo: SLOSpec) -> str | None:
    """`meets`, `marginal` or `misses` (module doc); None without replicate intervals."""
    block = summary.get("replicates")
    if not isinstance(block, Mapping) or int(block.get("n") or 1) < 2:
        return None
    if not int(summary.get("requests_completed") or 0) or int(summary.get("requests_dropped") or 0):
        return "misses"
    unsure = False
    for metric, key in _BOUNDS:
        bound = getattr(slo, key)
        if bound is None:
            continue
        ci = ((block.get(metric) or {}).get("p99") or {}).get("ci95")
        if ci is None:
            if metric == "tpot_s" and (summary.get(metric) or {}).get("p99") is None:
                continue  # every output a single token: no TPOT, the bound holds
            unsure = True
            continue
        if ci[0] > bound:
            return "misses"
        if ci[1] > bound:
            unsure = True
    return "marginal" if unsure else "meets"
