"""`clustersim validate`: load, resolve, place and memory-fit every point, no simulation."""

from __future__ import annotations

import argparse
from pathlib import Path

from clustersim.cli.errors import EXIT_OK, BadInput
from clustersim.cli.points import Point, load_points, point_error
from clustersim.cli.tables import format_table
from clustersim.config.yaml_files import load_raw_experiment
from clustersim.model.memory import MemoryPlan, plan_memory
from clustersim.sim.engine import BuildError, build
from clustersim.topology.placement import PlacementError

GiB = 2.0**30  # bytes


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
