"""PNG plots of a run, a comparison and a sweep (matplotlib, Agg canvas, no pyplot state).

Every figure has a fixed size in inches and is saved at DPI without tight bounding boxes, so
a plot's pixel size is fixed: PLOT_SIZES_PX[name] = (width, height). Figures are built from
plain tables (requests, timeline, links, experts, sweep) and returned; `save_png` writes one
atomically. What each plot shows and how to read it: docs/reports.md.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import pandas as pd

if TYPE_CHECKING:  # matplotlib is imported when a plot is drawn: `validate` and runs without
    from matplotlib.axes import Axes  # plots start ~1 s faster
    from matplotlib.figure import Figure

from clustersim.config.sweep import value_texts
from clustersim.results.writer import atomic_write

F64 = npt.NDArray[np.float64]

DPI = 100  # pixels per inch of every saved PNG
# inches (width, height) of each plot; pixels = inches × DPI
PLOT_SIZES_IN: dict[str, tuple[float, float]] = {
    "latency_cdf": (11.0, 4.0),
    "latency_timeline": (11.0, 8.0),
    "queue_kv": (11.0, 5.5),
    "link_heatmap": (11.0, 5.0),
    "expert_heatmap": (11.0, 6.0),
    "sweep": (11.0, 6.5),
    "ttft_overview": (9.0, 3.6),
}
# figure-fraction margins and gaps of each plot (fixed layout: cheaper than constrained layout)
PLOT_MARGINS: dict[str, dict[str, float]] = {
    "latency_cdf": {"left": 0.06, "right": 0.98, "top": 0.91, "bottom": 0.13, "wspace": 0.2},
    "latency_timeline": {"left": 0.07, "right": 0.93, "top": 0.9, "bottom": 0.07, "hspace": 0.42},
    "queue_kv": {"left": 0.07, "right": 0.93, "top": 0.86, "bottom": 0.1, "hspace": 0.42},
    "link_heatmap": {"left": 0.12, "right": 0.99, "top": 0.92, "bottom": 0.1},
    "expert_heatmap": {"left": 0.08, "right": 0.99, "top": 0.93, "bottom": 0.09, "hspace": 0.12},
    "sweep": {
        "left": 0.06,
        "right": 0.98,
        "top": 0.9,
        "bottom": 0.13,
        "wspace": 0.3,
        "hspace": 0.55,
    },
    "ttft_overview": {"left": 0.08, "right": 0.92, "top": 0.8, "bottom": 0.14},
}
PLOT_SIZES_PX: dict[str, tuple[int, int]] = {
    name: (round(w * DPI), round(h * DPI)) for name, (w, h) in PLOT_SIZES_IN.items()
}
TOP_LINKS = 16  # the link heatmap shows at most this many links (the busiest by mean)
LOG_SPAN = 100.0  # a latency axis turns logarithmic when max / min of its data exceeds this
BURST_RGB = (1.0, 0.55, 0.0)  # shading of MMPP burst windows (alpha = 0.3 × burst_fraction)
BOUND_STYLE: dict[str, Any] = {"color": "crimson", "linestyle": "--", "linewidth": 1.2}
RATE_COLOR = "0.45"  # arrival-rate curve on the second axis


@dataclass(frozen=True)
class Series:
    """One run's tables for an overlay plot: a legend label and what the plot reads."""

    label: str
    requests: pd.DataFrame | None = None
    timeline: pd.DataFrame | None = None


@dataclass(frozen=True)
class Bounds:
    """SLO bounds (s; None: unset) and the warm-up excluded from statistics (s)."""

    ttft_s: float | None = None
    tpot_s: float | None = None
    warmup_s: float = 0.0


# --------------------------------------------------------------------------- saving


def new_figure(name: str) -> Figure:
    """A blank Agg-backed figure of the fixed size of plot `name`."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=PLOT_SIZES_IN[name], dpi=DPI)
    FigureCanvasAgg(fig)
    fig.subplots_adjust(**PLOT_MARGINS[name])
    return fig


def png_bytes(fig: Figure) -> bytes:
    """The figure as PNG bytes at DPI (no tight bbox: the size stays fixed)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


def save_png(fig: Figure, path: Path) -> bytes:
    """Atomically write the figure to `path`; returns the PNG bytes."""
    data = png_bytes(fig)
    atomic_write(Path(path), lambda f: f.write(data))
    return data


# --------------------------------------------------------------------------- helpers


def _finite(x: npt.ArrayLike) -> F64:
    a = np.asarray(x, dtype=np.float64)
    return a[np.isfinite(a)]


def _maybe_log(ax: Axes, values: Sequence[F64], axis: str) -> None:
    """Logarithmic `axis` ('x' or 'y') when the positive data span more than LOG_SPAN."""
    pos = np.concatenate([v[v > 0] for v in values]) if values else np.empty(0)
    if len(pos) and pos.max() / pos.min() > LOG_SPAN:
        (ax.set_xscale if axis == "x" else ax.set_yscale)("log")


def _measured(requests: pd.DataFrame, warmup_s: float) -> pd.DataFrame:
    """Completed requests that arrived at or after warm-up (what latency statistics use)."""
    arrival = requests["arrival_s"].to_numpy(dtype=np.float64)
    done = np.isfinite(requests["finish_s"].to_numpy(dtype=np.float64))
    if "dropped" in requests.columns:
        done &= ~requests["dropped"].fillna(False).to_numpy(dtype=bool)
    return requests.loc[(arrival >= warmup_s) & done]


def _colors(n: int) -> list[str]:
    return [f"C{i % 10}" for i in range(n)]


def _bin_width(timeline: pd.DataFrame) -> float:
    """Window width (s) of a timeline table: the step of its bin_start_s (1.0 if one row)."""
    starts = timeline["bin_start_s"].to_numpy(dtype=np.float64)
    return float(np.median(np.diff(starts))) if len(starts) > 1 else 1.0


def _centres(timeline: pd.DataFrame) -> F64:
    """Window mid-points (s)."""
    return timeline["bin_start_s"].to_numpy(dtype=np.float64) + _bin_width(timeline) / 2


def shade_bursts(ax: Axes, timeline: pd.DataFrame) -> bool:
    """Shade windows by their MMPP burst fraction (alpha ∝ fraction); True if any shaded."""
    if "burst_fraction" not in timeline.columns:
        return False
    frac = timeline["burst_fraction"].to_numpy(dtype=np.float64)
    hot = np.isfinite(frac) & (frac > 0)
    if not hot.any():
        return False
    colors = [(*BURST_RGB, 0.3 * f) for f in frac[hot]]
    ax.bar(
        timeline["bin_start_s"].to_numpy(dtype=np.float64)[hot],
        1.0,
        width=_bin_width(timeline),
        bottom=0.0,
        align="edge",
        color=colors,
        linewidth=0,
        transform=ax.get_xaxis_transform(),
        zorder=0,
    )
    return True


def _shade_warmup(ax: Axes, warmup_s: float) -> None:
    if warmup_s > 0:
        ax.axvspan(0.0, warmup_s, color="0.85", alpha=0.5, zorder=0, linewidth=0)


def _rate_axis(ax: Axes, runs: Sequence[tuple[pd.DataFrame, str, str]]) -> Axes:
    """Arrival rates (requests/s) on one second y axis of `ax`: (timeline, colour, style)."""
    twin = ax.twinx()
    for timeline, color, style in runs:
        twin.step(
            _centres(timeline),
            timeline["arrival_rate_rps"].to_numpy(dtype=np.float64),
            where="mid",
            color=color,
            linestyle=style,
            linewidth=0.8,
            alpha=0.7,
        )
    twin.set_ylabel("arrivals (req/s)", color=RATE_COLOR)
    twin.set_ylim(bottom=0)
    return twin


LEGEND_CHARS_PER_INCH = 11.0  # legend text at fontsize 8, with its handle and spacing


def _legend_columns(labels: Sequence[str], width_in: float) -> int:
    """Most columns whose widest row of labels fits ~85 % of the figure width."""
    widths = sorted((len(label) + 6 for label in labels), reverse=True)  # characters
    capacity = 0.85 * width_in * LEGEND_CHARS_PER_INCH
    for ncol in range(len(widths), 1, -1):
        if sum(widths[:ncol]) <= capacity:
            return ncol
    return 1


def _legend_above(
    ax: Axes, handles: Sequence[Any] | None = None, labels: Sequence[str] | None = None
) -> None:
    """A legend just above the axes (outside the data area), as few rows as fit."""
    if handles is None or labels is None:
        handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(
            handles,
            labels,
            loc="lower left",
            bbox_to_anchor=(0.0, 1.0),
            ncol=_legend_columns(labels, ax.get_figure().get_figwidth()),  # type: ignore[union-attr]
            fontsize=8,
            frameon=False,
            borderaxespad=0.2,
        )


def _no_data(fig: Figure, text: str) -> Figure:
    ax = fig.add_subplot()
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes)
    ax.set_axis_off()
    return fig


# --------------------------------------------------------------------------- latency


CDF_BODY_POINTS = 2000  # a CDF draws at most this many points below its 95th percentile


def cdf_points(n: int) -> npt.NDArray[np.int64]:
    """Indices of a sorted sample of n to draw: ≤ CDF_BODY_POINTS evenly spread below the
    95th percentile, then every point of the tail (so p99 and the maximum are exact)."""
    tail = int(n * 0.95)
    body = np.unique(np.linspace(0, max(tail - 1, 0), min(tail, CDF_BODY_POINTS)).astype(np.int64))
    return np.concatenate((body, np.arange(tail, n, dtype=np.int64)))


def plot_latency_cdf(runs: Sequence[Series], bounds: Bounds) -> Figure:
    """TTFT and TPOT CDFs (completed, measured requests), one curve per run, SLO bounds."""
    fig = new_figure("latency_cdf")
    axes = fig.subplots(1, 2)
    for ax, metric, bound in zip(
        axes, ("ttft_s", "tpot_s"), (bounds.ttft_s, bounds.tpot_s), strict=True
    ):
        curves: list[F64] = []
        for run, color in zip(runs, _colors(len(runs)), strict=True):
            if run.requests is None:
                continue
            x = np.sort(_finite(_measured(run.requests, bounds.warmup_s)[metric]))
            if len(x) == 0:
                continue
            curves.append(x)
            y = np.arange(1, len(x) + 1) / len(x)
            keep = cdf_points(len(x))
            ax.step(x[keep], y[keep], where="post", color=color, label=f"{run.label} (n={len(x)})")
            p99 = float(np.percentile(x, 99.0, method="linear"))
            ax.plot([p99], [0.99], marker="o", color=color, markersize=4)
        _maybe_log(ax, curves, "x")
        ax.axhline(0.99, color="0.6", linewidth=0.8, linestyle=":")
        if bound is not None:
            ax.axvline(bound, **BOUND_STYLE, label=f"SLO bound {bound:g} s")
        name = "TTFT" if metric == "ttft_s" else "TPOT"
        ax.set_xlabel(f"{name} (s)")
        ax.set_ylabel("fraction of requests ≤ x")
        ax.set_ylim(0, 1.005)
        ax.set_title(f"{name} CDF (dot: p99)")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="lower right", fontsize=8)
    return fig


def plot_latency_timeline(
    runs: Sequence[Series], bounds: Bounds, worst_window_s: float | None = None
) -> Figure:
    """p99 TTFT / TPOT per arrival window against the arrival rate, and the SLO burn.

    One run: p50 and p99, arrival rate on a second axis, MMPP bursts shaded, the worst window
    outlined. Several runs: each run's p99 and arrival rate in its colour.
    """
    fig = new_figure("latency_timeline")
    axes = fig.subplots(3, 1, sharex=True)
    timelines = [
        (r, c) for r, c in zip(runs, _colors(len(runs)), strict=True) if r.timeline is not None
    ]
    if not timelines:
        return fig
    single = len(timelines) == 1
    first = timelines[0][0].timeline
    assert first is not None
    for ax in axes:
        _shade_warmup(ax, bounds.warmup_s)
        bursts = shade_bursts(ax, first)
        if worst_window_s is not None and single:
            ax.axvspan(
                worst_window_s,
                worst_window_s + _bin_width(first),
                fill=False,
                edgecolor="crimson",
                linewidth=1.0,
                zorder=1,
            )
    for ax, metric, bound, name in (
        (axes[0], "ttft", bounds.ttft_s, "TTFT"),
        (axes[1], "tpot", bounds.tpot_s, "TPOT"),
    ):
        plotted: list[F64] = []
        for run, color in timelines:
            tl = run.timeline
            assert tl is not None
            p99 = tl[f"{metric}_p99_s"].to_numpy(dtype=np.float64)
            ax.plot(
                _centres(tl),
                p99,
                color=color,
                linewidth=1.2,
                label=f"p99 {name}" if single else f"{run.label} p99",
            )
            plotted.append(_finite(p99))
            if single:
                p50 = tl[f"{metric}_p50_s"].to_numpy(dtype=np.float64)
                ax.plot(
                    _centres(tl), p50, color=color, linewidth=0.8, alpha=0.5, label=f"p50 {name}"
                )
                plotted.append(_finite(p50))
        if bound is not None:
            ax.axhline(bound, **BOUND_STYLE, label=f"bound {bound:g} s")
        _maybe_log(ax, plotted, "y")
        ax.set_ylabel(f"{name} (s), by arrival")
        ax.grid(alpha=0.3)
        twin = _rate_axis(
            ax,
            [
                (r.timeline, RATE_COLOR if single else c, "-" if single else ":")
                for r, c in timelines
                if r.timeline is not None
            ],
        )
        handles, labels = ax.get_legend_handles_labels()
        handles.append(twin.get_lines()[0])
        labels.append("arrival rate" if single else "arrival rates (dotted)")
        if bursts:
            from matplotlib.patches import Patch

            handles.append(Patch(color=(*BURST_RGB, 0.3)))
            labels.append("MMPP burst")
        _legend_above(ax, handles, labels)
    ax = axes[2]
    for run, color in timelines:
        tl = run.timeline
        assert tl is not None
        ax.step(
            _centres(tl),
            tl["slo_violation_frac"].to_numpy(dtype=np.float64),
            where="mid",
            color=color,
            linewidth=1.0,
            label=f"{run.label}" if not single else "all bounds",
        )
        if single:
            for column, style, label in (
                ("ttft_violation_frac", ":", "TTFT bound"),
                ("tpot_violation_frac", "--", "TPOT bound"),
            ):
                if column in tl.columns and np.isfinite(tl[column].to_numpy(np.float64)).any():
                    ax.step(
                        _centres(tl),
                        tl[column].to_numpy(dtype=np.float64),
                        where="mid",
                        color=color,
                        linewidth=0.8,
                        linestyle=style,
                        alpha=0.7,
                        label=label,
                    )
    ax.axhline(0.01, **BOUND_STYLE, label="1 % budget (burn rate 1)")
    ax.set_ylabel("requests missing SLO")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("simulated time (s); window = arrival window")
    ax.grid(alpha=0.3)
    _legend_above(ax)
    title = "Latency of the requests arriving in each window"
    if worst_window_s is not None and single:
        title += f" (red box: worst window, t = {worst_window_s:g} s)"
    fig.suptitle(title)
    return fig


def plot_ttft_overview(runs: Sequence[Series], bounds: Bounds) -> Figure:
    """One compact panel: each run's p99 TTFT per arrival window and its arrival rate; the
    windows where the first run misses the SLO target (attainment < 99 %) shaded red, MMPP
    bursts of the first run orange. Meant for READMEs and slides."""
    fig = new_figure("ttft_overview")
    ax = fig.add_subplot()
    timelines = [
        (r, c) for r, c in zip(runs, _colors(len(runs)), strict=True) if r.timeline is not None
    ]
    if not timelines:
        return _no_data(fig, "no timeline")
    first = timelines[0][0].timeline
    assert first is not None
    shade_bursts(ax, first)
    missed = first["slo_attainment"].to_numpy(dtype=np.float64) < 0.99
    missed &= first["measured"].to_numpy(dtype=bool)
    if missed.any():
        ax.bar(
            first["bin_start_s"].to_numpy(dtype=np.float64)[missed],
            1.0,
            width=_bin_width(first),
            align="edge",
            color=(0.86, 0.08, 0.24, 0.12),
            linewidth=0,
            zorder=0,
            transform=ax.get_xaxis_transform(),
        )
    plotted = []
    for run, color in timelines:
        tl = run.timeline
        assert tl is not None
        p99 = tl["ttft_p99_s"].to_numpy(dtype=np.float64)
        ax.plot(_centres(tl), p99, color=color, linewidth=1.2, label=f"{run.label}: p99 TTFT")
        plotted.append(_finite(p99))
    if bounds.ttft_s is not None:
        ax.axhline(bounds.ttft_s, **BOUND_STYLE, label=f"SLO bound {bounds.ttft_s:g} s")
    _maybe_log(ax, plotted, "y")
    ax.set_ylabel("p99 TTFT (s), by arrival window")
    ax.set_xlabel("simulated time (s)")
    ax.grid(alpha=0.3)
    twin = _rate_axis(ax, [(r.timeline, c, ":") for r, c in timelines if r.timeline is not None])
    handles, labels = ax.get_legend_handles_labels()
    handles.append(twin.get_lines()[0])
    labels.append("arrival rates (dotted)")
    if missed.any():
        from matplotlib.patches import Patch

        handles.append(Patch(color=(0.86, 0.08, 0.24, 0.12)))
        labels.append(f"{timelines[0][0].label} misses SLO")
    _legend_above(ax, handles, labels)
    return fig


# --------------------------------------------------------------------------- queue and KV


def plot_queue_kv(timeline: pd.DataFrame, warmup_s: float = 0.0) -> Figure:
    """Queue length and batch size (top), KV-cache usage (bottom), over time."""
    fig = new_figure("queue_kv")
    top, bottom = fig.subplots(2, 1, sharex=True)
    x = _centres(timeline)
    for ax in (top, bottom):
        _shade_warmup(ax, warmup_s)
        shade_bursts(ax, timeline)
        ax.grid(alpha=0.3)
    top.step(
        x,
        timeline["queue_len"].to_numpy(dtype=np.float64),
        where="mid",
        color="C3",
        label="queued requests (time-avg)",
    )
    top.set_ylabel("queued requests", color="C3")
    top.set_ylim(bottom=0)
    twin = top.twinx()
    twin.step(
        x,
        timeline["batch_seqs"].to_numpy(dtype=np.float64),
        where="mid",
        color="C0",
        linewidth=0.9,
        label="batch size (seqs/step)",
    )
    twin.set_ylabel("sequences per step", color="C0")
    twin.set_ylim(bottom=0)
    _legend_above(
        top,
        [*top.get_lines(), *twin.get_lines()],
        ["queued requests (time-avg)", "batch size (seqs/step)"],
    )
    fig.suptitle("Queueing, batching and KV-cache pressure")
    bottom.step(
        x,
        timeline["kv_usage"].to_numpy(dtype=np.float64),
        where="mid",
        color="C2",
        label="KV usage (mean)",
    )
    bottom.step(
        x,
        timeline["kv_usage_max"].to_numpy(dtype=np.float64),
        where="mid",
        color="C2",
        linewidth=0.7,
        alpha=0.6,
        linestyle="--",
        label="KV usage (max)",
    )
    bottom.set_ylim(0, 1.02)
    bottom.set_ylabel("KV cache used (fraction)")
    bottom.set_xlabel("simulated time (s)")
    _legend_above(bottom)
    return fig


# --------------------------------------------------------------------------- heatmaps


def link_matrix(links: pd.DataFrame, bin_s: float, top_n: int = TOP_LINKS) -> pd.DataFrame:
    """links × bins utilisation (missing cells 0): the `top_n` busiest by mean, busiest first."""
    idx = np.floor(links["bin_start_s"].to_numpy(dtype=np.float64) / bin_s + 1e-9)
    table = pd.DataFrame(
        {
            "link": links["link"].astype(str).to_numpy(),
            "bin": idx.astype(np.int64),
            "u": links["utilisation"].to_numpy(dtype=np.float64),
        }
    )
    grid = table.pivot_table(index="link", columns="bin", values="u", aggfunc="sum", fill_value=0)
    full = range(int(idx.max()) + 1) if len(idx) else range(0)
    grid = grid.reindex(columns=full, fill_value=0.0)
    order = grid.mean(axis=1).sort_values(ascending=False, kind="stable").index
    return grid.loc[order[:top_n]]


def plot_link_heatmap(links: pd.DataFrame, bin_s: float, top_n: int = TOP_LINKS) -> Figure:
    """Utilisation of the busiest links (rows) over time bins (columns), 0 … 1."""
    fig = new_figure("link_heatmap")
    if links is None or len(links) == 0:
        return _no_data(fig, "no link carried traffic")
    grid = link_matrix(links, bin_s, top_n)
    total = links["link"].nunique()
    ax = fig.add_subplot()
    n_bins = grid.shape[1]
    image = ax.imshow(
        grid.to_numpy(dtype=np.float64),
        aspect="auto",
        interpolation="nearest",
        cmap="viridis",
        vmin=0.0,
        vmax=1.0,
        origin="upper",
        extent=(0.0, n_bins * bin_s, len(grid) - 0.5, -0.5),
    )
    ax.set_yticks(range(len(grid)), [str(s) for s in grid.index], fontsize=7)
    ax.set_xlabel("simulated time (s)")
    shown = f"top {len(grid)} of {total} links" if total > len(grid) else f"{total} links"
    ax.set_title(f"Link utilisation per {bin_s:g} s bin ({shown}, busiest first)")
    fig.colorbar(image, ax=ax, label="utilisation (fraction of bandwidth)")
    return fig


MAX_RANK_LABELS = 32  # label every heatmap row up to this many EP ranks


def _rank_keys(experts: pd.DataFrame) -> list[str]:
    """Row keys of the expert heatmap: (group, rank) when there are several EP groups."""
    groups = experts["group"].nunique() if "group" in experts.columns else 1
    return ["group", "rank"] if groups > 1 else ["rank"]


def _bin_step(starts: F64) -> float:
    """Smallest positive gap between bin starts (s); 1.0 with fewer than two bins."""
    gaps = np.diff(np.unique(starts))
    gaps = gaps[gaps > 0]
    return float(gaps.min()) if len(gaps) else 1.0


def expert_matrix(experts: pd.DataFrame) -> pd.DataFrame:
    """EP rank (or (group, rank)) × bin routed tokens, summed over experts / layers.

    Columns are every bin from the first to the last (bin_start_s values); a missing
    (bin, rank) cell is 0 tokens.
    """
    keys = _rank_keys(experts)
    grid = experts.pivot_table(
        index=keys, columns="bin_start_s", values="tokens", aggfunc="sum", fill_value=0
    )
    starts = experts["bin_start_s"].to_numpy(dtype=np.float64)
    width = _bin_step(starts)
    full = starts.min() + width * np.arange(round((starts.max() - starts.min()) / width) + 1)
    grid = grid.reindex(columns=full, method="nearest", tolerance=width / 4, fill_value=0)
    return grid.sort_index().astype(np.float64)


def expert_imbalance_series(experts: pd.DataFrame, grid: pd.DataFrame) -> F64:
    """Most-loaded over mean rank load per bin of `grid`'s columns (1 = balanced).

    Uses the engine's per-layer `max_rank_tokens` / `mean_rank_tokens` (what an MoE step
    waits for), summed over EP groups, when the table has them; else max / mean of `grid`.
    """
    starts = grid.columns.to_numpy(dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        if {"max_rank_tokens", "mean_rank_tokens"} <= set(experts.columns):
            by = ["bin_start_s", "group"] if "group" in experts.columns else ["bin_start_s"]
            cols = ["max_rank_tokens", "mean_rank_tokens"]
            per_group = experts.groupby(by, sort=True)[cols].first()
            per_bin = per_group.groupby(level="bin_start_s").sum()
            per_bin = per_bin.reindex(starts, method="nearest", tolerance=_bin_step(starts) / 4)
            top, mean = (per_bin[c].to_numpy(dtype=np.float64) for c in cols)
        else:
            loads = grid.to_numpy()
            top, mean = loads.max(axis=0), loads.mean(axis=0)
        return np.where(mean > 0, top / mean, np.nan)


def plot_expert_heatmap(experts: pd.DataFrame) -> Figure:
    """Imbalance over time (top) and each EP rank's tokens relative to the bin mean (bottom)."""
    fig = new_figure("expert_heatmap")
    if experts is None or len(experts) == 0:
        return _no_data(fig, "no routed tokens")
    grid = expert_matrix(experts)
    loads = grid.to_numpy()
    starts = grid.columns.to_numpy(dtype=np.float64)
    width = _bin_step(starts)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = loads.mean(axis=0)
        rel = np.where(mean > 0, loads / mean, np.nan)
    from matplotlib.colors import TwoSlopeNorm
    from matplotlib.ticker import MaxNLocator

    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(1, 2.5))
    top.step(starts + width / 2, expert_imbalance_series(experts, grid), where="mid", color="C1")
    top.axhline(1.0, color="0.6", linewidth=0.8, linestyle=":")
    top.set_ylabel("max / mean")
    top.set_title("Expert-parallel load: most loaded rank vs mean (top), per rank (bottom)")
    top.grid(alpha=0.3)
    vmax = max(2.0, float(np.nanmax(rel)) if np.isfinite(rel).any() else 2.0)
    rows = len(grid)
    image = bottom.imshow(
        rel,
        aspect="auto",
        interpolation="nearest",
        cmap="RdBu_r",
        norm=TwoSlopeNorm(vmin=0.0, vcenter=1.0, vmax=vmax),  # white = the mean rank
        origin="lower",
        extent=(float(starts[0]), float(starts[-1]) + width, -0.5, rows - 0.5),
    )
    labels = [".".join(map(str, k)) if isinstance(k, tuple) else str(k) for k in grid.index]
    if rows <= MAX_RANK_LABELS:
        bottom.set_yticks(range(rows), labels, fontsize=7 if rows > 16 else 9)
    else:
        bottom.yaxis.set_major_locator(MaxNLocator(integer=True))
    bottom.set_ylabel("EP group.rank" if grid.index.nlevels > 1 else "EP rank")
    bottom.set_xlabel("simulated time (s)")
    fig.colorbar(image, ax=[top, bottom], label="tokens / mean rank tokens")
    return fig


# --------------------------------------------------------------------------- sweeps

# (sweep table column, axis label) of each headline metric plotted against a swept key
SWEEP_METRICS: tuple[tuple[str, str], ...] = (
    ("ttft_p99_s", "p99 TTFT (s)"),
    ("tpot_p99_s", "p99 TPOT (s)"),
    ("slo_attainment", "SLO attainment"),
    ("windows_violating", "windows below 99 % attainment"),
    ("goodput_rps", "goodput (req/s)"),
    ("output_tokens_per_s_per_gpu", "output tok/s per GPU"),
)


def _numeric(values: pd.Series) -> bool:
    return bool(pd.api.types.is_numeric_dtype(values)) and not pd.api.types.is_bool_dtype(values)


def _swept_value(cell: Any) -> Any:
    """A sweep.csv cell back to its YAML value: NaN → None, JSON text → mapping / list."""
    if cell is None or (isinstance(cell, float) and math.isnan(cell)):
        return None
    if isinstance(cell, str) and cell[:1] in "{[":
        try:
            return json.loads(cell)
        except ValueError:
            return cell
    return cell


def _display_column(column: pd.Series) -> pd.Series:
    """A swept column as the sweep's point labels show it (off / on, v<n>, scalars)."""
    values = [_swept_value(c) for c in column]
    distinct: list[Any] = []
    for v in values:
        if v not in distinct:
            distinct.append(v)
    texts = dict(zip(map(repr, distinct), value_texts(distinct), strict=True))
    return pd.Series([texts[repr(v)] for v in values], index=column.index)


def sweep_values(
    group: pd.DataFrame, column: str
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64] | None]:
    """A metric's points and, where the sweep ran replicates, the error bars (2 × n:
    below, above) of its 95 % interval: the replicates' mean `<column>_mean` is plotted then;
    points without an interval (single runs) show the run's value and no bar."""

    def col(name: str) -> npt.NDArray[np.float64]:
        return pd.to_numeric(group[name], errors="coerce").to_numpy(dtype=np.float64)

    y = col(column)
    lo_name, hi_name, mean_name = f"{column}_ci_lo", f"{column}_ci_hi", f"{column}_mean"
    if not {lo_name, hi_name, mean_name} <= set(group.columns):
        return y, None
    mean, lo, hi = col(mean_name), col(lo_name), col(hi_name)
    has = np.isfinite(lo) & np.isfinite(hi) & np.isfinite(mean)
    if not has.any():
        return y, None
    y = np.where(has, mean, y)
    yerr = np.vstack([np.where(has, y - lo, 0.0), np.where(has, hi - y, 0.0)])
    return y, np.clip(yerr, 0.0, None)


def plot_sweep(table: pd.DataFrame, key: str, others: Sequence[str] = ()) -> Figure:
    """Each headline metric against swept key `key`; one line per combination of `others`."""
    table = table.copy()
    for column in (key, *others):
        if not _numeric(table[column]):
            table[column] = _display_column(table[column])
    fig = new_figure("sweep")
    axes = fig.subplots(2, 3).ravel()
    metrics = [(c, label) for c, label in SWEEP_METRICS if c in table.columns]
    numeric = _numeric(table[key])
    categories = list(dict.fromkeys(table[key].astype(str))) if not numeric else []
    groups = table.groupby(list(others), sort=False, dropna=False) if others else [("", table)]
    for ax, (column, label) in zip(axes, metrics, strict=False):
        for i, (name, group) in enumerate(groups):
            if numeric:
                group = group.sort_values(key, kind="stable")
                x: npt.ArrayLike = group[key].to_numpy(dtype=np.float64)
            else:
                x = [categories.index(v) for v in group[key].astype(str)]
            y, yerr = sweep_values(group, column)
            text = ", ".join(map(str, name)) if isinstance(name, tuple) else str(name)
            ax.plot(x, y, marker="o", color=f"C{i % 10}", label=text or None)
            if yerr is not None:  # replicated points: 95 % CI of the replicates' mean
                ax.errorbar(x, y, yerr=yerr, fmt="none", ecolor=f"C{i % 10}", capsize=3)
        if not numeric:
            ax.set_xticks(range(len(categories)), categories, rotation=20, fontsize=7, ha="right")
        if column.endswith("attainment"):
            ax.axhline(0.99, **BOUND_STYLE)
        ax.set_ylabel(label)
        ax.set_xlabel(key, fontsize=8)
        ax.grid(alpha=0.3)
    for ax in axes[len(metrics) :]:
        ax.set_axis_off()
    if others and len(table) > 1:
        axes[0].legend(fontsize=7, title=", ".join(others), title_fontsize=7)
    fig.suptitle(f"Headline metrics against {key}")
    return fig


def sweep_plot_name(key: str) -> str:
    """File name of the sweep plot of key path `key`: sweep_<key, path-safe>.png."""
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in key)
    return f"sweep_{safe}.png"
