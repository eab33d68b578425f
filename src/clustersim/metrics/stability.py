"""Stability verdict: does the queue (or KV use) trend upward across the measured window?

A run whose offered load exceeds its capacity never reaches a steady state: its queue grows
for as long as arrivals continue, and its latency quantiles grow with the horizon. The verdict
(summary.json `stability`, docs/results.md):

1. Series: the timeline windows (metrics/timeline.py) lying wholly inside the measured window
   [start, end): `queue_len` (time-average requests waiting, requests) and `kv_usage` (mean
   KV-cache fraction).
2. Batch means: the windows are cut into B = min(BATCHES, windows) consecutive batches of
   (nearly) equal size and each batch is averaged, which damps the strong autocorrelation of
   queue lengths in neighbouring windows.
3. Least squares of the batch means on the batch mid-times gives the slope b (per second) and
   its standard error; t = b / SE with B − 2 degrees of freedom.
4. A series trends upward when t > t(0.975, B − 2) (b is positive at 97.5 % one-sided
   confidence) **and** the fitted rise across the window, b × width, exceeds the series'
   material threshold (QUEUE_RISE requests, KV_RISE of the KV cache): a statistically clear
   but tiny drift is not instability.
5. `stable` is false when either series trends upward; null when fewer than MIN_BATCHES
   windows lie in the window (too short to tell). An unstable run's latency quantiles depend
   on the horizon (`latency_quantiles: horizon-dependent`).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from clustersim.metrics.replicates import t975
from clustersim.metrics.table import Table, as_table, floats

if TYPE_CHECKING:
    import pandas as pd

BATCHES = 10  # batch means per series
MIN_BATCHES = 4  # fewer windows than this: no verdict
QUEUE_RISE = 1.0  # requests: the smallest queue growth across the window that counts
KV_RISE = 0.05  # fraction of the KV cache: the smallest KV growth that counts
SERIES = (("queue", "queue_len", QUEUE_RISE), ("kv", "kv_usage", KV_RISE))
METHOD = (
    "least-squares slope of batch means over the measured window; upward trend when "
    "t > t(0.975, B-2) and the fitted rise exceeds the threshold"
)


def trend(times: np.ndarray, values: np.ndarray, batches: int = BATCHES) -> dict[str, Any]:
    """Slope (per s), its t statistic and the batches used, of `values` sampled at `times`
    (s), via batch means; nulls when there are fewer than MIN_BATCHES finite samples."""
    ok = np.isfinite(times) & np.isfinite(values)
    times, values = times[ok], values[ok]
    empty = {"slope_per_s": None, "t_stat": None, "batches": 0, "mean": None}
    if len(values) < MIN_BATCHES:
        return empty
    b = min(batches, len(values))
    parts = np.array_split(np.arange(len(values)), b)
    x = np.array([times[p].mean() for p in parts])
    y = np.array([values[p].mean() for p in parts])
    xc = x - x.mean()
    sxx = float((xc**2).sum())
    slope = float((xc * (y - y.mean())).sum() / sxx)
    resid = y - y.mean() - slope * xc
    se = math.sqrt(float((resid**2).sum()) / (b - 2) / sxx)
    if se > 0:
        t_stat: float | None = slope / se
    else:
        t_stat = None if slope == 0 else math.copysign(math.inf, slope)
    return {"slope_per_s": slope, "t_stat": t_stat, "batches": b, "mean": float(values.mean())}


def rising(fit: dict[str, Any], width_s: float, threshold: float) -> bool:
    """The fit's slope is significantly positive and its rise across `width_s` is material."""
    slope, t_stat = fit["slope_per_s"], fit["t_stat"]
    if slope is None or t_stat is None or fit["batches"] < MIN_BATCHES:
        return False
    return t_stat > t975(fit["batches"] - 2) and slope * width_s > threshold


def stability_summary(
    timeline: Table | pd.DataFrame | None,
    start_s: float | None,
    end_s: float | None,
    bin_s: float,
) -> dict[str, Any]:
    """summary.json `stability`: stable (bool or None), per series the trend, the method."""
    block: dict[str, Any] = {"stable": None, "latency_quantiles": "unknown", "method": METHOD}
    if timeline is None or len(timeline) == 0 or start_s is None or end_s is None:
        return block
    table = as_table(timeline)
    starts = floats(table, "bin_start_s")
    inside = (starts >= start_s - 1e-9) & (starts + bin_s <= end_s + 1e-9)
    mids = starts[inside] + 0.5 * bin_s
    width = float(end_s - start_s)
    verdicts: list[bool] = []
    for name, column, threshold in SERIES:
        if column not in table:
            continue
        fit = trend(mids, floats(table, column)[inside])
        up = rising(fit, width, threshold)
        block[name] = {**fit, "rise": None if fit["slope_per_s"] is None
                       else fit["slope_per_s"] * width, "rising": up}  # fmt: skip
        if fit["slope_per_s"] is not None:
            verdicts.append(up)
    if verdicts:
        block["stable"] = not any(verdicts)
        block["latency_quantiles"] = "steady-state" if block["stable"] else "horizon-dependent"
    return block


def pooled_stability(blocks: list[dict[str, Any]]) -> dict[str, Any]:
    """Replicates' verdicts together: unstable if any replicate is, stable if every one is
    (null if none could tell); `unstable_replicates` lists the unstable ones by index."""
    verdicts = [b.get("stable") for b in blocks]
    unstable = [k for k, v in enumerate(verdicts) if v is False]
    known = [v for v in verdicts if v is not None]
    stable = None if not known else not unstable
    return {
        "stable": stable,
        "latency_quantiles": "unknown"
        if stable is None
        else ("steady-state" if stable else "horizon-dependent"),
        "method": METHOD + "; pooled: unstable when any replicate is",
        "unstable_replicates": unstable,
    }
