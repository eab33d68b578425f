"""Scaling cases of issue 15: CPU seconds and peak RSS per case (a script, never a test).

  python benchmarks/bench_scaling.py CASE [CASE ...]           # named cases
  python benchmarks/bench_scaling.py --table pp [--table ep]    # a scaling table's rows
  python benchmarks/bench_scaling.py --table all --big          # every row, 1M requests too
  python benchmarks/bench_scaling.py --list                     # tables, cases, targets
  python benchmarks/bench_scaling.py --ratio pp8 pp1 --repeat 7   # A / B, run alternately

Each case is an inline experiment run by `clustersim run … --no-report` in a fresh spawned
process (benchmarks/measure.py): CPU = user + sys of that process, imports, set-up and
result writing included; RSS = its peak. `--repeat N` runs each case N times and keeps the
least CPU (a busy machine only ever adds). Prints one Markdown row per case. `--ratio A B`
runs A and B alternately (so both see the same machine weather), then prints both rows, the
ratio of their least CPU and the median of the run-by-run ratios.

Cases:
  req{N}       llama-3.1-8b TP1 × 8 replicas, N requests 512/128, Poisson 70 % load
  floor        = req100000 (the floor case; benchmarks/bench_floor.py compares it)
  rep{R}       llama-3.1-8b TP1 × R replicas, 1,500 requests a replica, 70 % load
  vidur[N]     Vidur's scenario: llama-2-70b TP2 on A100, N (100k) requests 512/128, 2 req/s
  pp{P}[_N]    llama-3.1-70b TP8 × PP P, N (10k) requests 512/128, Poisson 10 req/s
  ep{E}_{S}    deepseek-v3 DP-attention + EP E on H800, chat traffic 4 req/s a rank, S s
  moe_tp8_{S}  deepseek-v3 TP8 = EP8, one replica on H200, chat traffic 3 req/s, S s
  mixtral_dp{D}  mixtral-8x7b TP1 × D replicas, Zipf routing with drift, 3 req/s a replica
               (the two MoE decode-leap cases: moe/routed_leap.py)
  dpa8_{S}     deepseek-v3 DP-attention 8 × EP8 on H200, 8 requests in a closed loop, S s
               (the DP-attention group's leaps: moe/ep_leap.py)
  CASE@step    CASE run with decode leaps off (CLUSTERSIM_DECODE_LEAP=0): what leaps save
"""

from __future__ import annotations

import argparse
import os
import re
import sys

from measure import Measurement, best_of, clustersim_task

# req/s per llama-3.1-8b TP1 h100-sxm replica at 70 % of its saturated throughput: 44.45 req/s
# draining a 4,000-request burst on one replica (2026-12-03; bench_floor.py measures it)
RATE_8B = 44.45 * 0.70

# rows of each scaling table (issue 15 item 5c); BIG rows run only with --big (> 5 min here)
TABLES: dict[str, list[str]] = {
    "requests": ["req10000", "req100000", "req1000000"],
    "replicas": ["rep8", "rep64", "rep256", "rep512"],
    "pp": ["pp1_1000", "pp2_1000", "pp4_1000", "pp8_1000", "pp1", "pp2", "pp4", "pp8"],
    "ep": ["ep16_3", "ep32_3", "ep64_3", "ep128_3"],
    "vidur": ["vidur20000", "vidur"],
    "moe_leap": [
        "moe_tp8_600@step",
        "moe_tp8_600",
        "mixtral_dp8@step",
        "mixtral_dp8",
        "dpa8_600@step",
        "dpa8_600",
    ],
}
BIG = {"req1000000", "rep512", "pp4", "pp8", "vidur"}

# what issue 15 accepts, and what others measured, beside our rows
NOTES = {
    "vidur": "Vidur (GitHub main, this machine type): 172 CPU-s, 3.1 GB; target ≤ 9 CPU-s",
    "floor": "target: ≤ 1.5 × the reference model (bench_floor.py)",
    "req100000": "target: ≤ 1.5 × the reference model (bench_floor.py)",
    "pp8_1000": "target: PP8 ≤ 10 × PP1",
    "pp8": "target: PP8 ≤ 10 × PP1",
    "rep512": "target: cost a request ≤ 2 × rep8",
    "ep128_3": "target: ≤ 20 × EP8 (EP16 here) per simulated s",
}


def dense_8b(replicas: int, requests: int, arrival: str | None = None) -> str:
    """arrival: the YAML mapping of `workload.arrival` (None: Poisson at 70 % load)."""
    if arrival is None:
        arrival = f"{{process: poisson, rate_rps: {RATE_8B * replicas}}}"
    nodes = max(1, replicas // 8)
    net = ", network: {kind: infiniband, nics_per_node: 8, bandwidth_GBps: 50}"
    return f"""\
name: b
seed: 1
model: llama-3.1-8b
topology: {{name: t, nodes: {nodes}, gpus_per_node: 8, gpu: h100-sxm,
  nvlink: {{domain: node, bandwidth_GBps: 450, latency_us: 2.0}}{net if nodes > 1 else ""}}}
layout: {{tp: 1, dp: {replicas}}}
precision: {{weights: bf16, activations: bf16, kv_cache: bf16}}
serving: {{router: least_outstanding}}
workload:
  arrival: {arrival}
  prompt_tokens: {{dist: fixed, value: 512}}
  output_tokens: {{dist: fixed, value: 128}}
horizon: {{requests: {requests}}}
"""


def vidur(requests: int) -> str:
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
horizon: {{requests: {requests}}}
"""


def pipeline(pp: int, requests: int) -> str:
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
horizon: {{requests: {requests}}}
"""


def expert_parallel(ep: int, seconds: int) -> str:
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
horizon: {{duration_s: {seconds}}}
"""


def sampled_moe(seconds: int) -> str:
    return f"""\
name: b
seed: 14
model: deepseek-v3
hardware: h200
topology: {{name: h200x8, nodes: 1, gpus_per_node: 8, gpu: h200,
  nvlink: {{domain: node, bandwidth_GBps: 450, latency_us: 2.0}}}}
layout: {{tp: 8, ep: 8}}
precision: {{weights: fp8, activations: fp8, kv_cache: fp8, dispatch: fp8, combine: bf16}}
serving: {{engine: sglang, max_num_seqs: 512, max_num_batched_tokens: 8192}}
experts: {{routing: {{distribution: zipf, skew: 0.8}}}}
workload:
  arrival: {{process: poisson, rate_rps: 3}}
  prompt_tokens: {{dist: lognormal, median: 1000, sigma: 0.6, max: 8192}}
  output_tokens: {{dist: lognormal, median: 300, sigma: 0.5, max: 2048}}
horizon: {{duration_s: {seconds}}}
"""


def dp_attention_light(seconds: int) -> str:
    return f"""\
name: b
seed: 14
model: deepseek-v3
hardware: h200
topology: {{name: h200x8, nodes: 1, gpus_per_node: 8, gpu: h200,
  nvlink: {{domain: node, bandwidth_GBps: 450, latency_us: 2.0}}}}
layout: {{tp: 1, dp: 8, ep: 8, dp_attention: true}}
precision: {{weights: fp8, activations: fp8, kv_cache: fp8, dispatch: fp8, combine: bf16}}
serving: {{engine: sglang, max_num_seqs: 512, max_num_batched_tokens: 8192}}
workload:
  arrival: {{process: closed, concurrency: 8}}
  prompt_tokens: {{dist: lognormal, median: 1000, sigma: 0.6, max: 8192}}
  output_tokens: {{dist: lognormal, median: 300, sigma: 0.5, max: 2048}}
horizon: {{duration_s: {seconds}}}
"""


def mixtral(replicas: int) -> str:
    return f"""\
name: b
seed: 3
model: mixtral-8x7b
topology: {{name: t, nodes: {max(1, replicas // 8)}, gpus_per_node: 8, gpu: h100-sxm,
  nvlink: {{domain: node, bandwidth_GBps: 450, latency_us: 2.0}},
  network: {{kind: infiniband, nics_per_node: 8, bandwidth_GBps: 50}}}}
layout: {{tp: 1, dp: {replicas}}}
precision: {{weights: fp8, activations: fp8, kv_cache: fp8}}
experts: {{routing: {{distribution: zipf, skew: 1.0, drift_interval_s: 5}}}}
workload:
  arrival: {{process: poisson, rate_rps: {3 * replicas}}}
  prompt_tokens: {{dist: lognormal, median: 512, sigma: 0.5, max: 4096}}
  output_tokens: {{dist: lognormal, median: 128, sigma: 0.7, max: 1024}}
horizon: {{duration_s: 300}}
"""


def yaml_for(case: str) -> str:
    """The experiment YAML of a named case (see the module docstring)."""
    case = case.removesuffix("@step")
    if m := re.fullmatch(r"moe_tp8_(\d+)", case):
        return sampled_moe(int(m.group(1)))
    if m := re.fullmatch(r"dpa8_(\d+)", case):
        return dp_attention_light(int(m.group(1)))
    if m := re.fullmatch(r"mixtral_dp(\d+)", case):
        return mixtral(int(m.group(1)))
    if case == "floor":
        return dense_8b(8, 100_000)
    if m := re.fullmatch(r"req(\d+)", case):
        return dense_8b(8, int(m.group(1)))
    if m := re.fullmatch(r"rep(\d+)", case):
        return dense_8b(int(m.group(1)), 1500 * int(m.group(1)))
    if m := re.fullmatch(r"vidur(\d*)", case):
        return vidur(int(m.group(1) or 100_000))
    if m := re.fullmatch(r"pp(\d+)(?:_(\d+))?", case):
        return pipeline(int(m.group(1)), int(m.group(2) or 10_000))
    if m := re.fullmatch(r"ep(\d+)_(\d+)", case):
        return expert_parallel(int(m.group(1)), int(m.group(2)))
    raise SystemExit(f"unknown case {case!r} (--list shows them)")


HEADER = (
    "| case | CPU-s (min) | CPU-s all runs | peak RSS MiB | requests | engine steps "
    "| simulated s | µs CPU a step | µs CPU a request | note |\n"
    "|---|---|---|---|---|---|---|---|---|---|"
)


def row(case: str, m: Measurement) -> str:
    steps, reqs = max(m["engine_steps"], 1), max(m["requests"], 1)
    return (
        f"| {case} | {m['cpu_s']:.2f} | {' / '.join(map(str, m['cpu_s_all']))} "
        f"| {m['rss_mib']:.0f} | {m['requests']:,} | {m['engine_steps']:,} "
        f"| {m['simulated_s']:.1f} | {1e6 * m['cpu_s'] / steps:.1f} "
        f"| {1e6 * m['cpu_s'] / reqs:.0f} | {NOTES.get(case, '')} |"
    )


def measured(case: str, repeat: int) -> Measurement:
    """The least-CPU run of `case` (a `@step` case with decode leaps off in its workers)."""
    if not case.endswith("@step"):
        return best_of(repeat, clustersim_task, yaml_for(case))
    os.environ["CLUSTERSIM_DECODE_LEAP"] = "0"  # inherited by the spawned workers
    try:
        return best_of(repeat, clustersim_task, yaml_for(case))
    finally:
        del os.environ["CLUSTERSIM_DECODE_LEAP"]


def ratio(a: str, b: str, repeat: int) -> int:
    """Cases a and b run alternately `repeat` times each: their rows, the ratio of their
    least CPU and the median ratio of each a run to the b run beside it."""
    a_runs: list[Measurement] = []
    b_runs: list[Measurement] = []
    for _ in range(repeat):
        a_runs.append(measured(a, 1))
        b_runs.append(measured(b, 1))
    print(HEADER, flush=True)
    for case, runs in ((a, a_runs), (b, b_runs)):
        best = min(runs, key=lambda m: m["cpu_s"])
        best["cpu_s_all"] = [round(m["cpu_s"], 2) for m in runs]
        print(row(case, best))
    pairs = sorted(x["cpu_s"] / y["cpu_s"] for x, y in zip(a_runs, b_runs, strict=True))
    least = min(m["cpu_s"] for m in a_runs) / min(m["cpu_s"] for m in b_runs)
    median = pairs[len(pairs) // 2] if len(pairs) % 2 else sum(pairs[len(pairs) // 2 - 1 :][:2]) / 2
    print(
        f"{a} / {b}: {least:.2f}x (least CPU of each); run by run {pairs[0]:.2f}-{pairs[-1]:.2f}x, "
        f"median {median:.2f}x"
    )
    return 0


def cases_of(args: argparse.Namespace) -> list[str]:
    cases = list(args.cases)
    tables = list(TABLES) if "all" in args.table else args.table
    for table in tables:
        cases += [c for c in TABLES[table] if args.big or c not in BIG]
    return list(dict.fromkeys(cases))


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cases", nargs="*", help="named cases (see --list)")
    ap.add_argument(
        "--table",
        action="append",
        default=[],
        choices=[*TABLES, "all"],
        help="add a scaling table's rows (repeatable)",
    )
    ap.add_argument("--big", action="store_true", help=f"include the big rows {sorted(BIG)}")
    ap.add_argument("--repeat", type=int, default=1, help="runs a case, least CPU kept")
    ap.add_argument("--list", action="store_true", help="show the cases and tables")
    ap.add_argument("--ratio", nargs=2, metavar=("A", "B"), help="A / B, run alternately")
    args = ap.parse_args(argv)
    if args.ratio:
        return ratio(*args.ratio, args.repeat)
    if args.list:
        print(__doc__)
        for name, rows in TABLES.items():
            print(f"  table {name}: {' '.join(rows)}")
        print(f"  big rows (need --big): {' '.join(sorted(BIG))}")
        return 0
    cases = cases_of(args)
    if not cases:
        ap.error("name cases or --table (see --list)")
    print(HEADER, flush=True)
    for case in cases:
        print(row(case, measured(case, args.repeat)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
