"""Cost of one simulator run, measured in a fresh process of a process pool (benchmarks only).

Every measured run gets its own spawned worker (a one-worker pool per run), so its CPU time
includes interpreter start-up and imports and its peak RSS is its own. CPU = user + sys
seconds of that worker (`resource.getrusage(RUSAGE_SELF)` read as the task's last act, i.e.
the rusage its parent collects for the child, minus the few ms of pool hand-back); wall time
is reported too but is meaningless on a shared machine.

clustersim runs through its command line (`clustersim run FILE --out DIR --no-report
--quiet`): the public entry point, with result writing (parquet + summary.json) included.

Start-up is measured with clustersim's bytecode cached, as an installed package has it:
`in_fresh_process` compiles the package's modules once (compileall, a no-op when the caches
are fresh) before spawning. Without that, a machine with PYTHONDONTWRITEBYTECODE=1 (this
project's) recompiles every clustersim module in every measured process (≈ 0.2 CPU-s).
"""

from __future__ import annotations

import compileall
import contextlib
import importlib.util
import io
import json
import multiprocessing
import os
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

Measurement = dict[str, Any]


def _finish(summary: dict[str, Any], wall_start: float) -> Measurement:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "cpu_s": ru.ru_utime + ru.ru_stime,
        "rss_mib": ru.ru_maxrss / 1024,  # Linux: KiB
        "wall_s": time.perf_counter() - wall_start,
        **summary,
    }


def clustersim_task(yaml_text: str) -> Measurement:
    """Run one experiment with the clustersim CLI in this (fresh) process."""
    wall_start = time.perf_counter()
    from clustersim.cli import main

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.yaml"
        path.write_text(yaml_text)
        argv = ["run", str(path), "--out", str(Path(tmp) / "out"), "--no-report", "--quiet"]
        with contextlib.redirect_stdout(io.StringIO()):  # its results table
            code = main(argv)
        if code != 0:
            raise RuntimeError(f"clustersim run exited with {code}")
        summary = json.loads(next((Path(tmp) / "out").rglob("summary.json")).read_text())
    sim = summary["sim"]
    done = summary["requests_completed"] + summary["requests_dropped"]
    return _finish(
        {
            "requests": done,
            "engine_steps": int(sim["events"] - done),
            "simulated_s": sim["simulated_s"],
        },
        wall_start,
    )


def reference_task(argv: list[str]) -> Measurement:
    """Run benchmarks/reference_model.py with `argv` (its CLI, minus OUT_DIR) in this process."""
    wall_start = time.perf_counter()
    import reference_model

    with tempfile.TemporaryDirectory() as tmp:
        summary = reference_model.main([str(Path(tmp) / "out"), *argv])
    return _finish(
        {
            "requests": int(summary["requests"]),
            "engine_steps": int(summary["engine_steps"]),
            "simulated_s": summary["simulated_s"],
        },
        wall_start,
    )


def clustersim_sim_task(yaml_text: str) -> Measurement:
    """CPU seconds of the simulation alone (what `run_tables` runs between building its
    request stream and its tables), in this (fresh) process: no start-up, tables or writing."""
    from clustersim.cli.points import load_points
    from clustersim.collector import frozen_heap
    from clustersim.sim.engine import _Simulation, build, experiment_requests

    wall_start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.yaml"
        path.write_text(yaml_text)
        (point,) = load_points(path, [])
    exp = point.exp
    sim = _Simulation(exp, build(exp), experiment_requests(exp))
    start = time.process_time()
    with frozen_heap():
        sim.run(None)
    cpu_s = time.process_time() - start
    steps = sim.recorder.steps
    return _finish_simulation(cpu_s, sim.n, steps, float(sim.env.now), wall_start)


def reference_sim_task(argv: list[str]) -> Measurement:
    """CPU seconds of benchmarks/reference_model.py's simulation alone (`Sim.run`)."""
    import reference_model

    wall_start = time.perf_counter()
    sim = reference_model.sim_from_args(argv)
    start = time.process_time()
    sim.run()
    cpu_s = time.process_time() - start
    return _finish_simulation(cpu_s, sim.n, sim.steps, float(sim.env.now), wall_start)


def _finish_simulation(
    cpu_s: float, requests: int, steps: int, simulated_s: float, wall_start: float
) -> Measurement:
    """`_finish`'s measurement with the simulation's own CPU seconds as `cpu_s`."""
    summary = {"requests": requests, "engine_steps": steps, "simulated_s": simulated_s}
    return {**_finish(summary, wall_start), "cpu_s": cpu_s}


def compile_clustersim() -> None:
    """Write the bytecode caches of clustersim's modules where they are missing or stale."""
    spec = importlib.util.find_spec("clustersim")
    if spec is not None and spec.submodule_search_locations:
        for where in spec.submodule_search_locations:
            compileall.compile_dir(where, quiet=1)


def in_fresh_process(task: Callable[[Any], Measurement], arg: Any) -> Measurement:
    """`task(arg)` in a newly spawned worker (a fresh one-worker pool, one task), with
    clustersim's bytecode cached first and one OpenBLAS thread (clustersim's command line
    asks for one; the reference model gets the same, so neither pays OpenBLAS's thread
    start, ≈ 0.1 CPU-s on 2 cores)."""
    compile_clustersim()
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # inherited by the spawned worker
    ctx = multiprocessing.get_context("spawn")
    bench_dir = str(Path(__file__).resolve().parent)
    if bench_dir not in sys.path:  # the worker imports this module and reference_model
        sys.path.insert(0, bench_dir)
    with ProcessPoolExecutor(1, mp_context=ctx) as pool:
        result: Measurement = pool.submit(task, arg).result()
    return result


def best_of(repeat: int, task: Callable[[Any], Measurement], arg: Any) -> Measurement:
    """The run with the least CPU of `repeat` fresh-process runs (a busy machine only adds)."""
    runs = [in_fresh_process(task, arg) for _ in range(repeat)]
    best = min(runs, key=lambda m: m["cpu_s"])
    best["cpu_s_all"] = [round(m["cpu_s"], 2) for m in runs]
    return best
