"""Helpers shared by the plots: data filters, time windows, shading, second axes, legends."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    import pandas as pd

if TYPE_CHECKING:  # matplotlib is imported when a plot is drawn (see plots/__init__)
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

F64 = npt.NDArray[np.float64]

LOG_SPAN = 100.0  # a latency axis turns logarithmic when max / min of its data exceeds this
BURST_RGB = (1.0, 0.55, 0.0)  # shading of MMPP burst windows (alpha = 0.3 × burst_fraction)
RATE_COLOR = "0.45"  # arrival-rate curve on the second axis


def finite(x: npt.ArrayLike) -> F64:
    """The finite values of `x` as float64 (NaN and ±inf dropped)."""
    a = np.asarray(x, dtype=np.float64)
    return a[np.isfinite(a)]


def maybe_log(ax: Axes, values: Sequence[F64], axis: str) -> None:
    """Logarithmic `axis` ('x' or 'y') when the positive data span more than LOG_SPAN."""
    pos = np.concatenate([v[v > 0] for v in values]) if values else np.empty(0)
    if len(pos) and pos.max() / pos.min() > LOG_SPAN:
        (ax.set_xscale if axis == "x" else ax.set_yscale)("log")


def measured(requests: pd.DataFrame, warmup_s: float) -> pd.DataFrame:
    """Completed requests that arrived at or after warm-up (what latency statistics use)."""
    arrival = requests["arrival_s"].to_numpy(dtype=np.float64)
    done = np.isfinite(requests["finish_s"].to_numpy(dtype=np.float64))
    if "dropped" in requests.columns:
        done &= ~requests["dropped"].fillna(False).to_numpy(dtype=bool)
    return requests.loc[(arrival >= warmup_s) & done]


def run_colors(n: int) -> list[str]:
    """One matplotlib cycle colour per run (C0 … C9, repeating)."""
    return [f"C{i % 10}" for i in range(n)]


def bin_width(timeline: pd.DataFrame) -> float:
    """Window width (s) of a timeline table: the step of its bin_start_s (1.0 if one row)."""
    starts = timeline["bin_start_s"].to_numpy(dtype=np.float64)
    return float(np.median(np.diff(starts))) if len(starts) > 1 else 1.0


def centres(timeline: pd.DataFrame) -> F64:
    """Window mid-points (s)."""
    return timeline["bin_start_s"].to_numpy(dtype=np.float64) + bin_width(timeline) / 2


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
        width=bin_width(timeline),
        bottom=0.0,
        align="edge",
        color=colors,
        linewidth=0,
        transform=ax.get_xaxis_transform(),
        zorder=0,
    )
    return True


FAULT_COLOR = "tab:purple"


def shade_faults(ax: Axes, windows: Sequence[tuple[float, float]], end_s: float) -> bool:
    """Hatched purple bands over fault windows [start, end) (an open end runs to end_s)."""
    for start, end in windows:
        ax.axvspan(
            start,
            min(end, end_s),
            color=FAULT_COLOR,
            alpha=0.12,
            hatch="//",
            linewidth=0,
            zorder=0,
        )
    return bool(windows)


def shade_warmup(ax: Axes, warmup_s: float) -> None:
    """Grey band over the warm-up [0, warmup_s) excluded from statistics."""
    if warmup_s > 0:
        ax.axvspan(0.0, warmup_s, color="0.85", alpha=0.5, zorder=0, linewidth=0)


def rate_axis(ax: Axes, runs: Sequence[tuple[pd.DataFrame, str, str]]) -> Axes:
    """Arrival rates (requests/s) on one second y axis of `ax`: (timeline, colour, style)."""
    twin = ax.twinx()
    for timeline, color, style in runs:
        twin.step(
            centres(timeline),
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


def legend_columns(labels: Sequence[str], width_in: float) -> int:
    """Most columns whose widest row of labels fits ~85 % of the figure width."""
    widths = sorted((len(label) + 6 for label in labels), reverse=True)  # characters
    capacity = 0.85 * width_in * LEGEND_CHARS_PER_INCH
    for ncol in range(len(widths), 1, -1):
        if sum(widths[:ncol]) <= capacity:
            return ncol
    return 1


def legend_above(
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
            ncol=legend_columns(labels, ax.get_figure().get_figwidth()),  # type: ignore[union-attr]
            fontsize=8,
            frameon=False,
            borderaxespad=0.2,
        )


def no_data(fig: Figure, text: str) -> Figure:
    """`fig` with `text` centred on a blank axes: a plot without data to draw."""
    ax = fig.add_subplot()
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes)
    ax.set_axis_off()
    return fig
