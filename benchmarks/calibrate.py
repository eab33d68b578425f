"""End-to-end calibration: simulate every published case and compare (docs/calibration.md).

    python benchmarks/calibrate.py            # all three regimes: max throughput (here),
                                              # batch 1 (calibrate_batch1.py), latency under
                                              # load (calibrate_latency.py); refresh the doc
    python benchmarks/calibrate.py --no-write # print only
    python benchmarks/calibrate.py --check    # exit 1 if docs/calibration.md is out of date

Cases come from data/calibration/cases.csv (in this repository): TensorRT-LLM
v0.17 max-throughput runs, fixed input/output lengths, output tokens/s of the whole TP group.
Each case runs the experiment file experiments/calibration/<case>.yaml as it is, and the
predicted throughput is what trtllm-bench reports as "Total Output Throughput":

    Σ output tokens / (last finish − first arrival)     (tokens/s; every request arrives at t = 0)

The helpers below reproduce the published TensorRT-LLM rules that set the engine limits the
experiment files carry (serving.max_num_seqs, serving.max_num_batched_tokens); the test
tests/test_calibration.py checks the files against them.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import math
import os
import statistics
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from clustersim.config.load import load_experiment
from clustersim.config.schema import DTYPE_BYTES, Experiment, FixedLength
from clustersim.metrics.experiment import summarize_experiment
from clustersim.model.memory import GIB, plan_memory
from clustersim.model.params import total_params
from clustersim.sim.engine import run_experiment

REPO = Path(__file__).resolve().parents[1]
CASES_CSV = REPO / "data" / "calibration" / "cases.csv"
EXPERIMENTS = REPO / "experiments" / "calibration"
DOC = REPO / "docs" / "calibration.md"
TABLE_START = "<!-- calibrate.py: tables start -->"
TABLE_END = "<!-- calibrate.py: tables end -->"

# trtllm-bench build (v0.17, tensorrt_llm/bench/build/tuning.py): engine limits from the dataset.
BUILD_KV_FRACTION = 0.95  # kv_cache_gpu_mem_fraction assumed by the build heuristic
MAX_REQUESTS_CAP = 4096  # "cap total batch size to avoid decoder buffer size becoming too large"
MAX_TOKENS_CAP = 32768  # "cap num tokens to avoid TRT activation buffer becoming too large"
# TensorRT-LLM executor DynamicBatchConfig::kDefaultBatchSizeTable: (capacity below, batch size).
BATCH_SIZE_TABLE: tuple[tuple[int, int], ...] = (
    (144, 128),
    (336, 256),
    (672, 512),
    (832, 768),
    (1280, 1024),
    (1664, 1536),
)
FALLBACK_GRANULARITY = 512  # DynamicBatchTuner::kBatchSizeFallbackGranularity
FALLBACK_THRESHOLD = 128  # DynamicBatchTuner::kBatchSizeFallbackThreshold

# Out-of-sample cross-check, not fitted: the H200 SXM 141GB column of the same v0.17 table
# (NVIDIA/TensorRT-LLM docs/source/performance/perf-overview.md, FP8, output tokens/s) for the
# same model / TP / lengths as each case. The experiment files run with `hardware=h200` and
# the engine limits recomputed for its memory.
CROSS_CHECK_HARDWARE = "h200"
H200_PUBLISHED: dict[str, float] = {
    "trtllm-70b-tp1-128-2048": 4165.68,
    "trtllm-70b-tp2-128-2048": 8290.35,
    "trtllm-70b-tp4-128-2048": 14156.0,
    "trtllm-70b-tp8-128-2048": 21195.88,
    "trtllm-70b-tp1-2048-128": 465.99,
    "trtllm-70b-tp2-2048-128": 809.0,
    "trtllm-70b-tp4-2048-128": 1358.06,
    "trtllm-70b-tp8-2048-128": 1983.03,
    "trtllm-mixtral-tp1-128-2048": 15095.21,
    "trtllm-mixtral-tp2-128-2048": 29584.05,
    "trtllm-mixtral-tp4-128-2048": 52291.78,
    "trtllm-mixtral-tp8-128-2048": 68608.45,
}


@dataclass(frozen=True)
class Case:
    """One row of cases.csv."""

    case: str
    source: str
    model: str
    precision: str
    gpu: str
    tp: int
    pp: int
    dp: int
    input_tokens: int
    output_tokens: int
    metric: str
    value: float  # published output tokens/s of the whole TP group

    @property
    def moe(self) -> bool:
        return "mixtral" in self.model


@dataclass(frozen=True)
class Result:
    case: Case
    predicted: float  # output tokens/s
    engine_max_batch: int  # trtllm-bench build heuristic (max_batch_size)
    max_num_tokens: int
    kv_capacity_requests: int  # KV blocks / blocks per request (prompt + output)
    max_num_seqs: int  # runtime batch size the experiment runs with
    peak_running: int  # most sequences in one simulated step
    weights_gib: float  # per GPU
    kv_gib: float  # per GPU
    wall_s: float

    @property
    def error_pct(self) -> float:
        return 100.0 * (self.predicted / self.case.value - 1.0)


def load_cases(path: Path = CASES_CSV) -> list[Case]:
    """cases.csv rows, in file order."""
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    return [
        Case(
            case=r["case"],
            source=r["source"],
            model=r["model"],
            precision=r["precision"],
            gpu=r["gpu"],
            tp=int(r["tp"]),
            pp=int(r["pp"]),
            dp=int(r["dp"]),
            input_tokens=int(r["input_tokens"]),
            output_tokens=int(r["output_tokens"]),
            metric=r["metric"],
            value=float(r["value"]),
        )
        for r in rows
    ]


def experiment_path(case: Case) -> Path:
    return EXPERIMENTS / f"{case.case}.yaml"


# ------------------------------------------------------------------ TensorRT-LLM rules


def engine_limits(
    params: int,
    layers: int,
    kv_heads: int,
    head_dim: int,
    weight_bytes: float,
    kv_bytes: float,
    tp: int,
    pp: int,
    isl: int,
    osl: int,
    device_gib: float,
) -> tuple[int, int]:
    """(max_batch_size, max_num_tokens) that `trtllm-bench build --dataset` picks (v0.17).

    Its estimate of the requests the KV cache holds: 0.95 × (device memory × GPUs − params
    × bytes per weight) over (isl + osl) tokens of 2·layers·max(tp, kv_heads)·head_dim·bytes.
    Units as the tool mixes them: params in 10^9, memory in GiB. Then rounded up ("slightly
    optimistic"): batch to 32s below 256 (at least 64), 128s below 1024, else 256s; tokens =
    batch × (1 + isl / osl) to 256s below 4096 (at least 2048), 512s below 8192, else 1024s.
    """
    per_token_gib = 2 * layers * max(tp, kv_heads) * head_dim * kv_bytes / 1024**3
    available = device_gib * tp * pp - params / 1e9 * weight_bytes
    requests = available * BUILD_KV_FRACTION / per_token_gib / (isl + osl)
    raw_bs = min(requests, MAX_REQUESTS_CAP) / pp
    raw_tokens = min(raw_bs * (1 + isl / osl), MAX_TOKENS_CAP)
    if raw_bs < 256:
        bs = max(64, 32 * math.ceil(raw_bs / 32))
    elif raw_bs < 1024:
        bs = 128 * math.ceil(raw_bs / 128)
    else:
        bs = 256 * math.ceil(raw_bs / 256)
    if raw_tokens < 4096:
        tokens = max(2048, 256 * math.ceil(raw_tokens / 256))
    elif raw_tokens < 8192:
        tokens = 512 * math.ceil(raw_tokens / 512)
    else:
        tokens = 1024 * math.ceil(raw_tokens / 1024)
    return bs, tokens


def runtime_batch_size(capacity: int) -> int:
    """TensorRT-LLM's dynamic batch-size tuner (on in trtllm-bench): the runtime max batch size
    for a KV cache that holds `capacity` requests of the running average length."""
    for below, batch in BATCH_SIZE_TABLE:
        if capacity < below:
            return batch
    threshold = capacity // FALLBACK_GRANULARITY * FALLBACK_GRANULARITY
    return threshold if capacity < threshold + FALLBACK_THRESHOLD else capacity


def fixed_lengths(exp: Experiment) -> tuple[int, int]:
    """(input, output) tokens of a workload with fixed lengths; ValueError otherwise."""
    p, o = exp.workload.prompt_tokens, exp.workload.output_tokens
    if not isinstance(p, FixedLength) or not isinstance(o, FixedLength):
        raise ValueError(f"{exp.name}: calibration workloads have fixed lengths")
    return p.value, o.value


def engine_limits_for(exp: Experiment) -> tuple[int, int]:
    """engine_limits for an experiment's model, precision, layout, workload and GPU."""
    m = exp.model
    isl, osl = fixed_lengths(exp)
    return engine_limits(
        total_params(m),
        m.num_layers,
        m.num_kv_heads,
        m.head_dim,
        DTYPE_BYTES[exp.precision.weights],
        DTYPE_BYTES[exp.precision.kv_cache],
        exp.layout.tp,
        exp.layout.pp,
        isl,
        osl,
        exp.hardware.memory_GiB,
    )


def kv_capacity_requests(exp: Experiment, engine_batch: int) -> int:
    """Requests of prompt + output tokens the KV cache holds (GUARANTEED_NO_EVICT reserves
    each one's whole length), with buffers sized for the engine's max batch size."""
    serving = exp.serving.model_copy(update={"max_num_seqs": engine_batch})
    plan = plan_memory(exp.model, exp.hardware, exp.precision, exp.layout, serving)
    per_request = math.ceil(sum(fixed_lengths(exp)) / serving.block_size)
    return plan.kv_blocks_per_replica // per_request


def expected_serving(exp: Experiment) -> tuple[int, int]:
    """(max_num_seqs, max_num_batched_tokens) the experiment must carry: the engine's limits,
    the batch further capped by the runtime tuner's choice for the KV capacity."""
    engine_batch, tokens = engine_limits_for(exp)
    capacity = kv_capacity_requests(exp, engine_batch)
    return min(engine_batch, runtime_batch_size(capacity)), tokens


# ------------------------------------------------------------------ running


def load_case(case: Case, hardware: str | None = None, extra: Sequence[str] = ()) -> Experiment:
    """The case's experiment file with `extra` overrides (--set); on other `hardware`, with the
    engine limits that trtllm-bench would pick for that GPU's memory."""
    path = experiment_path(case)
    if hardware is None:
        return load_experiment(path, extra)
    sets = [f"hardware={hardware}", *extra]
    engine_batch, tokens = engine_limits_for(load_experiment(path, sets))
    sets.append(f"serving.max_num_batched_tokens={tokens}")
    capacity = kv_capacity_requests(load_experiment(path, sets), engine_batch)
    sets.append(f"serving.max_num_seqs={min(engine_batch, runtime_batch_size(capacity))}")
    return load_experiment(path, sets)


def run_case(case: Case, hardware: str | None = None, extra: Sequence[str] = ()) -> Result:
    """Simulate one case's experiment (see load_case) and measure it as trtllm-bench does."""
    exp = load_case(case, hardware, extra)
    engine_batch, tokens = engine_limits_for(exp)
    capacity = kv_capacity_requests(exp, engine_batch)
    start = time.perf_counter()
    out = run_experiment(exp)
    wall = time.perf_counter() - start
    req = out.requests
    done = req[~req["dropped"]]
    if len(done) != len(req):
        raise RuntimeError(f"{case.case}: {len(req) - len(done)} requests dropped")
    # trtllm-bench's figure: output tokens / (last finish − first arrival), tokens/s
    summary, _ = summarize_experiment(exp, out)
    predicted = float(summary["throughput"]["harness_output_tokens_per_s"])
    assert out.memory is not None
    return Result(
        case=case,
        predicted=predicted,
        engine_max_batch=engine_batch,
        max_num_tokens=tokens,
        kv_capacity_requests=capacity,
        max_num_seqs=exp.serving.max_num_seqs,
        peak_running=int(out.iterations["num_seqs"].max()),
        weights_gib=out.memory.weights_per_gpu_bytes / GIB,
        kv_gib=out.memory.kv_per_gpu_bytes / GIB,
        wall_s=wall,
    )


def cross_check_cases(cases: Sequence[Case]) -> list[Case]:
    """The cases with an H200 published value, carrying that value."""
    return [
        dataclasses.replace(c, gpu=CROSS_CHECK_HARDWARE, value=H200_PUBLISHED[c.case])
        for c in cases
        if c.case in H200_PUBLISHED
    ]


def run_all(
    cases: Sequence[Case],
    jobs: int,
    hardware: Sequence[str | None],
    extra: Sequence[str] = (),
) -> list[Result]:
    """run_case(cases[i], hardware[i], extra) for every i, in `jobs` processes."""
    extras = [tuple(extra)] * len(cases)
    if jobs <= 1:
        return [run_case(c, h, e) for c, h, e in zip(cases, hardware, extras, strict=True)]
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        return list(pool.map(run_case, cases, hardware, extras))


# ------------------------------------------------------------------ tables


def _stats(results: Sequence[Result]) -> tuple[float, float]:
    errs = [abs(r.error_pct) for r in results]
    return statistics.median(errs), max(errs)


def render(results: Sequence[Result], cross: Sequence[Result] = ()) -> str:
    """The Markdown block docs/calibration.md carries between its markers."""
    lines = [
        "| case | model | TP | ISL / OSL | published tok/s | predicted tok/s | error |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        c = r.case
        lines.append(
            f"| {c.case} | {c.model} | {c.tp} | {c.input_tokens} / {c.output_tokens} "
            f"| {c.value:,.0f} | {r.predicted:,.0f} | {r.error_pct:+.1f} % |"
        )
    lines.append("")
    for label, group in (
        ("dense (llama-3.1-70b)", [r for r in results if not r.case.moe]),
        ("MoE (mixtral-8x7b)", [r for r in results if r.case.moe]),
    ):
        if group:
            med, worst = _stats(group)
            lines.append(
                f"- {label}: median |error| {med:.1f} %, max |error| {worst:.1f} % "
                f"({len(group)} cases)"
            )
    lines += [
        "",
        "Harness mapping per case (engine limits from the TensorRT-LLM rules in "
        "`benchmarks/calibrate.py`; memory per GPU from the simulator's memory plan):",
        "",
        "| case | engine max batch | max_num_tokens | KV holds (requests) | runtime batch "
        "| peak running | weights GiB | KV GiB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.case.case} | {r.engine_max_batch} | {r.max_num_tokens} "
            f"| {r.kv_capacity_requests} | {r.max_num_seqs} | {r.peak_running} "
            f"| {r.weights_gib:.2f} | {r.kv_gib:.2f} |"
        )
    if cross:
        lines += [
            "",
            f"Cross-check, not fitted: the same experiments on `{CROSS_CHECK_HARDWARE}` "
            "(H200 SXM 141GB column of the same table; engine limits recomputed):",
            "",
            "| case | runtime batch | published tok/s | predicted tok/s | error |",
            "|---|---|---|---|---|",
        ]
        for r in cross:
            lines.append(
                f"| {r.case.case} | {r.max_num_seqs} | {r.case.value:,.0f} "
                f"| {r.predicted:,.0f} | {r.error_pct:+.1f} % |"
            )
        med, worst = _stats(cross)
        lines += ["", f"- all {len(cross)}: median |error| {med:.1f} %, max |error| {worst:.1f} %"]
    return "\n".join(lines) + "\n"


def splice(doc: str, block: str, start: str = TABLE_START, end: str = TABLE_END) -> str:
    """`doc` with the text between the `start` and `end` markers replaced by `block`."""
    head, sep, rest = doc.partition(start)
    _, sep2, tail = rest.partition(end)
    if not sep or not sep2:
        raise ValueError(f"{DOC}: table markers {start!r} … {end!r} not found")
    return f"{head}{start}\n{block}{end}{tail}"


def other_regimes(jobs: int) -> list[tuple[str, str, str]]:
    """(start marker, end marker, block) of the batch-1 and latency-under-load tables."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from calibrate_batch1 import render_all
    from calibrate_latency import load_latency_cases, render_latency, run_latency_cases

    latency = render_latency(run_latency_cases(load_latency_cases(), jobs))
    batch1 = render_all(jobs)
    return [
        ("<!-- calibrate.py: batch1 starts -->", "<!-- calibrate.py: batch1 ends -->", batch1),
        ("<!-- calibrate.py: latency starts -->", "<!-- calibrate.py: latency ends -->", latency),
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Simulate the published calibration cases.")
    parser.add_argument("--cases", default=str(CASES_CSV), help="cases.csv path")
    parser.add_argument("--jobs", type=int, default=min(4, os.cpu_count() or 1))
    parser.add_argument("--no-write", action="store_true", help="do not update the doc")
    parser.add_argument("--check", action="store_true", help="exit 1 if the doc is stale")
    parser.add_argument(
        "--no-cross-check", action="store_true", help=f"skip the {CROSS_CHECK_HARDWARE} runs"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override every experiment (e.g. hardware.decode_seq_overhead_us=0); "
        "implies --no-write",
    )
    args = parser.parse_args(argv)
    start = time.perf_counter()
    cases = load_cases(Path(args.cases))
    cross = [] if args.no_cross_check else cross_check_cases(cases)
    hardware: list[str | None] = [None] * len(cases) + [CROSS_CHECK_HARDWARE] * len(cross)
    results = run_all([*cases, *cross], args.jobs, hardware, args.set)
    block = render(results[: len(cases)], results[len(cases) :])
    print(block, end="")
    blocks = [(TABLE_START, TABLE_END, block)]
    if not args.set:  # the what-if overrides apply to the max-throughput cases only
        blocks += other_regimes(args.jobs)
        for _, _, text in blocks[1:]:
            print("\n" + text, end="")
    print(f"\n{len(results)} cases in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    doc = DOC.read_text() if DOC.exists() else ""
    updated = doc
    for begin, end, text in blocks:
        if begin in updated:
            updated = splice(updated, text, begin, end)
    if args.check:
        if TABLE_START not in doc or updated != doc:
            print(f"{DOC} is out of date: run python benchmarks/calibrate.py", file=sys.stderr)
            return 1
        return 0
    if not (args.no_write or args.set) and TABLE_START in doc:
        DOC.write_text(updated)
        print(f"updated {DOC.relative_to(REPO)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
