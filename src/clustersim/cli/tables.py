"""Stdout tables: plain columns, the per-run summary row, number and interval cells."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

SUMMARY_HEADERS = [
    "point",
    "reps",
    "done",
    "dropped",
    "out tok/s",
    "TTFT p50 s",
    "TTFT p99 s",
    "TPOT p99 s",
    "SLO att.",
    "goodput rps",
    "stable",
    "run dir",
]


def summary_row(label: str, s: Mapping[str, Any], run_dir: Path) -> list[str]:
    """A stdout row; with replicates the interval keys read `mean±half-width` (95 % CI)."""
    reps = (s.get("replicates") or {}).get("n", 1)
    return [
        label,
        str(reps),
        str(s["requests_completed"]),
        str(s["requests_dropped"]),
        fmt_ci(s, ("throughput", "output_tokens_per_s"), ".1f"),
        fmt_ci(s, ("ttft_s", "p50"), ".3f"),
        fmt_ci(s, ("ttft_s", "p99"), ".3f"),
        fmt_ci(s, ("tpot_s", "p99"), ".4f"),
        fmt_ci(s, ("slo", "attainment"), ".1%"),
        fmt_ci(s, ("slo", "goodput_rps"), ".2f"),
        stable_text((s.get("stability") or {}).get("stable")),
        str(run_dir),
    ]


def stable_text(stable: bool | None) -> str:
    """`yes`, `NO` (queue or KV use trends upward: latencies depend on the horizon), `-`."""
    return "-" if stable is None else ("yes" if stable else "NO")


def fmt_ci(s: Mapping[str, Any], path: tuple[str, str], spec: str) -> str:
    """The pooled value, or `mean±half` of the replicates' 95 % interval when there is one."""
    stats = ((s.get("replicates") or {}).get(path[0]) or {}).get(path[1]) or {}
    ci = stats.get("ci95")
    if ci is None or stats.get("mean") is None:
        return fmt_number(s[path[0]][path[1]], spec)
    half = (ci[1] - ci[0]) / 2.0
    if spec.endswith("%"):
        return f"{format(stats['mean'], spec)}±{100.0 * half:.1f}"
    return f"{format(stats['mean'], spec)}±{format(half, spec)}"


def fmt_number(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Plain left-aligned columns separated by two spaces."""
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows, strict=True)]
    lines = [headers, *rows]
    return "\n".join(
        "  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )
