"""The expert-parallel heatmap: per-rank routed tokens and the load imbalance over time."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # matplotlib is imported when a plot is drawn (see plots/__init__)
    from matplotlib.figure import Figure

from clustersim.results.plots.axes import F64, no_data
from clustersim.results.plots.canvas import new_figure

if TYPE_CHECKING:
    import pandas as pd

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
        return no_data(fig, "no routed tokens")
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
