"""The queueing plot: queue length and batch size, and KV-cache usage, over time."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # matplotlib is imported when a plot is drawn (see plots/__init__)
    from matplotlib.figure import Figure

from clustersim.results.plots.axes import (
    centres,
    legend_above,
    shade_bursts,
    shade_faults,
    shade_warmup,
)
from clustersim.results.plots.canvas import new_figure

if TYPE_CHECKING:
    import pandas as pd


def plot_queue_kv(
    timeline: pd.DataFrame,
    warmup_s: float = 0.0,
    fault_windows: Sequence[tuple[float, float]] = (),
) -> Figure:
    """Queue length and batch size (top), KV-cache usage (bottom), over time."""
    fig = new_figure("queue_kv")
    top, bottom = fig.subplots(2, 1, sharex=True)
    x = centres(timeline)
    for ax in (top, bottom):
        shade_warmup(ax, warmup_s)
        shade_bursts(ax, timeline)
        shade_faults(ax, fault_windows, float(x[-1]) if len(x) else 0.0)
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
    legend_above(
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
    legend_above(bottom)
    return fig
