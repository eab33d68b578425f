"""PNG plots of a run, a comparison and a sweep (matplotlib, Agg canvas, no pyplot state).

Figures are built from plain tables (requests, timeline, links, experts, sweep) and returned;
`save_png` writes one atomically. One module per plot family:
  canvas     fixed figure sizes (PLOT_SIZES_PX), PNG bytes, Series / Bounds, shared styles
  axes       helpers the plots share: measured requests, windows, burst shading, legends
  latency    TTFT / TPOT CDFs, latency per arrival window, the p99 TTFT overview
  queue_kv   queue length, batch size and KV-cache usage over time
  links      the link-utilisation heatmap
  experts    the expert-parallel load heatmap
  sweep      headline metrics against a swept key
matplotlib is imported only when a plot is drawn, so `validate` and runs without plots start
~1 s faster. What each plot shows and how to read it: docs/reports.md.
"""

from clustersim.results.plots.axes import shade_bursts
from clustersim.results.plots.canvas import (
    BOUND_STYLE,
    DPI,
    PLOT_MARGINS,
    PLOT_SIZES_IN,
    PLOT_SIZES_PX,
    Bounds,
    Series,
    new_figure,
    png_bytes,
    save_png,
)
from clustersim.results.plots.experts import (
    expert_imbalance_series,
    expert_matrix,
    plot_expert_heatmap,
)
from clustersim.results.plots.latency import (
    CDF_BODY_POINTS,
    cdf_points,
    plot_latency_cdf,
    plot_latency_timeline,
    plot_ttft_overview,
)
from clustersim.results.plots.links import TOP_LINKS, link_matrix, plot_link_heatmap
from clustersim.results.plots.queue_kv import plot_queue_kv
from clustersim.results.plots.sweep import (
    SWEEP_METRICS,
    plot_sweep,
    sweep_plot_name,
    sweep_values,
)

__all__ = [
    "BOUND_STYLE",
    "CDF_BODY_POINTS",
    "DPI",
    "PLOT_MARGINS",
    "PLOT_SIZES_IN",
    "PLOT_SIZES_PX",
    "SWEEP_METRICS",
    "TOP_LINKS",
    "Bounds",
    "Series",
    "cdf_points",
    "expert_imbalance_series",
    "expert_matrix",
    "link_matrix",
    "new_figure",
    "plot_expert_heatmap",
    "plot_latency_cdf",
    "plot_latency_timeline",
    "plot_link_heatmap",
    "plot_queue_kv",
    "plot_sweep",
    "plot_ttft_overview",
    "png_bytes",
    "save_png",
    "shade_bursts",
    "sweep_plot_name",
    "sweep_values",
]
