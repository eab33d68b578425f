"""Fixed time windows of width w: window k covers [k·w, (k+1)·w) (metrics/timeline.py).

Indices and counts of windows, time averages over them (occupancy of intervals) and
per-window reductions of per-request or per-step values. Pure numpy, no I/O.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from clustersim.metrics.group_reduce import (
    group_max,
    group_means,
    group_means_of_columns,
    group_quantiles,
    group_sums,
)
from clustersim.metrics.table import Table, as_table, floats
from clustersim.workload.arrivals import StateTimeline

if TYPE_CHECKING:
    import pandas as pd

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


# --------------------------------------------------------------------------- windows


def window_index(times_s: npt.ArrayLike, bin_s: float) -> I64:
    """Window of each time: floor(t / bin_s); −1 for NaN / ±inf times."""
    t = np.asarray(times_s, dtype=np.float64)
    finite = np.isfinite(t)
    if finite.all():  # (one quotient array, floored in place)
        quotient = t / bin_s
        return np.floor(quotient, out=quotient).astype(np.int64)
    idx = np.full(t.shape, -1, dtype=np.int64)
    idx[finite] = np.floor(t[finite] / bin_s).astype(np.int64)
    return idx


def window_count(end_s: float, bin_s: float) -> int:
    """Windows needed to hold time `end_s` (s): floor(end_s / bin_s) + 1; 0 if end_s < 0."""
    if not math.isfinite(end_s) or end_s < 0:
        return 0
    return math.floor(end_s / bin_s) + 1


def _max_finite(*arrays: npt.ArrayLike) -> float:
    """Largest finite value over all arrays; −inf when there is none."""
    best = -math.inf
    for a in arrays:
        x = np.asarray(a, dtype=np.float64)
        x = x[np.isfinite(x)]
        if len(x):
            best = max(best, float(x.max()))
    return best


def _column(df: Table | pd.DataFrame | None, name: str) -> F64:
    """`name` of `df` as float64; empty when the table or the column is missing."""
    if df is None:
        return np.empty(0, dtype=np.float64)
    table = as_table(df)
    if name not in table:
        return np.empty(0, dtype=np.float64)
    return floats(table, name)


def run_end_s(
    requests: Table | pd.DataFrame,
    iterations: Table | pd.DataFrame | None,
    links: Table | pd.DataFrame | None,
) -> float:
    """Time of the run's last event (s): arrival, finish, step end or link-bin start."""
    return _max_finite(
        _column(requests, "arrival_s"),
        _column(requests, "finish_s"),
        _column(iterations, "end_s"),
        _column(links, "bin_start_s"),
    )


# --------------------------------------------------------------------------- time averages


def _ramp_sums(points_s: F64, at_s: F64) -> F64:
    """Σ_i max(0, t − x_i) for each t in `at_s` (s·count), x = `points_s` (any order)."""
    x = np.sort(points_s)
    csum = np.concatenate(([0.0], np.cumsum(x)))
    k = np.searchsorted(x, at_s, side="left")  # points strictly below t
    return k * at_s - csum[k]


def occupancy(starts_s: F64, ends_s: F64, n: int, bin_s: float) -> F64:
    """Time-average number of open intervals [start, end) per window (float64[n]).

    Exact: with F(t) = Σ_i |[start_i, end_i) ∩ [0, t)| = Σ max(0, t − start) − Σ max(0, t − end),
    window k averages (F((k+1)·w) − F(k·w)) / w. Needs end_i >= start_i.
    """
    edges = np.arange(n + 1, dtype=np.float64) * bin_s
    integral = _ramp_sums(starts_s, edges) - _ramp_sums(ends_s, edges)
    return np.diff(integral) / bin_s


def burst_intervals(phases: StateTimeline) -> tuple[F64, F64]:
    """(start, end) seconds of the MMPP segments spent in a burst state.

    A burst state is one whose rate exceeds the realised time-average rate of the timeline
    (Σ rate·duration / Σ duration); for a calm/burst pair that is the burst state.
    """
    starts = np.asarray(phases.start_s, dtype=np.float64)
    ends = np.concatenate((starts[1:], [phases.end_s]))
    rates = phases.segment_rate_rps
    durations = np.maximum(ends - starts, 0.0)
    total = float(durations.sum())
    if not total > 0:
        return np.empty(0), np.empty(0)
    mean_rate = float((rates * durations).sum()) / total
    burst = rates > mean_rate
    return starts[burst], ends[burst]


# --------------------------------------------------------------------------- grouping


def per_window_percentiles(idx: I64, x: F64, n: int, qs: tuple[float, ...]) -> list[F64]:
    """For each q of `qs`, the q-th percentile ('linear', pandas' group arithmetic:
    metrics/group_reduce.py) of x per window, the windows' values sorted once; NaN where
    the window has no value."""
    keep = (idx >= 0) & (idx < n) & np.isfinite(x)
    if not keep.any():
        return [np.full(n, np.nan) for _ in qs]
    codes, kept = _rows_kept(keep, idx, x)
    return group_quantiles(codes, kept, n, tuple(q / 100.0 for q in qs))


def per_window_reduce(idx: I64, x: F64, n: int, how: str) -> F64:
    """mean / max / sum of x per window (pandas' group arithmetic: metrics/group_reduce.py);
    NaN where the window has no value."""
    keep = (idx >= 0) & (idx < n) & np.isfinite(x)
    if not keep.any():
        return np.full(n, np.nan)
    codes, kept = _rows_kept(keep, idx, x)
    if how == "mean":
        return group_means(codes, kept, n)
    if how == "max":
        return group_max(codes, kept, n)
    if how == "sum":
        sums, counts = group_sums(codes, kept, n)
        return np.where(counts > 0, sums, np.nan)
    raise ValueError(f"how must be mean, max or sum, got {how!r}")


def per_window_means(idx: I64, columns: list[F64], n: int) -> list[F64]:
    """`per_window_reduce(idx, x, n, "mean")` of each column x, the same bits; columns kept
    on the same rows are summed in one pass (group_reduce.group_means_of_columns)."""
    keeps = [(idx >= 0) & (idx < n) & np.isfinite(x) for x in columns]
    if len(columns) < 2 or not all(np.array_equal(keeps[0], k) for k in keeps[1:]):
        return [per_window_reduce(idx, x, n, "mean") for x in columns]
    if not keeps[0].any():
        return [np.full(n, np.nan) for _ in columns]
    codes, *kept = _rows_kept(keeps[0], idx, *columns)
    return group_means_of_columns(codes, kept, n)


def _rows_kept(keep: npt.NDArray[np.bool_], *arrays: npt.NDArray[Any]) -> list[npt.NDArray[Any]]:
    """`arrays` at the rows where `keep`; the arrays themselves when every row is kept (no
    copies: the group reductions read them, never write them)."""
    if keep.all():
        return list(arrays)
    return [a[keep] for a in arrays]


def window_counts(idx: I64, n: int, weights: npt.NDArray[np.bool_] | None = None) -> I64:
    """How many of the indexed items (where `weights`) fall in each of n windows."""
    keep = (idx >= 0) & (idx < n)
    if weights is not None:
        keep &= weights
    return np.bincount(idx[keep], minlength=n)[:n].astype(np.int64)


def fraction(numer: I64 | F64, denom: I64) -> F64:
    """numer / denom per window; NaN where denom == 0."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, np.asarray(numer, dtype=np.float64) / denom, np.nan)
