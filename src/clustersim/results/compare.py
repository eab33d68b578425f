"""`clustersim compare A B`: two runs' summaries side by side, and a comparison report.

The comparison directory is `<out root>/compare-<A name>-vs-<B name>-<UTC stamp>[-N]` (out root
defaults to A's parent directory); it is always new, never an existing directory, and holds
comparison.csv (one row per summary key: a, b, diff = b − a, pct_diff = 100·(b − a)/|a|),
latency_cdf.png and latency_timeline.png (both runs overlaid) and report.html.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from clustersim.metrics.replicates import REPLICATE_KEYS
from clustersim.results import plots
from clustersim.results.html_page import config_yaml, esc, flatten, fmt, img_html, page, table_html
from clustersim.results.plots import Series
from clustersim.results.report import REPORT_NAME
from clustersim.results.run_files import RunFiles, load_run
from clustersim.results.run_sections import verdict_html
from clustersim.results.writer import make_unique_dir, safe_name, utc_stamp, write_text

NAME_CHARS = 40  # at most this many characters of each run's name in the directory name
# summary keys where a smaller value is better (prefix match); LARGER_BETTER likewise
SMALLER_BETTER = (
    "ttft_s.",
    "tpot_s.",
    "e2e_s.",
    "queue_s.",
    "preemptions",
    "requests_dropped",
    "experts.imbalance",
    "slo.windows_violating",
    "gpus",
)
LARGER_BETTER = (
    "throughput.",
    "slo.attainment",
    "slo.goodput_rps",
    "requests_completed",
    "slo.worst_window_attainment",
)
NEUTRAL = ("sim.", "slo.ttft_p99_s", "slo.tpot_p99_s", "slo.e2e_p99_s", "slo.worst_window_start_s")


@dataclass(frozen=True)
class DiffRow:
    """One summary key of both runs; diff and pct_diff only when both are numbers."""

    key: str
    a: Any
    b: Any
    diff: float | None
    pct_diff: float | None  # percent of |a|; None when a == 0 (or either is not a number)

    @property
    def verdict(self) -> str:
        """'better' / 'worse' for B relative to A, '' when neutral or equal."""
        if not self.diff or self.key.startswith(NEUTRAL):
            return ""
        if self.key.startswith(SMALLER_BETTER):
            return "better" if self.diff < 0 else "worse"
        if self.key.startswith(LARGER_BETTER):
            return "better" if self.diff > 0 else "worse"
        return ""


@dataclass(frozen=True)
class Comparison:
    a: RunFiles
    b: RunFiles
    rows: list[DiffRow]
    out_dir: Path

    @property
    def report(self) -> Path:
        return self.out_dir / REPORT_NAME


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def diff_rows(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[DiffRow]:
    """Every leaf key of either summary (A's order, then B's extra keys)."""
    fa, fb = dict(flatten(a)), dict(flatten(b))
    keys = list(fa) + [k for k in fb if k not in fa]
    rows = []
    for key in keys:
        va, vb = fa.get(key), fb.get(key)
        xa, xb = _number(va), _number(vb)
        diff = xb - xa if xa is not None and xb is not None else None
        pct: float | None = None
        if diff is not None and xa is not None:
            pct = 0.0 if diff == 0 else (100.0 * diff / abs(xa) if xa != 0 else None)
        rows.append(DiffRow(key, va, vb, diff, pct))
    return rows


def config_differences(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
    """(key path, A value, B value) of every configuration leaf that differs."""
    fa, fb = dict(flatten(a)), dict(flatten(b))
    keys = list(fa) + [k for k in fb if k not in fa]
    return [(k, fa.get(k), fb.get(k)) for k in keys if fa.get(k) != fb.get(k)]


def run_label(run: RunFiles) -> str:
    """A short path-safe name of a run: its directory name (a sweep point: the label)."""
    return safe_name(run.run_dir.name)[:NAME_CHARS]


def compare_runs(
    a_dir: Path, b_dir: Path, out_root: Path | None = None, now: datetime | None = None
) -> Comparison:
    """Load both runs, write the comparison directory, return what the CLI prints."""
    a, b = load_run(Path(a_dir)), load_run(Path(b_dir))
    rows = diff_rows(a.summary, b.summary)
    parent = Path(out_root) if out_root is not None else a.run_dir.resolve().parent
    out_dir = make_unique_dir(parent, f"compare-{run_label(a)}-vs-{run_label(b)}-{utc_stamp(now)}")
    table = pd.DataFrame(
        [(r.key, _csv(r.a), _csv(r.b), r.diff, r.pct_diff) for r in rows],
        columns=["key", "a", "b", "diff", "pct_diff"],
    )
    write_text(out_dir / "comparison.csv", table.to_csv(index=False, lineterminator="\n"))
    series = [
        Series(f"A: {run_label(a)}", a.requests, a.timeline),
        Series(f"B: {run_label(b)}", b.requests, b.timeline),
    ]
    images = {
        "latency_cdf.png": plots.save_png(
            plots.plot_latency_cdf(series, a.bounds), out_dir / "latency_cdf.png"
        ),
        "latency_timeline.png": plots.save_png(
            plots.plot_latency_timeline(series, a.bounds), out_dir / "latency_timeline.png"
        ),
    }
    comparison = Comparison(a, b, rows, out_dir)
    write_text(comparison.report, compare_html(comparison, images))
    return comparison


def _csv(value: Any) -> Any:
    return value if value is None or isinstance(value, int | float | str) else str(value)


def text_rows(rows: Sequence[DiffRow]) -> list[list[str]]:
    """Rows for the stdout table: key, A, B, B − A, %."""
    return [
        [
            r.key,
            fmt(r.a),
            fmt(r.b),
            "–" if r.diff is None else f"{r.diff:+.4g}",
            "–" if r.pct_diff is None else f"{r.pct_diff:+.1f} %",
        ]
        for r in rows
    ]


def interval_rows(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[tuple[str, str, str, str]]:
    """Keys with a 95 % interval in either run: (key, A, B, verdict). Disjoint intervals:
    the runs differ at 95 % confidence; overlapping ones: not shown to differ."""
    ra, rb = a.get("replicates") or {}, b.get("replicates") or {}
    rows = []
    for group, key in REPLICATE_KEYS:
        sa = (ra.get(group) or {}).get(key) or {}
        sb = (rb.get(group) or {}).get(key) or {}
        ca, cb = sa.get("ci95"), sb.get("ci95")
        if ca is None and cb is None:
            continue
        if ca is not None and cb is not None:
            verdict = "differ (disjoint)" if ca[1] < cb[0] or cb[1] < ca[0] else "overlap"
        else:
            verdict = "one run has no interval"
        rows.append((f"{group}.{key}", _interval_text(a, sa, group, key),
                     _interval_text(b, sb, group, key), verdict))  # fmt: skip
    return rows


def _interval_text(
    summary: Mapping[str, Any], stats: Mapping[str, Any], group: str, key: str
) -> str:
    ci = stats.get("ci95")
    if ci is None:
        return fmt((summary.get(group) or {}).get(key))
    return f"{fmt(stats.get('mean'))} [{fmt(ci[0])}, {fmt(ci[1])}]"


def intervals_html(c: Comparison) -> list[str]:
    rows = interval_rows(c.a.summary, c.b.summary)
    if not rows:
        return []
    return [
        "<h2>Confidence intervals (replicates)</h2>",
        "<p>Mean over replicates [95 % CI]. Disjoint intervals: the difference is significant "
        "at 95 %; overlapping: not shown to differ.</p>",
        table_html(["key", "A", "B", "intervals"], rows),
    ]


def compare_html(c: Comparison, images: Mapping[str, bytes]) -> str:
    la, lb = run_label(c.a), run_label(c.b)
    diffs = config_differences(c.a.config, c.b.config)
    body_rows = []
    for r, cells in zip(c.rows, text_rows(c.rows), strict=True):
        tds = "".join(
            f'<td class="{"k" if i == 0 else ("d" if i >= 3 else "")}">{esc(v)}</td>'
            for i, v in enumerate(cells)
        )
        body_rows.append(f'<tr class="{r.verdict}">{tds}</tr>')
    summary_table = (
        '<table><thead><tr><th class="k">key</th><th>A</th><th>B</th><th>B − A</th>'
        f"<th>%</th></tr></thead><tbody>{''.join(body_rows)}</tbody></table>"
    )
    body = [
        f"<h1>Comparison: {esc(la)} vs {esc(lb)}</h1>",
        f'<p class="sub">A = {esc(c.a.run_dir)}<br>B = {esc(c.b.run_dir)}</p>',
        "<h2>SLO verdicts</h2>",
        f"<p><b>A</b> ({esc(c.a.name)})</p>",
        verdict_html(c.a),
        f"<p><b>B</b> ({esc(c.b.name)})</p>",
        verdict_html(c.b),
        *intervals_html(c),
        "<h2>What differs in the configuration</h2>",
        table_html(["key", "A", "B"], [(k, fmt(x), fmt(y)) for k, x, y in diffs])
        if diffs
        else "<p>The resolved configurations are identical.</p>",
        "<h2>Plots</h2>",
        img_html(
            images["latency_timeline.png"],
            "latency_timeline.png",
            "p99 TTFT / TPOT per arrival window of both runs (dotted: arrival rates), and "
            "the fraction of each window's requests missing the SLO (A's bounds).",
        ),
        img_html(
            images["latency_cdf.png"],
            "latency_cdf.png",
            "TTFT and TPOT distributions of both runs (A's SLO bounds).",
        ),
        "<h2>Summaries</h2>",
        "<p>Green: B better than A, red: B worse (for keys with a direction).</p>",
        summary_table,
        "<h2>Resolved configurations</h2>",
        f"<details><summary>A</summary><pre>{esc(config_yaml(c.a.config))}</pre></details>",
        f"<details><summary>B</summary><pre>{esc(config_yaml(c.b.config))}</pre></details>",
    ]
    return page(f"clustersim compare: {la} vs {lb}", body)
