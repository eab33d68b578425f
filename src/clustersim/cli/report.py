"""`clustersim report` and `clustersim compare`: redraw a run's report, two runs side by side."""

from __future__ import annotations

import argparse

from clustersim.cli.errors import EXIT_OK, BadInput
from clustersim.cli.tables import format_table
from clustersim.results.compare import compare_runs, interval_rows, text_rows
from clustersim.results.report import render


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
