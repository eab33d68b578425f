"""The job pool: simulation jobs run in local processes or as Ray tasks (`run --workers`,
`capacity`, `plan`).

`run_jobs` runs `work(job)` for each job: in local processes (concurrent.futures
ProcessPoolExecutor, fork start, `workers` at a time) or as Ray tasks (`--executor ray`:
`ray.init(address="auto")` when RAY_ADDRESS is set, else a local instance started and stopped
here). Results come back in completion order behind a tqdm bar and are returned in job order,
so the outcome does not depend on the executor or the timing. The process pool and tqdm are
imported when jobs run: the argument parser imports this module for the executor names.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from concurrent.futures import Future

    from clustersim.config.schema import Experiment

ExecutorName = Literal["local", "ray"]
EXECUTORS: tuple[ExecutorName, ...] = ("local", "ray")
# what every simulation job builds and writes its result tables with (≈ 0.5 CPU-s to import),
# imported before local workers fork so that they inherit it
WORKER_MODULES = ("pandas", "pyarrow.parquet")


class ExecutorError(Exception):
    """An executor that cannot start (the ray package missing): a bad input, one line."""


def default_workers() -> int:
    """CPUs of this machine (at least 1)."""
    return max(1, os.cpu_count() or 1)


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


OnResult = Callable[[SimJob, SimResult], None]
Skip = Callable[[SimJob], bool]


def run_jobs(
    jobs: Sequence[SimJob],
    executor: ExecutorName,
    workers: int,
    quiet: bool,
    on_result: OnResult | None = None,
    skip: Skip | None = None,
    *,
    work: Work,
    desc: str = "plan: simulate",
    unit: str = "layout",
) -> dict[int, SimResult]:
    """Results by job index. At most `workers` jobs are in flight; before a job is submitted
    `skip(job)` may drop it (it then has no result); `on_result` sees each result as it comes.
    A tqdm bar on stderr counts finished and skipped jobs unless `quiet`. `work` runs one job
    in a worker (a module-level function, so a process pool can pickle it)."""
    from tqdm import tqdm

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
        for i, result in runner(jobs, max(1, workers), take, work):
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
    import importlib
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    n = min(workers, len(jobs))
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else None
    ctx = multiprocessing.get_context(method)
    if method == "fork":
        for name in WORKER_MODULES:  # once here, not once in every worker
            importlib.import_module(name)
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
        raise ExecutorError(
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
