"""Time-resolved metrics: the run's tables cut into fixed windows (pure functions, no I/O).

Window k covers simulated time [k·w, (k+1)·w) with w = `output.time_bin_s` seconds (the bin
width of links.parquet, so link bins and windows coincide). Windows run from t = 0 to the
window holding the last event of the run (arrival, finish, engine step end or link bin), so
every request with a finite `arrival_s` lies in exactly one window: k = floor(arrival_s / w).

Per window (docs/results.md, "timeline.parquet", is the user-facing copy):

- counts by **arrival window**: `arrivals`, `dropped`, and the latency / SLO columns describe the
  requests that *arrived* in the window (so a burst is charged with the latency it caused);
- counts by **event window**: `completions` (finish_s in the window);
- **time averages** over the window: `queue_len` (requests arrived but not yet scheduled; a
  request is queued during [arrival_s, arrival_s + queue_s)), `burst_fraction`;
- **engine steps** (iterations, stage 0 only, by the window their step *ends* in): `batch_seqs`
  (mean sequences per step), `kv_usage` / `kv_usage_max` (mean / max over those steps of the
  step's KV pool usage `kv_used_blocks / kv_capacity_blocks`); disaggregated runs add the
  same three per pool (`batch_seqs_prefill`, …, `kv_usage_max_decode`);
- **links**: `link_max_utilisation` (highest utilisation of any link in the window) and
  `busiest_link_utilisation` (utilisation of the run's busiest link, as summary.json names it).

The SLO target implied by p99 bounds is SLO_TARGET = 0.99: a window "burns" its error budget
at `slo_burn_rate = slo_violation_frac / (1 − SLO_TARGET)`; 1.0 spends the budget exactly as
fast as the p99 target allows, above 1 the window on its own misses the target.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from clustersim.config.schema import SLOSpec
from clustersim.metrics.group_reduce import first_appearance_codes, group_max, group_sums
from clustersim.metrics.summary import completed_mask, dropped_mask, link_summary, slo_mask
from clustersim.metrics.table import Table, as_table, floats
from clustersim.metrics.time_bins import (
    burst_intervals,
    fraction,
    occupancy,
    per_window_means,
    per_window_percentiles,
    per_window_reduce,
    run_end_s,
    window_count,
    window_counts,
    window_index,
)
from clustersim.workload.arrivals import StateTimeline

if TYPE_CHECKING:
    import pandas as pd

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

SLO_TARGET = 0.99  # fraction of requests that must meet each bound (the bounds are p99s)

TIMELINE_COLUMNS = (
    "bin_start_s",  # s, window start k·w
    "measured",  # bool, bin_start_s >= horizon.warmup_s
    "arrivals",  # requests arriving in the window
    "arrival_rate_rps",  # arrivals / w
    "completions",  # requests finishing in the window
    "dropped",  # requests arriving in the window that were dropped
    "queue_len",  # requests, time-average over the window
    "batch_seqs",  # sequences per stage-0 engine step (mean over steps ending in the window)
    "kv_usage",  # fraction, mean KV pool usage over those steps
    "kv_usage_max",  # fraction, max over those steps
    "ttft_p50_s",  # s, of the completed requests arriving in the window
    "ttft_p99_s",
    "tpot_p50_s",
    "tpot_p99_s",
    "slo_attainment",  # fraction of arrivals meeting every bound (dropped / unfinished fail)
    "slo_violation_frac",  # 1 − slo_attainment
    "slo_burn_rate",  # slo_violation_frac / (1 − SLO_TARGET)
    "ttft_violation_frac",  # fraction of arrivals missing the TTFT bound (null: bound unset)
    "tpot_violation_frac",
    "e2e_violation_frac",
    "link_max_utilisation",  # fraction, any link
    "busiest_link_utilisation",  # fraction, the run's busiest link
    "burst_fraction",  # fraction of the window in an MMPP burst state (null: no MMPP)
)
_COUNT_COLUMNS = frozenset({"arrivals", "completions", "dropped"})


# --------------------------------------------------------------------------- the table


def timeline_table(
    requests: Table | pd.DataFrame,
    iterations: Table | pd.DataFrame | None,
    links: Table | pd.DataFrame | None,
    bin_s: float,
    slo: SLOSpec,
    warmup_s: float = 0.0,
    phases: StateTimeline | None = None,
    link_bin_s: float | None = None,
) -> Table:
    """One row per window (TIMELINE_COLUMNS in order, then any per-pool step columns); see the
    module docstring.

    `bin_s`: window width (s); `link_bin_s`: bin width of the links table (s; default bin_s).

    Tolerates missing optional inputs: without iteration columns the step columns are NaN,
    without link rows the link columns are NaN (0 in windows of a run that did use links).
    """
    if not bin_s > 0:
        raise ValueError(f"bin_s must be > 0, got {bin_s}")
    req = as_table(requests)
    steps = None if iterations is None else as_table(iterations)
    link_rows = None if links is None else as_table(links)
    n = window_count(run_end_s(req, steps, link_rows), bin_s)
    cols: dict[str, npt.NDArray[np.generic]] = {}
    starts = np.arange(n, dtype=np.float64) * bin_s
    cols["bin_start_s"] = starts
    cols["measured"] = starts >= warmup_s
    cols.update(_request_columns(req, n, bin_s, slo))
    cols.update(_step_columns(steps, n, bin_s))
    cols.update(_link_columns(link_rows, n, bin_s, warmup_s, link_bin_s or bin_s))
    burst = np.full(n, np.nan)
    if phases is not None and n:
        b0, b1 = burst_intervals(phases)
        burst = np.clip(occupancy(b0, b1, n, bin_s), 0.0, 1.0)
    cols["burst_fraction"] = burst
    for name in _COUNT_COLUMNS:
        cols[name] = cols[name].astype(np.int64)
    cols["measured"] = cols["measured"].astype(bool)
    extra = [name for name in cols if name not in TIMELINE_COLUMNS]  # per-pool step columns
    return Table({name: cols[name] for name in (*TIMELINE_COLUMNS, *extra)})


def _request_columns(requests: Table, n: int, bin_s: float, slo: SLOSpec) -> dict[str, F64 | I64]:
    """Arrival / completion counts, queue length, latency percentiles and SLO fractions."""
    arrival = floats(requests, "arrival_s")
    idx = window_index(arrival, bin_s)
    done = completed_mask(requests)
    dropped = dropped_mask(requests)
    arrivals = window_counts(idx, n)
    cols: dict[str, F64 | I64] = {
        "arrivals": arrivals,
        "arrival_rate_rps": arrivals / bin_s,
        "completions": window_counts(window_index(floats(requests, "finish_s"), bin_s), n, done),
        "dropped": window_counts(idx, n, dropped),
        "queue_len": _queue_len(requests, arrival, dropped, n, bin_s),
    }
    for metric in ("ttft", "tpot"):
        x = np.where(done, floats(requests, f"{metric}_s"), np.nan)
        p50, p99 = per_window_percentiles(idx, x, n, (50.0, 99.0))
        cols[f"{metric}_p50_s"], cols[f"{metric}_p99_s"] = p50, p99
    attained = window_counts(idx, n, slo_mask(requests, done, slo))
    attainment = fraction(attained, arrivals)
    cols["slo_attainment"] = attainment
    cols["slo_violation_frac"] = 1.0 - attainment
    cols["slo_burn_rate"] = (1.0 - attainment) / (1.0 - SLO_TARGET)
    bounds = {
        "ttft": SLOSpec(ttft_p99_s=slo.ttft_p99_s),
        "tpot": SLOSpec(tpot_p99_s=slo.tpot_p99_s),
        "e2e": SLOSpec(e2e_p99_s=slo.e2e_p99_s),
    }
    for metric, one_bound in bounds.items():
        if getattr(one_bound, f"{metric}_p99_s") is None:
            cols[f"{metric}_violation_frac"] = np.full(n, np.nan)
            continue
        met = window_counts(idx, n, slo_mask(requests, done, one_bound))
        cols[f"{metric}_violation_frac"] = 1.0 - fraction(met, arrivals)
    return cols


def _queue_len(
    requests: Table, arrival: F64, dropped: npt.NDArray[np.bool_], n: int, bin_s: float
) -> F64:
    """Time-average of requests waiting to be scheduled (arrived, not dropped, not started).

    A request never scheduled (queue_s NaN, not dropped) waits until the end of the last window.
    """
    queue = floats(requests, "queue_s")
    waiting = np.isfinite(arrival) & ~dropped
    start = arrival[waiting]
    end = start + queue[waiting]
    end = np.where(np.isfinite(end), np.maximum(end, start), n * bin_s)
    return occupancy(start, end, n, bin_s)


STEP_COLUMNS = ("batch_seqs", "kv_usage", "kv_usage_max")


def _step_columns(iterations: Table | None, n: int, bin_s: float) -> dict[str, F64]:
    """batch_seqs, kv_usage, kv_usage_max from the stage-0 engine steps ending in each window.

    Disaggregated runs (a `pool` column) also get the same three per pool, suffixed
    `_prefill` / `_decode`; the unsuffixed columns then average over both pools' steps."""
    need = {"stage", "end_s", "num_seqs", "kv_used_blocks", "kv_capacity_blocks"}
    if iterations is None or len(iterations) == 0 or not need <= set(iterations.columns):
        return {k: np.full(n, np.nan) for k in STEP_COLUMNS}
    steps = iterations.select(floats(iterations, "stage") == 0)
    columns = _step_stats(steps, n, bin_s)
    if "pool" in steps:
        for pool in ("prefill", "decode"):
            stats = _step_stats(steps.select(steps["pool"] == pool), n, bin_s)
            columns.update({f"{k}_{pool}": v for k, v in stats.items()})
    return columns


def _step_stats(steps: Table, n: int, bin_s: float) -> dict[str, F64]:
    idx = window_index(floats(steps, "end_s"), bin_s)
    cap = floats(steps, "kv_capacity_blocks")
    with np.errstate(invalid="ignore", divide="ignore"):
        usage = np.where(cap > 0, floats(steps, "kv_used_blocks") / cap, np.nan)
    batch_seqs, kv_usage = per_window_means(idx, [floats(steps, "num_seqs"), usage], n)
    return {
        "batch_seqs": batch_seqs,
        "kv_usage": kv_usage,
        "kv_usage_max": per_window_reduce(idx, usage, n, "max"),
    }


def _link_columns(
    links: Table | None, n: int, bin_s: float, warmup_s: float, link_bin_s: float
) -> dict[str, F64]:
    """Per window: the highest utilisation of any link, and the run's busiest link's.

    A link's utilisation in a window is the mean over the link bins starting in it (a missing
    bin is 0): Σ utilisation × link_bin_s / bin_s, so windows may be coarser than link bins.
    The sums are pandas' `groupby(["window", "link"], sort=False).sum()` (group_reduce.py).
    """
    if links is None or len(links) == 0:
        return {k: np.full(n, np.nan) for k in ("link_max_utilisation", "busiest_link_utilisation")}
    # + 1e-9: a bin start of k·w computed as k·w − ε still lands in window k
    idx = np.floor(floats(links, "bin_start_s") / bin_s + 1e-9)
    weighted = floats(links, "utilisation") * (link_bin_s / bin_s)
    names = np.asarray(links["link"], dtype=object)
    if not set(map(type, names)) <= {str}:  # (the simulator's tables hold str already)
        names = np.asarray([str(name) for name in names], dtype=object)
    keep = (idx >= 0) & (idx < n) & np.isfinite(weighted)
    window = idx[keep].astype(np.int64)
    names = names[keep]
    link_codes, link_first = first_appearance_codes(names)
    cell_codes, cell_first = first_appearance_codes(window * len(link_first) + link_codes)
    sums, _ = group_sums(cell_codes, weighted[keep], len(cell_first))
    cell_window = window[cell_first]
    peak = np.zeros(n)
    if len(sums):
        per_window = group_max(cell_window, sums, n)
        has = ~np.isnan(per_window)
        peak[has] = per_window[has]
    busiest = link_summary(links, warmup_s)["busiest"]
    if busiest is None:  # no measured bin: rank links over the whole run
        busiest = link_summary(links, -math.inf)["busiest"]
    series = np.zeros(n)
    mine = names[cell_first] == str(busiest)
    series[cell_window[mine]] = sums[mine]
    return {"link_max_utilisation": peak, "busiest_link_utilisation": series}


# --------------------------------------------------------------------------- summaries


def window_slo_summary(timeline: Table | pd.DataFrame | None) -> dict[str, float | int | None]:
    """The summary.json `slo.*` window keys from a timeline table.

    Over the measured windows with at least one arrival:
    - `worst_window_attainment`: the lowest `slo_attainment` (None when there is no window);
    - `worst_window_start_s`: that window's start, s; on ties the window with the most arrivals
      (the most requests missing the SLO), then the earliest (`worst_windows` order);
    - `windows_violating`: how many have `slo_attainment < SLO_TARGET`, i.e. more than 1 % of
      the requests that arrived in that window missed a bound, were dropped or never finished
      (with 1–99 arrivals a single miss is enough).
    """
    empty: dict[str, float | int | None] = {
        "worst_window_attainment": None,
        "worst_window_start_s": None,
        "windows_violating": 0 if timeline is not None else None,
    }
    if timeline is None or len(timeline) == 0:
        return empty
    rows = worst_windows(as_table(timeline))
    if len(rows) == 0:
        return empty
    att = floats(rows, "slo_attainment")
    return {
        "worst_window_attainment": float(att[0]),
        "worst_window_start_s": float(floats(rows, "bin_start_s")[0]),
        "windows_violating": int((att < SLO_TARGET - 1e-12).sum()),
    }


def worst_windows(timeline: Table | pd.DataFrame) -> Table:
    """Measured windows with arrivals, worst first: lowest `slo_attainment`, then most
    arrivals, then earliest (a stable sort: equal rows keep their order)."""
    table = as_table(timeline)
    attainment = floats(table, "slo_attainment")
    rows = table.select(
        np.asarray(table["measured"], dtype=bool)
        & (floats(table, "arrivals") > 0)
        & np.isfinite(attainment)
    )
    order = np.lexsort(
        (floats(rows, "bin_start_s"), -floats(rows, "arrivals"), floats(rows, "slo_attainment"))
    )
    return rows.select(order)
