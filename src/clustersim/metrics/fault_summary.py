"""summary.json `faults.*` of a run with a `faults:` block (docs/faults.md).

- requests_retried: requests retried at least once; retries: retries in all;
  requests_failed: requests counted failed (lost with on_failure: fail, or no replica left).
- slo_attainment_inside / _outside: among measured arrivals (arrival >= warmup), the share
  meeting every SLO bound, for those arriving inside a fault window (the union of every
  fault's [start, end)) and outside; a failed or dropped request does not meet it.
- baseline_ttft_p99_s: p99 TTFT of the completed measured requests arriving outside every
  fault window.
- recovery_threshold_ttft_p99_s: the largest p99 TTFT of a measured timeline window that
  ends before the first fault starts (the normal range of a window's p99 under this load);
  without such a window, RECOVERY_TOLERANCE × baseline_ttft_p99_s.
- recovery[i].recover_s: time from fault i's start to the start of the first timeline window
  from which every later measured window with arrivals has p99 TTFT <= the threshold (a
  window whose arrivals none completed counts as not recovered); 0 when no window after the
  start exceeded it, None when the run ends unrecovered.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from clustersim.config.schema import SLOSpec
from clustersim.metrics.linear_percentile import linear_percentiles
from clustersim.metrics.summary import completed_mask, measured_requests, slo_mask
from clustersim.metrics.table import floats

if TYPE_CHECKING:
    import pandas as pd

RECOVERY_TOLERANCE = 1.2  # × baseline p99 TTFT, when no window precedes the first fault


def fault_windows(faults: pd.DataFrame) -> list[tuple[float, float]]:
    """Merged [start, end) intervals (s) in which any fault is active (end may be inf)."""
    merged: list[tuple[float, float]] = []
    for start, end in sorted(zip(faults["start_s"], faults["end_s"], strict=True)):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], float(end)))
        else:
            merged.append((float(start), float(end)))
    return merged


def inside_windows(times: np.ndarray, windows: list[tuple[float, float]]) -> np.ndarray:
    inside = np.zeros(len(times), dtype=bool)
    for start, end in windows:
        inside |= (times >= start) & (times < end)
    return inside


def faults_summary(
    requests: pd.DataFrame,
    faults: pd.DataFrame,
    timeline: pd.DataFrame | None,
    slo: SLOSpec,
    warmup_s: float,
) -> dict[str, Any]:
    """summary.json `faults` (docs/faults.md)."""
    req = measured_requests(requests, warmup_s)
    done = completed_mask(req)
    meets = slo_mask(req, done, slo)
    inside = inside_windows(floats(req, "arrival_s"), fault_windows(faults))
    ttft = floats(req, "ttft_s")
    outside_ttft = ttft[done & ~inside]
    baseline = linear_percentiles(outside_ttft, (99.0,))[0] if len(outside_ttft) else None
    first = float(faults["start_s"].min()) if len(faults) else math.inf
    threshold = recovery_threshold(timeline, first, baseline, warmup_s)
    return {
        "events": len(faults),
        "requests_retried": int((requests["retries"] > 0).sum()),
        "retries": int(requests["retries"].sum()),
        "requests_failed": int(requests["failed"].sum()),
        "requests_inside": int(inside.sum()),
        "requests_outside": int((~inside).sum()),
        "slo_attainment_inside": _share(meets[inside]),
        "slo_attainment_outside": _share(meets[~inside]),
        "baseline_ttft_p99_s": baseline,
        "recovery_threshold_ttft_p99_s": threshold,
        "recovery": [
            {
                "kind": str(kind),
                "target": str(target),
                "start_s": float(start),
                "end_s": float(end) if math.isfinite(end) else None,
                "recover_s": recover_s(timeline, float(start), threshold, warmup_s),
            }
            for kind, target, start, end in zip(
                faults["kind"],
                faults["target"],
                faults["start_s"].to_numpy(dtype=float),
                faults["end_s"].to_numpy(dtype=float),
                strict=True,
            )
        ],
    }


def recovery_threshold(
    timeline: pd.DataFrame | None, first_fault_s: float, baseline: float | None, warmup_s: float
) -> float | None:
    """Largest windowed p99 TTFT before the first fault (see the module docstring)."""
    if timeline is not None and len(timeline) > 1:
        starts = timeline["bin_start_s"].to_numpy(dtype=float)
        bin_s = float(starts[1] - starts[0])
        before = (starts >= warmup_s) & (starts + bin_s <= first_fault_s)
        p99 = timeline["ttft_p99_s"].to_numpy(dtype=float)[before]
        p99 = p99[np.isfinite(p99)]
        if len(p99):
            return float(p99.max())
    return None if baseline is None else RECOVERY_TOLERANCE * baseline


def recover_s(
    timeline: pd.DataFrame | None, start_s: float, threshold: float | None, warmup_s: float
) -> float | None:
    """Seconds from `start_s` until windowed p99 TTFT is back under `threshold` for good."""
    if timeline is None or threshold is None or timeline.empty:
        return None
    bin_s = (
        float(timeline["bin_start_s"].iloc[1] - timeline["bin_start_s"].iloc[0])
        if len(timeline) > 1
        else 0.0
    )
    rows = timeline[
        (timeline["bin_start_s"] + bin_s > start_s)
        & (timeline["bin_start_s"] >= warmup_s)
        & (timeline["arrivals"] > 0)
    ]
    if rows.empty:
        return None
    p99 = rows["ttft_p99_s"].to_numpy(dtype=float)
    bad = ~(p99 <= threshold)  # NaN: none of the arrivals completed
    if not bad.any():
        return 0.0
    last_bad = int(np.flatnonzero(bad)[-1])
    if last_bad == len(rows) - 1:
        return None
    return max(0.0, float(rows["bin_start_s"].iloc[last_bad + 1]) - start_s)


def _share(mask: np.ndarray) -> float | None:
    return float(mask.mean()) if len(mask) else None
