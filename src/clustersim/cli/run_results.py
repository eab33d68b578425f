"""Where `clustersim run` writes: run directories, sweep table, pooled replicates, stdout rows."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clustersim.cli.points import Point
from clustersim.cli.progress import progress_bar
from clustersim.cli.tables import SUMMARY_HEADERS, format_table, summary_row
from clustersim.config.load import resolved_config
from clustersim.metrics.replicates import replicate_sample, replicate_seeds
from clustersim.metrics.summary import RunTables
from clustersim.metrics.table import Table
from clustersim.results.replicates import (
    REPLICATE_DIR,
    mean_timeline,
    pooled_requests,
    replicate_dir,
    replicate_row,
    write_replicated_run,
)
from clustersim.results.writer import (
    mark_complete,
    mark_incomplete,
    new_point_dir,
    new_run_dir,
    sweep_row,
    write_run,
    write_sweep_table,
)
from clustersim.runner import iter_replicates, pool
from clustersim.sim.engine import horizon_estimate_s

if TYPE_CHECKING:
    import pandas as pd


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
                self.sweep_dir = new_run_dir(self.root, point.exp.name, sweep_identity(self.points))
            run_dir = new_point_dir(self.sweep_dir, point.label)
        mark_incomplete(run_dir)  # until its plots are drawn too
        return run_dir

    def write(
        self,
        point: Point,
        resolved: dict[str, Any],
        out: RunTables,
        summary: dict[str, Any],
        timeline: Table | pd.DataFrame | None = None,
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
            from clustersim.results.report import render_run  # plots: only when drawn

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
        import pandas as pd

        exp = point.exp
        seeds = replicate_seeds(exp.seed, exp.replicates)
        samples, requests, timelines, rows = [], [], [], []
        for k, summary in enumerate(summaries):
            rdir = run_dir / REPLICATE_DIR.format(k=k)
            if self.report:
                from clustersim.results.report import render_run

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
            from clustersim.results.report import render_sweep

            render_sweep(self.sweep_dir)

    def print_table(self) -> None:
        if self.table:
            print(format_table(SUMMARY_HEADERS, self.table))
        if self.sweep_dir is not None:
            print(f"sweep table: {self.sweep_dir / 'sweep.csv'}")


def sweep_identity(points: Sequence[Point]) -> dict[str, Any]:
    """What a sweep directory's hash is taken over: every point's resolved config."""
    return {p.label: resolved_config(p.exp) for p in points}
