"""The Faults section of a run's report.html: summary.json `faults.*` and each fault's row
of faults.parquet (docs/faults.md)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from clustersim.results.html_page import esc, fmt, table_html
from clustersim.results.run_files import RunFiles


def faults_html(run: RunFiles) -> list[str]:
    block = run.summary.get("faults")
    if run.faults is None or not isinstance(block, Mapping):
        return []
    recovery = {
        (r.get("kind"), r.get("target"), r.get("start_s")): r.get("recover_s")
        for r in block.get("recovery") or []
        if isinstance(r, Mapping)
    }
    f = run.faults
    starts = f["start_s"].to_numpy(dtype=float)
    rows = [
        (
            fmt(start),
            fmt(end),
            kind,
            target,
            source,
            lost or "–",
            fmt(retried),
            fmt(failed),
            fmt(recovery.get((kind, target, start))),
        )
        for start, end, kind, target, source, lost, retried, failed in zip(
            starts,
            f["end_s"].to_numpy(dtype=float),
            f["kind"],
            f["target"],
            f["source"],
            f["replicas_affected"],
            f["requests_retried"],
            f["requests_failed"],
            strict=True,
        )
    ]
    return [
        "<h2>Faults</h2>",
        "<p>Fault windows are hatched purple on the timeline plots. " + _headline(block) + "</p>",
        table_html(
            [
                "start s",
                "end s",
                "kind",
                "target",
                "source",
                "replicas lost",
                "retried",
                "failed",
                "recover p99 s",
            ],
            rows,
        ),
    ]


def _headline(block: Mapping[str, Any]) -> str:
    return (
        f"Requests retried: {esc(fmt(block.get('requests_retried')))} "
        f"({esc(fmt(block.get('retries')))} retries), failed: "
        f"{esc(fmt(block.get('requests_failed')))}. SLO attainment inside fault windows "
        f"{esc(fmt(block.get('slo_attainment_inside')))}, outside "
        f"{esc(fmt(block.get('slo_attainment_outside')))}; baseline p99 TTFT "
        f"{esc(fmt(block.get('baseline_ttft_p99_s')))} s."
    )
