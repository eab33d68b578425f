"""Argument parsing: the `clustersim` parser, one sub-parser per command (DESIGN.md §2).

Each command's module is imported when that command runs, so `--help` and `validate` load
neither the simulator's result tables (pandas, pyarrow) nor the planner.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import NoReturn

from clustersim import __version__
from clustersim.capacity import CAPACITY_REPLICATES
from clustersim.cli.errors import EXIT_BAD_INPUT, PROG
from clustersim.collector import kept_frozen
from clustersim.jobs import EXECUTORS, default_workers


class OneLineErrorParser(argparse.ArgumentParser):
    """Usage errors as one line on stderr with exit 2, like every other bad input."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see --help)\n")


def _run(args: argparse.Namespace) -> int:
    with kept_frozen():
        from clustersim.cli.run import cmd_run

    return cmd_run(args)


def _validate(args: argparse.Namespace) -> int:
    with kept_frozen():
        from clustersim.cli.validate import cmd_validate

    return cmd_validate(args)


def _report(args: argparse.Namespace) -> int:
    with kept_frozen():
        from clustersim.cli.report import cmd_report

    return cmd_report(args)


def _compare(args: argparse.Namespace) -> int:
    with kept_frozen():
        from clustersim.cli.report import cmd_compare

    return cmd_compare(args)


def _capacity(args: argparse.Namespace) -> int:
    with kept_frozen():
        from clustersim.cli.capacity import cmd_capacity

    return cmd_capacity(args)


def _plan(args: argparse.Namespace) -> int:
    with kept_frozen():
        from clustersim.cli.plan import cmd_plan

    return cmd_plan(args)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(
        prog=PROG, description="Discrete-event simulator of LLM inference serving clusters."
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_run(commands)
    _add_validate(commands)
    _add_report(commands)
    _add_compare(commands)
    _add_capacity(commands)
    _add_plan(commands)
    return parser


def _add_run(commands: argparse._SubParsersAction[OneLineErrorParser]) -> None:
    run = commands.add_parser("run", help="simulate an experiment (every point of a sweep)")
    _add_experiment_args(run)
    _add_out(run)
    run.add_argument(
        "--replicates",
        type=replicate_count,
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
    run.set_defaults(func=_run)


def _add_validate(commands: argparse._SubParsersAction[OneLineErrorParser]) -> None:
    validate = commands.add_parser(
        "validate", help="load + resolve + placement + memory-fit check, no simulation"
    )
    _add_experiment_args(validate)
    validate.set_defaults(func=_validate)


def _add_report(commands: argparse._SubParsersAction[OneLineErrorParser]) -> None:
    report = commands.add_parser(
        "report", help="(re)draw plots + report.html of a run (or sweep) directory"
    )
    report.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="run or sweep directory")
    report.set_defaults(func=_report)


def _add_compare(commands: argparse._SubParsersAction[OneLineErrorParser]) -> None:
    compare = commands.add_parser(
        "compare", help="two runs side by side; writes a comparison report directory"
    )
    compare.add_argument("run_a", type=Path, metavar="RUN_A", help="run directory A")
    compare.add_argument("run_b", type=Path, metavar="RUN_B", help="run directory B")
    compare.add_argument(
        "--out", type=Path, default=None, help="where to create it (default: RUN_A/..)"
    )
    compare.set_defaults(func=_compare)


def _add_capacity(commands: argparse._SubParsersAction[OneLineErrorParser]) -> None:
    capacity = commands.add_parser(
        "capacity", help="highest arrival rate sustained inside the SLO (bisection over rate)"
    )
    _add_experiment_args(capacity)
    _add_out(capacity)
    capacity.add_argument(
        "--replicates",
        type=replicate_count,
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
    capacity.set_defaults(func=_capacity)


def _add_plan(commands: argparse._SubParsersAction[OneLineErrorParser]) -> None:
    plan = commands.add_parser(
        "plan", help="enumerate layouts, simulate, rank, emit engine launch configs"
    )
    _add_experiment_args(plan)
    _add_out(plan)
    plan.add_argument(
        "--executor",
        choices=EXECUTORS,
        default="local",
        help="local processes (default) or Ray tasks (RAY_ADDRESS, else a local Ray instance)",
    )
    plan.add_argument("--quiet", action="store_true", help="no progress bar")
    plan.set_defaults(func=_plan)


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


def _add_out(sub: argparse.ArgumentParser) -> None:
    sub.add_argument(
        "--out", type=Path, default=Path("results"), help="results root (default: results/)"
    )


def replicate_count(text: str) -> int:
    """argparse type: replicates, 1 … MAX_REPLICATES (the schema's bound on `replicates`)."""
    from clustersim.config.schema.experiment import MAX_REPLICATES

    value = positive_int(text)
    if value > MAX_REPLICATES:
        raise argparse.ArgumentTypeError(f"expected at most {MAX_REPLICATES} (got {text!r})")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1 (got {text!r})") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1 (got {text!r})")
    return value
