"""report.html and the plots of a run directory or a sweep directory, drawn from its files.

`render_run(run_dir)` reads a run's files (docs/results.md), draws the PNG plots next to them
and writes one self-contained report.html: images embedded as base64 data: URIs, inline CSS,
no scripts, no link to anything outside the file. `render_sweep(sweep_dir)` does the same for
a sweep directory (metrics against the swept values, overlaid latency of the points).
`clustersim run` calls these after writing each run; `clustersim report DIR` calls them again.
How to read the plots: docs/reports.md.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow
import yaml

from clustersim.config.schema import SLOSpec
from clustersim.metrics.summary import (
    completed_mask,
    measured_requests,
    slo_mask,
    values,
)
from clustersim.metrics.timeline import (
    SLO_TARGET,
    build_timeline,
    window_slo_summary,
    worst_windows,
)
from clustersim.results import plots
from clustersim.results.plots import Bounds, Series
from clustersim.results.writer import INCOMPLETE_MARKER, is_incomplete, write_text

REPORT_NAME = "report.html"
WORST_WINDOWS = 10  # rows of the report's worst-windows table
MAX_OVERLAID = 8  # a sweep report overlays the latency of at most this many points
_READ_ERRORS = (OSError, ValueError, pyarrow.ArrowException, yaml.YAMLError)


class ReportError(ValueError):
    """A directory that is not a (complete, readable) run or sweep directory: one line."""


# --------------------------------------------------------------------------- loading


@dataclass(frozen=True)
class RunFiles:
    """The tables and settings of one run directory, as its files hold them."""

    run_dir: Path
    config: dict[str, Any]  # config.resolved.yaml
    summary: dict[str, Any]  # summary.json
    requests: pd.DataFrame
    iterations: pd.DataFrame | None
    links: pd.DataFrame
    experts: pd.DataFrame | None
    timeline: pd.DataFrame
    bin_s: float  # window / link-bin width (s), output.time_bin_s

    @property
    def name(self) -> str:
        return str(self.config.get("name", self.run_dir.name))

    @property
    def slo(self) -> SLOSpec:
        raw = self.config.get("slo") or {}
        return SLOSpec(**{k: raw.get(k) for k in ("ttft_p99_s", "tpot_p99_s", "e2e_p99_s")})

    @property
    def warmup_s(self) -> float:
        return float((self.config.get("horizon") or {}).get("warmup_s") or 0.0)

    @property
    def bounds(self) -> Bounds:
        slo = self.slo
        return Bounds(slo.ttft_p99_s, slo.tpot_p99_s, self.warmup_s)


def _read_parquet(path: Path, required: bool) -> pd.DataFrame | None:
    if not path.exists():
        if required:
            raise ReportError(f"{path}: missing (not a complete run directory)")
        return None
    try:
        return pd.read_parquet(path)
    except _READ_ERRORS as err:
        raise ReportError(f"{path}: cannot read: {err}") from err


def _read_mapping(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except _READ_ERRORS as err:
        raise ReportError(f"{path}: cannot read: {err}") from err
    if not isinstance(data, dict):
        raise ReportError(f"{path}: expected a mapping")
    return data


def check_run_dir(run_dir: Path, writing: bool = False) -> Path:
    """`run_dir` if it is a complete run directory (summary.json present, no INCOMPLETE
    marker unless `writing`: the run itself drawing its plots), else ReportError."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ReportError(f"{run_dir}: no such directory")
    if is_incomplete(run_dir) and not writing:
        raise ReportError(
            f"{run_dir}: incomplete run directory (the run was interrupted; "
            f"{INCOMPLETE_MARKER} is present): run the experiment again"
        )
    if not (run_dir / "summary.json").is_file():
        hint = " (a sweep directory: pass one of its points)" if is_sweep_dir(run_dir) else ""
        raise ReportError(f"{run_dir}: not a complete run directory (no summary.json){hint}")
    return run_dir


def is_sweep_dir(path: Path) -> bool:
    return (Path(path) / "sweep.csv").is_file()


def load_run(run_dir: Path, writing: bool = False) -> RunFiles:
    """Read a run directory; the timeline is recomputed when timeline.parquet is absent."""
    run_dir = check_run_dir(run_dir, writing)
    config = _read_mapping(run_dir / "config.resolved.yaml")
    summary = _read_mapping(run_dir / "summary.json")
    requests = _read_parquet(run_dir / "requests.parquet", required=True)
    links = _read_parquet(run_dir / "links.parquet", required=False)
    iterations = _read_parquet(run_dir / "iterations.parquet", required=False)
    experts = _read_parquet(run_dir / "experts.parquet", required=False)
    assert requests is not None
    if links is None:
        links = pd.DataFrame(columns=["link", "kind", "bin_start_s", "bytes", "utilisation"])
    bin_s = float((config.get("output") or {}).get("time_bin_s") or 1.0)
    files = RunFiles(
        run_dir, config, summary, requests, iterations, links, experts, pd.DataFrame(), bin_s
    )
    timeline = _read_parquet(run_dir / "timeline.parquet", required=False)
    if timeline is None:
        try:
            timeline = build_timeline(requests, iterations, links, bin_s, files.slo, files.warmup_s)
        except (KeyError, ValueError) as err:
            raise ReportError(f"{run_dir}: cannot compute the timeline: {err}") from err
    return RunFiles(run_dir, config, summary, requests, iterations, links, experts, timeline, bin_s)


# --------------------------------------------------------------------------- HTML pieces

CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1150px; color: #222; line-height: 1.4; padding: 0 1em; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; } h2 { font-size: 1.2em; margin-top: 1.6em;
     border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
.sub { color: #666; margin-top: 0; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.9em; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: right; }
th { background: #f4f4f4; } td.k, th.k { text-align: left; font-family: monospace; }
tr.worse td.d { color: #b00020; } tr.better td.d { color: #1b7f3b; }
.verdict { padding: 0.8em 1em; border-radius: 6px; margin: 1em 0; }
.met { background: #e6f4ea; border: 1px solid #1b7f3b; }
.notmet { background: #fdecea; border: 1px solid #b00020; }
.unset { background: #f4f4f4; border: 1px solid #999; }
.verdict b.big { font-size: 1.2em; }
figure { margin: 1em 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.9em; }
pre { background: #f8f8f8; padding: 0.8em; overflow-x: auto; font-size: 0.8em; }
"""


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def fmt(value: Any) -> str:
    """A table cell: None → '–', floats to 4 significant digits, ints with separators."""
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | np.integer):
        return f"{int(value):,}"
    if isinstance(value, float | np.floating):
        return f"{float(value):.4g}"
    return str(value)


def pct(value: float | None) -> str:
    return "–" if value is None or not np.isfinite(value) else f"{100.0 * value:.2f} %"


def table_html(headers: Sequence[str], rows: Iterable[Sequence[Any]], key_cols: int = 1) -> str:
    """A table; the first `key_cols` columns left-aligned (cells are escaped)."""
    head = "".join(
        f'<th class="k">{esc(h)}</th>' if i < key_cols else f"<th>{esc(h)}</th>"
        for i, h in enumerate(headers)
    )
    body = []
    for row in rows:
        cells = "".join(
            f'<td class="k">{esc(c)}</td>' if i < key_cols else f"<td>{esc(c)}</td>"
            for i, c in enumerate(row)
        )
        body.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def img_html(png: bytes, alt: str, caption: str) -> str:
    """A figure with the PNG embedded as a data: URI."""
    data = base64.b64encode(png).decode("ascii")
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{esc(alt)}">'
        f"<figcaption>{esc(caption)}</figcaption></figure>"
    )


def page(title: str, body: Sequence[str]) -> str:
    """A complete HTML document: inline CSS, no scripts, no external references."""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )


def flatten(data: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """Nested mapping → [(dotted key path, leaf value)] in the mapping's order."""
    out: list[tuple[str, Any]] = []
    for key, value in data.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.extend(flatten(value, path + "."))
        else:
            out.append((path, value))
    return out


def config_yaml(config: Mapping[str, Any]) -> str:
    return yaml.safe_dump(dict(config), sort_keys=False, allow_unicode=True)


# --------------------------------------------------------------------------- verdict


@dataclass(frozen=True)
class BoundCheck:
    """One SLO bound over the measured requests of a run."""

    name: str  # "TTFT", "TPOT", "e2e"
    bound_s: float
    p99_s: float | None  # whole-run p99 over completed requests (s)
    miss_frac: float  # measured requests missing it (dropped / unfinished count as missing)

    @property
    def met(self) -> bool:
        return self.miss_frac <= 1.0 - SLO_TARGET + 1e-12


def bound_checks(run: RunFiles) -> list[BoundCheck]:
    """Each bound the experiment sets, checked over the measured requests."""
    req = measured_requests(run.requests, run.warmup_s)
    done = completed_mask(req)
    checks = []
    for name, key in (("TTFT", "ttft"), ("TPOT", "tpot"), ("e2e", "e2e")):
        bound = getattr(run.slo, f"{key}_p99_s")
        if bound is None:
            continue
        x = values(req, f"{key}_s", done)
        x = x[np.isfinite(x)]
        p99 = float(np.percentile(x, 99.0, method="linear")) if len(x) else None
        met = slo_mask(req, done, SLOSpec(**{f"{key}_p99_s": bound}))
        miss = 1.0 - float(met.mean()) if len(req) else 0.0
        checks.append(BoundCheck(name, float(bound), p99, miss))
    return checks


def verdict_html(run: RunFiles) -> str:
    """The SLO verdict box: met / not met, which bound, the worst window."""
    checks = bound_checks(run)
    attainment = run.summary.get("slo", {}).get("attainment")
    windows = window_slo_summary(run.timeline)
    if not checks:
        return (
            '<div class="verdict unset"><b class="big">No SLO bounds set</b> — attainment '
            f"is the completed fraction: {esc(pct(attainment))}.</div>"
        )
    met = attainment is not None and attainment >= SLO_TARGET - 1e-12 and all(c.met for c in checks)
    lines = [
        f'<b class="big">SLO {"met" if met else "NOT met"}</b>: {esc(pct(attainment))} of '
        f"measured requests meet every bound (target {SLO_TARGET:.0%})."
    ]
    for c in checks:
        state = "ok" if c.met else "<b>missed</b>"
        lines.append(
            f"{esc(c.name)} ≤ {esc(fmt(c.bound_s))} s: p99 = {esc(fmt(c.p99_s))} s, "
            f"{esc(pct(c.miss_frac))} of requests miss it — {state}"
        )
    dropped = run.summary.get("requests_dropped") or 0
    if dropped:
        lines.append(f"{esc(fmt(dropped))} requests were dropped (they miss every bound).")
    worst = windows["worst_window_start_s"]
    if worst is not None:
        row = run.timeline.loc[np.isclose(run.timeline["bin_start_s"], worst)].iloc[0]
        n_windows = int(
            ((run.timeline["arrivals"] > 0) & run.timeline["measured"].astype(bool)).sum()
        )
        lines.append(
            f"Worst window: t = {esc(fmt(worst))}–{esc(fmt(worst + run.bin_s))} s, "
            f"attainment {esc(pct(windows['worst_window_attainment']))} "
            f"({esc(fmt(int(row['arrivals'])))} arrivals at "
            f"{esc(fmt(float(row['arrival_rate_rps'])))} req/s, p99 TTFT "
            f"{esc(fmt(float(row['ttft_p99_s'])))} s, p99 TPOT "
            f"{esc(fmt(float(row['tpot_p99_s'])))} s). "
            f"{esc(fmt(windows['windows_violating']))} of {n_windows} windows "
            f"({esc(fmt(run.bin_s))} s each) have attainment below {SLO_TARGET:.0%}."
        )
    cls = "met" if met else "notmet"
    return f'<div class="verdict {cls}">' + "<br>".join(lines) + "</div>"


def worst_windows_html(run: RunFiles, count: int = WORST_WINDOWS) -> str:
    """The `count` worst measured windows (timeline.worst_windows order)."""
    rows = worst_windows(run.timeline)
    if len(rows) == 0:
        return "<p>No measured window received requests.</p>"
    headers = [
        "window start (s)",
        "arrival rate (req/s)",
        "queued (avg)",
        "KV used",
        "p99 TTFT (s)",
        "p99 TPOT (s)",
        "attainment",
        "burn rate",
        "burst",
    ]
    body = [
        [
            fmt(float(r.bin_start_s)),
            fmt(float(r.arrival_rate_rps)),
            fmt(float(r.queue_len)),
            pct(r.kv_usage),
            fmt(float(r.ttft_p99_s)),
            fmt(float(r.tpot_p99_s)),
            pct(r.slo_attainment),
            fmt(float(r.slo_burn_rate)),
            pct(r.burst_fraction),
        ]
        for r in rows.head(count).itertuples()
    ]
    return table_html(headers, body)


def summary_html(summary: Mapping[str, Any]) -> str:
    return table_html(["key", "value"], [(k, fmt(v)) for k, v in flatten(summary)])


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
    figures = {
        "latency_timeline.png": plots.plot_latency_timeline(series, run.bounds, worst),
        "latency_cdf.png": plots.plot_latency_cdf(series, run.bounds),
        "queue_kv.png": plots.plot_queue_kv(run.timeline, run.warmup_s),
    }
    if len(run.links) > 0:
        figures["link_heatmap.png"] = plots.plot_link_heatmap(run.links, run.bin_s)
    if run.experts is not None and len(run.experts) > 0:
        figures["expert_heatmap.png"] = plots.plot_expert_heatmap(run.experts)
    return {name: plots.save_png(fig, run.run_dir / name) for name, fig in figures.items()}


def layout_label(layout: Mapping[str, Any]) -> str:
    """'TP8 × PP2' style: the parallel axes above 1 (TP1 when none), plus DP-attention."""
    axes = [
        f"{k.upper()}{v}"
        for k, v in layout.items()
        if isinstance(v, int) and not isinstance(v, bool) and v > 1
    ]
    if layout.get("dp_attention"):
        axes.append("DP-attention")
    return " × ".join(axes) or "TP1"


def window_html(summary: Mapping[str, Any]) -> list[str]:
    """The measured window the summary's rates are per second of (nothing if absent)."""
    window = summary.get("window")
    if not isinstance(window, Mapping) or window.get("duration_s") is None:
        return []
    basis = (
        "warm-up to the end of arrivals; the drain after it is not measured"
        if window.get("basis") == "arrivals"
        else "first measured arrival to last completion (a burst: no arrival window)"
    )
    return [
        f"<p>Measured window: {esc(fmt(window.get('start_s')))} s → "
        f"{esc(fmt(window.get('end_s')))} s ({esc(fmt(window.get('duration_s')))} s; {basis})."
        "</p>"
    ]


def stability_html(summary: Mapping[str, Any]) -> list[str]:
    """The stability verdict: a warning box when the queue or KV use trends upward."""
    block = summary.get("stability")
    if not isinstance(block, Mapping) or block.get("stable") is None:
        return []
    trends = []
    for name, label in (("queue", "queue length"), ("kv", "KV-cache use")):
        fit = block.get(name)
        if isinstance(fit, Mapping) and fit.get("slope_per_s") is not None:
            trends.append(
                f"{label}: slope {fmt(fit['slope_per_s'])}/s, t = {fmt(fit.get('t_stat'))}, "
                f"rise across the window {fmt(fit.get('rise'))}"
                + (" — <b>rising</b>" if fit.get("rising") else "")
            )
    unstable = block.get("unstable_replicates")
    if unstable:
        trends.append(f"unstable replicates: {', '.join(map(str, unstable))}")
    detail = "<br>".join(trends)
    if block["stable"]:
        return [
            '<div class="verdict met"><b>Stable</b>: no upward trend of the queue or KV use '
            f"across the measured window.<br>{detail}</div>"
        ]
    return [
        '<div class="verdict notmet"><b class="big">Unstable</b>: the queue or KV use trends '
        "upward across the measured window (offered load above capacity). Latency quantiles "
        f"are <b>horizon-dependent</b>: a longer run reports larger ones.<br>{detail}</div>"
    ]


def replicates_html(summary: Mapping[str, Any]) -> list[str]:
    """Replicates: per interval key the pooled value, the replicates' mean and 95 % CI."""
    block = summary.get("replicates")
    if not isinstance(block, Mapping):
        return []
    n = int(block.get("n") or 1)
    if n < 2:
        return ["<p>A single run: no confidence interval (run with replicates: N).</p>"]
    rows = []
    for group, stats in block.items():
        if not isinstance(stats, Mapping):
            continue
        for key, value in stats.items():
            if not isinstance(value, Mapping) or "ci95" not in value:
                continue
            ci = value.get("ci95")
            interval = "–" if ci is None else f"[{fmt(ci[0])}, {fmt(ci[1])}]"
            pooled = (summary.get(group) or {}).get(key)
            rows.append((f"{group}.{key}", fmt(pooled), fmt(value.get("mean")), interval))
    return [
        f"<h2>Replicates ({n} seeds)</h2>",
        f"<p>{esc(block.get('method'))}; pooled = every replicate's requests together; "
        "each replicate has its own directory replicate-&lt;k&gt;/.</p>",
        table_html(["key", "pooled", "mean of replicates", "95 % CI"], rows),
    ]


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


def sweep_keys(table: pd.DataFrame) -> list[str]:
    """The swept key-path columns of a sweep table: those between `label` and `run_dir`."""
    cols = list(table.columns)
    if "label" not in cols or "run_dir" not in cols:
        return []
    return cols[cols.index("label") + 1 : cols.index("run_dir")]


def load_sweep_table(sweep_dir: Path) -> pd.DataFrame:
    sweep_dir = Path(sweep_dir)
    if not is_sweep_dir(sweep_dir):
        raise ReportError(f"{sweep_dir}: not a sweep directory (no sweep.csv)")
    try:
        return pd.read_csv(sweep_dir / "sweep.csv")
    except _READ_ERRORS as err:
        raise ReportError(f"{sweep_dir / 'sweep.csv'}: cannot read: {err}") from err


def point_dir(sweep_dir: Path, row: Mapping[Any, Any]) -> Path:
    """A sweep point's run directory: sweep_dir/<label> (so a moved or copied sweep finds its
    own points), else the run_dir recorded in sweep.csv."""
    inside = Path(sweep_dir) / str(row["label"])
    return inside if inside.is_dir() else Path(str(row.get("run_dir", "")))


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
    rows = [
        [interval_cell(rec, c) for c in shown + extra] for rec in table.to_dict("records")
    ]
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
