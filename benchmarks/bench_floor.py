"""The floor of issue 15 item 5a: clustersim against a minimal continuous-batching model.

  python benchmarks/bench_floor.py [--requests N] [--replicas R] [--load F] [--repeat K]
                                   [--capacity RPS] [--sim-only]

Case: llama-3.1-8b TP1 on h100-sxm, R (8) replicas, N (100k) requests of prompt 512 /
output 128, Poisson arrivals at F (70 %) of clustersim's own saturated throughput (measured
first, unless --capacity gives it: requests/s of one replica draining a 4,000-request burst).
The same arrival rate and request count run in clustersim (its CLI, results written) and in
benchmarks/reference_model.py, each in a fresh spawned process of the same process pool
(benchmarks/measure.py), K times each, alternating; the least CPU of each is compared.
The issue's target: clustersim ≤ 1.5 × the reference.

--sim-only times the two simulations alone instead (each fresh process's CPU inside the
simulation loop: clustersim's `_Simulation.run`, the reference's `Sim.run`), so the ratio
splits into the simulation's and the fixed costs' (start-up, tables, summary, files).
"""

from __future__ import annotations

import argparse
import sys

from bench_scaling import dense_8b
from measure import (
    Measurement,
    best_of,
    clustersim_sim_task,
    clustersim_task,
    in_fresh_process,
    reference_sim_task,
    reference_task,
)

BURST_REQUESTS = 4000


def burst_yaml() -> str:
    """One replica, every request arriving at t = 0 (its saturated throughput)."""
    return dense_8b(1, BURST_REQUESTS, "{process: burst}")


def capacity_rps() -> float:
    """clustersim's saturated throughput of one replica (requests / makespan of a burst)."""
    m = in_fresh_process(clustersim_task, burst_yaml())
    return float(m["requests"] / m["simulated_s"])


def describe(name: str, m: Measurement) -> str:
    return (
        f"| {name} | {m['cpu_s']:.2f} | {' / '.join(map(str, m['cpu_s_all']))} "
        f"| {m['rss_mib']:.0f} | {m['engine_steps']:,} | {m['simulated_s']:.1f} "
        f"| {1e6 * m['cpu_s'] / max(m['engine_steps'], 1):.1f} |"
    )


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=100_000)
    ap.add_argument("--replicas", type=int, default=8)
    ap.add_argument("--load", type=float, default=0.70, help="share of saturated throughput")
    ap.add_argument("--repeat", type=int, default=1, help="runs of each, least CPU kept")
    ap.add_argument("--capacity", type=float, help="req/s of one saturated replica (skip probe)")
    ap.add_argument("--sim-only", action="store_true", help="time the simulations alone")
    args = ap.parse_args(argv)
    per_replica = args.capacity if args.capacity else capacity_rps()
    rate = args.load * per_replica * args.replicas
    print(
        f"saturated throughput {per_replica:.2f} req/s a replica; "
        f"arrivals {rate:.1f} req/s ({args.load:.0%} load)",
        flush=True,
    )
    yaml_text = dense_8b(args.replicas, args.requests, f"{{process: poisson, rate_rps: {rate}}}")
    ref_argv = [
        "--requests",
        str(args.requests),
        "--replicas",
        str(args.replicas),
        "--rate",
        str(rate),
    ]
    sim_task, ref_task = (
        (clustersim_sim_task, reference_sim_task)
        if args.sim_only
        else (clustersim_task, reference_task)
    )
    sim_runs: list[Measurement] = []
    ref_runs: list[Measurement] = []
    for _ in range(args.repeat):  # alternate, so both see the same machine weather
        sim_runs.append(best_of(1, sim_task, yaml_text))
        ref_runs.append(best_of(1, ref_task, ref_argv))
    sim = min(sim_runs, key=lambda m: m["cpu_s"])
    ref = min(ref_runs, key=lambda m: m["cpu_s"])
    sim["cpu_s_all"] = [r["cpu_s_all"][0] for r in sim_runs]
    ref["cpu_s_all"] = [r["cpu_s_all"][0] for r in ref_runs]
    print(
        "| model | CPU-s (min) | CPU-s all runs | peak RSS MiB | engine steps | simulated s "
        "| µs CPU a step |"
    )
    print("|---|---|---|---|---|---|---|")
    print(describe("clustersim", sim))
    print(describe("reference (benchmarks/reference_model.py)", ref))
    what = "simulations only" if args.sim_only else "whole runs; target ≤ 1.5"
    print(
        f"floor ratio (CPU-s clustersim / reference, {what}): "
        f"{sim['cpu_s'] / ref['cpu_s']:.2f}; peak RSS ratio {sim['rss_mib'] / ref['rss_mib']:.2f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
