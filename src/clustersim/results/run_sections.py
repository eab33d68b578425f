"""The HTML sections of a run's report.html, each drawn from the run's files: the SLO verdict,
the worst windows, the measured window, the stability verdict, replicates and the summary."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from clustersim.config.schema import SLOSpec
from clustersim.metrics.summary import (
    completed_mask,
    measured_requests,
    slo_mask,
    values,
)
from clustersim.metrics.timeline import SLO_TARGET, window_slo_summary, worst_windows
from clustersim.results.html_page import esc, flatten, fmt, pct, table_html
from clustersim.results.run_files import RunFiles

WORST_WINDOWS = 10  # rows of the report's worst-windows table


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
    rows = worst_windows(run.timeline).to_frame()
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
