"""A finished plan as files in its directory (docs/planner.md §6); the text it prints on
stdout is planner.console.

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
from clustersim.planner.comparison import comparison
from clustersim.planner.console import format_report as format_report  # re-export: cli
from clustersim.planner.engines import LaunchConfig, is_dp_attention
from clustersim.planner.plot import save_pareto
from clustersim.planner.run import PlanResult
from clustersim.planner.space import layout_label
from clustersim.planner.spec import PlanSpec
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
    "layout",
    "tp",
    "pp",
    "dp",
    "ep",
    "cp",
    "moe_tp",
    "dp_attention",
    "prefill_pool",
    "decode_pool",
    "stage",
    "reason",
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
        {
            "layout": r.label,
            **layout_fields(r.layout, r.pools, moe),
            "stage": r.stage,
            "reason": r.reason,
        }
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


def plan_options_json(spec: PlanSpec) -> dict[str, Any]:
    """plan.json `options` (without `resilience` when off: such plans keep their hashes)."""
    options = spec.options.model_dump(mode="json")
    if options.get("resilience") == "none":
        options.pop("resilience")
    return options


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
        "options": plan_options_json(spec),
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
        "pruned": [
            {"layout": p.label, "bound": p.bound, "reason": p.reason} for p in result.pruned
        ],
        "rule_of_thumb": {"layout": result.pick.label, "reasons": list(result.pick.reasons)},
        "best": _best_label(result),
        "comparison": comparison(result),
        **({"resilience": result.resilience.to_json()} if result.resilience is not None else {}),
        "emitted": [cfg.to_json() for cfg in result.configs],
    }
