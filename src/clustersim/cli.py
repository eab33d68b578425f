"""Command line (DESIGN.md §2): argument parsing, orchestration, exit codes, stdout tables.

Exit codes: 0 success; 2 bad input (ConfigError, BuildError, PlacementError, an unreadable
input file): exactly one line `clustersim: error: <message>` on stderr, no traceback;
1 internal error (a bug): the traceback on stderr.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import pandas as pd
from tqdm import tqdm

from clustersim import __version__
from clustersim.config.errors import ConfigError
from clustersim.config.load import load_raw_experiment, load_sweep, resolved_config
from clustersim.config.schema import Experiment
from clustersim.metrics.summary import RunTables, summarize
from clustersim.metrics.timeline import build_timeline, window_slo_summary
from clustersim.model.memory import MemoryPlan, plan_memory
from clustersim.planner.search import EXECUTORS, PlanError
from clustersim.results.compare import compare_runs, text_rows
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


def bad_input_message(err: BaseException) -> str | None:
    """The one-line message for a bad-input error, or None for an internal error."""
    if isinstance(
        err, BadInput | ConfigError | BuildError | PlacementError | ReportError | PlanError
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
    """Simulate every point, one run directory each; summary table on stdout."""
    points = load_points(args.file, args.overrides)
    check_out_dir(args.out)
    created = not args.out.exists()
    args.out.mkdir(parents=True, exist_ok=True)  # an unusable --out fails before simulating
    results = RunResults(args.out, points, report=not args.no_report)
    try:
        for point in points:
            with blame(args.file, point.label):
                summary, resolved, out, timeline = simulate(point, args.quiet)
            results.write(point, resolved, out, summary, timeline)
            del out  # one point's tables in memory at a time
        results.finish()  # a sweep stopped by a bad point: `clustersim report` draws it later
    finally:  # also when a later point fails: the finished ones are listed
        results.print_table()
        if created:
            remove_if_empty(args.out)  # bad input leaves no empty --out behind
    return EXIT_OK


def remove_if_empty(directory: Path) -> None:
    with suppress(OSError):
        directory.rmdir()  # fails (and keeps it) unless empty


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

    def write(
        self,
        point: Point,
        resolved: dict[str, Any],
        out: RunTables,
        summary: dict[str, Any],
        timeline: pd.DataFrame | None = None,
    ) -> None:
        """Write one finished point's files (and the sweep table so far)."""
        if not self.is_sweep:
            run_dir = new_run_dir(self.root, point.exp.name, resolved)
        else:
            if self.sweep_dir is None:
                self.sweep_dir = new_run_dir(self.root, point.exp.name, sweep_identity(self.points))
            run_dir = new_point_dir(self.sweep_dir, point.label)
        mark_incomplete(run_dir)  # until the plots are drawn too
        write_run(run_dir, resolved, out, summary, timeline)
        if self.sweep_dir is not None:  # a point with a summary is in sweep.csv at once
            self.sweep_rows.append(sweep_row(point.label, point.overrides, run_dir, summary))
            write_sweep_table(self.sweep_dir, self.sweep_rows)  # a stopped sweep keeps it
        if self.report:
            render_run(run_dir, writing=True)  # plots + report.html, from the files just written
        mark_complete(run_dir)
        self.table.append(summary_row(point.label or point.exp.name, summary, run_dir))

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
    point: Point, quiet: bool
) -> tuple[dict[str, Any], dict[str, Any], RunTables, pd.DataFrame]:
    """Run one point with a progress bar; (summary, resolved config, RunOutput, timeline)."""
    exp = point.exp
    built = build(exp)  # bad layouts fail here, before a progress bar touches stderr
    with progress_bar(horizon_estimate_s(exp), point.label or exp.name, quiet) as progress:
        out = run_experiment(exp, progress, built)
    warmup_s = exp.horizon.warmup_s
    bin_s = exp.output.time_bin_s
    timeline = build_timeline(
        out.requests, out.iterations, out.links, bin_s, exp.slo, warmup_s, out.phases
    )
    summary = summarize(out, exp.slo, warmup_s, window_slo_summary(timeline))
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
    """Redraw the plots and report.html of a run directory (or of a sweep and its points)."""
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
    print(f"comparison report: {result.report}")
    return EXIT_OK


# --------------------------------------------------------------------------- plan


def cmd_plan(args: argparse.Namespace) -> int:
    """Enumerate, prune, simulate and rank layouts; print the plan, write its directory."""
    from clustersim.planner.report import format_report, write_plan
    from clustersim.planner.run import run_plan
    from clustersim.planner.spec import load_plan

    spec = load_plan(args.file, args.overrides)
    check_out_dir(args.out)
    result = run_plan(spec, args.out, args.executor, args.quiet)
    paths = write_plan(result)
    print(format_report(result, paths))
    return EXIT_OK


# --------------------------------------------------------------------------- tables

SUMMARY_HEADERS = [
    "point",
    "done",
    "dropped",
    "out tok/s",
    "TTFT p50 s",
    "TTFT p99 s",
    "TPOT p99 s",
    "SLO att.",
    "goodput rps",
    "run dir",
]


def summary_row(label: str, s: Mapping[str, Any], run_dir: Path) -> list[str]:
    return [
        label,
        str(s["requests_completed"]),
        str(s["requests_dropped"]),
        fmt_number(s["throughput"]["output_tokens_per_s"], ".1f"),
        fmt_number(s["ttft_s"]["p50"], ".3f"),
        fmt_number(s["ttft_s"]["p99"], ".3f"),
        fmt_number(s["tpot_s"]["p99"], ".4f"),
        fmt_number(s["slo"]["attainment"], ".1%"),
        fmt_number(s["slo"]["goodput_rps"], ".2f"),
        str(run_dir),
    ]


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
