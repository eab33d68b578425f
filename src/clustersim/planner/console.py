"""A finished plan as the text `clustersim plan` prints: summary, ranking table, the
rule-of-thumb comparison, rejections, pruned bounds and launch configs (docs/planner.md §6)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from clustersim.planner.comparison import comparison, num_text
from clustersim.planner.rank import Row
from clustersim.planner.run import PlanResult
from clustersim.planner.search import Pruned
from clustersim.planner.space import rejected_counts

TABLE_HEADERS = (
    "#",
    "layout",
    "GPUs",
    "status",
    "SLO",
    "TTFT p50",
    "TTFT p99",
    "TPOT p50",
    "TPOT p99",
    "goodput/GPU",
    "notes",
)


def table_rows(rows: Sequence[Row], limit: int | None = None) -> list[list[str]]:
    out: list[list[str]] = []
    for i, r in enumerate(rows, start=1):
        if limit is not None and i > limit:
            break
        slo = ("yes" if r.meets else "no") if r.status == "simulated" else "-"
        notes = "; ".join([*r.misses, *r.notes])
        out.append(
            [
                str(i),
                r.label,
                str(r.gpus),
                r.status,
                slo,
                num_text(r.metric("ttft_s", "p50"), ".3f"),
                num_text(r.metric("ttft_s", "p99"), ".3f"),
                num_text(r.metric("tpot_s", "p50"), ".4f"),
                num_text(r.metric("tpot_s", "p99"), ".4f"),
                num_text(r.goodput_per_gpu, ".3f"),
                notes[:90] + ("…" if len(notes) > 90 else ""),
            ]
        )
    return out


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows, strict=True)]
    return "\n".join(
        "  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
        for line in [headers, *rows]
    )


def format_report(result: PlanResult, paths: dict[str, Path]) -> str:
    """The text `clustersim plan` prints: summary, ranking, comparison, rejections, configs."""
    spec, stats, space = result.spec, result.stats, result.space
    base = spec.base
    offered = "n/a" if stats.offered_rps is None else f"{stats.offered_rps:.2f} req/s"
    slo = base.slo
    bounds = ", ".join(
        f"{name} ≤ {v:g} s"
        for name, v in (
            ("p99 TTFT", slo.ttft_p99_s),
            ("p99 TPOT", slo.tpot_p99_s),
            ("p99 e2e", slo.e2e_p99_s),
        )
        if v is not None
    )
    counts = plan_json_counts(result)
    closed = stats.offered_rps is None and base.workload.arrival.process == "closed"
    counted = "requests generated (closed loop: at most)" if closed else "measured requests"
    shown = [r for r in result.rows if r.status != "pruned"]
    hidden = len(shown) < len(result.rows)
    lines = [
        f"plan {spec.name}: {base.model.name} on {base.topology.name} "
        f"(1..{spec.max_gpus} GPUs), engines {', '.join(spec.options.engines)}",
        f"workload: {stats.n} {counted}, offered {offered}, mean prompt "
        f"{stats.mean_prompt:.0f} / output {stats.mean_output:.0f} tokens; SLO {bounds}",
        f"layouts: {counts['candidates']} candidates, {counts['rejected']} rejected, "
        f"{counts['filtered_out']} filtered out, {counts['pruned']} pruned by bounds, "
        f"{counts['simulated']} simulated",
        *space.notes,
        "",
        format_table(TABLE_HEADERS, table_rows(shown)),
        *([f"({len(result.rows) - len(shown)} pruned layouts: plan.csv)"] if hidden else []),
        "",
        *comparison(result),
        *resilience_lines(result),
        "rule-of-thumb reasons:",
        *[f"  - {r}" for r in result.pick.reasons],
    ]
    if space.rejected:
        lines += ["", "rejected (by check; every layout in rejected.csv):"]
        lines += [
            f"  {stage}: {n} — e.g. {reason}"
            for stage, n, reason in rejected_counts(space.rejected)
        ]
    if result.pruned:
        lines += ["", "pruned (not simulated; every layout in plan.csv):"]
        lines += [f"  {line}" for line in pruned_summary(result.pruned)]
    if result.configs:
        lines += ["", "launch configs:"]
        for cfg in result.configs:
            lines += ["", *[f"  {x}".rstrip() for x in cfg.script().rstrip("\n").splitlines()[1:]]]
    lines += ["", f"plan directory: {result.plan_dir}"]
    return "\n".join(lines)


def resilience_lines(result: PlanResult) -> list[str]:
    """plan.resilience: n_plus_1 — the resilient pick next to the plain one, and its cost."""
    res = result.resilience
    if res is None:
        return []
    plain = f"{res.plain.label} ({res.plain.gpus} GPUs)" if res.plain else "none"
    if res.pick is None:
        return [
            f"n+1: no simulated layout meets the SLO with its worst node down "
            f"(plain pick: {plain})",
            "",
        ]
    cost = res.extra_gpus
    return [
        f"n+1: {res.pick.label} ({res.pick.gpus} GPUs) meets the SLO with its worst node "
        f"down; plain pick {plain}; the guarantee costs "
        f"{'n/a' if cost is None else f'{cost:+d}'} GPUs",
        "",
    ]


PRUNE_BOUNDS = {
    "tpot_lb": "TPOT lower bound > SLO",
    "ttft_lb": "p99 TTFT lower bound > SLO",
    "tpot_load": "estimated TPOT at the offered load > SLO × (1 + margin)",
    "capacity": "analytic capacity × (1 + margin) < offered load",
    "gpus": "more GPUs than a simulated layout that meets the SLO",
}
EXAMPLES = 4  # pruned layouts named per bound on stdout


def pruned_summary(pruned: Sequence[Pruned]) -> list[str]:
    """One line per bound: count, what it means, a few layouts with the first one's numbers."""
    lines: list[str] = []
    for bound, what in PRUNE_BOUNDS.items():
        group = [p for p in pruned if p.bound == bound]
        if not group:
            continue
        names = ", ".join(p.label for p in group[:EXAMPLES])
        more = f", … (+{len(group) - EXAMPLES})" if len(group) > EXAMPLES else ""
        lines.append(f"{what}: {len(group)} — {names}{more}; e.g. {group[0].reason}")
    return lines


def plan_json_counts(result: PlanResult) -> dict[str, int]:
    return {
        "candidates": len(result.space.candidates),
        "rejected": len(result.space.rejected),
        "filtered_out": result.space.filtered_out,
        "pruned": len(result.pruned),
        "simulated": sum(1 for r in result.rows if r.status == "simulated"),
    }
