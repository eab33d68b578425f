"""Roofline building blocks of a step: tensor-core peaks, GEMM kernels, kernel floors.

Compute time = FLOPs / (peak(dtype) · eff(M)); memory time = bytes / (HBM bw · hbm_efficiency).
Matmul efficiency falls for small GEMMs: eff(M) = matmul_efficiency · M / (M + M_half), M the
rows of the GEMM (tokens; routed pairs per expert for MoE): every GEMM costs M_half extra
token-rows. A kernel's floor is hw.kernel_floor_us inside a CUDA graph, at least the engine's
eager launch time outside one (catalog/engines.py).

A hardware profile with an `operator_table` (catalog/operator_tables.py) prices every GEMM
whose shape and dtype the table measured from that table instead (piecewise linear in M
between the measured rows; still at least the kernel floor); the roofline prices the rest.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import NamedTuple

from clustersim.catalog.engines import EngineProfile
from clustersim.catalog.operator_tables import Curve, GemmKey, load_operator_table
from clustersim.config.schema import DTYPE_BYTES, DType, HardwareSpec, ModelSpec, Precision
from clustersim.model.params import (
    HIGH_PRECISION_BYTES,
    kv_elements_per_token_per_layer,
    kv_heads_per_rank,
    param_counts,
    residual_bytes,
)

DEFAULT_MATMUL_HALF_TOKENS = 16.0  # GEMM rows at which matmul efficiency is half its maximum,
# HardwareSpec's default; Hopper profiles carry their own (docs/calibration.md)
_WIDER_FALLBACK: dict[str, tuple[DType, ...]] = {
    "fp4": ("fp4", "fp8", "bf16", "fp16"),
    "fp8": ("fp8", "bf16", "fp16"),
    "bf16": ("bf16", "fp16"),
    "fp16": ("fp16", "bf16"),
}


def wider(a: DType, b: DType) -> DType:
    """The dtype with more bytes per element (the one a mixed-precision kernel computes in)."""
    return a if DTYPE_BYTES[a] >= DTYPE_BYTES[b] else b


def matmul_dtype(precision: Precision) -> DType:
    """Tensor-core dtype of linear layers: fp8 weights × fp8 activations → fp8; fp8 weights
    with bf16 activations (weight-only quantisation) → bf16."""
    return wider(precision.weights, precision.activations)


def attention_dtype(precision: Precision) -> DType:
    """Tensor-core dtype of attention: fp8 only when both activations and KV cache are fp8."""
    return wider(precision.activations, precision.kv_cache)


def peak_flops(hw: HardwareSpec, dtype: str) -> float:
    """Dense peak FLOP/s for `dtype`, falling back to the next wider dtype the GPU supports."""
    for d in _WIDER_FALLBACK[dtype]:
        tf = hw.peak_tflops.get(d)
        if tf:
            return float(tf) * 1e12
    raise ValueError(f"hardware {hw.name!r} has no tensor-core peak for {dtype} or wider")


# ------------------------------------------------------------------ kernel floors


def kernel_floors_s(hw: HardwareSpec, engine: EngineProfile) -> tuple[float, float]:
    """Least time of one kernel (s): (inside a CUDA graph, eager). Outside a graph a kernel
    takes at least the host's launch time (the GPU cannot run kernels faster than they come)."""
    return hw.kernel_floor_us * 1e-6, max(hw.kernel_floor_us, engine.eager_launch_us) * 1e-6


class StepFloors(NamedTuple):
    """Least times of one stage's step in one launch mode (CUDA graph or eager), seconds."""

    kernel_s: float  # one kernel (a GEMM's floor)
    overhead_s: float  # the per-step GPU overhead: hw.step_overhead_us + per-step kernels
    elementwise_s: float  # the stage's elementwise kernels
    attention_s: float  # the stage's attention kernels


def step_floors(
    kernel_s: float, base_s: float, step_kernels: int, layer_kernels: tuple[int, int], layers: int
) -> StepFloors:
    """StepFloors of a stage of `layers` layers whose kernels each take at least `kernel_s`:
    `step_kernels` per step; (elementwise, attention) kernels per layer."""
    elementwise, attention = layer_kernels
    return StepFloors(
        kernel_s,
        base_s + step_kernels * kernel_s,
        layers * elementwise * kernel_s,
        layers * attention * kernel_s,
    )


# ------------------------------------------------------------------ GEMMs


class Gemm(NamedTuple):
    """One GEMM kernel that each of `layers` layers of the stage runs on this GPU.

    time per layer(T rows) = max((T + M½) · flop_s, weight_s + T · act_s, floor)."""

    layers: float  # how many of the stage's layers run it
    flop_s: float  # s per token-row at matmul_efficiency (2 · params / rate)
    weight_s: float  # s to stream its weights once at hbm_efficiency
    act_s: float  # s per token of its input + output activations


class MeasuredGemm(NamedTuple):
    """A GEMM kernel that each of `layers` layers runs, priced from a measured curve:
    time per layer(T rows) = max(curve_s(rows, seconds, T), floor)."""

    layers: float
    rows: tuple[float, ...]  # measured GEMM rows, ascending
    seconds: tuple[float, ...]  # measured seconds per call at those rows


def curve_s(rows: tuple[float, ...], seconds: tuple[float, ...], m: float) -> float:
    """Seconds at `m` rows: piecewise linear through the measured points, the first point's
    time below it, the last segment's slope past the last (compute-bound: linear in rows)."""
    i = bisect_left(rows, m)
    if i == 0 or len(rows) == 1:
        return seconds[0]
    if i == len(rows):
        i -= 1
    m0, m1, s0, s1 = rows[i - 1], rows[i], seconds[i - 1], seconds[i]
    return s0 + (s1 - s0) * (m - m0) / (m1 - m0)


class LinearCost(NamedTuple):
    """The linear layers of a stage on one GPU: its GEMM kernels (roofline-priced, and those
    an operator table measured) and the memory-bound elementwise kernels between them."""

    gemms: tuple[Gemm, ...]
    elementwise_s: float  # s per token of the elementwise kernels (all layers)
    elementwise_kernels: int  # elementwise kernels per layer (their floors)
    measured: tuple[MeasuredGemm, ...] = ()


def add_gemms_s(s: float, lin: LinearCost, t: int, rows: float, floor: float) -> float:
    """`s` + the stage's GEMM kernels at `t` tokens (`rows` = t + M½), each at least `floor`:
    roofline GEMMs first, then the measured ones (the order every caller adds them in)."""
    for layers, flop_s, weight_s, act_s in lin.gemms:
        comp = rows * flop_s
        mem = weight_s + t * act_s
        if mem > comp:
            comp = mem
        s += layers * (comp if comp > floor else floor)
    for layers, m_rows, seconds in lin.measured:
        g = curve_s(m_rows, seconds, t)
        s += layers * (g if g > floor else floor)
    return s


GemmShape = tuple[float, float, float]  # (k, n, batch) of one projection on one rank


def table_dtype(precision: Precision) -> str | None:
    """The dtype an operator table's GEMM curves are looked up under: the tensor-core dtype
    when the weights are stored in it (fp16 as bf16); None for weight-only quantisation or
    fp4 (the tables time same-dtype GEMMs only)."""
    dtype = matmul_dtype(precision)
    if precision.weights != dtype or dtype == "fp4":
        return None
    return "bf16" if dtype == "fp16" else dtype


def measured_curve(
    table: dict[GemmKey, Curve], family: str, dtype: str, shape: GemmShape
) -> Curve | None:
    """The table's curve for (family, dtype, shape = (k, n, batch)); None when it was not
    measured or the shape is not whole on this rank. Batched GEMMs (MLA's absorbed W_UK /
    W_UV) were measured in bf16 only."""
    if any(v != round(v) for v in shape):
        return None
    k, n, batch = (round(v) for v in shape)
    return table.get((family, "bf16" if batch > 1 else dtype, k, n, batch))


def split_measured(
    gemms: list[Gemm], shapes: list[tuple[str, GemmShape]], hw: HardwareSpec, precision: Precision
) -> tuple[tuple[Gemm, ...], tuple[MeasuredGemm, ...]]:
    """(roofline GEMMs, measured GEMMs): those whose dtype and shape the hardware profile's
    operator table holds are priced from it. `shapes`: per GEMM, (its own dtype or "" for the
    model's, (k, n, batch)); the router runs in 16-bit whatever the model's dtype."""
    if hw.operator_table is None:
        return tuple(gemms), ()
    table = load_operator_table(hw.operator_table)
    dtype = table_dtype(precision)
    roofline: list[Gemm] = []
    measured: list[MeasuredGemm] = []
    for g, (own_dtype, shape) in zip(gemms, shapes, strict=True):
        d = own_dtype or dtype
        curve = measured_curve(table, "gemm", d, shape) if d else None
        if curve is None:
            roofline.append(g)
        else:
            measured.append(MeasuredGemm(g.layers, *curve))
    return tuple(roofline), tuple(measured)


def linear_cost(
    model: ModelSpec,
    hw: HardwareSpec,
    precision: Precision,
    tp: int,
    layers: tuple[int, int, int],
    engine: EngineProfile,
) -> LinearCost:
    """One Gemm per projection kernel (attention, dense MLP, shared experts, router), and the
    elementwise kernels; `layers`: the stage's (all, dense, MoE) layer counts."""
    c = param_counts(model)
    wb, rb = DTYPE_BYTES[precision.weights], residual_bytes(precision)
    flops_rate = peak_flops(hw, matmul_dtype(precision)) * hw.matmul_efficiency  # FLOP/s
    bw = hw.hbm_bandwidth_GBps * 1e9 * hw.hbm_efficiency  # bytes/s
    n, nd, nm = layers

    def gemm(layers: float, shape: GemmShape, w_bytes: float) -> Gemm:
        """A projection (k, n, batch) on this GPU: k·n·batch weights, batch·(k + n)
        activation elements read + written per token."""
        k, n_out, batch = shape
        params, io = k * n_out * batch, batch * (k + n_out)
        return Gemm(layers, 2.0 * params / flops_rate, params * w_bytes / bw, rb * io / bw)

    h, heads = model.hidden_size, model.num_attention_heads
    # (layers running it, its own dtype or "" for the model's, (k, n, batch)), in order
    projections: list[tuple[float, str, GemmShape]] = [
        (n, "", shape) for shape in attention_shapes(model, tp)
    ]
    if nd:
        inter = model.intermediate_size / tp
        projections += [(nd, "", (h, 2.0 * inter, 1.0)), (nd, "", (inter, h, 1.0))]
    if nm and c.num_shared_experts:
        inter = c.num_shared_experts * model.moe_intermediate_size / tp
        projections += [(nm, "", (h, 2.0 * inter, 1.0)), (nm, "", (inter, h, 1.0))]
    if nm:
        projections.append((nm, "bf16", (h, model.num_experts, 1.0)))  # router, 16-bit
    gemms = [
        gemm(layers, shape, HIGH_PRECISION_BYTES if own else wb)
        for layers, own, shape in projections
    ]
    shapes = [(own, shape) for _, own, shape in projections]
    roofline, measured = split_measured(gemms, shapes, hw, precision)
    if model.uses_mla:
        qk = model.qk_nope_head_dim + model.qk_rope_head_dim
        proj_out = heads / tp * (qk + model.v_head_dim) + model.kv_lora_rank
    else:
        proj_out = (heads / tp + 2 * kv_heads_per_rank(model, tp)) * model.head_dim
    kv_write = kv_elements_per_token_per_layer(model, tp) * DTYPE_BYTES[precision.kv_cache]
    ffn = nd * model.intermediate_size / tp  # Σ layers of this rank's FFN width
    ffn += nm * c.num_shared_experts * model.moe_intermediate_size / tp
    # Elementwise kernels (memory-bound, they run between the GEMMs and overlap nothing):
    # two norms (read + write h) and two residual adds (read 2h, write h) = 10 h, rope on
    # q / k ≈ proj_out, SiLU·mul (read 2·I, write I), and the new token's KV write.
    elementwise = n * (rb * (10.0 * h + proj_out) + kv_write) + rb * 3.0 * ffn
    kernels = engine.elementwise_kernels + (2 if model.uses_mla else 0)
    if precision.activations in ("fp8", "fp4"):
        kernels += engine.fp8_quant_kernels
    return LinearCost(roofline, elementwise / bw, kernels, measured)


def attention_shapes(model: ModelSpec, tp: int) -> list[GemmShape]:
    """(k, n, batch) of the attention projection GEMMs of one layer on one of `tp` ranks
    (batch: MLA's per-head batch).

    GQA: qkv (h → (H/tp + 2·KV_rank)·d), o ((H/tp)·d → h).
    MLA: the fused q_a + kv_a down projection (replicated on every rank; without q_lora q is
    its own sharded GEMM), q_b, the absorbed kv_b as its two batched halves (W_UK on the
    queries' nope part, W_UV on the attention output), o."""
    h, heads = model.hidden_size, model.num_attention_heads / tp
    if not model.uses_mla:
        d = model.head_dim
        qkv = (heads + 2 * kv_heads_per_rank(model, tp)) * d
        return [(h, qkv, 1.0), (heads * d, h, 1.0)]
    nope, rope, v = model.qk_nope_head_dim, model.qk_rope_head_dim, model.v_head_dim
    lora_kv, lora_q = model.kv_lora_rank, model.q_lora_rank
    q_out = heads * (nope + rope)
    if lora_q:
        out = [(h, lora_q + lora_kv + rope, 1.0), (lora_q, q_out, 1.0)]
    else:
        out = [(h, lora_kv + rope, 1.0), (h, q_out, 1.0)]
    return [*out, (nope, lora_kv, heads), (lora_kv, v, heads), (heads * v, h, 1.0)]


def step_seqs(prefill_tokens: int, decode_tokens: int, prefill_seqs: int) -> int:
    """Sequences a step runs (and LM-head rows it computes): every decoding sequence plus the
    step's prefill chunks, if it prefills at all."""
    return decode_tokens + (prefill_seqs if prefill_tokens > 0 else 0)
