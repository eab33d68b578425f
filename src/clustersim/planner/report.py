"""A finished plan as files in its directory and as text on stdout (docs/planner.md §6).

Files (each written atomically; plan.json last, its presence marks a complete plan):
  plan.csv        one row per candidate, in rank order (PLAN_COLUMNS)
  rejected.csv    every rejected layout: label, tp..moe_tp, stage, reason
  pareto.png      goodput per GPU against p99 TTFT / TPOT, Pareto front marked
  launch/<label>/<engine>.sh (+ <label>.trtllm.yaml)   the emitted launch configs
  plan.json       everything: options, workload, candidates with estimates and summaries,
                  rejected, pruned, rule-of-thumb reasons, best, comparison, emitted configs
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from clustersim import __version__
from clustersim.config.load import resolved_config
from clustersim.config.schema import Layout
from clustersim.planner.engines import LaunchConfig, is_dp_attention
from clustersim.planner.plot import save_pareto
from clustersim.planner.rank import Row
from clustersim.planner.run import PlanResult
from clustersim.planner.search import Pruned
from clustersim.planner.space import layout_label, rejected_counts
from clustersim.results.writer import safe_name, write_json, write_text

PLAN_COLUMNS = (
    "rank",
    "layout",
    "gpus",
    "tp",
    "pp",
    "dp",
    "ep",
    "cp",
    "moe_tp",
    "dp_attention",
    "status",
    "slo_met",
    "slo_class",
    "ttft_p50_s",
    "ttft_p99_s",
    "tpot_p50_s",
    "tpot_p99_s",
    "goodput_rps",
    "goodput_per_gpu",
    "output_tokens_per_s_per_gpu",
    "requests_dropped",
    "tpot_lb_s",
    "ttft_p99_lb_s",
    "loaded_tpot_est_s",
    "capacity_rps",
    "prefill_pool",  # disaggregated rows: the pools' layout labels (axes columns left empty)
    "decode_pool",
    "prefill_capacity_rps",
    "decode_capacity_rps",
    "notes",
)
REJECTED_COLUMNS = (
    "layout", "tp", "pp", "dp", "ep", "cp", "moe_tp", "dp_attention", "prefill_pool",
    "decode_pool", "stage", "reason",
)
LAUNCH_DIR = "launch"


AXES = ("tp", "pp", "dp", "ep", "cp", "moe_tp", "dp_attention")


def layout_fields(
    layout: Layout, pools: tuple[Layout, Layout] | None = None, moe: bool = False
) -> dict[str, Any]:
    """The axes columns of a co-located layout; a disaggregated one leaves them empty and
    names its pools (`prefill_pool`, `decode_pool`)."""
    if pools is not None:
        return {
            **dict.fromkeys(AXES),
            "prefill_pool": layout_label(pools[0], moe),
            "decode_pool": layout_label(pools[1], moe),
        }
    return {
        "tp": layout.tp,
        "pp": layout.pp,
        "dp": layout.dp,
        "ep": layout.ep,
        "cp": layout.cp,
        "moe_tp": layout.moe_tp,
        "dp_attention": is_dp_attention(layout),
        "prefill_pool": None,
        "decode_pool": None,
    }


def _nan_none(x: float) -> float | None:
    return None if math.isnan(x) else x


def plan_rows(result: PlanResult) -> list[dict[str, Any]]:
    """plan.csv rows (PLAN_COLUMNS), rank order; latency / goodput empty unless simulated."""
    out: list[dict[str, Any]] = []
    for i, r in enumerate(result.rows, start=1):
        est = result.estimates[r.label]
        notes = list(r.misses) + list(r.notes)
        moe = result.spec.base.model.is_moe
        out.append(
            {
                "rank": i,
                "layout": r.label,
                "gpus": r.gpus,
                **layout_fields(r.layout, r.pools, moe),
                "status": r.status,
                "slo_met": r.meets if r.status == "simulated" else None,
                "slo_class": r.slo_class,
                "ttft_p50_s": r.metric("ttft_s", "p50"),
                "ttft_p99_s": r.metric("ttft_s", "p99"),
                "tpot_p50_s": r.metric("tpot_s", "p50"),
                "tpot_p99_s": r.metric("tpot_s", "p99"),
                "goodput_rps": r.metric("slo", "goodput_rps"),
                "goodput_per_gpu": r.goodput_per_gpu,
                "output_tokens_per_s_per_gpu": r.metric(
                    "throughput", "output_tokens_per_s_per_gpu"
                ),
                "requests_dropped": r.metric("requests_dropped"),
                "tpot_lb_s": est.tpot_lb_s,
                "ttft_p99_lb_s": est.ttft_p99_lb_s,
                "loaded_tpot_est_s": est.loaded_tpot_s,
                "capacity_rps": est.capacity_rps,
                "prefill_capacity_rps": _nan_none(est.prefill_capacity_rps),
                "decode_capacity_rps": _nan_none(est.decode_capacity_rps),
                "notes": "; ".join(notes),
            }
        )
    return out


# --------------------------------------------------------------------------- comparison


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
        f"{_num(top.goodput_per_gpu, '.3f')} req/s/GPU of SLO goodput){_class_text(top)}"
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
            f"same GPU count, higher goodput per GPU ({_num(top.goodput_per_gpu, '.3f')} vs "
            f"{_num(row.goodput_per_gpu, '.3f')} req/s/GPU; {diff})"
        )
    return [head, best_line, f"→ they differ: {why}"]


# --------------------------------------------------------------------------- files


def write_plan(result: PlanResult) -> dict[str, Path]:
    """Write every plan file (module docstring); returns name → path."""
    d = result.plan_dir
    paths: dict[str, Path] = {}
    rows = plan_rows(result)
    paths["plan.csv"] = d / "plan.csv"
    _write_csv(paths["plan.csv"], rows, PLAN_COLUMNS)
    paths["rejected.csv"] = d / "rejected.csv"
    _write_csv(paths["rejected.csv"], rejected_rows(result), REJECTED_COLUMNS)
    paths["pareto.png"] = d / "pareto.png"
    save_pareto(result.rows, result.spec.base.slo, _best_label(result), paths["pareto.png"])
    for cfg in result.configs:
        for name, path in write_launch(d / LAUNCH_DIR / safe_name(cfg.label), cfg).items():
            paths[name] = path
    paths["plan.json"] = d / "plan.json"
    write_json(paths["plan.json"], plan_json(result, rows))
    return paths


def rejected_rows(result: PlanResult) -> list[dict[str, Any]]:
    moe = result.spec.base.model.is_moe
    return [
        {"layout": r.label, **layout_fields(r.layout, r.pools, moe), "stage": r.stage,
         "reason": r.reason}
        for r in result.space.rejected
    ]


def write_launch(directory: Path, cfg: LaunchConfig) -> dict[str, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}
    script = directory / f"{cfg.engine}.sh"
    write_text(script, cfg.script())
    out[f"{cfg.label}/{cfg.engine}.sh"] = script
    for name, text in cfg.files.items():
        path = directory / name
        write_text(path, text)
        out[f"{cfg.label}/{name}"] = path
    return out


def _write_csv(path: Path, rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> None:
    # object columns: an axis left empty on a disaggregated row keeps the others integers
    df = pd.DataFrame(list(rows), columns=list(columns), dtype=object)
    write_text(path, df.to_csv(index=False, lineterminator="\n"))


def _best_label(result: PlanResult) -> str | None:
    return result.best.label if result.best is not None else None


def plan_json(result: PlanResult, rows: list[dict[str, Any]]) -> dict[str, Any]:
    spec, stats = result.spec, result.stats
    base = resolved_config(spec.base)
    base.pop("layout", None)
    by_row = {r.label: r for r in result.rows}
    candidates = []
    for c in result.space.candidates:
        row = by_row[c.label]
        est = result.estimates[c.label]
        layout: dict[str, Any] = (
            c.layout.model_dump(mode="json")
            if c.pools is None
            else {
                "prefill": c.pools[0].layout.model_dump(mode="json"),
                "decode": c.pools[1].layout.model_dump(mode="json"),
            }
        )
        memory = [p.memory for p in c.pools] if c.pools is not None else [c.memory]
        candidates.append(
            {
                "label": c.label,
                "disaggregated": c.disaggregated,
                "layout": layout,
                "gpus": c.gpus,
                "status": row.status,
                "slo_met": row.meets if row.status == "simulated" else None,
                "misses": list(row.misses),
                "notes": list(row.notes),
                "engines": {
                    e: {"ok": v.ok, "rule": v.rule, "workaround": v.workaround}
                    for e, v in c.verdicts.items()
                },
                "memory": [  # one entry; disaggregated: prefill pool, decode pool
                    {
                        "weights_per_gpu_GiB": m.weights_per_gpu_bytes / 2**30,
                        "kv_per_gpu_GiB": m.kv_per_gpu_bytes / 2**30,
                        "kv_tokens_per_replica": m.kv_tokens_per_replica,
                    }
                    for m in memory
                ],
                "estimate": {
                    "tpot_lb_s": est.tpot_lb_s,
                    "ttft_p99_lb_s": est.ttft_p99_lb_s,
                    "replica_capacity_rps": est.replica_capacity_rps,
                    "capacity_rps": est.capacity_rps,
                    "batch_seqs": est.batch_seqs,
                    "step_s": est.step_s,
                    "loaded_tpot_s": est.loaded_tpot_s,
                    "prefill_capacity_rps": _nan_none(est.prefill_capacity_rps),
                    "decode_capacity_rps": _nan_none(est.decode_capacity_rps),
                },
                "summary": dict(row.summary) if row.summary is not None else None,
            }
        )
    return {
        "plan": spec.name,
        "file": spec.path,
        "clustersim_version": __version__,
        "options": spec.options.model_dump(mode="json"),
        "base": base,
        "workload": {
            "requests_measured": stats.n,
            "offered_rps": stats.offered_rps,
            "mean_prompt_tokens": stats.mean_prompt,
            "mean_output_tokens": stats.mean_output,
            "p99_prompt_tokens": stats.p99_prompt,
        },
        "counts": {
            "candidates": len(result.space.candidates),
            "rejected": len(result.space.rejected),
            "filtered_out": result.space.filtered_out,
            "pruned": len(result.pruned),
            "simulated": sum(1 for r in result.rows if r.status == "simulated"),
            "failed": sum(1 for r in result.rows if r.status == "failed"),
        },
        "space_notes": list(result.space.notes),
        "ranking": rows,
        "candidates": candidates,
        "disaggregation": result.space.disaggregation,
        "rejected": rejected_rows(result),
        "pruned": [{"layout": p.label, "bound": p.bound, "reason": p.reason}
                   for p in result.pruned],
        "rule_of_thumb": {"layout": result.pick.label, "reasons": list(result.pick.reasons)},
        "best": _best_label(result),
        "comparison": comparison(result),
        "emitted": [cfg.to_json() for cfg in result.configs],
    }


# --------------------------------------------------------------------------- stdout

TABLE_HEADERS = (
    "#", "layout", "GPUs", "status", "SLO", "TTFT p50", "TTFT p99", "TPOT p50", "TPOT p99",
    "goodput/GPU", "notes",
)


def _num(x: float | None, spec: str) -> str:
    return "-" if x is None or not math.isfinite(x) else format(x, spec)


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
                _num(r.metric("ttft_s", "p50"), ".3f"),
                _num(r.metric("ttft_s", "p99"), ".3f"),
                _num(r.metric("tpot_s", "p50"), ".4f"),
                _num(r.metric("tpot_s", "p99"), ".4f"),
                _num(r.goodput_per_gpu, ".3f"),
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
        for name, v in (("p99 TTFT", slo.ttft_p99_s), ("p99 TPOT", slo.tpot_p99_s),
                        ("p99 e2e", slo.e2e_p99_s))
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
        "rule-of-thumb reasons:",
        *[f"  - {r}" for r in result.pick.reasons],
    ]
    if space.rejected:
        lines += ["", "rejected (by check; every layout in rejected.csv):"]
        lines += [f"  {stage}: {n} — e.g. {reason}" for stage, n, reason in
                  rejected_counts(space.rejected)]
    if result.pruned:
        lines += ["", "pruned (not simulated; every layout in plan.csv):"]
        lines += [f"  {line}" for line in pruned_summary(result.pruned)]
    if result.configs:
        lines += ["", "launch configs:"]
        for cfg in result.configs:
            lines += ["", *[f"  {x}".rstrip() for x in cfg.script().rstrip("\n").splitlines()[1:]]]
    lines += ["", f"plan directory: {result.plan_dir}"]
    return "\n".join(lines)


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
