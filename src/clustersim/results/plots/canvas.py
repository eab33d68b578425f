"""Fixed-size figures and their PNG bytes; the run tables and line styles every plot shares.

Every figure has a fixed size in inches and is saved at DPI without tight bounding boxes, so
a plot's pixel size is fixed: PLOT_SIZES_PX[name] = (width, height). `save_png` writes one
atomically.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # matplotlib is imported when a plot is drawn (see plots/__init__)
    from matplotlib.figure import Figure

from clustersim.results.writer import atomic_write

if TYPE_CHECKING:
    import pandas as pd

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
# SLO bound lines (axhline / axvline keyword arguments)
BOUND_STYLE: dict[str, Any] = {"color": "crimson", "linestyle": "--", "linewidth": 1.2}


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
