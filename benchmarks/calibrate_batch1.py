"""Low-concurrency decode: single-stream (and few-stream) TPOT against public figures
(docs/calibration.md §7).

    python benchmarks/calibrate_batch1.py

Each row runs a closed loop of `concurrency` clients with fixed lengths on one TP group and
reports the simulator's mean TPOT (and TTFT). Nothing here was fitted: the engine profiles'
kernel counts, the hardware kernel floors and the all-reduce algorithms come from their own
sources (catalog/engines.py, catalog/hardware.py, network/collectives.py); this table checks them.
A row without a public figure is a prediction and says so. Rows from benchmark harnesses
(TensorRT-LLM's, SGLang's bench_one_batch) run with `streaming: false`; the NIM row was measured
by a client reading the token stream through the server, and runs with `streaming: true`.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from clustersim.catalog.engines import get_engine
from clustersim.config.load import load_experiment
from clustersim.sim.engine import run_experiment

TEMPLATE = """\
name: {name}
seed: 0
model: {model}
hardware: {gpu}
topology: {topology}
layout: {{tp: {tp}}}
precision: {{weights: {dtype}, activations: {dtype}, kv_cache: {dtype}}}
serving:
  {{engine: {engine}, streaming: {streaming}, max_num_seqs: 256, max_num_batched_tokens: 8192}}
workload:
  arrival: {{process: closed, concurrency: {concurrency}}}
  prompt_tokens: {{dist: fixed, value: {isl}}}
  output_tokens: {{dist: fixed, value: {osl}}}
horizon: {{requests: {requests}}}
"""


@dataclass(frozen=True)
class Batch1Case:
    name: str
    model: str
    gpu: str
    tp: int
    dtype: str
    engine: str
    concurrency: int
    isl: int
    osl: int
    published_ms: float | None  # mean ms per output token per stream, None: prediction only
    bound: str  # "=" a measurement, ">=" a lower bound derived from the source
    source: str
    streaming: bool = False  # a client read the token stream through the engine's server
    published_ttft_ms: float | None = None

    @property
    def topology(self) -> str:
        return "dgx_h100_x1"


# Sources (derivations in docs/calibration.md §7):
MEDUSA = (
    "NVIDIA blog 'Low Latency Inference Chapter 1: up to 1.9x higher Llama 3.1 performance "
    "with Medusa on HGX H200' (Aug 2024), TensorRT-LLM"
)
SGLANG_2643 = "sgl-project/sglang PR #2643 (SGLang v0.4.1, Jan 2025), DeepSeek-V3 FP8 8×H200"
NIM = (
    "NVIDIA NIM for LLMs benchmarking page (NIM 1.8.0, TensorRT-LLM backend): Llama-3.3-70B "
    "FP8, 2×H100 TP2, concurrency 1, 500-token prompts"
)
# Tim Wang, "LLM Inference Engines Performance Comparison: vLLM vs sglang"
# (tim-wang-tecg-blog.pages.dev/llm/llm-benchmark-en): Llama-3.1-8B-Instruct BF16 on one H100
# 80GB, `evalscope perf --parallel 5 --number 5 --dataset longalpaca --min-tokens 2000
# --max-tokens 2000 --min-prompt-length 5000 --max-prompt-length 10000` (streamed through the
# OpenAI API). The prompt bounds count characters (evalscope's longalpaca plugin filters on
# len(prompt)): 5,000-10,000 characters of English, about 1,150-2,300 Llama-3 tokens; the rows
# run the midpoint, 1,700. TPOT = (mean latency - mean TTFT) / 1,999 (every request emits 2,000).
EVALSCOPE = (
    "Tim Wang, 'LLM Inference Engines Performance Comparison: vLLM vs sglang' "
    "(tim-wang-tecg-blog.pages.dev/llm/llm-benchmark-en): evalscope perf, 5 parallel "
    "requests, longalpaca prompts of 5,000-10,000 characters, 2,000 output tokens"
)
CASES: tuple[Batch1Case, ...] = (
    # 18.6–18.9 ms per output token, TTFT 47.8 ms; Llama-3.3-70B has Llama-3.1-70B's shapes
    Batch1Case(
        "nim-llama70b-h100-tp2",
        "llama-3.1-70b",
        "h100-sxm",
        2,
        "fp8",
        "trtllm",
        1,
        500,
        500,
        18.75,
        "=",
        NIM,
        streaming=True,
        published_ttft_ms=47.8,
    ),
    # 268 tok/s/user with Medusa, "over 1.5x" the baseline: baseline ≤ 178.7 tok/s ≥ 5.6 ms
    Batch1Case(
        "llama70b-h200-tp8",
        "llama-3.1-70b",
        "h200",
        8,
        "fp8",
        "trtllm",
        1,
        1024,
        512,
        1000 / (268 / 1.5),
        ">=",
        MEDUSA,
    ),
    # 108 tok/s/user with Medusa, 1.9x the baseline: 56.8 tok/s = 17.6 ms
    Batch1Case(
        "llama405b-h200-tp8",
        "llama-3.1-405b",
        "h200",
        8,
        "fp8",
        "trtllm",
        1,
        1024,
        512,
        1000 / (108 / 1.9),
        "=",
        MEDUSA,
    ),
    Batch1Case(
        "llama70b-h100-tp8",
        "llama-3.1-70b",
        "h100-sxm",
        8,
        "fp8",
        "trtllm",
        1,
        1024,
        512,
        None,
        "",
        "prediction (issue 9 acceptance: ≥ 5 ms)",
    ),
    Batch1Case(
        "llama8b-h100-tp1",
        "llama-3.1-8b",
        "h100-sxm",
        1,
        "bf16",
        "vllm",
        1,
        1024,
        512,
        None,
        "",
        "prediction",
    ),
    Batch1Case(
        "llama8b-h100-tp8",
        "llama-3.1-8b",
        "h100-sxm",
        8,
        "fp8",
        "trtllm",
        1,
        1024,
        512,
        None,
        "",
        "prediction",
    ),
    Batch1Case(
        "mixtral-h100-tp2",
        "mixtral-8x7b",
        "h100-sxm",
        2,
        "fp8",
        "trtllm",
        1,
        1024,
        512,
        None,
        "",
        "prediction",
    ),
    # 30 / 206 / 761 output tok/s at batch 1 / 8 / 32, 128 in / 256 out
    Batch1Case(
        "deepseek-v3-h200-tp8-b1",
        "deepseek-v3",
        "h200",
        8,
        "fp8",
        "sglang",
        1,
        128,
        256,
        1000 / 30,
        "=",
        SGLANG_2643,
    ),
    Batch1Case(
        "deepseek-v3-h200-tp8-b8",
        "deepseek-v3",
        "h200",
        8,
        "fp8",
        "sglang",
        8,
        128,
        256,
        1000 * 8 / 206,
        "=",
        SGLANG_2643,
    ),
    Batch1Case(
        "deepseek-v3-h200-tp8-b32",
        "deepseek-v3",
        "h200",
        8,
        "fp8",
        "sglang",
        32,
        128,
        256,
        1000 * 32 / 761,
        "=",
        SGLANG_2643,
    ),
    # vLLM V1 (v0.9.0): mean latency 15.75 s, mean TTFT 0.276 s at 5 parallel requests
    Batch1Case(
        "evalscope-llama8b-h100-vllm-c5",
        "llama-3.1-8b",
        "h100-sxm",
        1,
        "bf16",
        "vllm",
        5,
        1700,
        2000,
        1000 * (15.75 - 0.276) / 1999,
        "=",
        f"{EVALSCOPE}; vLLM V1 v0.9.0",
        streaming=True,
        published_ttft_ms=276.0,
    ),
    # SGLang v0.4.9: mean latency 15.00 s, mean TTFT 0.136 s at 5 parallel requests
    Batch1Case(
        "evalscope-llama8b-h100-sglang-c5",
        "llama-3.1-8b",
        "h100-sxm",
        1,
        "bf16",
        "sglang",
        5,
        1700,
        2000,
        1000 * (15.00 - 0.136) / 1999,
        "=",
        f"{EVALSCOPE}; SGLang v0.4.9",
        streaming=True,
        published_ttft_ms=136.0,
    ),
)
# rows that check the vLLM / SGLang host terms (docs/calibration.md §7, "Host terms")
HOST_CASES = ("evalscope-llama8b-h100-vllm-c5", "evalscope-llama8b-h100-sglang-c5")


@dataclass(frozen=True)
class Batch1Result:
    case: Batch1Case
    tpot_ms: float
    ttft_ms: float

    @property
    def error_pct(self) -> float | None:
        c = self.case
        if c.published_ms is None:
            return None
        return 100.0 * (self.tpot_ms / c.published_ms - 1.0)


def run_batch1_case(case: Batch1Case, extra: Sequence[str] = ()) -> Batch1Result:
    """`case` simulated, with `extra` KEY=VALUE overrides."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{case.name}.yaml"
        path.write_text(
            TEMPLATE.format(
                name=case.name,
                model=case.model,
                gpu=case.gpu,
                topology=case.topology,
                tp=case.tp,
                dtype=case.dtype,
                engine=case.engine,
                concurrency=case.concurrency,
                isl=case.isl,
                osl=case.osl,
                requests=4 * case.concurrency,
                streaming=str(case.streaming).lower(),
            )
        )
        req = run_experiment(load_experiment(path, list(extra))).requests
    return Batch1Result(case, 1e3 * float(req["tpot_s"].mean()), 1e3 * float(req["ttft_s"].mean()))


def run_batch1_cases(jobs: int) -> list[Batch1Result]:
    if jobs <= 1:
        return [run_batch1_case(c) for c in CASES]
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        return list(pool.map(run_batch1_case, CASES))


def render_batch1(results: Sequence[Batch1Result]) -> str:
    lines = [
        "| case | GPU × TP | precision | engine | streams | ISL / OSL | published ms/token "
        "| predicted ms/token | error | TTFT published / predicted | source |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        c = r.case
        pub = "—"
        if c.published_ms is not None:
            pub = f"≥ {c.published_ms:.1f}" if c.bound == ">=" else f"{c.published_ms:.1f}"
        err = f"{r.error_pct:+.1f} %" if r.error_pct is not None else "—"
        lines.append(
            f"| {c.name} | {c.gpu} × {c.tp} | {c.dtype} | {c.engine} | {c.concurrency} "
            f"| {c.isl} / {c.osl} | {pub} | {r.tpot_ms:.2f} | {err} "
            f"| {f'{c.published_ttft_ms:.1f}' if c.published_ttft_ms else '—'} / "
            f"{r.ttft_ms:.1f} ms "
            f"| {c.source} |"
        )
    return "\n".join(lines) + "\n"


NO_HOST = ("serving.engine_overrides={host_step_us: 0, host_seq_us: 0}",)


@dataclass(frozen=True)
class HostCheck:
    """A HOST_CASES row simulated with its engine's host terms and with them set to zero."""

    result: Batch1Result  # with the profile's host terms
    without_host_ms: float  # TPOT with host_step_us = host_seq_us = 0

    @property
    def implied_host_ms(self) -> float:
        """Host time per step the published TPOT leaves beside the simulated GPU step, ms."""
        published = self.result.case.published_ms
        assert published is not None
        return published - self.without_host_ms

    @property
    def profile_host_ms(self) -> float:
        """The profile's host time per step at the row's batch, ms."""
        engine = get_engine(self.result.case.engine)
        return 1e-3 * (engine.host_step_us + self.result.case.concurrency * engine.host_seq_us)


def run_host_check(case: Batch1Case) -> HostCheck:
    return HostCheck(run_batch1_case(case), run_batch1_case(case, NO_HOST).tpot_ms)


def render_host_checks(checks: Sequence[HostCheck]) -> str:
    lines = [
        "| case | engine | streams | published ms/token | predicted | error "
        "| predicted without host time | host time the published figure leaves "
        "| profile's host time per step |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for h in checks:
        c, r = h.result.case, h.result
        overlap = get_engine(c.engine).host_overlap
        profile = f"{h.profile_host_ms:.2f} ms" + (", hidden (overlap)" if overlap else "")
        lines.append(
            f"| {c.name} | {c.engine} | {c.concurrency} | {c.published_ms:.2f} "
            f"| {r.tpot_ms:.2f} | {r.error_pct:+.1f} % | {h.without_host_ms:.2f} "
            f"| {h.implied_host_ms:+.2f} ms | {profile} |"
        )
    return "\n".join(lines) + "\n"


# MoE decode under DP-attention + EP8 on one 8×H200 node, TensorRT-LLM, all requests at once
# (trtllm-bench), output tokens/s: (name, model, in, out, requests, sequences per rank,
# published tok/s for the 8 GPUs, source)
MOE_TEMPLATE = """\
name: {name}
seed: 0
model: {model}
hardware: h200
topology:
  name: h200x8
  nodes: 1
  gpus_per_node: 8
  gpu: h200
  nvlink: {{bandwidth_GBps: 450, latency_us: 2.0}}
  network: {{nics_per_node: 8, bandwidth_GBps: 50, latency_us: 5.0}}
layout: {{tp: 1, dp: 8, ep: 8, dp_attention: true}}
precision: {{weights: fp8, activations: fp8, kv_cache: fp8, dispatch: fp8, combine: bf16}}
serving:
  engine: trtllm
  streaming: false
  max_num_seqs: {seqs}
  max_num_batched_tokens: 8192
  kv_cache_free_memory_fraction: 0.85
workload:
  arrival: {{process: burst}}
  prompt_tokens: {{dist: fixed, value: {isl}}}
  output_tokens: {{dist: fixed, value: {osl}}}
horizon: {{requests: {requests}}}
"""
R1_BLOG = (
    "NVIDIA/TensorRT-LLM docs/source/blogs/Best_perf_practice_on_DeepSeek-R1_in_TensorRT-LLM.md, "
    "'H200 max-throughput': attention DP + EP8, max_batch_size 128 per rank, 1,436 tok/s/GPU"
)
PERF_OVERVIEW_Q3 = (
    "NVIDIA/TensorRT-LLM perf-overview.md (v1.0 era), Qwen3-235B-A22B FP8 8×H200, 1000/1000, "
    "max load; per-rank batch limit not published (512 assumed)"
)
MOE_CASES: tuple[tuple[str, str, int, int, int, int, float, str], ...] = (
    ("deepseek-r1-h200-dpa-ep8", "deepseek-v3", 1024, 2048, 1024, 128, 8 * 1436.16, R1_BLOG),
    (
        "qwen3-235b-h200-dpa-ep8",
        "qwen3-235b-a22b",
        1000,
        1000,
        4096,
        512,
        23789.0,
        PERF_OVERVIEW_Q3,
    ),
)


def run_moe_case(case: tuple[str, str, int, int, int, int, float, str]) -> tuple[float, float]:
    """(predicted output tok/s of the 8 GPUs, mean TPOT ms)."""
    name, model, isl, osl, requests, seqs, _, _ = case
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{name}.yaml"
        path.write_text(
            MOE_TEMPLATE.format(
                name=name, model=model, isl=isl, osl=osl, requests=requests, seqs=seqs
            )
        )
        req = run_experiment(load_experiment(path)).requests
    makespan = float(req["finish_s"].max() - req["arrival_s"].min())
    return float(req["output_tokens"].sum()) / makespan, 1e3 * float(req["tpot_s"].mean())


def render_moe(results: Sequence[tuple[float, float]]) -> str:
    lines = [
        "| case | model | sequences per GPU | ISL / OSL | published tok/s (8 GPUs) "
        "| predicted tok/s | error | predicted TPOT | source |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for case, (tps, tpot) in zip(MOE_CASES, results, strict=True):
        name, model, isl, osl, _, seqs, published, source = case
        lines.append(
            f"| {name} | {model} | {seqs} | {isl} / {osl} | {published:,.0f} | {tps:,.0f} "
            f"| {100.0 * (tps / published - 1.0):+.1f} % | {tpot:.1f} ms | {source} |"
        )
    return "\n".join(lines) + "\n"


def render_all(jobs: int) -> str:
    """The batch-1 table, the MoE DP-attention + EP table and the host-term check
    (docs/calibration.md §7)."""
    moe = [run_moe_case(c) for c in MOE_CASES]
    host = [run_host_check(c) for c in CASES if c.name in HOST_CASES]
    return (
        render_batch1(run_batch1_cases(jobs))
        + "\n"
        + render_moe(moe)
        + "\n"
        + render_host_checks(host)
    )


def main(argv: Sequence[str] | None = None) -> int:
    del argv
    print(render_all(min(4, os.cpu_count() or 1)), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
