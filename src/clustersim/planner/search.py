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

Simulation runs `simulate_job` once per remaining candidate: in local processes
(concurrent.futures.ProcessPoolExecutor, fork start, `workers` at a time) or as Ray tasks
(`--executor ray`: `ray.init(address="auto")` when RAY_ADDRESS is set, else a local instance
started and stopped here). Results come back in completion order behind a tqdm bar and are
returned in job order, so the outcome does not depend on the executor or the timing.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from tqdm import tqdm

from clustersim.config.load import resolved_config
from clustersim.config.schema import Experiment, SLOSpec
from clustersim.metrics.experiment import summarize_experiment
from clustersim.planner.analytic import Estimate
from clustersim.results.writer import write_run
from clustersim.sim.engine import BuildError, run_experiment

ExecutorName = Literal["local", "ray"]
EXECUTORS: tuple[ExecutorName, ...] = ("local", "ray")


class PlanError(Exception):
    """A plan that cannot go on (bad input: no layout runs, ray missing, ...); one line."""


@dataclass(frozen=True)
class Pruned:
    label: str
    bound: str  # "tpot_lb" | "ttft_lb" | "capacity"
    reason: str  # one line with the numbers


@dataclass(frozen=True)
class SimJob:
    """What a worker needs: the candidate's experiment, and where to write its run (or None)."""

    label: str
    exp: Experiment
    run_dir: str | None = None
    # replicated plans: grow replicates until each bounded p99's 95 % interval is within
    # ± ci_rel_target of its mean, at most max_replicates (runner.simulate_job_pooled)
    ci_rel_target: float | None = None
    max_replicates: int = 1


@dataclass(frozen=True)
class SimResult:
    label: str
    summary: dict[str, Any] | None  # summary.json dict; None when the run failed
    error: str | None = None  # one line when the run could not be built


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
        out = run_experiment(exp)
    except BuildError as err:
        return SimResult(job.label, None, " ".join(str(err).split()))
    summary, timeline = summarize_experiment(exp, out)
    if job.run_dir is not None:
        run_dir = Path(job.run_dir)
        run_dir.mkdir(parents=True, exist_ok=False)
        write_run(run_dir, resolved_config(exp), out, summary, timeline)
    return SimResult(job.label, summary)


# --------------------------------------------------------------------------- executors

OnResult = Callable[[SimJob, SimResult], None]
Skip = Callable[[SimJob], bool]


def run_jobs(
    jobs: Sequence[SimJob],
    executor: ExecutorName,
    workers: int,
    quiet: bool,
    on_result: OnResult | None = None,
    skip: Skip | None = None,
    work: Work | None = None,
    desc: str = "plan: simulate",
    unit: str = "layout",
) -> dict[int, SimResult]:
    """Results by job index. At most `workers` jobs are in flight; before a job is submitted
    `skip(job)` may drop it (it then has no result); `on_result` sees each result as it comes.
    A tqdm bar on stderr counts finished and skipped jobs unless `quiet`. `work` runs one job
    in a worker (a module-level function; default simulate_job)."""
    results: dict[int, SimResult] = {}
    if not jobs:
        return results
    bar = None

    def tick(label: str) -> None:
        nonlocal bar
        if bar is None and not quiet:  # created after the workers exist (no fork after it)
            bar = tqdm(total=len(jobs), desc=desc, unit=unit, file=sys.stderr)
        if bar is not None:
            bar.update(1)
            bar.set_postfix_str(label, refresh=False)

    def take(i: int) -> bool:
        if skip is not None and skip(jobs[i]):
            tick(f"{jobs[i].label} skipped")
            return False
        return True

    runner = _ray_results if executor == "ray" else _local_results
    try:
        for i, result in runner(jobs, max(1, workers), take, work or simulate_job):
            results[i] = result
            if on_result is not None:
                on_result(jobs[i], result)
            tick(result.label)
    finally:
        if bar is not None:
            bar.close()
    return results


Take = Callable[[int], bool]
Work = Callable[[SimJob], SimResult]


def _local_results(
    jobs: Sequence[SimJob], workers: int, take: Take, work: Work
) -> Iterator[tuple[int, SimResult]]:
    """Process pool (fork: workers inherit the loaded package; `python -m clustersim` has no
    __main__ guard that spawn's re-import would need)."""
    n = min(workers, len(jobs))
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else None
    ctx = multiprocessing.get_context(method)
    queue = iter(range(len(jobs)))
    with ProcessPoolExecutor(max_workers=n, mp_context=ctx) as pool:
        running: dict[Future[SimResult], int] = {}

        def fill() -> None:
            while len(running) < n:
                i = next((j for j in queue if take(j)), None)
                if i is None:
                    return
                running[pool.submit(work, jobs[i])] = i

        try:
            fill()
            while running:
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for fut in sorted(done, key=lambda f: running[f]):
                    i = running.pop(fut)
                    yield i, fut.result()
                fill()
        except BaseException:
            for fut in running:
                fut.cancel()
            raise


def _ray_results(
    jobs: Sequence[SimJob], workers: int, take: Take, work: Work
) -> Iterator[tuple[int, SimResult]]:
    """Ray tasks on an existing cluster (RAY_ADDRESS set) or a local instance started here;
    `import ray` happens only now (the `ray` extra)."""
    try:
        import ray
    except ImportError:
        raise PlanError(
            "--executor ray needs the ray package: pip install 'clustersim[ray]'"
        ) from None
    started = False
    if not ray.is_initialized():
        if os.environ.get("RAY_ADDRESS"):
            ray.init(address="auto", log_to_driver=False)
            workers = max(workers, int(ray.cluster_resources().get("CPU", workers)))
        else:
            ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
            started = True
    try:
        remote = ray.remote(num_cpus=1)(work)
        queue = iter(range(len(jobs)))
        running: dict[Any, int] = {}

        def fill() -> None:
            while len(running) < workers:
                i = next((j for j in queue if take(j)), None)
                if i is None:
                    return
                running[remote.remote(jobs[i])] = i

        fill()
        while running:
            done, _ = ray.wait(list(running), num_returns=1)
            for ref in done:
                i = running.pop(ref)
                yield i, ray.get(ref)
            fill()
    finally:
        if started:
            ray.shutdown()


def default_workers() -> int:
    return max(1, os.cpu_count() or 1)
