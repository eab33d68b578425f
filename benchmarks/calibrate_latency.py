"""Latency under load: TensorRT-LLM online serving, simulated and compared (docs/calibration.md §8).

    python benchmarks/calibrate_latency.py            # simulate every row, print the table
    python benchmarks/calibrate_latency.py --fit      # re-fit the streaming host terms

Rows come from data/calibration/latency_cases.csv: Llama-3.1-70B BF16 on 4 H100 (TP4),
TensorRT-LLM v0.14 behind Triton, 500 requests of fixed length at a fixed Poisson rate (or all
at once), mean TTFT and mean inter-token latency (ITL) as the benchmark client saw them. Each
row runs experiments/calibration/latency/<case>.yaml as it is; the simulator's figures are the
means over its 500 requests: TTFT = first token − arrival, ITL = TPOT = (finish − first token)
/ (output tokens − 1).

Four numbers cannot be taken from a kernel measurement: the Triton streaming path's host time
per step and per streamed sequence (`stream_step_us`, `stream_seq_us`), the front end's
per-request delay (`frontend_ms`) and the deployment's KV-cache share of free memory (not
published; with GUARANTEED_NO_EVICT it caps how many requests run at once). `--fit`
grid-searches them on the FIT_CASES rows only, minimising the RMS of their TTFT and ITL %
errors; the other rows are out of sample, and the table says which is which.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import os
import statistics
import sys
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from clustersim.config.load import load_experiment
from clustersim.sim.engine import run_experiment

REPO = Path(__file__).resolve().parents[1]
LATENCY_CSV = REPO / "data" / "calibration" / "latency_cases.csv"
EXPERIMENTS = REPO / "experiments" / "calibration" / "latency"
# fitted on: light load, heavy load, saturation (the three regimes of one engine and lengths)
FIT_CASES = (
    "trtllm-online-70b-tp4-qps2",
    "trtllm-online-70b-tp4-qps16",
    "trtllm-online-70b-tp4-max",
)
FIT_GRID: dict[str, tuple[float, ...]] = {
    "stream_step_us": (3000.0, 4000.0, 5000.0, 6000.0),
    "stream_seq_us": (10.0, 15.0, 25.0),
    "frontend_ms": (8.0, 12.0),
    # the deployment's KV budget is not published: the saturated row constrains it
    "kv_cache_free_memory_fraction": (0.6, 0.63, 0.66, 0.7, 0.8, 0.9),
}


@dataclass(frozen=True)
class LatencyCase:
    """One row of latency_cases.csv (times in ms)."""

    case: str
    qps: float | None  # None: every request at t = 0
    input_tokens: int
    output_tokens: int
    mean_ttft_ms: float
    mean_itl_ms: float

    @property
    def fitted(self) -> bool:
        return self.case in FIT_CASES


@dataclass(frozen=True)
class LatencyResult:
    case: LatencyCase
    ttft_ms: float
    itl_ms: float
    peak_running: int

    @property
    def ttft_error_pct(self) -> float:
        return 100.0 * (self.ttft_ms / self.case.mean_ttft_ms - 1.0)

    @property
    def itl_error_pct(self) -> float:
        return 100.0 * (self.itl_ms / self.case.mean_itl_ms - 1.0)


def load_latency_cases(path: Path = LATENCY_CSV) -> list[LatencyCase]:
    with path.open() as f:
        return [
            LatencyCase(
                case=row["case"],
                qps=float(row["qps"]) if row["qps"] else None,
                input_tokens=int(row["input_tokens"]),
                output_tokens=int(row["output_tokens"]),
                mean_ttft_ms=float(row["mean_ttft_ms"]),
                mean_itl_ms=float(row["mean_itl_ms"]),
            )
            for row in csv.DictReader(f)
        ]


def run_latency_case(case: LatencyCase, extra: Sequence[str] = ()) -> LatencyResult:
    exp = load_experiment(EXPERIMENTS / f"{case.case}.yaml", extra)
    out = run_experiment(exp)
    req = out.requests
    done = req[~req["dropped"]]
    if len(done) != len(req):
        raise RuntimeError(f"{case.case}: {len(req) - len(done)} requests dropped")
    return LatencyResult(
        case=case,
        ttft_ms=1e3 * float(done["ttft_s"].mean()),
        itl_ms=1e3 * float(done["tpot_s"].mean()),
        peak_running=int(out.iterations["num_seqs"].max()),
    )


def run_latency_cases(
    cases: Sequence[LatencyCase], jobs: int, extra: Sequence[str] = ()
) -> list[LatencyResult]:
    extras = [tuple(extra)] * len(cases)
    if jobs <= 1:
        return [run_latency_case(c, e) for c, e in zip(cases, extras, strict=True)]
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        return list(pool.map(run_latency_case, cases, extras))


def errors(results: Sequence[LatencyResult]) -> list[float]:
    """|error| in % of every TTFT and ITL figure."""
    return [abs(e) for r in results for e in (r.ttft_error_pct, r.itl_error_pct)]


def latency_stats(results: Sequence[LatencyResult]) -> tuple[float, float]:
    errs = errors(results)
    return statistics.median(errs), max(errs)


def rms(results: Sequence[LatencyResult]) -> float:
    """Root mean square of the % errors: the fit's objective (large misses weigh more)."""
    errs = errors(results)
    return (sum(e * e for e in errs) / len(errs)) ** 0.5


def render_latency(results: Sequence[LatencyResult]) -> str:
    lines = [
        "| case | rate | ISL / OSL | TTFT published | TTFT predicted | error "
        "| ITL published | ITL predicted | error | peak running | role |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        c = r.case
        rate = f"{c.qps:g} req/s" if c.qps is not None else "all at t = 0"
        lines.append(
            f"| {c.case} | {rate} | {c.input_tokens} / {c.output_tokens} "
            f"| {c.mean_ttft_ms:,.0f} ms | {r.ttft_ms:,.0f} ms | {r.ttft_error_pct:+.1f} % "
            f"| {c.mean_itl_ms:.0f} ms | {r.itl_ms:.1f} ms | {r.itl_error_pct:+.1f} % "
            f"| {r.peak_running} | {'fit' if c.fitted else 'out of sample'} |"
        )
    lines.append("")
    for label, group in (
        ("all rows", list(results)),
        ("fitted rows", [r for r in results if r.case.fitted]),
        ("out-of-sample rows", [r for r in results if not r.case.fitted]),
    ):
        if group:
            med, worst = latency_stats(group)
            lines.append(
                f"- {label} ({len(group)}, TTFT and ITL): median |error| {med:.1f} %, "
                f"max |error| {worst:.1f} %"
            )
    return "\n".join(lines) + "\n"


Point = tuple[float, ...]  # FIT_GRID values, in its order


def _fit_point(args: tuple[Point, tuple[LatencyCase, ...]]) -> tuple[Point, float, float, float]:
    (step, seq, frontend, kv), cases = args
    overrides = [
        "serving.engine_overrides="
        f"{{stream_step_us: {step}, stream_seq_us: {seq}, frontend_ms: {frontend}}}",
        f"serving.kv_cache_free_memory_fraction={kv}",
    ]
    results = [run_latency_case(c, overrides) for c in cases]
    med, worst = latency_stats(results)
    return args[0], rms(results), med, worst


def fit(cases: Sequence[LatencyCase], jobs: int) -> list[tuple[Point, float, float, float]]:
    """Every grid point's (RMS, median, max) % error on the FIT_CASES rows, best RMS first."""
    fit_rows = tuple(c for c in cases if c.fitted)
    grid = list(itertools.product(*FIT_GRID.values()))
    points = [(g, fit_rows) for g in grid]
    with ProcessPoolExecutor(max_workers=max(1, jobs)) as pool:
        scored = list(pool.map(_fit_point, points))
    return sorted(scored, key=lambda s: s[1])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Simulate the latency-under-load cases.")
    parser.add_argument("--cases", default=str(LATENCY_CSV))
    parser.add_argument("--jobs", type=int, default=min(4, os.cpu_count() or 1))
    parser.add_argument("--fit", action="store_true", help="grid-search the streaming terms")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    cases = load_latency_cases(Path(args.cases))
    if args.fit:
        for point, err, med, worst in fit(cases, args.jobs)[:10]:
            values = "  ".join(f"{k} {v:g}" for k, v in zip(FIT_GRID, point, strict=True))
            print(f"{values}: RMS {err:.1f} %, median {med:.1f} %, max {worst:.1f} %")
        return 0
    print(render_latency(run_latency_cases(cases, args.jobs, args.set)), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
