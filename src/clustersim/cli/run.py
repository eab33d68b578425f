"""`clustersim run`: every sweep point (× its replicates), serially or fanned out."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from contextlib import suppress
from pathlib import Path
from typing import Any

from clustersim.cli.errors import EXIT_OK, BadInput, check_out_dir
from clustersim.cli.points import Point, blame, load_points
from clustersim.cli.progress import overall_bar, progress_bar
from clustersim.cli.run_results import RunResults
from clustersim.config.load import resolved_config
from clustersim.deployment.build import Build
from clustersim.jobs import SimJob, run_jobs
from clustersim.metrics.experiment import summarize_experiment
from clustersim.metrics.replicates import replicate_seeds
from clustersim.metrics.summary import RunTables
from clustersim.metrics.table import Table
from clustersim.results.replicates import replicate_dir
from clustersim.runner import replicate_experiment, simulate_into
from clustersim.sim.engine import build, horizon_estimate_s, run_tables


def cmd_run(args: argparse.Namespace) -> int:
    """Simulate every point (× its replicates), one run directory each; table on stdout."""
    overrides = list(args.overrides)
    if args.replicates is not None:
        overrides.append(f"replicates={args.replicates}")
    points = load_points(args.file, overrides)
    check_out_dir(args.out)
    for point in points:  # every point must build before the first one runs
        with blame(args.file, point.label):
            build(point.exp)
    created = not args.out.exists()
    args.out.mkdir(parents=True, exist_ok=True)  # an unusable --out fails before simulating
    results = RunResults(args.out, points, report=not args.no_report)
    try:
        if args.executor == "local" and args.workers <= 1:
            run_serial(args, points, results)
        else:
            run_fanned_out(args, points, results)
        results.finish()  # a sweep stopped by a bad point: `clustersim report` draws it later
    finally:  # also when a later point fails: the finished ones are listed
        results.print_table()
        if created:
            remove_if_empty(args.out)  # bad input leaves no empty --out behind
    return EXIT_OK


def remove_if_empty(directory: Path) -> None:
    with suppress(OSError):
        directory.rmdir()  # fails (and keeps it) unless empty


def run_serial(args: argparse.Namespace, points: Sequence[Point], results: RunResults) -> None:
    """One run at a time in this process, each with its own progress bar."""
    total = sum(p.exp.replicates for p in points)
    with overall_bar(total, args.quiet) as tick:
        for point in points:
            with blame(args.file, point.label):
                if point.exp.replicates > 1:
                    results.write_replicated(point, args.quiet, tick)
                    continue
                summary, resolved, out, timeline = simulate(point, args.quiet)
            results.write(point, resolved, out, summary, timeline)
            tick()
            del out  # one point's tables in memory at a time


def run_fanned_out(args: argparse.Namespace, points: Sequence[Point], results: RunResults) -> None:
    """Every (point, replicate) as one job over local processes or Ray (jobs.run_jobs);
    workers write the run files, this process pools and reports in point order,
    so the files are the same as a serial run's."""
    jobs, plan = fan_out_jobs(points, results)
    done = run_jobs(
        jobs, args.executor, args.workers, args.quiet, work=simulate_into, desc="run", unit="run"
    )
    for point, run_dir, indices in plan:
        summaries = [done[i].summary for i in indices]
        if any(s is None for s in summaries):
            raise BadInput(f"{args.file} [{point.label}]: {done[indices[0]].error}")
        if point.exp.replicates > 1:
            results.pool_replicates(point, run_dir, [s for s in summaries if s is not None])
        else:
            assert summaries[0] is not None
            results.finish_point(point, run_dir, summaries[0])


def fan_out_jobs(
    points: Sequence[Point], results: RunResults
) -> tuple[list[SimJob], list[tuple[Point, Path, list[int]]]]:
    """One job per (point, replicate), each writing into its new run directory; and per
    point, (point, its run directory, the indices of its jobs)."""
    jobs: list[SimJob] = []
    plan: list[tuple[Point, Path, list[int]]] = []
    for point in points:
        exp = point.exp
        run_dir = results.point_dir(point, resolved_config(exp))
        first = len(jobs)
        if exp.replicates > 1:
            for k, seed in enumerate(replicate_seeds(exp.seed, exp.replicates)):
                rdir = replicate_dir(run_dir, k)
                rexp = replicate_experiment(exp, seed)
                jobs.append(SimJob(f"{point.label or exp.name} #{k}", rexp, str(rdir)))
        else:
            jobs.append(SimJob(point.label or exp.name, exp, str(run_dir)))
        plan.append((point, run_dir, list(range(first, len(jobs)))))
    return jobs, plan


def simulate(
    point: Point, quiet: bool, built: Build | None = None
) -> tuple[dict[str, Any], dict[str, Any], RunTables, Table]:
    """Run one point with a progress bar; (summary, resolved config, RunOutput, timeline)."""
    exp = point.exp
    if built is None:
        built = build(exp)  # bad layouts fail here, before a progress bar touches stderr
    with progress_bar(horizon_estimate_s(exp), point.label or exp.name, quiet) as progress:
        out = run_tables(exp, progress, built)
    summary, timeline = summarize_experiment(exp, out)
    return summary, resolved_config(exp), out, timeline
