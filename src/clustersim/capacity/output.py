"""A capacity search's files: capacity.csv / .parquet (latency against rate), capacity.json
(the result) and capacity.png (latency against rate, the knee marked)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from clustersim.capacity.search import Capacity, Probe
from clustersim.config.schema import SLOSpec
from clustersim.metrics.replicates import lookup
from clustersim.results.plots import BOUND_STYLE, save_png
from clustersim.results.writer import write_json, write_sweep_table

# capacity.csv columns from a probe's pooled summary: (column, key path)
PROBE_COLUMNS: tuple[tuple[str, tuple[str, str]], ...] = (
    ("ttft_mean_s", ("ttft_s", "mean")),
    ("ttft_p99_s", ("ttft_s", "p99")),
    ("tpot_p99_s", ("tpot_s", "p99")),
    ("queue_mean_s", ("queue_s", "mean")),
    ("slo_attainment", ("slo", "attainment")),
    ("goodput_rps", ("slo", "goodput_rps")),
)
PLOTTED = (("ttft_p99_s", "p99 TTFT"), ("ttft_mean_s", "mean TTFT"), ("queue_mean_s", "mean wait"))


def probe_row(probe: Probe) -> dict[str, Any]:
    """One capacity.csv row: rate, verdict, reasons, and each PROBE_COLUMNS value with the
    replicates' 95 % interval (`_ci_lo`, `_ci_hi`; empty for a single run)."""
    s = probe.summary
    row: dict[str, Any] = {
        "rate_rps": probe.rate_rps,
        "passed": probe.passed,
        "reasons": " ".join(probe.reasons),
        "stable": lookup(s, ("stability", "stable")),
        "replicates": int(lookup(s, ("replicates", "n")) or 1),
    }
    for column, path in PROBE_COLUMNS:
        row[column] = lookup(s, path)
        ci = lookup(s, ("replicates", *path, "ci95")) or (None, None)
        row[f"{column}_ci_lo"], row[f"{column}_ci_hi"] = ci[0], ci[1]
    return row


def result_dict(cap: Capacity, slo: SLOSpec) -> dict[str, Any]:
    """capacity.json: the knee, its bracket and tolerance, the SLO test, every probe."""
    return {
        "capacity_rps": cap.capacity_rps,
        "knee_rps": cap.knee_rps,
        "bracket_rps": [cap.lo, cap.hi],
        "half_width": cap.half_width,
        "rel_tol": cap.rel_tol,
        "converged": cap.converged,
        "slo": slo.model_dump(),
        "probes": [probe_row(p) for p in cap.probes],
    }


def plot_capacity(cap: Capacity, slo: SLOSpec) -> Figure:
    """Latency against arrival rate (error bars: replicates' 95 % CI), the bounds dashed, the
    knee bracket shaded and the capacity marked; failed probes hollow."""
    fig = Figure(figsize=(9.0, 4.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    table = pd.DataFrame([probe_row(p) for p in cap.probes])
    rates = table["rate_rps"].to_numpy(dtype=float)
    passed = table["passed"].to_numpy(dtype=bool)
    for i, (column, label) in enumerate(PLOTTED):
        y = pd.to_numeric(table[column], errors="coerce").to_numpy(dtype=float)
        if not np.isfinite(y).any():
            continue
        lo = pd.to_numeric(table[f"{column}_ci_lo"], errors="coerce").to_numpy(dtype=float)
        hi = pd.to_numeric(table[f"{column}_ci_hi"], errors="coerce").to_numpy(dtype=float)
        err = np.vstack([np.nan_to_num(y - lo), np.nan_to_num(hi - y)]).clip(0.0)
        color = f"C{i}"
        ax.errorbar(rates, y, yerr=err, color=color, marker=None, capsize=3, label=label)
        ax.scatter(rates[passed], y[passed], color=color, zorder=3)
        ax.scatter(rates[~passed], y[~passed], facecolors="white", edgecolors=color, zorder=3)
    for bound, label in ((slo.ttft_p99_s, "TTFT p99 bound"), (slo.ttft_mean_s, "mean TTFT bound"),
                         (slo.queue_mean_s, "mean wait bound")):  # fmt: skip
        if bound is not None:
            ax.axhline(bound, **BOUND_STYLE)
            ax.annotate(label, (rates.min(), bound), fontsize=7, color="crimson", va="bottom")
    if cap.lo is not None and cap.hi is not None:
        ax.axvspan(cap.lo, cap.hi, color="0.85", zorder=0, label="knee bracket")
    if cap.capacity_rps is not None:
        ax.axvline(cap.capacity_rps, color="k", linewidth=1.2, label="capacity")
    positive = table[[c for c, _ in PLOTTED]].to_numpy(dtype=float)
    if np.isfinite(positive).any() and np.nanmin(positive) > 0:
        ax.set_yscale("log")
    ax.set_xlabel("arrival rate (req/s)")
    ax.set_ylabel("latency (s)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    knee = "–" if cap.capacity_rps is None else f"{cap.capacity_rps:.4g} req/s"
    ax.set_title(f"Capacity under the SLO: {knee} (hollow: probe missed the SLO)")
    return fig


def write_capacity(out_dir: Path, cap: Capacity, slo: SLOSpec) -> dict[str, Path]:
    """capacity.csv, capacity.parquet, capacity.png, capacity.json (last) into `out_dir`."""
    rows: list[Mapping[str, Any]] = [probe_row(p) for p in cap.probes]
    write_sweep_table(out_dir, rows, stem="capacity")
    save_png(plot_capacity(cap, slo), out_dir / "capacity.png")
    write_json(out_dir / "capacity.json", result_dict(cap, slo))
    return {name: out_dir / name for name in ("capacity.csv", "capacity.png", "capacity.json")}
