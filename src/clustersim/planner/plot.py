"""Goodput per GPU against p99 latency, one point per simulated layout (matplotlib Agg).

Two panels share the y axis (SLO goodput per GPU, req/s/GPU): p99 TTFT (left) and p99 TPOT
(right), log-scaled x when the values span more than 100×. Layouts meeting the SLO are filled,
the others hollow; the Pareto front of each panel (lower latency, higher goodput per GPU) is
joined by a line and labelled (as are the layouts meeting the SLO); the best layout is starred
and the SLO bound drawn as a dashed line.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from clustersim.config.schema import SLOSpec
from clustersim.planner.rank import Row, pareto_front
from clustersim.results.writer import atomic_write

SIZE_IN = (11.0, 4.6)  # inches
DPI = 100
LOG_SPAN = 100.0


def pareto_figure(rows: Sequence[Row], slo: SLOSpec, best_label: str | None) -> Figure:
    fig = Figure(figsize=SIZE_IN, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2, sharey=True)
    simulated = [r for r in rows if r.status == "simulated"]
    panels = (
        ("ttft_s", "p99 TTFT (s)", slo.ttft_p99_s),
        ("tpot_s", "p99 TPOT (s)", slo.tpot_p99_s),
    )
    for ax, (key, title, bound) in zip(axes, panels, strict=True):
        _panel(ax, simulated, key, title, bound, best_label)
    axes[0].set_ylabel("SLO goodput per GPU (req/s/GPU)")
    if not simulated:
        fig.suptitle("no simulated layouts")
    else:
        fig.suptitle("Layouts: goodput per GPU vs p99 latency (filled: meets the SLO)")
    return fig


def _panel(
    ax: Axes,
    rows: Sequence[Row],
    key: str,
    title: str,
    bound: float | None,
    best_label: str | None,
) -> None:
    points: list[tuple[str, float, float]] = []
    meets: set[str] = set()
    for r in rows:
        lat = r.metric(key, "p99")
        good = r.goodput_per_gpu
        if lat is None or good is None or lat <= 0:
            continue
        points.append((r.label, lat, good))
        if r.meets:
            meets.add(r.label)
        face = "tab:blue" if r.meets else "none"
        ax.scatter([lat], [good], s=36, facecolors=face, edgecolors="tab:blue", zorder=3)
        if r.label == best_label:
            ax.scatter([lat], [good], s=220, marker="*", color="gold", edgecolors="k", zorder=4)
    front = set(pareto_front(points))
    for label, lat, good in points:  # name the front and the SLO-meeting layouts only
        if label in front or label in meets:
            ax.annotate(label, (lat, good), fontsize=7, xytext=(3, 3), textcoords="offset points")
    line = sorted((lat, good) for label, lat, good in points if label in front)
    if line:
        ax.plot(
            [p[0] for p in line],
            [p[1] for p in line],
            color="tab:red",
            lw=1.2,
            label="Pareto front",
            zorder=2,
        )
        ax.legend(loc="best", fontsize=8)
    lats = [p[1] for p in points]
    if lats and max(lats) / min(lats) > LOG_SPAN:
        ax.set_xscale("log")
    if bound is not None:
        ax.axvline(bound, color="crimson", linestyle="--", linewidth=1.2)
    ax.set_xlabel(title)
    ax.grid(True, alpha=0.3)


def save_pareto(rows: Sequence[Row], slo: SLOSpec, best_label: str | None, path: Path) -> None:
    """Draw and atomically write the PNG."""
    fig = pareto_figure(rows, slo, best_label)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    data = buf.getvalue()
    atomic_write(Path(path), lambda f: f.write(data))
