"""Latency plots: TTFT / TPOT CDFs, latency per arrival window with the SLO burn, and the
compact p99 TTFT overview."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:  # matplotlib is imported when a plot is drawn (see plots/__init__)
    from matplotlib.figure import Figure

from clustersim.results.plots.axes import (
    BURST_RGB,
    F64,
    FAULT_COLOR,
    RATE_COLOR,
    bin_width,
    centres,
    finite,
    legend_above,
    maybe_log,
    measured,
    no_data,
    rate_axis,
    run_colors,
    shade_bursts,
    shade_faults,
    shade_warmup,
)
from clustersim.results.plots.canvas import BOUND_STYLE, Bounds, Series, new_figure

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
        for run, color in zip(runs, run_colors(len(runs)), strict=True):
            if run.requests is None:
                continue
            x = np.sort(finite(measured(run.requests, bounds.warmup_s)[metric]))
            if len(x) == 0:
                continue
            curves.append(x)
            y = np.arange(1, len(x) + 1) / len(x)
            keep = cdf_points(len(x))
            ax.step(x[keep], y[keep], where="post", color=color, label=f"{run.label} (n={len(x)})")
            p99 = float(np.percentile(x, 99.0, method="linear"))
            ax.plot([p99], [0.99], marker="o", color=color, markersize=4)
        maybe_log(ax, curves, "x")
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
    runs: Sequence[Series],
    bounds: Bounds,
    worst_window_s: float | None = None,
    fault_windows: Sequence[tuple[float, float]] = (),
) -> Figure:
    """p99 TTFT / TPOT per arrival window against the arrival rate, and the SLO burn.

    One run: p50 and p99, arrival rate on a second axis, MMPP bursts shaded, the worst window
    outlined. Several runs: each run's p99 and arrival rate in its colour.
    """
    fig = new_figure("latency_timeline")
    axes = fig.subplots(3, 1, sharex=True)
    timelines = [
        (r, c) for r, c in zip(runs, run_colors(len(runs)), strict=True) if r.timeline is not None
    ]
    if not timelines:
        return fig
    single = len(timelines) == 1
    first = timelines[0][0].timeline
    assert first is not None
    for ax in axes:
        shade_warmup(ax, bounds.warmup_s)
        bursts = shade_bursts(ax, first)
        faulty = shade_faults(ax, fault_windows, float(centres(first)[-1]) if len(first) else 0.0)
        if worst_window_s is not None and single:
            ax.axvspan(
                worst_window_s,
                worst_window_s + bin_width(first),
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
                centres(tl),
                p99,
                color=color,
                linewidth=1.2,
                label=f"p99 {name}" if single else f"{run.label} p99",
            )
            plotted.append(finite(p99))
            if single:
                p50 = tl[f"{metric}_p50_s"].to_numpy(dtype=np.float64)
                ax.plot(
                    centres(tl), p50, color=color, linewidth=0.8, alpha=0.5, label=f"p50 {name}"
                )
                plotted.append(finite(p50))
        if bound is not None:
            ax.axhline(bound, **BOUND_STYLE, label=f"bound {bound:g} s")
        maybe_log(ax, plotted, "y")
        ax.set_ylabel(f"{name} (s), by arrival")
        ax.grid(alpha=0.3)
        twin = rate_axis(
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
        if faulty:
            from matplotlib.patches import Patch

            handles.append(Patch(color=FAULT_COLOR, alpha=0.3, hatch="//"))
            labels.append("fault window")
        legend_above(ax, handles, labels)
    ax = axes[2]
    for run, color in timelines:
        tl = run.timeline
        assert tl is not None
        ax.step(
            centres(tl),
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
                        centres(tl),
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
    legend_above(ax)
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
        (r, c) for r, c in zip(runs, run_colors(len(runs)), strict=True) if r.timeline is not None
    ]
    if not timelines:
        return no_data(fig, "no timeline")
    first = timelines[0][0].timeline
    assert first is not None
    shade_bursts(ax, first)
    missed = first["slo_attainment"].to_numpy(dtype=np.float64) < 0.99
    missed &= first["measured"].to_numpy(dtype=bool)
    if missed.any():
        ax.bar(
            first["bin_start_s"].to_numpy(dtype=np.float64)[missed],
            1.0,
            width=bin_width(first),
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
        ax.plot(centres(tl), p99, color=color, linewidth=1.2, label=f"{run.label}: p99 TTFT")
        plotted.append(finite(p99))
    if bounds.ttft_s is not None:
        ax.axhline(bounds.ttft_s, **BOUND_STYLE, label=f"SLO bound {bounds.ttft_s:g} s")
    maybe_log(ax, plotted, "y")
    ax.set_ylabel("p99 TTFT (s), by arrival window")
    ax.set_xlabel("simulated time (s)")
    ax.grid(alpha=0.3)
    twin = rate_axis(ax, [(r.timeline, c, ":") for r, c in timelines if r.timeline is not None])
    handles, labels = ax.get_legend_handles_labels()
    handles.append(twin.get_lines()[0])
    labels.append("arrival rates (dotted)")
    if missed.any():
        from matplotlib.patches import Patch

        handles.append(Patch(color=(0.86, 0.08, 0.24, 0.12)))
        labels.append(f"{timelines[0][0].label} misses SLO")
    legend_above(ax, handles, labels)
    return fig
