"""report.html and the plots of a run directory or a sweep directory, drawn from its files.

`render_run(run_dir)` reads a run's files (docs/results.md), draws the PNG plots next to them
and writes one self-contained report.html: images embedded as base64 data: URIs, inline CSS,
no scripts, no link to anything outside the file. `render_sweep(sweep_dir)` does the same for
a sweep directory (metrics against the swept values, overlaid latency of the points).
`clustersim run` calls these after writing each run; `clustersim report DIR` calls them again.
How to read the plots: docs/reports.md.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from clustersim.metrics.fault_summary import fault_windows
from clustersim.metrics.timeline import window_slo_summary
from clustersim.results import plots
from clustersim.results.fault_sections import faults_html
from clustersim.results.html_page import config_yaml, esc, fmt, img_html, page, table_html
from clustersim.results.plots import Series
from clustersim.results.run_files import (
    ReportError,
    RunFiles,
    is_sweep_dir,
    load_run,
    load_sweep_table,
    point_dir,
    sweep_keys,
)
from clustersim.results.run_sections import (
    layout_label,
    replicates_html,
    stability_html,
    summary_html,
    verdict_html,
    window_html,
    worst_windows_html,
)
from clustersim.results.writer import write_text

if TYPE_CHECKING:
    import pandas as pd

REPORT_NAME = "report.html"
MAX_OVERLAID = 8  # a sweep report overlays the latency of at most this many points


# --------------------------------------------------------------------------- a run

# (file name, caption) of each run plot, in report order
RUN_PLOTS: tuple[tuple[str, str], ...] = (
    (
        "latency_timeline.png",
        "p99 (and p50) TTFT and TPOT of the requests arriving in each "
        "window, against the arrival rate (grey, right axis); MMPP bursts shaded orange; bottom: "
        "fraction of each window's requests missing the SLO (red line: the 1 % budget).",
    ),
    (
        "latency_cdf.png",
        "Distribution of TTFT and TPOT over the measured, completed requests; "
        "the dot marks p99, the dashed red line the SLO bound.",
    ),
    (
        "queue_kv.png",
        "Requests waiting to be scheduled and sequences per engine step (top); "
        "KV-cache usage (bottom).",
    ),
    ("link_heatmap.png", "Utilisation of the busiest links in each time bin (yellow = saturated)."),
    (
        "expert_heatmap.png",
        "Expert-parallel load: most-loaded rank over the mean (top) and each "
        "rank's tokens relative to the mean (bottom; red = overloaded).",
    ),
)


def draw_run_plots(run: RunFiles) -> dict[str, bytes]:
    """Draw and save the run's plots; {file name: PNG bytes} of those drawn."""
    worst = window_slo_summary(run.timeline)["worst_window_start_s"]
    series = [Series(run.name, run.requests, run.timeline)]
    faults = fault_windows(run.faults) if run.faults is not None else []
    figures = {
        "latency_timeline.png": plots.plot_latency_timeline(series, run.bounds, worst, faults),
        "latency_cdf.png": plots.plot_latency_cdf(series, run.bounds),
        "queue_kv.png": plots.plot_queue_kv(run.timeline, run.warmup_s, faults),
    }
    if len(run.links) > 0:
        figures["link_heatmap.png"] = plots.plot_link_heatmap(run.links, run.bin_s)
    if run.experts is not None and len(run.experts) > 0:
        figures["expert_heatmap.png"] = plots.plot_expert_heatmap(run.experts)
    return {name: plots.save_png(fig, run.run_dir / name) for name, fig in figures.items()}


def run_report_html(run: RunFiles, images: Mapping[str, bytes]) -> str:
    cfg = run.config
    layout = cfg.get("layout") or {}
    layout_text = layout_label(layout)
    model = (cfg.get("model") or {}).get("name", "?")
    topo = (cfg.get("topology") or {}).get("name", "?")
    workload = (cfg.get("workload") or {}).get("name", "?")
    body = [
        f"<h1>{esc(run.name)}</h1>",
        f'<p class="sub">{esc(run.run_dir)}<br>model {esc(model)} on {esc(topo)}, layout '
        f"{esc(layout_text)} ({esc(fmt(run.summary.get('gpus')))} GPUs), workload "
        f"{esc(workload)}, seed {esc(cfg.get('seed'))}, clustersim "
        f"{esc(cfg.get('clustersim_version', '?'))}</p>",
        "<h2>SLO verdict</h2>",
        verdict_html(run),
        *window_html(run.summary),
        *stability_html(run.summary),
        *replicates_html(run.summary),
        *faults_html(run),
        "<h2>Worst windows</h2>",
        f"<p>Windows of {esc(fmt(run.bin_s))} s, by the requests that arrived in them, "
        "lowest SLO attainment first (burn rate = missing fraction / 1 %).</p>",
        worst_windows_html(run),
        "<h2>Plots</h2>",
    ]
    for name, caption in RUN_PLOTS:
        if name in images:
            body.append(img_html(images[name], name, caption))
    body += [
        "<h2>Summary</h2>",
        summary_html(run.summary),
        "<h2>Resolved configuration</h2>",
        f"<details><summary>config.resolved.yaml</summary><pre>{esc(config_yaml(cfg))}</pre>"
        "</details>",
    ]
    return page(f"clustersim: {run.name}", body)


def render_run(run_dir: Path, writing: bool = False) -> Path:
    """(Re)draw a run directory's plots and report.html from its files; the report's path.
    `writing`: the run drawing its own plots, before it removes its INCOMPLETE marker."""
    run = load_run(run_dir, writing)
    images = draw_run_plots(run)
    path = run.run_dir / REPORT_NAME
    write_text(path, run_report_html(run, images))
    return path


# --------------------------------------------------------------------------- a sweep


def render_sweep(sweep_dir: Path, points: bool = False) -> Path:
    """Draw the sweep plots and the sweep's report.html; with `points`, each point's too."""
    sweep_dir = Path(sweep_dir)
    table = load_sweep_table(sweep_dir)
    keys = sweep_keys(table)
    images: dict[str, bytes] = {}
    for key in keys:
        others = [k for k in keys if k != key]
        fig = plots.plot_sweep(table, key, others)
        name = plots.sweep_plot_name(key)
        images[name] = plots.save_png(fig, sweep_dir / name)
    runs: list[RunFiles] = []
    for row in table.to_dict("records"):
        directory = point_dir(sweep_dir, row)
        if points:
            render_run(directory)
        if len(table) <= MAX_OVERLAID and (directory / "summary.json").is_file():
            runs.append(load_run(directory))
    if runs:
        series = [Series(str(r.run_dir.name), r.requests, r.timeline) for r in runs]
        bounds = runs[0].bounds
        for name, fig in (
            ("latency_cdf.png", plots.plot_latency_cdf(series, bounds)),
            ("latency_timeline.png", plots.plot_latency_timeline(series, bounds)),
        ):
            images[name] = plots.save_png(fig, sweep_dir / name)
    path = sweep_dir / REPORT_NAME
    write_text(path, sweep_report_html(sweep_dir, table, keys, images))
    return path


def sweep_report_html(
    sweep_dir: Path, table: pd.DataFrame, keys: Sequence[str], images: Mapping[str, bytes]
) -> str:
    shown = ["label", *[c for c, _ in plots.SWEEP_METRICS if c in table.columns]]
    extra = [c for c in ("requests_completed", "requests_dropped", "gpus") if c in table.columns]
    rows = [[interval_cell(rec, c) for c in shown + extra] for rec in table.to_dict("records")]
    body = [
        f"<h1>Sweep {esc(sweep_dir.name)}</h1>",
        f'<p class="sub">{esc(sweep_dir)} — swept: {esc(", ".join(keys) or "nothing")}; '
        f"{len(table)} points. Each point's own report.html is in its directory.</p>",
        "<h2>Points</h2>",
        table_html(shown + extra, rows),
        "<h2>Plots</h2>",
    ]
    for key in keys:
        name = plots.sweep_plot_name(key)
        if name in images:
            body.append(
                img_html(
                    images[name],
                    name,
                    f"Headline metrics against {key} (replicated points: the replicates' "
                    "mean with its 95 % confidence interval as error bars).",
                )
            )
    if "latency_timeline.png" in images:
        body.append(
            img_html(
                images["latency_timeline.png"],
                "latency_timeline.png",
                "p99 TTFT / TPOT per arrival window of every point (dotted: "
                "arrival rates), and the fraction of each window's requests "
                "missing the SLO.",
            )
        )
    if "latency_cdf.png" in images:
        body.append(
            img_html(
                images["latency_cdf.png"],
                "latency_cdf.png",
                "TTFT and TPOT distributions of every point.",
            )
        )
    return page(f"clustersim sweep: {sweep_dir.name}", body)


def interval_cell(row: Mapping[Any, Any], column: str) -> str:
    """A sweep table cell: `mean [lo, hi]` where the point ran replicates, else the value."""
    mean = _cell(row.get(f"{column}_mean"))
    lo, hi = _cell(row.get(f"{column}_ci_lo")), _cell(row.get(f"{column}_ci_hi"))
    if mean is None or lo is None or hi is None:
        return fmt(_cell(row.get(column)))
    return f"{fmt(mean)} [{fmt(lo)}, {fmt(hi)}]"


def _cell(value: Any) -> Any:
    """A pandas cell as a plain Python value (NaN → None)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def render(path: Path) -> Path:
    """`clustersim report PATH`: a run directory's report, or a sweep's (and its points')."""
    path = Path(path)
    if not path.is_dir():
        raise ReportError(f"{path}: no such directory")
    if is_sweep_dir(path) and not (path / "summary.json").exists():
        return render_sweep(path, points=True)
    return render_run(path)
