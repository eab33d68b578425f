"""Scaling cases of issue 15, CPU seconds and peak RSS per case (a script, never a test).

  python benchmarks/bench_scaling.py CASE [CASE ...]      # one subprocess per case
  python benchmarks/bench_scaling.py --list

Each case is an inline experiment run with run_experiment in a fresh subprocess (imports
included); CPU = user + sys of that process, RSS = its peak. Cases:
  floor        llama-3.1-8b TP1 × 8 replicas, 100k requests 512/128, Poisson 70% load
  vidur[N]     Vidur's scenario: llama-2-70b TP2 on A100, N requests 512/128, Poisson 2 req/s
  rep{R}       llama-3.1-8b TP1 × R replicas, 1,500 requests a replica, 70% load
  pp{P}[_N]    llama-3.1-70b TP8 × PP P, N (10k) requests 512/128, Poisson 10 req/s
  ep{E}_{S}    deepseek-v3 DP-attention + EP E, chat traffic ∝ E for S simulated seconds
"""

from __future__ import annotations

import json
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RATE_8B = 34.7 * 0.70  # req/s per llama-3.1-8b TP1 replica at 70% of capacity (bench_sim.py)


def yaml_for(case: str) -> str:
    if case == "floor" or (m := re.fullmatch(r"rep(\d+)", case)):
        reps = 8 if case == "floor" else int(m.group(1))  # type: ignore[union-attr]
        reqs = 100_000 if case == "floor" else 1500 * reps
        nodes = max(1, reps // 8)
        ib = "network: {kind: infiniband, nics_per_node: 8, bandwidth_GBps: 50}"
        net = ib if nodes > 1 else ""
        return f"""\
name: b
seed: 1
model: llama-3.1-8b
topology: {{name: t, nodes: {nodes}, gpus_per_node: 8, gpu: h100-sxm,
  nvlink: {{domain: node, bandwidth_GBps: 450, latency_us: 2.0}} {"," + net if net else ""}}}
layout: {{tp: 1, dp: {reps}}}
precision: {{weights: bf16, activations: bf16, kv_cache: bf16}}
serving: {{router: least_outstanding}}
workload:
  arrival: {{process: poisson, rate_rps: {RATE_8B * reps}}}
  prompt_tokens: {{dist: fixed, value: 512}}
  output_tokens: {{dist: fixed, value: 128}}
horizon: {{requests: {reqs}}}
"""
    if m := re.fullmatch(r"vidur(\d*)", case):
        n = int(m.group(1) or 100_000)
        return f"""\
name: b
seed: 1
model: llama-2-70b
topology: dgx_a100_x1
layout: {{tp: 2}}
workload:
  arrival: {{process: poisson, rate_rps: 2}}
  prompt_tokens: {{dist: fixed, value: 512}}
  output_tokens: {{dist: fixed, value: 128}}
horizon: {{requests: {n}}}
"""
    if m := re.fullmatch(r"pp(\d+)(?:_(\d+))?", case):
        pp, n = int(m.group(1)), int(m.group(2) or 10_000)
        return f"""\
name: b
seed: 1
model: llama-3.1-70b
topology: {{name: t, nodes: {pp}, gpus_per_node: 8, gpu: h100-sxm,
  nvlink: {{domain: node, bandwidth_GBps: 450, latency_us: 2.0}},
  network: {{kind: infiniband, nics_per_node: 8, bandwidth_GBps: 50}}}}
layout: {{tp: 8, pp: {pp}}}
workload:
  arrival: {{process: poisson, rate_rps: 10}}
  prompt_tokens: {{dist: fixed, value: 512}}
  output_tokens: {{dist: fixed, value: 128}}
horizon: {{requests: {n}}}
"""
    if m := re.fullmatch(r"ep(\d+)_(\d+)", case):
        ep, secs = int(m.group(1)), int(m.group(2))
        return f"""\
name: b
seed: 7
model: deepseek-v3
topology: {{name: t, nodes: {max(1, ep // 8)}, gpus_per_node: 8, gpu: h800,
  nvlink: {{domain: node, bandwidth_GBps: 200, latency_us: 2.0}},
  network: {{kind: infiniband, nics_per_node: 8, bandwidth_GBps: 50}}}}
layout: {{tp: 1, dp: {ep}, ep: {ep}, dp_attention: true}}
precision: {{weights: fp8, activations: fp8, kv_cache: fp8, dispatch: fp8, combine: bf16}}
serving: {{max_num_seqs: 128, max_num_batched_tokens: 1024}}
experts: {{routing: {{distribution: zipf, skew: 1.2}}}}
workload:
  arrival: {{process: poisson, rate_rps: {4.0 * ep}}}
  prompt_tokens: {{dist: lognormal, median: 256, sigma: 0.6, max: 2048}}
  output_tokens: {{dist: lognormal, median: 128, sigma: 0.6, max: 1024}}
horizon: {{duration_s: {secs}}}
"""
    raise SystemExit(f"unknown case {case!r}")


def child(case: str) -> None:
    from clustersim.config.load import load_experiment
    from clustersim.sim.engine import run_experiment

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "b.yaml"
        path.write_text(yaml_for(case))
        out = run_experiment(load_experiment(path))
    ru = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({
        "case": case,
        "cpu_s": round(ru.ru_utime + ru.ru_stime, 2),
        "rss_mib": round(ru.ru_maxrss / 1024),
        "requests": len(out.requests),
        "steps": int(out.sim["events"]) - len(out.requests),
        "simulated_s": round(out.sim["simulated_s"], 1),
    }))


def main(argv: list[str]) -> None:
    if argv[:1] == ["--child"]:
        child(argv[1])
        return
    if argv[:1] == ["--list"]:
        print(__doc__)
        return
    for case in argv:
        t = time.perf_counter()
        res = subprocess.run([sys.executable, __file__, "--child", case], capture_output=True,
                             text=True, check=False)
        line = res.stdout.strip().splitlines()[-1] if res.returncode == 0 else res.stderr[-500:]
        print(line, f"wall {time.perf_counter() - t:.1f}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
