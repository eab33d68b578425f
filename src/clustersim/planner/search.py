"""Prune by analytic bounds, then simulate the rest in parallel (docs/planner.md §3).

Pruning (plan.prune, on by default) removes a candidate only when
- its TPOT lower bound exceeds slo.tpot_p99_s (no decode step can be that fast, so every
  request's TPOT — and the p99 — is above the bound), or
- its p99 TTFT lower bound exceeds slo.ttft_p99_s (each request's prefill alone on an idle
  replica already takes longer), or
- its estimated mean TPOT at the offered load exceeds slo.tpot_p99_s × (1 + margin)
  (Little's-law fixed point, analytic.py), or
- its analytic capacity × (1 + plan.estimate_margin) is below the offered load (the queue
  grows without bound; the capacity estimate is optimistic, the margin makes it a clear case).
The first two are bounds, the last two estimates with a margin. The rule-of-thumb pick is always
simulated, so it can be compared with the simulated best.

Simulation runs `simulate_job` once per remaining candidate, in local processes or as Ray
tasks (the job pool: clustersim.jobs.run_jobs).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from clustersim.config.load import resolved_config
from clustersim.config.schema import SLOSpec
from clustersim.jobs import SimJob, SimResult
from clustersim.metrics.experiment import summarize_experiment
from clustersim.planner.analytic import Estimate
from clustersim.results.writer import write_run
from clustersim.sim.engine import BuildError, run_tables


class PlanError(Exception):
    """A plan that cannot go on (bad input: no layout runs, ray missing, ...); one line."""


@dataclass(frozen=True)
class Pruned:
    label: str
    bound: str  # "tpot_lb" | "ttft_lb" | "capacity"
    reason: str  # one line with the numbers


def prune_reason(
    est: Estimate, slo: SLOSpec, offered_rps: float | None, margin: float
) -> Pruned | None:
    """The first bound that rules the candidate out, or None (module docstring)."""
    if slo.tpot_p99_s is not None and est.tpot_lb_s > slo.tpot_p99_s:
        return Pruned(
            "",
            "tpot_lb",
            f"TPOT lower bound {est.tpot_lb_s * 1e3:.1f} ms (batch-1 decode step) > "
            f"SLO {slo.tpot_p99_s * 1e3:.1f} ms",
        )
    if slo.ttft_p99_s is not None and est.ttft_p99_lb_s > slo.ttft_p99_s:
        return Pruned(
            "",
            "ttft_lb",
            f"p99 TTFT lower bound {est.ttft_p99_lb_s:.3f} s (prefill alone) > "
            f"SLO {slo.ttft_p99_s:.3f} s",
        )
    loaded = est.loaded_tpot_s
    if slo.tpot_p99_s is not None and loaded > slo.tpot_p99_s * (1.0 + margin):
        return Pruned(
            "",
            "tpot_load",
            f"estimated mean TPOT at the offered load {loaded * 1e3:.1f} ms > SLO "
            f"{slo.tpot_p99_s * 1e3:.1f} ms × {1.0 + margin:.2f}",
        )
    if offered_rps is not None and est.capacity_rps * (1.0 + margin) < offered_rps:
        return Pruned(
            "",
            "capacity",
            f"analytic capacity {est.capacity_rps:.2f} req/s × {1.0 + margin:.2f} < offered "
            f"{offered_rps:.2f} req/s",
        )
    return None


# --------------------------------------------------------------------------- one run


def simulate_job(job: SimJob) -> SimResult:
    """Simulate one candidate and summarise it (runs in a worker process or Ray task)."""
    exp = job.exp
    try:
        out = run_tables(exp)
    except BuildError as err:
        return SimResult(job.label, None, " ".join(str(err).split()))
    summary, timeline = summarize_experiment(exp, out)
    if job.run_dir is not None:
        run_dir = Path(job.run_dir)
        run_dir.mkdir(parents=True, exist_ok=False)
        write_run(run_dir, resolved_config(exp), out, summary, timeline)
    return SimResult(job.label, summary)
