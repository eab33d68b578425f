"""The rule-of-thumb pick against the simulated best, and why they differ (plan.json and
stdout)."""

from __future__ import annotations

import math

from clustersim.config.schema import Layout
from clustersim.planner.rank import Row
from clustersim.planner.run import PlanResult


def num_text(x: float | None, spec: str) -> str:
    """`x` in format `spec`; '-' when it is None or not finite."""
    return "-" if x is None or not math.isfinite(x) else format(x, spec)


def _axes_diff(a: Row, b: Row) -> str:
    """How row b's layout differs from row a's: 'tp 8→4, dp 2→3' (or the deployments)."""
    if a.pools is not None or b.pools is not None:
        if a.pools is None:
            return "co-located → disaggregated"
        if b.pools is None:
            return "disaggregated → co-located"
        return "other pools"
    return _layout_diff(a.layout, b.layout)


def _layout_diff(a: Layout, b: Layout) -> str:
    parts = []
    for name in ("tp", "pp", "dp", "ep", "cp"):
        x, y = getattr(a, name), getattr(b, name)
        if x != y:
            parts.append(f"{name} {x}→{y}")
    return ", ".join(parts) or "same axes"


def _class_text(row: Row) -> str:
    """` [meets / marginal / misses at 95 % confidence]` for a replicated row, else ''."""
    return "" if row.slo_class is None else f" [{row.slo_class} at 95 % confidence]"


def comparison(result: PlanResult) -> list[str]:
    """The rule-of-thumb pick against the simulated best, with the reason they differ."""
    pick, top = result.pick, result.best
    if pick.label is None:
        return ["rule of thumb: no pick (" + "; ".join(pick.reasons) + ")"]
    row = result.row(pick.label)
    head = f"rule of thumb: {pick.label}"
    if row is not None and row.status == "simulated":
        state = "meets the SLO" if row.meets else "misses the SLO (" + "; ".join(row.misses) + ")"
        head += f" ({row.gpus} GPUs) {state}{_class_text(row)}"
    if top is None:
        return [head, "simulated best: none — no simulated layout meets the SLO"]
    best_line = (
        f"simulated best: {top.label} ({top.gpus} GPUs, "
        f"{num_text(top.goodput_per_gpu, '.3f')} req/s/GPU of SLO goodput){_class_text(top)}"
    )
    if top.label == pick.label:
        return [head, best_line, "→ the rule of thumb agrees with the simulation"]
    assert row is not None
    diff = _axes_diff(row, top)
    if row.status != "simulated" or not row.meets:
        why = f"the pick misses the SLO; the best ({diff}) meets it with {top.gpus} GPUs"
    elif top.gpus < row.gpus:
        why = (
            f"{top.label} meets the SLO with {row.gpus - top.gpus} fewer GPUs ({diff}); "
            f"the rules sized for {row.gpus}"
        )
    else:
        why = (
            f"same GPU count, higher goodput per GPU ({num_text(top.goodput_per_gpu, '.3f')} vs "
            f"{num_text(row.goodput_per_gpu, '.3f')} req/s/GPU; {diff})"
        )
    return [head, best_line, f"→ they differ: {why}"]
