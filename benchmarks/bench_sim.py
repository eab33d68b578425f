"""Simulator speed and memory benchmark (a script, never a timed test).

  python benchmarks/bench_sim.py            # both cases
  python benchmarks/bench_sim.py --case a   # 100k requests, 8 replicas
  python benchmarks/bench_sim.py --case b   # 1M requests, 128 replicas

Each case runs in its own subprocess so its peak RSS is its own. Workload: prompt 512,
output 128 tokens, Poisson arrivals at 70% of the cluster's capacity; llama-3.1-8b TP1 on
h100-sxm. Capacity is measured first with a short max-throughput (burst) run on one replica.
Results are printed as a Markdown table row for docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from typing import Any

from clustersim.catalog.hardware import get_hardware
from clustersim.catalog.models import get_model
from clustersim.config.schema import (
    Experiment,
    FixedLength,
    HorizonSpec,
    Layout,
    NetworkSpec,
    NVLinkSpec,
    OutputSpec,
    Precision,
    ServingSpec,
    TopologySpec,
    WorkloadSpec,
)
from clustersim.sim.engine import run_experiment

CASES = {"a": (100_000, 8), "b": (1_000_000, 128)}
PROMPT, OUTPUT = 512, 128
LOAD = 0.70


def experiment(replicas: int, arrival: dict[str, Any], requests: int) -> Experiment:
    nodes = max(1, replicas // 8)
    topology = TopologySpec(
        name=f"h100x{nodes * 8}",
        nodes=nodes,
        gpus_per_node=8,
        gpu="h100-sxm",
        nvlink=NVLinkSpec(domain="node", bandwidth_GBps=450, latency_us=2.0),
        network=NetworkSpec() if nodes > 1 else None,
    )
    workload = WorkloadSpec.model_validate(
        {
            "name": "bench",
            "arrival": arrival,
            "prompt_tokens": FixedLength(dist="fixed", value=PROMPT).model_dump(),
            "output_tokens": FixedLength(dist="fixed", value=OUTPUT).model_dump(),
        }
    )
    return Experiment(
        name="bench",
        seed=1,
        model=get_model("llama-3.1-8b"),
        hardware=get_hardware("h100-sxm"),
        topology=topology,
        layout=Layout(tp=1, dp=replicas),
        precision=Precision(weights="bf16", activations="bf16", kv_cache="bf16"),
        serving=ServingSpec(router="least_outstanding"),
        workload=workload,
        horizon=HorizonSpec(requests=requests),
        output=OutputSpec(),
    )


def replica_capacity_rps() -> float:
    """Requests/s one replica completes when saturated (burst of requests, all at t=0)."""
    out = run_experiment(experiment(1, {"process": "burst"}, 4000))
    finish = out.requests["finish_s"].to_numpy()
    return float(len(finish) / finish.max())


def run_case(case: str) -> dict[str, Any]:
    requests, replicas = CASES[case]
    capacity = replica_capacity_rps() * replicas
    rate = LOAD * capacity
    exp = experiment(replicas, {"process": "poisson", "rate_rps": rate}, requests)
    start = time.perf_counter()
    out = run_experiment(exp)
    wall = time.perf_counter() - start
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "case": case,
        "requests": requests,
        "replicas": replicas,
        "rate_rps": round(rate, 1),
        "wall_s": round(wall, 2),
        "requests_per_wall_s": round(requests / wall),
        "engine_steps": int(out.sim["events"]) - requests,
        "simulated_s": round(out.sim["simulated_s"], 1),
        "peak_rss_MiB": round(peak_kib / 1024),
        "completed": int((~out.requests["dropped"]).sum()),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=sorted(CASES), help="run one case in this process")
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(args.case)))
        return 0
    print(
        "| case | requests | replicas | rate (req/s) | wall s | sim req / wall s "
        "| engine steps | simulated s | peak RSS MiB |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for case in sorted(CASES):
        proc = subprocess.run(
            [sys.executable, __file__, "--case", case],
            capture_output=True,
            text=True,
            check=True,
            env=os.environ.copy(),
        )
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        print(
            f"| {r['case']} | {r['requests']:,} | {r['replicas']} | {r['rate_rps']} "
            f"| {r['wall_s']} | {r['requests_per_wall_s']:,} | {r['engine_steps']:,} "
            f"| {r['simulated_s']} | {r['peak_rss_MiB']} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
