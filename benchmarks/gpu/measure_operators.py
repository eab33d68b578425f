"""Time the operators the cost model prices, at the shapes it prices them, beside its prediction.

    python benchmarks/gpu/measure_operators.py --gpu h200 --out benchmarks/gpu/operators_h200.json
    python benchmarks/gpu/measure_operators.py --gpu h200 --dry-run   # no GPU: shapes + model
    python benchmarks/gpu/measure_operators.py --gpu h200 --quick     # fewer shapes
    ... --families gemm,lm_head --budget-s 300                        # a subset; a time cap

Issue 9 item 6. Every record names its operator and shape, the measured time and the time the
simulator's cost model gives the same operator on the same GPU profile (`predicted_us`, from
model/kernels.py, attention_cost.py, moe_cost.py and stage_parts.py; no simulation), so the
JSON is the comparison: `measured_us / predicted_us` per operator family and shape.
`--dry-run` needs no PyTorch: it writes the shapes and predictions with `measured_us` null
(tests run it).

How a time is taken: µs per call, median of 7 CUDA-event timings of a CUDA graph that holds
1..16 back-to-back calls (as engines replay decode steps: no host launch cost; eager where
capture fails, noted per record). Each record's buffers are copied until they span 256 MiB
(at most 16 copies) and the graph cycles through the copies, so weights and KV come from HBM
as they do across a model's layers, not from the 50-60 MB L2.

Operators (all on one GPU; TP-sliced shapes as one rank of a TP group runs them):
  * launch floors: a 1-element add 200 times in a CUDA graph, and eagerly from Python;
  * dense GEMMs of every projection (qkv / o or MLA's five, gate_up / down, shared experts,
    router) of llama-3.1-8b / 70b / 405b, qwen3-235b-a22b and deepseek-v3 at TP 1..8, bf16
    and fp8 (torch._scaled_mm, per-tensor scales), at 1..8,192 rows;
  * the LM head (bf16, vocabulary split over TP) at 1..2,048 rows;
  * MoE grouped GEMMs (gate_up + down over the experts of one EP rank, equal tokens per
    expert, `torch.bmm` as the grouped kernel) at 1..256 tokens per expert;
  * MoE routing: router GEMM, sigmoid, top-k, permute (index gather) and unpermute
    (weighted scatter-add), 1..4,096 tokens;
  * decode attention: GQA (SDPA, contiguous KV) and absorbed MLA (latent KV, two batched
    GEMMs + softmax) at batch 1..512 and context 512..32k, within a memory budget;
  * prefill attention: causal SDPA of one sequence of 512..32k tokens (MLA in its
    non-absorbed multi-head form);
  * elementwise: RMSNorm over the hidden size and SiLU·mul over the FFN width.

What it does not time: paged-KV indirection (contiguous KV here; the engines' paged kernels
read the same bytes), collectives (one GPU), FlashMLA / DeepGEMM / fused MoE kernels
themselves (PyTorch kernels stand in: the times are an upper bound on what tuned kernels
reach), fp8 grouped GEMMs.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from clustersim.catalog.engines import get_engine
from clustersim.catalog.hardware import get_hardware
from clustersim.catalog.models import get_model
from clustersim.config.schema import HardwareSpec, ModelSpec, Precision
from clustersim.model.attention_cost import attention_cost, causal_pairs
from clustersim.model.kernels import Gemm, linear_cost
from clustersim.model.moe_cost import moe_coefficients
from clustersim.model.params import kv_heads_per_rank, residual_bytes
from clustersim.model.stage_cost import StageCostModel
from clustersim.model.stage_parts import stage_ends

FORMAT = "clustersim-operator-profile/1"
ROWS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)
QUICK_ROWS = (1, 16, 64, 256, 1024, 8192)
TOKENS_PER_EXPERT = (1, 2, 4, 8, 16, 32, 64, 128, 256)
ROUTING_TOKENS = (1, 16, 128, 1024, 4096)
DECODE_BATCH = (1, 8, 32, 128, 512)
DECODE_CONTEXT = (512, 2048, 8192, 32768)
KV_BUDGET_BYTES = 24 * 2**30  # one attention call's K + V, so every GPU profile fits
ALL_TP = (1, 2, 4, 8)
DENSE = (
    ("llama-3.1-8b", ALL_TP),
    ("llama-3.1-70b", ALL_TP),
    ("llama-3.1-405b", ALL_TP),
    ("llama-2-70b", ALL_TP),
    ("mixtral-8x7b", ALL_TP),
    ("qwen3-235b-a22b", ALL_TP),
    ("deepseek-v3", ALL_TP),
)  # every catalog model: its attention / dense / shared-expert / router projections
GROUPED = (
    ("deepseek-v3", ((8, 1), (16, 1), (32, 1), (64, 1), (256, 1), (1, 8))),
    ("qwen3-235b-a22b", ((4, 1), (8, 1), (16, 1), (32, 1), (128, 1), (1, 4), (1, 8))),
    ("mixtral-8x7b", ((1, 1), (2, 1), (4, 1), (8, 1), (1, 2), (1, 4), (1, 8))),
)  # model, (EP size, expert TP): E / ep whole experts per rank, each split moe_tp ways
ATTENTION = (("llama-3.1-8b", (1,)), ("llama-3.1-70b", (1, 8)), ("deepseek-v3", (1, 8)))


@dataclass
class Record:
    """One operator at one shape: what the cost model predicts and what the GPU measured."""

    family: str  # launch | gemm | grouped_gemm | moe_routing | decode_attention |
    # prefill_attention | elementwise | lm_head | decode_layer | gemm_fp8_rowwise
    model: str
    operator: str  # e.g. qkv, gate_up, experts, gqa, mla
    dtype: str
    shape: dict[str, int]
    predicted_us: float
    measured_us: float | None = None
    notes: dict[str, Any] = field(default_factory=dict)


def precision_of(dtype: str) -> Precision:
    return Precision(weights=dtype, activations=dtype, kv_cache=dtype)  # type: ignore[arg-type]


# ------------------------------------------------------------------ shapes and predictions


def projection_shapes(model: ModelSpec, tp: int) -> list[tuple[str, int, int, int]]:
    """(name, k, n, batch) of one rank's projections, in linear_cost's order for one dense
    layer (GQA: qkv, o, gate_up, down) or one MoE layer (MLA five, shared gate_up / down,
    router); batch > 1: a batched GEMM over heads (MLA's absorbed W_UK / W_UV)."""
    h, heads = model.hidden_size, model.num_attention_heads // tp
    if model.uses_mla:
        nope, rope, v = model.qk_nope_head_dim, model.qk_rope_head_dim, model.v_head_dim
        lkv, lq = model.kv_lora_rank, model.q_lora_rank
        q_out = heads * (nope + rope)
        if lq:
            att = [("qkv_a", h, lq + lkv + rope, 1), ("q_b", lq, q_out, 1)]
        else:
            att = [("kv_a", h, lkv + rope, 1), ("q", h, q_out, 1)]
        att += [("w_uk", nope, lkv, heads), ("w_uv", lkv, v, heads), ("o", heads * v, h, 1)]
    else:
        d = model.head_dim
        qkv = (heads + 2 * kv_heads_per_rank(model, tp)) * d
        att = [("qkv", h, qkv, 1), ("o", heads * d, h, 1)]
    if not model.is_moe:
        inter = model.intermediate_size // tp
        return [*att, ("gate_up", h, 2 * inter, 1), ("down", inter, h, 1)]
    dense: list[tuple[str, int, int, int]] = []
    if model.first_dense_layers:  # the MLP of the leading dense layers (DeepSeek-V3's three)
        inter = model.intermediate_size // tp
        dense = [("dense_gate_up", h, 2 * inter, 1), ("dense_down", inter, h, 1)]
    shared = model.num_shared_experts * model.moe_intermediate_size // tp
    mlp = [("shared_gate_up", h, 2 * shared, 1), ("shared_down", shared, h, 1)] if shared else []
    return [*att, *dense, *mlp, ("router", h, model.num_experts, 1)]


def layer_gemms(model: ModelSpec, hw: HardwareSpec, dtype: str, tp: int) -> list[Gemm]:
    """The roofline Gemms of one layer of each kind the model has, in projection_shapes'
    order (the hardware's operator table is set aside: the prediction is the roofline's)."""
    layers = (1, 1 if model.first_dense_layers else 0, 1) if model.is_moe else (1, 1, 0)
    roofline = hw.model_copy(update={"operator_table": None})
    lin = linear_cost(model, roofline, precision_of(dtype), tp, layers, get_engine("vllm"))
    return list(lin.gemms)


def gemm_predicted_us(g: Gemm, rows: int, hw: HardwareSpec) -> float:
    """The cost model's time of one GEMM kernel at `rows` rows (model/stage_cost.py's rule)."""
    floor = hw.kernel_floor_us * 1e-6
    t = max((rows + hw.matmul_half_tokens) * g.flop_s, g.weight_s + rows * g.act_s, floor)
    return 1e6 * t / g.layers


def gemm_records(hw: HardwareSpec, rows: tuple[int, ...]) -> Iterator[Record]:
    for name, tps in DENSE:
        model = get_model(name)
        for tp in tps:
            for dtype in ("bf16", "fp8"):
                gemms = layer_gemms(model, hw, dtype, tp)
                shapes = projection_shapes(model, tp)
                for (op, k, n, batch), g in zip(shapes, gemms, strict=True):
                    for m in rows:
                        shape = {"tp": tp, "m": m, "k": k, "n": n, "batch": batch}
                        yield Record("gemm", name, op, dtype, shape, gemm_predicted_us(g, m, hw))


ROWWISE_ROWS = (1, 4, 16, 64, 256, 1024)


def rowwise_records(hw: HardwareSpec) -> Iterator[Record]:
    """The fp8 projection GEMMs again with per-row activation and per-column weight scales
    (torch._scaled_mm's rowwise CUTLASS kernel, the scaling vLLM's dynamic FP8 uses): how
    much the FP8 table depends on the kernel the engine picks. A comparison, not in the
    table."""
    for r in gemm_records(hw, ROWWISE_ROWS):
        if r.dtype == "fp8" and r.shape["batch"] == 1:
            yield Record("gemm_fp8_rowwise", r.model, r.operator, "fp8", r.shape, r.predicted_us)


def grouped_records(hw: HardwareSpec, tokens: tuple[int, ...]) -> Iterator[Record]:
    for name, shardings in GROUPED:
        model = get_model(name)
        for ep, moe_tp in shardings:  # every EP size here is ≤ the expert count
            experts = model.num_experts // ep
            coeffs, _ = moe_coefficients(
                model,
                hw,
                precision_of("bf16"),
                (ep * moe_tp, ep, moe_tp),
                hw.matmul_half_tokens,
                0.0,
            )
            for tpe in tokens:
                pairs = float(tpe * experts)
                comp = (pairs + coeffs.half_pairs * experts) * coeffs.flop_s_per_pair
                mem = experts * coeffs.weight_s_per_expert + pairs * coeffs.act_s_per_pair
                shape = {
                    "ep": ep,
                    "moe_tp": moe_tp,
                    "experts": experts,
                    "tokens_per_expert": tpe,
                    "hidden": model.hidden_size,
                    "inter": model.moe_intermediate_size // moe_tp,
                }
                yield Record("grouped_gemm", name, "experts", "bf16", shape, 1e6 * max(comp, mem))


def routing_records(hw: HardwareSpec, tokens: tuple[int, ...]) -> Iterator[Record]:
    """Router GEMM + the engine's MoE kernels (top-k, permute, activation, unpermute): the
    model charges the router as a GEMM and each MoE kernel at least a kernel floor."""
    engine = get_engine("vllm")
    for name in ("deepseek-v3", "qwen3-235b-a22b"):
        model = get_model(name)
        router = layer_gemms(model, hw, "bf16", 1)[-1]
        for t in tokens:
            predicted = gemm_predicted_us(router, t, hw)
            predicted += engine.moe_kernels * hw.kernel_floor_us
            shape = {
                "tokens": t,
                "hidden": model.hidden_size,
                "experts": model.num_experts,
                "top_k": model.experts_per_token,
            }
            yield Record("moe_routing", name, "router_topk_permute", "bf16", shape, predicted)


def attention_records(hw: HardwareSpec) -> Iterator[Record]:
    for name, tps in ATTENTION:
        model = get_model(name)
        for tp in tps:
            cost = attention_cost(model, hw, precision_of("bf16"), tp, 1)
            heads = model.num_attention_heads // tp
            if model.uses_mla:
                latent = model.kv_lora_rank + model.qk_rope_head_dim
                kv_heads, head_dim, bytes_per_token = 1, latent, 2 * latent
                op = "mla"
            else:
                kv_heads, head_dim = kv_heads_per_rank(model, tp), model.head_dim
                bytes_per_token, op = 2 * 2 * kv_heads * head_dim, "gqa"
            for batch in DECODE_BATCH:
                for ctx in DECODE_CONTEXT:
                    if batch * ctx * bytes_per_token > KV_BUDGET_BYTES:
                        continue
                    t = batch * ctx * cost.decode_s_per_token + batch * cost.decode_s_per_seq
                    t = max(t, hw.kernel_floor_us * 1e-6)
                    shape = {
                        "tp": tp,
                        "batch": batch,
                        "context": ctx,
                        "q_heads": heads,
                        "kv_heads": kv_heads,
                        "head_dim": head_dim,
                    }
                    yield Record(
                        "decode_attention",
                        name,
                        op,
                        "bf16",
                        shape,
                        1e6 * t,
                        notes={"kv_bytes": batch * ctx * bytes_per_token},
                    )


LM_HEAD_ROWS = (1, 8, 32, 128, 512, 2048)
PREFILL_CONTEXT = (512, 2048, 8192, 32768)
PREFILL = (("llama-3.1-8b", 1), ("llama-3.1-70b", 8), ("deepseek-v3", 8))
ELEMENTWISE_TOKENS = (1, 16, 128, 1024, 8192)
ELEMENTWISE = (("llama-3.1-8b", 1), ("llama-3.1-70b", 8))


def lm_head_records(hw: HardwareSpec, rows: tuple[int, ...]) -> Iterator[Record]:
    """The LM head (16-bit weights, vocabulary split over TP) at the rows that emit a token."""
    for name, tps in DENSE:
        model = get_model(name)
        for tp in tps:
            ends = stage_ends(model, hw, precision_of("bf16"), tp, False, True)
            for m in rows:
                comp = (m + hw.matmul_half_tokens) * ends.lm_flop_s
                mem = ends.lm_weight_s + m * ends.lm_act_s
                t = max(comp, mem, hw.kernel_floor_us * 1e-6)
                k, n = model.hidden_size, -(-model.vocab_size // tp)
                shape = {"tp": tp, "m": m, "k": k, "n": n, "batch": 1}
                yield Record("lm_head", name, "lm_head", "bf16", shape, 1e6 * t)


def prefill_attention_records(hw: HardwareSpec) -> Iterator[Record]:
    """Causal prefill attention of one sequence of `context` tokens, one layer (MLA: the
    non-absorbed multi-head form, q/k head dim nope + rope, v head dim v_head_dim)."""
    for name, tp in PREFILL:
        model = get_model(name)
        cost = attention_cost(model, hw, precision_of("bf16"), tp, 1)
        heads = model.num_attention_heads // tp
        if model.uses_mla:
            kv_heads, d = heads, model.qk_nope_head_dim + model.qk_rope_head_dim
            dv, op = model.v_head_dim, "mha_mla"
        else:
            kv_heads, d, dv, op = (
                kv_heads_per_rank(model, tp),
                model.head_dim,
                model.head_dim,
                "gqa",
            )
        for n in PREFILL_CONTEXT:
            t = max(causal_pairs(n, 0) * cost.prefill_s_per_pair, hw.kernel_floor_us * 1e-6)
            shape = {
                "tp": tp,
                "context": n,
                "q_heads": heads,
                "kv_heads": kv_heads,
                "head_dim": d,
                "v_head_dim": dv,
            }
            yield Record("prefill_attention", name, op, "bf16", shape, 1e6 * t)


def elementwise_records(hw: HardwareSpec) -> Iterator[Record]:
    """An RMSNorm over the hidden size and SiLU·mul over the rank's FFN width, at the model's
    memory rate (hbm_efficiency): read + write; each at least a kernel floor."""
    bw = hw.hbm_bandwidth_GBps * 1e9 * hw.hbm_efficiency
    rb = residual_bytes(precision_of("bf16"))
    for name, tp in ELEMENTWISE:
        model = get_model(name)
        inter = model.intermediate_size // tp
        for op, width, elements in (
            ("rmsnorm", model.hidden_size, 2 * model.hidden_size),
            ("silu_mul", 2 * inter, 3 * inter),
        ):
            for t in ELEMENTWISE_TOKENS:
                us = 1e6 * max(t * elements * rb / bw, hw.kernel_floor_us * 1e-6)
                shape = {"tp": tp, "tokens": t, "width": width}
                yield Record("elementwise", name, op, "bf16", shape, us)


LAYER = (("llama-3.1-8b", 1), ("llama-3.1-70b", 8))
LAYER_BATCH = (1, 32, 256)
LAYER_CONTEXT = 1024


def decode_layer_records(hw: HardwareSpec) -> Iterator[Record]:
    """One whole dense decoder layer in bf16 (RMSNorm, qkv, decode attention, o, residual add,
    RMSNorm, gate_up, SiLU·mul, down, residual add; no rope, no all-reduce) at `batch`
    sequences of LAYER_CONTEXT tokens: checks that a layer costs the sum of its kernels.
    predicted_us: the roofline model's linear + decode-attention time of one layer."""
    engine = get_engine("vllm")
    for name, tp in LAYER:
        model = get_model(name)
        cost = StageCostModel(model, hw, precision_of("bf16"), tp, 1, False, False, engine=engine)
        heads = model.num_attention_heads // tp
        for batch in LAYER_BATCH:
            parts = cost.breakdown(0, 0.0, batch, batch * LAYER_CONTEXT)
            shape = {
                "tp": tp,
                "batch": batch,
                "context": LAYER_CONTEXT,
                "hidden": model.hidden_size,
                "q_heads": heads,
                "kv_heads": kv_heads_per_rank(model, tp),
                "head_dim": model.head_dim,
                "inter": model.intermediate_size // tp,
            }
            predicted = 1e6 * (parts["linear"] + parts["attn_decode"])
            yield Record("decode_layer", name, "dense_layer", "bf16", shape, predicted)


def all_records(hw: HardwareSpec, quick: bool) -> list[Record]:
    rows = QUICK_ROWS if quick else ROWS
    tpe = TOKENS_PER_EXPERT[::2] if quick else TOKENS_PER_EXPERT
    launch = [
        Record("launch", "-", mode, "-", {}, hw.kernel_floor_us) for mode in ("graph", "eager")
    ]
    return [
        *launch,
        *gemm_records(hw, rows),
        *grouped_records(hw, tpe),
        *routing_records(hw, ROUTING_TOKENS),
        *attention_records(hw),
        *prefill_attention_records(hw),
        *elementwise_records(hw),
        *lm_head_records(hw, LM_HEAD_ROWS),
        *decode_layer_records(hw),
        *rowwise_records(hw),
    ]


# ------------------------------------------------------------------ measuring (PyTorch)

ROTATE_BYTES = 256 * 2**20  # each record's buffers are copied until they span this (> 4× L2),
MAX_COPIES = 16  # and the copies are cycled, so weights and KV come from HBM as in a model
TARGET_CALL_US = 4000.0  # one timed graph holds about this much work, at least MIN_CALLS calls
MIN_CALLS = 1
CHECKPOINT_S = 30.0  # the JSON is rewritten at least this often while measuring
MAX_CALLS = 16


def working_bytes(r: Record) -> float:
    """Bytes one call of the record's operator reads + writes (sizes the copies)."""
    s = r.shape
    if r.family in ("gemm", "lm_head", "gemm_fp8_rowwise"):
        w = 1 if r.dtype == "fp8" else 2
        return s["batch"] * (s["k"] * s["n"] * w + 2 * s["m"] * (s["k"] + s["n"]))
    if r.family == "grouped_gemm":
        e, t, h, i = s["experts"], s["tokens_per_expert"], s["hidden"], s["inter"]
        return 2 * e * (3 * h * i + t * (2 * h + 3 * i))
    if r.family == "moe_routing":
        return 2 * (s["experts"] * s["hidden"] + 4 * s["tokens"] * s["hidden"])
    if r.family == "decode_attention":
        return float(r.notes["kv_bytes"])
    if r.family == "prefill_attention":
        return 2.0 * s["context"] * (s["q_heads"] + 2 * s["kv_heads"]) * s["head_dim"] * 2
    if r.family == "elementwise":
        return 2.0 * s["tokens"] * s["width"] * 3
    if r.family == "decode_layer":
        h, i, d = s["hidden"], s["inter"], s["head_dim"]
        qkv = (s["q_heads"] + 2 * s["kv_heads"]) * d
        weights = h * qkv + s["q_heads"] * d * h + 3 * h * i
        return 2.0 * (weights + s["batch"] * s["context"] * 2 * s["kv_heads"] * d)
    return 0.0


def copies_for(r: Record) -> int:
    return max(1, min(MAX_COPIES, int(ROTATE_BYTES // max(working_bytes(r), 1.0))))


def calls_for(r: Record, copies: int) -> int:
    """Calls per timed graph: enough to dwarf the replay's own cost, few for long kernels."""
    per_call = max(r.predicted_us, 1.0)
    return max(copies, MIN_CALLS, min(MAX_CALLS, int(TARGET_CALL_US // per_call)))


def measure(
    records: list[Record], budget_s: float, checkpoint: Callable[[], None]
) -> None:  # pragma: no cover - needs a CUDA GPU
    """Fill every record's measured_us in place (µs per call, replayed in a CUDA graph; eager
    where capture fails), checkpointing after each family; past `budget_s`, skip the rest."""
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    timer = Timer(torch)
    began = saved = time.monotonic()
    family = records[0].family if records else ""
    for r in records:
        if r.family != family or time.monotonic() - saved > CHECKPOINT_S:
            checkpoint()
            family, saved = r.family, time.monotonic()
        if time.monotonic() - began > budget_s:
            r.notes["skipped"] = "time budget"
            continue
        try:
            if r.family == "launch":
                r.measured_us, mode = _launch(torch, timer, r)
                copies = 1
            else:
                copies = copies_for(r)
                fns = [MAKE[r.family](torch, r) for _ in range(copies)]
                r.measured_us, mode = timer(fns, calls_for(r, copies))
                del fns
            r.notes.update(timing=mode, copies=copies)
        except Exception as err:  # one shape's failure must not stop the run
            r.notes["error"] = f"{type(err).__name__}: {err}"[:300]
        torch.cuda.empty_cache()
    checkpoint()


class Timer:  # pragma: no cover - needs a CUDA GPU
    """µs per call of `calls` calls cycling over `fns` (independent buffers), captured once in
    a CUDA graph and replayed (as engines replay decode steps; no host launch cost), median of
    `reps` CUDA-event timings after warm-ups. Eager back-to-back calls if capture fails."""

    def __init__(self, torch: Any, reps: int = 7) -> None:
        self.torch, self.reps = torch, reps

    def __call__(self, fns: list[Callable[[], Any]], calls: int) -> tuple[float, str]:
        torch = self.torch
        seq = [fns[i % len(fns)] for i in range(calls)]

        def body() -> None:
            for fn in seq:
                fn()

        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up off the capture stream (lazy inits, workspaces)
            body()
        torch.cuda.current_stream().wait_stream(side)
        torch.cuda.synchronize()
        try:
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                body()
        except Exception:  # ops that cannot be captured are timed eagerly
            torch.cuda.synchronize()
            return self.time_us(body) / calls, "eager"
        us = self.time_us(graph.replay) / calls
        del graph
        return us, "graph"

    def time_us(self, fn: Callable[[], Any]) -> float:
        torch = self.torch
        for _ in range(2):
            fn()
        torch.cuda.synchronize()
        times = []
        for _ in range(self.reps):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(1e3 * start.elapsed_time(end))
        return statistics.median(times)


def _launch(torch: Any, timer: Timer, r: Record) -> tuple[float, str]:  # pragma: no cover
    """One tiny kernel (a 1-element add) 200 times: in a CUDA graph, or launched eagerly from
    Python (PyTorch's dispatch included, as an eager engine pays)."""
    x = torch.zeros(1, device="cuda")
    n = 200

    def adds() -> None:
        for _ in range(n):
            x.add_(1.0)

    if r.operator == "eager":
        return timer.time_us(adds) / n, "eager"
    us, mode = timer([adds], 1)
    return us / n, mode


def _randn(torch: Any, *shape: int) -> Any:  # pragma: no cover
    return torch.randn(*shape, device="cuda", dtype=torch.bfloat16)


def _pad16(v: int) -> int:
    """fp8 GEMMs (torch._scaled_mm) need dimensions divisible by 16."""
    return -(-v // 16) * 16


def _gemm(torch: Any, r: Record) -> Callable[[], Any]:  # pragma: no cover
    s = r.shape
    m, k, n, batch = s["m"], s["k"], s["n"], s["batch"]
    if batch > 1:  # per-head batched GEMM (bf16; fp8 batched GEMMs are engine-specific)
        a, w = _randn(torch, batch, m, k), _randn(torch, batch, k, n)
        return lambda: torch.bmm(a, w)
    if r.dtype != "fp8":
        a, w = _randn(torch, m, k), _randn(torch, n, k)
        return lambda: a @ w.t()
    a8 = _randn(torch, _pad16(m), _pad16(k)).to(torch.float8_e4m3fn)
    w8 = _randn(torch, _pad16(n), _pad16(k)).to(torch.float8_e4m3fn)
    one = torch.ones((), device="cuda")
    return lambda: torch._scaled_mm(a8, w8.t(), scale_a=one, scale_b=one, out_dtype=torch.bfloat16)


def _grouped(torch: Any, r: Record) -> Callable[[], Any]:  # pragma: no cover
    s = r.shape
    e, t, h, i = s["experts"], s["tokens_per_expert"], s["hidden"], s["inter"]
    x, w1, w2 = _randn(torch, e, t, h), _randn(torch, e, h, 2 * i), _randn(torch, e, i, h)

    def experts() -> None:
        y = torch.bmm(x, w1)  # the activation between them is an elementwise kernel apart
        torch.bmm(y[..., :i], w2)

    return experts


def _routing(torch: Any, r: Record) -> Callable[[], Any]:  # pragma: no cover
    s = r.shape
    t, h, e, k = s["tokens"], s["hidden"], s["experts"], s["top_k"]
    x, wr = _randn(torch, t, h), _randn(torch, e, h)

    def route() -> None:
        scores = torch.sigmoid((x @ wr.t()).float())
        weights, idx = torch.topk(scores, k, dim=-1)
        order = torch.argsort(idx.flatten())
        permuted = x.index_select(0, order // k)
        out = torch.zeros_like(x)
        out.index_add_(0, order // k, permuted * weights.flatten()[order, None].to(x.dtype))

    return route


def _decode_attention(torch: Any, r: Record) -> Callable[[], Any]:  # pragma: no cover
    s = r.shape
    b, ctx, hq, hk, d = s["batch"], s["context"], s["q_heads"], s["kv_heads"], s["head_dim"]
    if r.operator == "mla":  # absorbed MLA: scores over latent + rope, values over the latent
        lora = d - get_model(r.model).qk_rope_head_dim
        q, kv = _randn(torch, b, hq, d), _randn(torch, b, ctx, d)

        def mla() -> None:
            p = torch.softmax(torch.bmm(q, kv.transpose(1, 2)).float() * d**-0.5, dim=-1)
            torch.bmm(p.to(kv.dtype), kv[..., :lora])

        return mla
    q, k, v = _randn(torch, b, hq, 1, d), _randn(torch, b, hk, ctx, d), _randn(torch, b, hk, ctx, d)
    sdpa = torch.nn.functional.scaled_dot_product_attention
    return lambda: sdpa(q, k, v, enable_gqa=hq != hk)


def _prefill_attention(torch: Any, r: Record) -> Callable[[], Any]:  # pragma: no cover
    s = r.shape
    n, hq, hk, d, dv = s["context"], s["q_heads"], s["kv_heads"], s["head_dim"], s["v_head_dim"]
    q, k = _randn(torch, 1, hq, n, d), _randn(torch, 1, hk, n, d)
    v = _randn(torch, 1, hk, n, dv)
    sdpa = torch.nn.functional.scaled_dot_product_attention
    return lambda: sdpa(q, k, v, is_causal=True, enable_gqa=hq != hk)


def _elementwise(torch: Any, r: Record) -> Callable[[], Any]:  # pragma: no cover
    t, width = r.shape["tokens"], r.shape["width"]
    f = torch.nn.functional
    if r.operator == "rmsnorm":
        x, w = _randn(torch, t, width), _randn(torch, width)
        return lambda: f.rms_norm(x, (width,), w)
    half = width // 2
    x = _randn(torch, t, width)
    return lambda: f.silu(x[:, :half]) * x[:, half:]


def _decode_layer(torch: Any, r: Record) -> Callable[[], Any]:  # pragma: no cover
    s = r.shape
    b, ctx, h, i = s["batch"], s["context"], s["hidden"], s["inter"]
    hq, hk, d = s["q_heads"], s["kv_heads"], s["head_dim"]
    f = torch.nn.functional
    x, norm_w = _randn(torch, b, h), _randn(torch, h)
    w_qkv, w_o = _randn(torch, (hq + 2 * hk) * d, h), _randn(torch, h, hq * d)
    w_gate_up, w_down = _randn(torch, 2 * i, h), _randn(torch, h, i)
    k_cache, v_cache = _randn(torch, b, hk, ctx, d), _randn(torch, b, hk, ctx, d)

    def layer() -> None:
        y = f.rms_norm(x, (h,), norm_w)
        qkv = y @ w_qkv.t()
        q = qkv[:, : hq * d].reshape(b, hq, 1, d)
        a = f.scaled_dot_product_attention(q, k_cache, v_cache, enable_gqa=hq != hk)
        z = x + a.reshape(b, hq * d) @ w_o.t()
        y = f.rms_norm(z, (h,), norm_w)
        gu = y @ w_gate_up.t()
        _ = z + (f.silu(gu[:, :i]) * gu[:, i:]) @ w_down.t()

    return layer


def _gemm_rowwise(torch: Any, r: Record) -> Callable[[], Any]:  # pragma: no cover
    s = r.shape
    m, k, n = _pad16(s["m"]), _pad16(s["k"]), _pad16(s["n"])
    a8 = _randn(torch, m, k).to(torch.float8_e4m3fn)
    w8 = _randn(torch, n, k).to(torch.float8_e4m3fn)
    scale_a = torch.ones((m, 1), device="cuda", dtype=torch.float32)
    scale_b = torch.ones((1, n), device="cuda", dtype=torch.float32)
    return lambda: torch._scaled_mm(
        a8, w8.t(), scale_a=scale_a, scale_b=scale_b, out_dtype=torch.bfloat16
    )


MAKE: dict[str, Callable[[Any, Record], Callable[[], Any]]] = {
    "gemm_fp8_rowwise": _gemm_rowwise,
    "decode_layer": _decode_layer,
    "gemm": _gemm,
    "lm_head": _gemm,
    "grouped_gemm": _grouped,
    "moe_routing": _routing,
    "decode_attention": _decode_attention,
    "prefill_attention": _prefill_attention,
    "elementwise": _elementwise,
}


# ------------------------------------------------------------------ driver


def profile(gpu: str, records: list[Record], device: dict[str, Any]) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "gpu": gpu,
        "device": device,
        "date": dt.date.today().isoformat(),
        "records": [asdict(r) for r in records],
    }


def device_facts() -> dict[str, Any]:  # pragma: no cover - needs a CUDA GPU
    import torch

    props = torch.cuda.get_device_properties(0)
    return {
        "name": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "cuda": str(torch.version.cuda),
        "sm_count": props.multi_processor_count,
        "memory_GiB": round(props.total_memory / 2**30, 1),
        "l2_MiB": round(getattr(props, "L2_cache_size", 0) / 2**20, 1),
    }


def summary_lines(records: list[Record]) -> list[str]:
    """Per family: records, measured, errors, skipped, median measured / predicted."""
    lines = []
    for family in dict.fromkeys(r.family for r in records):
        rs = [r for r in records if r.family == family]
        ratios = [r.measured_us / r.predicted_us for r in rs if r.measured_us]
        errors = [r.notes["error"] for r in rs if "error" in r.notes]
        median = f"{statistics.median(ratios):.2f}" if ratios else "-"
        lines.append(
            f"{family}: {len(rs)} records, {len(ratios)} measured, {len(errors)} errors, "
            f"{sum('skipped' in r.notes for r in rs)} skipped, median measured/predicted {median}"
            + (f"; first error: {errors[0]}" if errors else "")
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gpu", required=True, help="the clustersim hardware profile to predict")
    parser.add_argument("--out", type=Path, help="JSON file (default: stdout summary only)")
    parser.add_argument("--dry-run", action="store_true", help="shapes + predictions, no GPU")
    parser.add_argument("--quick", action="store_true", help="fewer rows and token counts")
    parser.add_argument("--families", help="comma-separated families to keep (default: all)")
    parser.add_argument("--models", help="comma-separated models to keep (default: all)")
    parser.add_argument(
        "--budget-s", type=float, default=1e9, help="stop measuring after this many seconds"
    )
    args = parser.parse_args(argv)
    hw = get_hardware(args.gpu).model_copy(update={"operator_table": None})  # the roofline's
    records = all_records(hw, args.quick)
    if args.families:
        keep = set(args.families.split(","))
        records = [r for r in records if r.family in keep]
    if args.models:
        models = set(args.models.split(","))
        records = [r for r in records if r.model in models or r.model == "-"]
    device: dict[str, Any] = {"name": "dry run"}

    def write() -> None:
        if args.out:
            text = json.dumps(profile(args.gpu, records, device), indent=1)
            args.out.write_text(text + "\n")

    if not args.dry_run:  # pragma: no cover - needs a CUDA GPU
        device = device_facts()
        began = time.monotonic()
        measure(records, args.budget_s, write)
        device["measure_s"] = round(time.monotonic() - began, 1)
    write()
    print(f"{args.gpu}: {len(records)} records")
    print("\n".join(summary_lines(records)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
