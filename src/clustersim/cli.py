"""Command line (DESIGN.md §2): argument parsing, orchestration, exit codes, stdout tables.

Exit codes: 0 success; 2 bad input (ConfigError, BuildError, PlacementError, an unreadable
input file): exactly one line `clustersim: error: <message>` on stderr, no traceback;
1 internal error (a bug): the traceback on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import pandas as pd
from tqdm import tqdm

from clustersim import __version__
from clustersim.config.errors import ConfigError
from clustersim.config.load import load_raw_experiment, load_sweep, resolved_config
from clustersim.config.schema import Experiment
from clustersim.deployment.build import Build
from clustersim.metrics.experiment import summarize_experiment
from clustersim.metrics.replicates import replicate_sample, replicate_seeds
from clustersim.metrics.summary import RunTables
from clustersim.model.memory import MemoryPlan, plan_memory
from clustersim.planner.search import EXECUTORS, PlanError, SimJob, default_workers, run_jobs
from clustersim.results.compare import compare_runs, interval_rows, text_rows
from clustersim.results.replicates import (
    REPLICATE_DIR,
    mean_timeline,
    pooled_requests,
    replicate_dir,
    replicate_row,
    write_replicated_run,
)
from clustersim.results.report import ReportError, render, render_run, render_sweep
from clustersim.results.writer import (
    mark_complete,
    mark_incomplete,
    new_point_dir,
    new_run_dir,
    sweep_row,
    write_run,
    write_sweep_table,
)
from clustersim.runner import iter_replicates, pool, replicate_experiment, simulate_into
from clustersim.sim.engine import BuildError, build, horizon_estimate_s, run_experiment
from clustersim.topology.placement import PlacementError

PROG = "clustersim"
EXIT_OK, EXIT_INTERNAL, EXIT_BAD_INPUT = 0, 1, 2
GiB = 2.0**30  # bytes
# file errors that mean the user named a wrong path (others, e.g. a full disk, stay internal)
_PATH_ERRORS = (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)


class BadInput(Exception):
    """A one-line user-facing error raised by the CLI itself (exit 2)."""


@dataclass(frozen=True)
class Point:
    """One experiment to run: its sweep label ('' when the file has no sweep)."""

    label: str
    overrides: Mapping[str, Any]
    exp: Experiment


# --------------------------------------------------------------------------- entry point


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (never raises SystemExit)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # argparse: usage error (2) or --help / --version (0)
        return stop.code if isinstance(stop.code, int) else EXIT_BAD_INPUT
    command: Callable[[argparse.Namespace], int] = args.func
    try:
        with sigterm_as_interrupt():
            return command(args)
    except KeyboardInterrupt as stop:
        signum = stop.signum if isinstance(stop, Terminated) else signal.SIGINT
        print(f"{PROG}: interrupted ({signal.Signals(signum).name})", file=sys.stderr)
        return 128 + int(signum)  # the shell convention: 130 for SIGINT, 143 for SIGTERM
    except BrokenPipeError:  # stdout closed early (`| head`): not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except Exception as err:
        message = bad_input_message(err)
        if message is None:
            traceback.print_exc()
            return EXIT_INTERNAL
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return EXIT_BAD_INPUT


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is, so it unwinds like Ctrl-C: temporary files are
    removed and an unfinished run directory keeps its INCOMPLETE marker."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _raise_terminated(signum: int, _frame: object) -> None:
    raise Terminated(signum)


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Handle SIGTERM like SIGINT while a command runs (main thread only; restored after)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class OneLineErrorParser(argparse.ArgumentParser):
    """Usage errors as one line on stderr with exit 2, like every other bad input."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(
        prog=PROG, description="Discrete-event simulator of LLM inference serving clusters."
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="simulate an experiment (every point of a sweep)")
    _add_experiment_args(run)
    run.add_argument(
        "--out", type=Path, default=Path("results"), help="results root (default: results/)"
    )
    run.add_argument(
        "--replicates",
        type=positive_int,
        default=None,
        metavar="N",
        help="run N independent seeds derived from `seed` and pool them (= --set replicates=N)",
    )
    run.add_argument(
        "--executor",
        choices=EXECUTORS,
        default="local",
        help="local processes (default) or Ray tasks; the files are the same either way",
    )
    run.add_argument(
        "--workers",
        type=positive_int,
        default=1,
        metavar="N",
        help="runs (points × replicates) in parallel (default 1: one at a time in this "
        f"process; this machine has {default_workers()} CPUs)",
    )
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.add_argument(
        "--no-report", action="store_true", help="skip the plots and report.html of each run"
    )
    run.set_defaults(func=cmd_run)

    validate = commands.add_parser(
        "validate", help="load + resolve + placement + memory-fit check, no simulation"
    )
    _add_experiment_args(validate)
    validate.set_defaults(func=cmd_validate)

    report = commands.add_parser(
        "report", help="(re)draw plots + report.html of a run (or sweep) directory"
    )
    report.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="run or sweep directory")
    report.set_defaults(func=cmd_report)

    compare = commands.add_parser(
        "compare", help="two runs side by side; writes a comparison report directory"
    )
    compare.add_argument("run_a", type=Path, metavar="RUN_A", help="run directory A")
    compare.add_argument("run_b", type=Path, metavar="RUN_B", help="run directory B")
    compare.add_argument(
        "--out", type=Path, default=None, help="where to create it (default: RUN_A/..)"
    )
    compare.set_defaults(func=cmd_compare)

    capacity = commands.add_parser(
        "capacity", help="highest arrival rate sustained inside the SLO (bisection over rate)"
    )
    _add_experiment_args(capacity)
    capacity.add_argument(
        "--out", type=Path, default=Path("results"), help="results root (default: results/)"
    )
    capacity.add_argument(
        "--replicates",
        type=positive_int,
        default=None,
        metavar="N",
        help=f"replicates per probe (default: the experiment's, at least {CAPACITY_REPLICATES})",
    )
    capacity.add_argument(
        "--executor",
        choices=EXECUTORS,
        default="local",
        help="local processes (default) or Ray tasks for each probe's replicates",
    )
    capacity.add_argument(
        "--workers",
        type=positive_int,
        default=1,
        metavar="N",
        help="replicates of a probe in parallel (default 1: one at a time in this process)",
    )
    capacity.add_argument("--quiet", action="store_true", help="no progress bar")
    capacity.set_defaults(func=cmd_capacity)

    plan = commands.add_parser(
        "plan", help="enumerate layouts, simulate, rank, emit engine launch configs"
    )
    _add_experiment_args(plan)
    plan.add_argument(
        "--out", type=Path, default=Path("results"), help="results root (default: results/)"
    )
    plan.add_argument(
        "--executor",
        choices=EXECUTORS,
        default="local",
        help="local processes (default) or Ray tasks (RAY_ADDRESS, else a local Ray instance)",
    )
    plan.add_argument("--quiet", action="store_true", help="no progress bar")
    plan.set_defaults(func=cmd_plan)
    return parser


def _add_experiment_args(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("file", type=Path, metavar="FILE", help="experiment YAML file")
    sub.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a key of the experiment, e.g. workload.arrival.rate_rps=40 (repeatable)",
    )


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1 (got {text!r})") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1 (got {text!r})")
    return value


def bad_input_message(err: BaseException) -> str | None:
    """The one-line message for a bad-input error, or None for an internal error."""
    from clustersim.capacity.probe import CapacityError

    if isinstance(
        err,
        BadInput | ConfigError | BuildError | PlacementError | ReportError | PlanError
        | CapacityError,
    ):
        return one_line(str(err))
    if isinstance(err, _PATH_ERRORS):
        where = err.filename if err.filename is not None else ""
        return one_line(f"{where}: {err.strerror or err}")
    return None


def check_out_dir(out: Path) -> None:
    """`--out` must be a directory or not exist yet (an existing file, a dangling symlink or a
    symlink loop is a bad input)."""
    try:
        out.resolve(strict=False)
    except (RuntimeError, OSError):  # a symlink loop (RuntimeError before Python 3.13)
        raise BadInput(f"{out}: --out is a symbolic link loop") from None
    if out.is_symlink() and not out.exists():
        raise BadInput(f"{out}: --out is a symbolic link to nothing ({os.readlink(out)})")
    if out.exists() and not out.is_dir():
        raise BadInput(f"{out}: not a directory")


def one_line(text: str) -> str:
    return " ".join(text.split())


# --------------------------------------------------------------------------- loading


def load_points(path: Path, overrides: Sequence[str]) -> list[Point]:
    """Every sweep point of an experiment file (one unlabelled point without a sweep)."""
    return [
        Point(point.label, dict(point.overrides), exp)
        for point, exp in load_sweep(path, list(overrides))
    ]


@contextmanager
def blame(path: Path, label: str) -> Iterator[None]:
    """Re-raise build / placement errors as BadInput naming the file and sweep point."""
    try:
        yield
    except (BuildError, PlacementError) as err:
        raise BadInput(point_error(path, label, err)) from err


def point_error(path: Path, label: str, err: Exception) -> str:
    """`FILE [point]: message` on one line."""
    where = f"{path} [{label}]" if label else str(path)
    return one_line(f"{where}: {err}")


# --------------------------------------------------------------------------- validate


def cmd_validate(args: argparse.Namespace) -> int:
    """Check every point builds (placement, memory fit); table on stdout."""
    from clustersim.planner.spec import PLAN_KEY

    if PLAN_KEY in load_raw_experiment(args.file):
        return validate_plan(args)
    points = load_points(args.file, args.overrides)
    rows: list[list[str]] = []
    problems: list[str] = []
    for point in points:
        plan, gpus, problem = check_point(args.file, point)
        rows.append(validate_row(point, plan, gpus, problem is None))
        if problem is not None:
            problems.append(problem)
    headers = ["model", "GPUs", "weights/GPU GiB", "KV tokens/replica", "fits"]
    if any(p.label for p in points):
        headers = ["point", *headers]
    print(format_table(headers, rows))
    if problems:
        raise BadInput(problems[0])
    return EXIT_OK


def validate_plan(args: argparse.Namespace) -> int:
    """A plan file (a `plan:` block): load + resolve it as `plan` would; one line on stdout."""
    from clustersim.planner.spec import load_plan

    spec = load_plan(args.file, args.overrides)
    base = spec.base
    print(
        f"plan {spec.name}: {base.model.name} on {base.topology.name} "
        f"({spec.options.min_gpus}..{spec.max_gpus} GPUs), "
        f"engines {', '.join(spec.options.engines)}: ok (layouts are checked by `plan`)"
    )
    return EXIT_OK


def check_point(path: Path, point: Point) -> tuple[MemoryPlan, int, str | None]:
    """The point's memory plan, GPUs used, and the build problem (one line) if it cannot run.

    With disaggregated pools the memory plan shown is the first pool's."""
    exp = point.exp
    try:
        built = build(exp)
        return built.memory, built.gpus, None
    except (BuildError, PlacementError) as err:
        plan = plan_memory(exp.model, exp.hardware, exp.precision, exp.layout, exp.serving)
        return plan, exp.layout.gpus, point_error(path, point.label, err)


def validate_row(point: Point, plan: MemoryPlan, gpus: int, ok: bool) -> list[str]:
    exp = point.exp
    row = [
        exp.model.name,
        str(gpus),
        f"{plan.weights_per_gpu_bytes / GiB:.2f}",
        f"{plan.kv_tokens_per_replica:,}",
        "yes" if ok else "no",
    ]
    return [point.label, *row] if point.label else row


# --------------------------------------------------------------------------- run


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


def run_fanned_out(
    args: argparse.Namespace, points: Sequence[Point], results: RunResults
) -> None:
    """Every (point, replicate) as one job over local processes or Ray (planner.search
    run_jobs); workers write the run files, this process pools and reports in point order,
    so the files are the same as a serial run's."""
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


@contextmanager
def overall_bar(total: int, quiet: bool) -> Iterator[Callable[[], None]]:
    """One bar on stderr over every run (points × replicates) with an ETA; yields `tick`."""
    if quiet or total <= 1:
        yield lambda: None
        return
    fmt = "runs: {n}/{total} |{bar}| [{elapsed}<{remaining}]"
    with tqdm(total=total, file=sys.stderr, bar_format=fmt, position=0) as bar:
        yield lambda: bar.update(1)


class RunResults:
    """Where `run` writes: one run directory, or a sweep directory with one per point."""

    def __init__(self, root: Path, points: Sequence[Point], report: bool = True) -> None:
        self.root = root
        self.report = report  # draw plots + report.html into each run directory
        self.points = points
        self.is_sweep = any(p.label for p in points)
        self.sweep_dir: Path | None = None  # created once the first point has succeeded
        self.sweep_rows: list[dict[str, Any]] = []
        self.table: list[list[str]] = []

    def point_dir(self, point: Point, resolved: dict[str, Any]) -> Path:
        """A new run directory for the point (inside the sweep directory for a sweep)."""
        if not self.is_sweep:
            run_dir = new_run_dir(self.root, point.exp.name, resolved)
        else:
            if self.sweep_dir is None:
                self.sweep_dir = new_run_dir(
                    self.root, point.exp.name, sweep_identity(self.points)
                )
            run_dir = new_point_dir(self.sweep_dir, point.label)
        mark_incomplete(run_dir)  # until its plots are drawn too
        return run_dir

    def write(
        self,
        point: Point,
        resolved: dict[str, Any],
        out: RunTables,
        summary: dict[str, Any],
        timeline: pd.DataFrame | None = None,
    ) -> None:
        """Write one finished point's files (and the sweep table so far)."""
        run_dir = self.point_dir(point, resolved)
        write_run(run_dir, resolved, out, summary, timeline)
        self.finish_point(point, run_dir, summary)

    def finish_point(self, point: Point, run_dir: Path, summary: dict[str, Any]) -> None:
        """After a point's files are written: the sweep table (a point with a summary is in
        sweep.csv at once), its report, the complete mark, the stdout row."""
        if self.sweep_dir is not None:
            self.sweep_rows.append(sweep_row(point.label, point.overrides, run_dir, summary))
            write_sweep_table(self.sweep_dir, self.sweep_rows)  # a stopped sweep keeps it
        if self.report:
            render_run(run_dir, writing=True)  # plots + report.html, from the files just written
        mark_complete(run_dir)
        self.table.append(summary_row(point.label or point.exp.name, summary, run_dir))

    def write_replicated(self, point: Point, quiet: bool, tick: Callable[[], None]) -> None:
        """Run the point's replicates into replicate-<k>/ and pool them at the top level."""
        exp = point.exp
        run_dir = self.point_dir(point, resolved_config(exp))
        summaries = []

        def bar(label: str) -> AbstractContextManager[Callable[[float], None] | None]:
            return progress_bar(horizon_estimate_s(exp), f"{point.label or label}", quiet)

        for rep in iter_replicates(exp, bar):
            rdir = replicate_dir(run_dir, rep.k)
            write_run(rdir, resolved_config(rep.exp), rep.out, rep.summary, rep.timeline)
            summaries.append(rep.summary)
            del rep
            tick()
        self.pool_replicates(point, run_dir, summaries)

    def pool_replicates(
        self, point: Point, run_dir: Path, summaries: Sequence[dict[str, Any]]
    ) -> None:
        """Pool the replicate-<k>/ directories (read back from their files, however they ran)
        into the top level of the point's run directory."""
        exp = point.exp
        seeds = replicate_seeds(exp.seed, exp.replicates)
        samples, requests, timelines, rows = [], [], [], []
        for k, summary in enumerate(summaries):
            rdir = run_dir / REPLICATE_DIR.format(k=k)
            if self.report:
                render_run(rdir)
            req = pd.read_parquet(rdir / "requests.parquet")
            samples.append(replicate_sample(dict(summary), req, exp.slo, exp.horizon.warmup_s))
            requests.append(req)
            timelines.append(pd.read_parquet(rdir / "timeline.parquet"))
            rows.append(replicate_row(k, seeds[k], rdir, summary))
        pooled = pool(exp, samples)
        write_replicated_run(
            run_dir,
            resolved_config(exp),
            pooled_requests(requests),
            mean_timeline(timelines),
            pooled,
            rows,
        )
        self.finish_point(point, run_dir, pooled)

    def finish(self) -> None:
        """After the last point: the sweep's plots and report.html."""
        if self.report and self.sweep_dir is not None:
            render_sweep(self.sweep_dir)

    def print_table(self) -> None:
        if self.table:
            print(format_table(SUMMARY_HEADERS, self.table))
        if self.sweep_dir is not None:
            print(f"sweep table: {self.sweep_dir / 'sweep.csv'}")


def simulate(
    point: Point, quiet: bool, built: Build | None = None
) -> tuple[dict[str, Any], dict[str, Any], RunTables, pd.DataFrame]:
    """Run one point with a progress bar; (summary, resolved config, RunOutput, timeline)."""
    exp = point.exp
    if built is None:
        built = build(exp)  # bad layouts fail here, before a progress bar touches stderr
    with progress_bar(horizon_estimate_s(exp), point.label or exp.name, quiet) as progress:
        out = run_experiment(exp, progress, built)
    summary, timeline = summarize_experiment(exp, out)
    return summary, resolved_config(exp), out, timeline


def sweep_identity(points: Sequence[Point]) -> dict[str, Any]:
    """What a sweep directory's hash is taken over: every point's resolved config."""
    return {p.label: resolved_config(p.exp) for p in points}


@contextmanager
def progress_bar(
    total_s: float | None, desc: str, quiet: bool
) -> Iterator[Callable[[float], None] | None]:
    """A tqdm bar on stderr over simulated seconds; yields the engine's progress callback."""
    if quiet:
        yield None
        return
    if total_s is None:
        fmt = "{desc}: {n:.1f} sim s [{elapsed}]"
    else:
        fmt = "{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total:.1f} sim s [{elapsed}<{remaining}]"
    with tqdm(total=total_s, desc=desc, file=sys.stderr, bar_format=fmt, leave=False) as bar:

        def advance(now_s: float) -> None:
            if bar.total is not None and now_s > bar.total:
                bar.total = now_s  # draining past the arrival horizon
            bar.update(now_s - bar.n)

        yield advance


# --------------------------------------------------------------------------- report, compare


def cmd_report(args: argparse.Namespace) -> int:
    """Redraw the plots and report.html of a run directory (or of a sweep and its points, or
    of a plan directory)."""
    from clustersim.planner.html import is_plan_dir, render_plan

    if is_plan_dir(args.run_dir):
        print(render_plan(args.run_dir))
        return EXIT_OK
    print(render(args.run_dir))
    return EXIT_OK


def cmd_compare(args: argparse.Namespace) -> int:
    """Print two runs' summaries side by side; write a comparison report directory."""
    for path in (args.run_a, args.run_b):
        if not path.is_dir():
            raise BadInput(f"{path}: no such run directory")
    if args.out is not None and args.out.exists() and not args.out.is_dir():
        raise BadInput(f"{args.out}: not a directory")
    result = compare_runs(args.run_a, args.run_b, args.out)
    print(f"A = {result.a.run_dir}")
    print(f"B = {result.b.run_dir}")
    print(format_table(["key", "A", "B", "B - A", "%"], text_rows(result.rows)))
    intervals = interval_rows(result.a.summary, result.b.summary)
    if intervals:
        print("95 % confidence intervals of the replicates' mean:")
        print(format_table(["key", "A", "B", "intervals"], intervals))
    print(f"comparison report: {result.report}")
    return EXIT_OK


# --------------------------------------------------------------------------- capacity

CAPACITY_REPLICATES = 3  # default replicates per capacity probe


def cmd_capacity(args: argparse.Namespace) -> int:
    """Bisect the arrival rate for the highest rate inside the SLO, per sweep point (e.g.
    per layout); probe table(s) and files."""
    from clustersim.capacity.output import write_capacity

    points = load_points(args.file, args.overrides)
    for point in points:
        check_rate_workload_of(args.file, point)
        with blame(args.file, point.label):
            build(point.exp)
    check_out_dir(args.out)
    fan_out = None
    if args.executor != "local" or args.workers > 1:
        fan_out = (args.executor, args.workers)
    name = f"{points[0].exp.name}-capacity"
    is_sweep = any(p.label for p in points)
    root: Path | None = None
    rows: list[dict[str, Any]] = []
    with overall_bar_open(args.quiet, "probes") as tick, ray_session(args.executor, args.workers):
        for point in points:
            reps = args.replicates or max(point.exp.replicates, CAPACITY_REPLICATES)
            exp = point.exp.model_copy(update={"replicates": reps})
            cap, table = search_capacity(exp, args.file, fan_out, tick)
            if root is None:
                identity = {p.label: resolved_config(p.exp) for p in points}
                root = new_run_dir(args.out, name, {"capacity": identity})
            out_dir = new_point_dir(root, point.label) if is_sweep else root
            paths = write_capacity(out_dir, cap, exp.slo)
            print_capacity(point.label, exp.replicates, cap, table, paths["capacity.csv"])
            if is_sweep:
                rows.append(capacity_point_row(point, out_dir, cap))
                write_sweep_table(root, rows, stem="capacity_points")
    if is_sweep and root is not None:
        print(format_table(
            ["point", "capacity rps", "knee in", "probes"],
            [[r["label"], fmt_number(r["capacity_rps"], ".4g"),
              f"[{fmt_number(r['lo_rps'], '.4g')}, {fmt_number(r['hi_rps'], '.4g')}]",
              str(r["probes"])] for r in rows],
        ))  # fmt: skip
        print(f"capacity per point: {root / 'capacity_points.csv'}")
    return EXIT_OK


def check_rate_workload_of(path: Path, point: Point) -> float:
    from clustersim.capacity.probe import check_rate_workload

    where = f"{path} [{point.label}]" if point.label else str(path)
    return check_rate_workload(point.exp, where)


def search_capacity(
    exp: Experiment, path: Path, fan_out: Any, tick: Callable[[], None]
) -> tuple[Any, list[list[str]]]:
    """One point's search; (Capacity, the stdout rows of its probes in probe order)."""
    from clustersim.capacity.output import probe_row
    from clustersim.capacity.probe import check_rate_workload, probe_rate
    from clustersim.capacity.search import Probe, find_capacity

    table: list[list[str]] = []

    def probe(rate: float) -> Probe:
        result = probe_rate(exp, rate, fan_out=fan_out)
        row = probe_row(result)
        table.append([
            f"{rate:.4g}", "yes" if result.passed else "no", row["reasons"] or "-",
            fmt_number(row["ttft_mean_s"], ".4f"), fmt_number(row["ttft_p99_s"], ".4f"),
            fmt_number(row["queue_mean_s"], ".4f"), fmt_number(row["slo_attainment"], ".1%"),
        ])  # fmt: skip
        tick()
        return result

    return find_capacity(probe, check_rate_workload(exp, str(path))), table


def print_capacity(
    label: str, reps: int, cap: Any, table: list[list[str]], csv_path: Path
) -> None:
    """A point's probes by rate, then its capacity and bracket."""
    headers = ["rate rps", "passed", "why not", "TTFT mean s", "TTFT p99 s", "wait mean s",
               "SLO att."]  # fmt: skip
    order = sorted(range(len(table)), key=lambda i: float(table[i][0]))
    if label:
        print(f"[{label}]")
    print(format_table(headers, [table[i] for i in order]))
    if cap.capacity_rps is None:
        print("capacity: no probed rate met the SLO")
    else:
        known = "unbracketed" if cap.hi is None else f"knee in [{cap.lo:.4g}, {cap.hi:.4g}]"
        print(f"capacity: {cap.capacity_rps:.4g} req/s ({known}, {reps} replicates per probe)")
    print(f"capacity table: {csv_path}")


def capacity_point_row(point: Point, out_dir: Path, cap: Any) -> dict[str, Any]:
    """capacity_points.csv: label, the swept values, the point's directory and result."""
    row: dict[str, Any] = {"label": point.label}
    row.update({k: json_cell(v) for k, v in point.overrides.items()})
    row.update({
        "run_dir": str(out_dir), "capacity_rps": cap.capacity_rps, "knee_rps": cap.knee_rps,
        "lo_rps": cap.lo, "hi_rps": cap.hi, "converged": cap.converged,
        "probes": len(cap.probes),
    })  # fmt: skip
    return row


def json_cell(value: Any) -> Any:
    """A swept value as a table cell: scalars as they are, anything else as compact JSON."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


@contextmanager
def ray_session(executor: str, workers: int) -> Iterator[None]:
    """With `--executor ray`: one Ray instance for every probe (started here unless
    RAY_ADDRESS names a cluster or Ray is already up), stopped at the end."""
    if executor != "ray":
        yield
        return
    try:
        import ray
    except ImportError:
        need = "--executor ray needs the ray package: pip install 'clustersim[ray]'"
        raise BadInput(need) from None
    started = False
    if not ray.is_initialized():
        if os.environ.get("RAY_ADDRESS"):
            ray.init(address="auto", log_to_driver=False)
        else:
            ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
        started = True
    try:
        yield
    finally:
        if started:
            ray.shutdown()


@contextmanager
def overall_bar_open(quiet: bool, unit: str) -> Iterator[Callable[[], None]]:
    """A counting bar on stderr with no known total (probes of a search)."""
    if quiet:
        yield lambda: None
        return
    with tqdm(file=sys.stderr, desc=unit, bar_format="{desc}: {n} [{elapsed}]") as bar:
        yield lambda: bar.update(1)


# --------------------------------------------------------------------------- plan


def cmd_plan(args: argparse.Namespace) -> int:
    """Enumerate, prune, simulate and rank layouts; print the plan, write its directory."""
    from clustersim.planner.report import format_report, write_plan
    from clustersim.planner.run import run_plan
    from clustersim.planner.spec import load_plan

    spec = load_plan(args.file, args.overrides)
    check_out_dir(args.out)
    result = run_plan(spec, args.out, args.executor, args.quiet)
    from clustersim.planner.html import render_plan

    paths = write_plan(result)
    paths["report.html"] = render_plan(result.plan_dir)
    print(format_report(result, paths))
    return EXIT_OK


# --------------------------------------------------------------------------- tables

SUMMARY_HEADERS = [
    "point",
    "reps",
    "done",
    "dropped",
    "out tok/s",
    "TTFT p50 s",
    "TTFT p99 s",
    "TPOT p99 s",
    "SLO att.",
    "goodput rps",
    "stable",
    "run dir",
]


def summary_row(label: str, s: Mapping[str, Any], run_dir: Path) -> list[str]:
    """A stdout row; with replicates the interval keys read `mean±half-width` (95 % CI)."""
    reps = (s.get("replicates") or {}).get("n", 1)
    return [
        label,
        str(reps),
        str(s["requests_completed"]),
        str(s["requests_dropped"]),
        fmt_ci(s, ("throughput", "output_tokens_per_s"), ".1f"),
        fmt_ci(s, ("ttft_s", "p50"), ".3f"),
        fmt_ci(s, ("ttft_s", "p99"), ".3f"),
        fmt_ci(s, ("tpot_s", "p99"), ".4f"),
        fmt_ci(s, ("slo", "attainment"), ".1%"),
        fmt_ci(s, ("slo", "goodput_rps"), ".2f"),
        stable_text((s.get("stability") or {}).get("stable")),
        str(run_dir),
    ]


def stable_text(stable: bool | None) -> str:
    """`yes`, `NO` (queue or KV use trends upward: latencies depend on the horizon), `-`."""
    return "-" if stable is None else ("yes" if stable else "NO")


def fmt_ci(s: Mapping[str, Any], path: tuple[str, str], spec: str) -> str:
    """The pooled value, or `mean±half` of the replicates' 95 % interval when there is one."""
    stats = ((s.get("replicates") or {}).get(path[0]) or {}).get(path[1]) or {}
    ci = stats.get("ci95")
    if ci is None or stats.get("mean") is None:
        return fmt_number(s[path[0]][path[1]], spec)
    half = (ci[1] - ci[0]) / 2.0
    if spec.endswith("%"):
        return f"{format(stats['mean'], spec)}±{100.0 * half:.1f}"
    return f"{format(stats['mean'], spec)}±{format(half, spec)}"


def fmt_number(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Plain left-aligned columns separated by two spaces."""
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows, strict=True)]
    lines = [headers, *rows]
    return "\n".join(
        "  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )
