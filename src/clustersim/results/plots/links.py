"""The link heatmap: utilisation of the busiest links per time bin."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # matplotlib is imported when a plot is drawn (see plots/__init__)
    from matplotlib.figure import Figure

from clustersim.results.plots.axes import no_data
from clustersim.results.plots.canvas import new_figure

if TYPE_CHECKING:
    import pandas as pd

TOP_LINKS = 16  # the link heatmap shows at most this many links (the busiest by mean)


def link_matrix(links: pd.DataFrame, bin_s: float, top_n: int = TOP_LINKS) -> pd.DataFrame:
    """links × bins utilisation (missing cells 0): the `top_n` busiest by mean, busiest first."""
    import pandas as pd

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
        return no_data(fig, "no link carried traffic")
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
