"""A plan directory's report.html, drawn from its files (plan.json, plan.csv, rejected.csv,
pareto.png, launch/): `clustersim plan` writes it, `clustersim report PLAN_DIR` redraws it.
Self-contained (the Pareto plot inlined), like a run's report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from clustersim.results.html_page import esc, fmt, img_html, page, table_html
from clustersim.results.report import REPORT_NAME
from clustersim.results.run_files import ReportError
from clustersim.results.writer import write_text

PLAN_TABLE = (
    "rank", "layout", "gpus", "status", "slo_met", "slo_class", "ttft_p99_s", "tpot_p99_s",
    "goodput_per_gpu", "notes",
)  # fmt: skip


def is_plan_dir(path: Path) -> bool:
    return (Path(path) / "plan.json").is_file()


def _cell(value: Any) -> Any:
    if isinstance(value, float) and value != value:  # NaN
        return None
    return value.item() if hasattr(value, "item") else value


def _table(path: Path, columns: tuple[str, ...]) -> str:
    if not path.is_file():
        return "<p>(none)</p>"
    frame = pd.read_csv(path)
    if frame.empty:
        return "<p>(none)</p>"
    shown = [c for c in columns if c in frame.columns] or list(frame.columns)
    rows = [[fmt(_cell(v)) for v in rec] for rec in frame[shown].itertuples(index=False)]
    return table_html(shown, rows, key_cols=2)


def render_plan(plan_dir: Path) -> Path:
    """(Re)write plan_dir/report.html; ReportError when the directory is not a plan."""
    plan_dir = Path(plan_dir)
    if not is_plan_dir(plan_dir):
        raise ReportError(f"{plan_dir}: not a plan directory (no plan.json)")
    try:
        plan = json.loads((plan_dir / "plan.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ReportError(f"{plan_dir / 'plan.json'}: cannot read: {err}") from err
    counts = plan.get("counts") or {}
    body = [
        f"<h1>Plan {esc(plan.get('plan'))}</h1>",
        f'<p class="sub">{esc(plan_dir)} — {esc(plan.get("file"))}, clustersim '
        f"{esc(plan.get('clustersim_version'))}; "
        + ", ".join(f"{esc(k)} {esc(v)}" for k, v in counts.items())
        + "</p>",
        "<h2>Best layout and the rule of thumb</h2>",
        f"<p><b>best:</b> {esc(plan.get('best') or 'none meets the SLO')}</p>",
        "<pre>" + esc("\n".join(plan.get("comparison") or [])) + "</pre>",
        "<h2>Candidates (rank order)</h2>",
        "<p>slo_class: with replicates, meets / marginal / misses the SLO at 95 % confidence "
        "(docs/planner.md §4).</p>",
        _table(plan_dir / "plan.csv", PLAN_TABLE),
    ]
    pareto = plan_dir / "pareto.png"
    if pareto.is_file():
        body += [
            "<h2>Goodput per GPU against p99 latency</h2>",
            img_html(
                pareto.read_bytes(),
                "pareto.png",
                "Filled: meets the SLO; star: the best; red: the Pareto front.",
            ),
        ]
    body += ["<h2>Launch configs</h2>"]
    launch = plan_dir / "launch"
    files = sorted(p for p in launch.rglob("*") if p.is_file()) if launch.is_dir() else []
    if not files:
        body.append("<p>(none emitted)</p>")
    for path in files:
        rel = path.relative_to(plan_dir)
        text = path.read_text(encoding="utf-8", errors="replace")
        body.append(f"<details><summary>{esc(rel)}</summary><pre>{esc(text)}</pre></details>")
    body += [
        "<h2>Rejected layouts</h2>",
        _table(plan_dir / "rejected.csv", ("layout", "stage", "reason")),
    ]
    out = plan_dir / REPORT_NAME
    write_text(out, page(f"clustersim plan: {plan.get('plan')}", body))
    return out
