"""`clustersim capacity`: bisect the arrival rate for the highest rate inside the SLO."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from clustersim.capacity import CAPACITY_REPLICATES
from clustersim.cli.errors import EXIT_OK, BadInput, check_out_dir
from clustersim.cli.points import Point, blame, load_points
from clustersim.cli.progress import overall_bar_open
from clustersim.cli.tables import fmt_number, format_table
from clustersim.config.load import resolved_config
from clustersim.config.schema import Experiment
from clustersim.results.writer import new_point_dir, new_run_dir, write_sweep_table
from clustersim.sim.engine import build


def cmd_capacity(args: argparse.Namespace) -> int:
    """Bisect the arrival rate for the highest rate inside the SLO, per sweep point (e.g.
    per layout); probe table(s) and files."""
    from clustersim.capacity.output import write_capacity

    points = checked_points(args)
    check_out_dir(args.out)
    fan_out = fan_out_of(args)
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
        print_capacity_points(root, rows)
    return EXIT_OK


def checked_points(args: argparse.Namespace) -> list[Point]:
    """The file's points, each with a rate-driven workload and a layout that builds."""
    points = load_points(args.file, args.overrides)
    for point in points:
        check_rate_workload_of(args.file, point)
        with blame(args.file, point.label):
            build(point.exp)
    return points


def fan_out_of(args: argparse.Namespace) -> tuple[str, int] | None:
    """(executor, workers) for each probe's replicates; None: one at a time in this process."""
    if args.executor != "local" or args.workers > 1:
        return (args.executor, args.workers)
    return None


def print_capacity_points(root: Path, rows: list[dict[str, Any]]) -> None:
    """A sweep's capacity per point, after every point's own table."""
    print(format_table(
        ["point", "capacity rps", "knee in", "probes"],
        [[r["label"], fmt_number(r["capacity_rps"], ".4g"),
          f"[{fmt_number(r['lo_rps'], '.4g')}, {fmt_number(r['hi_rps'], '.4g')}]",
          str(r["probes"])] for r in rows],
    ))  # fmt: skip
    print(f"capacity per point: {root / 'capacity_points.csv'}")


def check_rate_workload_of(path: Path, point: Point) -> float:
    from clustersim.capacity.probe import check_rate_workload

    where = f"{path} [{point.label}]" if point.label else str(path)
    return check_rate_workload(point.exp, where)


def search_capacity(
    exp: Experiment, path: Path, fan_out: Any, tick: Callable[[], None]
) -> tuple[Any, list[list[str]]]:
    """One point's search; (Capacity, the stdout rows of its probes in probe order)."""
    from clustersim.capacity.output import probe_row
    from clustersim.capacity.probe import check_rate_workload, probe_rate, rate_range
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

    start = check_rate_workload(exp, str(path))
    return find_capacity(probe, start, rate_range=rate_range(exp)), table


def print_capacity(label: str, reps: int, cap: Any, table: list[list[str]], csv_path: Path) -> None:
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
