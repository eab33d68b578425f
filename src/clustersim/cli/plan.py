"""`clustersim plan`: enumerate, simulate and rank layouts; write the plan directory."""

from __future__ import annotations

import argparse

from clustersim.cli.errors import EXIT_OK, check_out_dir


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
