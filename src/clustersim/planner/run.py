"""Run a plan end to end: enumerate (co-located, then disaggregated) → estimate → rule of
thumb → prune → simulate → rank → emit → write (docs/planner.md). `run_plan` returns
everything; `report.py` writes and prints it.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from clustersim.config.errors import ConfigError
from clustersim.jobs import ExecutorName, SimJob, SimResult, default_workers, run_jobs
from clustersim.planner.analytic import (
    Estimate,
    WorkloadStats,
    disagg_estimate,
    estimate,
    workload_stats,
)
from clustersim.planner.confidence import slo_class
from clustersim.planner.disagg import DisaggSpace, enumerate_disaggregated, with_disaggregated
from clustersim.planner.engines import (
    LaunchConfig,
    Pools,
    StepTime,
    disaggregated_launch,
    launch_config,
)
from clustersim.planner.rank import Row, best, judge, rank
from clustersim.planner.resilience import Resilience, check_n_plus_1
from clustersim.planner.rules import RulePick, rule_of_thumb
from clustersim.planner.search import PlanError, Pruned, prune_reason, simulate_job
from clustersim.planner.space import Candidate, Space, enumerate_space, pool_label
from clustersim.planner.spec import PlanSpec, plan_dir_identity
from clustersim.results.writer import new_run_dir, safe_name
from clustersim.runner import simulate_job_pooled

RUNS_DIR = "runs"  # candidates' run directories inside the plan directory (plan.keep_runs)


@dataclass(frozen=True)
class PlanResult:
    spec: PlanSpec
    stats: WorkloadStats
    space: Space
    estimates: dict[str, Estimate]
    pick: RulePick
    pruned: tuple[Pruned, ...]
    rows: tuple[Row, ...]  # ranked
    best: Row | None
    configs: tuple[LaunchConfig, ...]
    plan_dir: Path
    resilience: Resilience | None = None  # plan.resilience: n_plus_1 (planner/resilience.py)

    def candidate(self, label: str) -> Candidate:
        return next(c for c in self.space.candidates if c.label == label)

    def row(self, label: str) -> Row | None:
        return next((r for r in self.rows if r.label == label), None)


def run_plan(
    spec: PlanSpec,
    out_root: Path,
    executor: ExecutorName = "local",
    quiet: bool = False,
) -> PlanResult:
    """Everything of the module docstring but printing; files go to a new plan directory."""
    stats = workload_stats(spec.base)
    colocated = enumerate_space(spec, stats.p99_prompt)
    co_estimates = {c.label: estimate(c.exp, c.built, stats) for c in colocated.candidates}
    # the rule's co-located pick shapes the pools it would disaggregate into (disagg.py)
    co_pick = rule_of_thumb(spec, colocated.candidates, co_estimates, stats)
    prefer = next(
        ((c.layout.tp, c.layout.cp) for c in colocated.candidates if c.label == co_pick.label),
        None,
    )
    dis = enumerate_disaggregated(spec, stats, colocated.cp_enumerated, prefer)
    space = with_disaggregated(colocated, dis)
    if not space.candidates:
        raise PlanError(no_candidate_message(spec, space))
    emit_labels = _requested_labels(spec, space)
    estimates = {**co_estimates, **disagg_estimates(space, dis)}
    pick = rule_of_thumb(
        spec, space.candidates, estimates, stats, space.reference, space.disaggregation == "only"
    )
    opts = spec.options
    pruned: list[Pruned] = []
    to_run: list[Candidate] = []
    for cand in space.candidates:
        why = prune_reason(
            estimates[cand.label], spec.base.slo, stats.offered_rps, opts.estimate_margin
        )
        if opts.prune and why is not None and cand.label != pick.label:
            pruned.append(Pruned(cand.label, why.bound, why.reason))
        else:
            to_run.append(cand)
    out_root.mkdir(parents=True, exist_ok=True)
    plan_dir = new_run_dir(out_root, spec.name, plan_dir_identity(spec))
    results, gpu_pruned = _simulate(spec, to_run, pick, plan_dir, executor, quiet)
    pruned += gpu_pruned
    rows = _rows(spec, space, results, pruned, pick)
    ranked = rank(rows)
    top = best(ranked)
    resilience = None
    if opts.resilience == "n_plus_1":
        resilience, ranked = check_n_plus_1(spec, ranked, space.candidates, top, executor, quiet)
        top = resilience.pick
    labels = _emit_order(spec, ranked, top, emit_labels)
    all_estimates = {**estimates, **dis.pool_estimates}
    configs = tuple(
        candidate_launch(
            engine,
            _candidate(space, label),
            opts.sglang_moe_a2a_backend,
            launch_steps(_candidate(space, label), _row(ranked, label), all_estimates),
        )
        for label in labels
        for engine in opts.engines
    )
    return PlanResult(
        spec,
        stats,
        space,
        estimates,
        pick,
        tuple(pruned),
        tuple(ranked),
        top,
        configs,
        plan_dir,
        resilience,
    )


def disagg_estimates(space: Space, dis: DisaggSpace) -> dict[str, Estimate]:
    """Analytic estimates of the disaggregated candidates: each combines its pools' estimates
    (computed once per pool layout while the pools were chosen: a pool's numbers do not
    depend on the other pool)."""
    out: dict[str, Estimate] = {}
    for c in space.candidates:
        if c.pools is None:
            continue
        pf, dc = c.pools
        out[c.label] = disagg_estimate(
            dis.pool_estimates[pool_label("prefill", pf.label)],
            dis.pool_estimates[pool_label("decode", dc.label)],
        )
    return out


def candidate_launch(
    engine: str, cand: Candidate, a2a: str, steps: LaunchSteps = (None, None)
) -> LaunchConfig:
    """The launch config of one candidate (co-located, or both pools and the router);
    `steps`: (prefill pool, decode pool or co-located servers) step times (launch_steps)."""
    if cand.pools is None:
        return launch_config(engine, cand.exp, cand.memory, cand.label, a2a, steps[1])
    pf, dc = cand.pools
    pools = Pools(((pf.exp, pf.memory), (dc.exp, dc.memory)), steps)
    return disaggregated_launch(engine, cand.label, pools, a2a)


LaunchSteps = tuple[StepTime | None, StepTime | None]


def launch_steps(
    cand: Candidate, row: Row | None, estimates: Mapping[str, Estimate]
) -> LaunchSteps:
    """Mean step times that put the EPLB interval in engine steps (engines/eplb.py): the
    serving (decode) side's is the simulated mean TPOT — one forward pass per output token
    while serving — else the analytic TPOT at the offered load; a prefill pool's is its
    analytic step (`estimates` holds the pools' too, under their pool labels)."""
    tpot = row.metric("tpot_s", "mean") if row is not None else None
    est = estimates.get(cand.label)
    serve: StepTime | None = None
    if tpot is not None and tpot > 0:
        serve = StepTime(tpot, f"simulated mean TPOT of {cand.label}")
    elif est is not None and math.isfinite(est.loaded_tpot_s) and est.loaded_tpot_s > 0:
        serve = StepTime(est.loaded_tpot_s, f"analytic mean TPOT of {cand.label}")
    if cand.pools is None:
        return None, serve
    pf_label = pool_label("prefill", cand.pools[0].label)
    pf_est = estimates.get(pf_label)
    prefill = StepTime(pf_est.step_s, f"analytic step of {pf_label}") if pf_est else None
    return prefill, serve


def _row(rows: Sequence[Row], label: str) -> Row | None:
    return next((r for r in rows if r.label == label), None)


def _simulate(
    spec: PlanSpec,
    to_run: list[Candidate],
    pick: RulePick,
    plan_dir: Path,
    executor: ExecutorName,
    quiet: bool,
) -> tuple[list[SimResult], list[Pruned]]:
    """Simulate `to_run` fewest GPUs first. With plan.search = fewest_gpus, a layout with more
    GPUs than the fewest at which a simulated layout met the SLO is not simulated — or, if it
    already ran, its result is set aside — so the outcome never depends on timing. The
    rule-of-thumb pick is always simulated and kept."""
    opts = spec.options
    order = sorted(to_run, key=lambda c: (c.gpus, c.label))
    jobs = [
        SimJob(
            c.label,
            c.exp,
            str(plan_dir / RUNS_DIR / safe_name(c.label)) if opts.keep_runs else None,
            opts.ci_rel_target,
            max(opts.max_replicates, c.exp.replicates),
        )
        for c in order
    ]
    gpus = {c.label: c.gpus for c in order}
    # n_plus_1: a layout with more GPUs than the plain best may be the resilient pick
    fewest = opts.search == "fewest_gpus" and opts.resilience == "none"
    met: list[int] = []  # GPU counts of layouts that met the SLO so far

    def on_result(job: SimJob, res: SimResult) -> None:
        if res.summary is not None and judge(res.summary, spec.base.slo)[0]:
            met.append(gpus[job.label])

    def beyond_best(job: SimJob) -> bool:
        return fewest and bool(met) and gpus[job.label] > min(met) and job.label != pick.label

    # each job runs and pools its replicates (growing them to opts.ci_rel_target when set)
    replicated = spec.base.replicates > 1 or opts.ci_rel_target is not None
    by_index = run_jobs(
        jobs,
        executor,
        opts.workers or default_workers(),
        quiet,
        on_result,
        beyond_best,
        work=simulate_job_pooled if replicated else simulate_job,
    )
    best_gpus = min(met) if met else None
    results: list[SimResult] = []
    pruned: list[Pruned] = []
    for i, job in enumerate(jobs):
        over = best_gpus is not None and gpus[job.label] > best_gpus and job.label != pick.label
        if fewest and over:
            pruned.append(
                Pruned(
                    job.label,
                    "gpus",
                    f"{gpus[job.label]} GPUs > {best_gpus}, the fewest at which a simulated "
                    "layout meets the SLO: it cannot be the best",
                )
            )
        elif i in by_index:
            results.append(by_index[i])
    return results, pruned


def _candidate(space: Space, label: str) -> Candidate:
    return next(c for c in space.candidates if c.label == label)


def _rows(
    spec: PlanSpec,
    space: Space,
    results: list[SimResult],
    pruned: list[Pruned],
    pick: RulePick,
) -> list[Row]:
    by_label = {c.label: c for c in space.candidates}
    rows: list[Row] = []
    for res in results:
        cand = by_label[res.label]
        notes = list(cand.notes)
        if res.label == pick.label:
            notes.insert(0, "rule-of-thumb pick")
        if res.summary is None:
            rows.append(
                Row(
                    cand.label,
                    cand.layout,
                    cand.gpus,
                    "failed",
                    None,
                    (*notes, res.error or "failed"),
                    pools=cand.pool_layouts,
                )
            )
            continue
        meets, misses, worst = judge(res.summary, spec.base.slo)
        rows.append(
            Row(
                cand.label,
                cand.layout,
                cand.gpus,
                "simulated",
                res.summary,
                tuple(notes),
                meets,
                misses,
                worst,
                pools=cand.pool_layouts,
                slo_class=slo_class(res.summary, spec.base.slo),
            )
        )
    for p in pruned:
        cand = by_label[p.label]
        rows.append(
            Row(
                cand.label,
                cand.layout,
                cand.gpus,
                "pruned",
                None,
                (f"pruned: {p.reason}",),
                pools=cand.pool_layouts,
            )
        )
    return rows


def _requested_labels(spec: PlanSpec, space: Space) -> list[str]:
    """plan.emit labels, checked against the candidates (ConfigError on an unknown one)."""
    emit = spec.options.emit
    if not isinstance(emit, list):
        return []
    known = {c.label for c in space.candidates}
    for i, label in enumerate(emit):
        if label not in known:
            rejected = next((r for r in space.rejected if r.label == label), None)
            why = (
                f"layout {label!r} was rejected ({rejected.stage}: {rejected.reason})"
                if rejected is not None
                else f"unknown layout {label!r} (candidates: "
                + ", ".join(sorted(known)[:12])
                + (", ..." if len(known) > 12 else "")
                + ")"
            )
            raise ConfigError(spec.source("plan.emit"), f"plan.emit.{i}", why)
    return list(emit)


def _emit_order(
    spec: PlanSpec, ranked: list[Row], top: Row | None, requested: list[str]
) -> list[str]:
    emit = spec.options.emit
    if emit == "best":
        return [top.label] if top is not None else []
    if emit == "all":
        return [r.label for r in ranked if r.status == "simulated"]
    return requested


def no_candidate_message(spec: PlanSpec, space: Space) -> str:
    """One line: why no layout can run (the most common rejection stage and an example)."""
    n = len(space.rejected)
    lo, hi = spec.options.min_gpus, spec.max_gpus
    if n == 0:
        return (
            f"{spec.path}: plan.candidates filters leave no layout of {lo}..{hi} GPUs "
            f"({space.filtered_out} filtered out)"
        )
    stage, count = Counter(r.stage for r in space.rejected).most_common(1)[0]
    example = next(r for r in reversed(space.rejected) if r.stage == stage)
    return (
        f"{spec.path}: no layout of {lo}..{hi} GPUs can run ({n} rejected, {count} at "
        f"'{stage}'; e.g. {example.label}: {example.reason})"
    )
