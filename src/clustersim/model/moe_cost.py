"""Routed-expert cost of MoE layers from sampled per-rank loads, and EP traffic sizes.

`StageCostModel` (stage_cost.py) prices the routed experts analytically for uniform routing; this
module prices them from *sampled* loads, vectorised over (MoE layer, EP rank) with numpy
(docs/moe.md):

    layer time on rank r = max(FLOPs time, memory time, kernel floors)        (one GPU)
        FLOPs  = (pairs_r + M½ · touched_r) · flop_s_per_pair
        memory = touched_r · weight_s_per_expert + pairs_r · act_s_per_pair
    MoE time of a step   = Σ_layers max_r layer time          (the step waits for the slowest)

The kernel floors are the grouped GEMMs' and the engine's MoE kernels' (top-k, permute,
unpermute) least times (MoECoefficients.floor_s). `pairs_r` are the (token, expert)
assignments routed to rank r in that layer; `touched_r` the
distinct local experts (physical slots) they hit. Few tokens per expert → the memory term
(streaming each touched expert's weights) dominates: decode is weight-read bound, and a hot
rank costs little more than a cold one until its GEMMs turn compute-bound.

touched is not sampled: with T tokens, a rank of n slots whose pairs are spread evenly over
its slots hits each slot with per-token probability π̄ = pairs_r / (T · n), so
    touched_r = n · (1 − (1 − π̄)^T)
— exact for uniform routing (ep = 1: E · (1 − (1 − k/E)^T), as stage_cost.py), an upper bound when
a rank's load is skewed over its slots (by concavity).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from clustersim.config.schema import DTYPE_BYTES, HardwareSpec, ModelSpec, Precision
from clustersim.model.kernels import matmul_dtype, peak_flops
from clustersim.model.params import expert_sharding, param_counts, residual_bytes

F64 = npt.NDArray[np.float64]

# DeepSeek-V3 fine-grained FP8: activations are quantised in 1 × 128 tiles, each with an fp32
# scale (DeepSeek-V3 technical report §3.3.2); DeepEP sends the scales with the fp8 payload:
# hidden × (1 + 4/128) bytes per token (its tests' `fp8_factor`).
FP8_TILE = 128  # elements per scale
FP8_SCALE_BYTES = 4.0  # one fp32 scale per tile
# NVFP4: 16-element blocks, one fp8 (e4m3) scale each.
FP4_BLOCK = 16
FP4_SCALE_BYTES = 1.0


def token_bytes(hidden: int, dtype: str) -> float:
    """Bytes of one token's hidden state in `dtype` on the wire, quantisation scales included."""
    payload = hidden * DTYPE_BYTES[dtype]
    if dtype == "fp8":
        return payload + hidden / FP8_TILE * FP8_SCALE_BYTES
    if dtype == "fp4":
        return payload + hidden / FP4_BLOCK * FP4_SCALE_BYTES
    return payload


def dispatch_bytes_per_pair(model: ModelSpec, precision: Precision) -> float:
    """Bytes one (token, expert) pair sends in the dispatch all-to-all (precision.dispatch)."""
    return token_bytes(model.hidden_size, precision.dispatch)


def combine_bytes_per_pair(model: ModelSpec, precision: Precision) -> float:
    """Bytes one (token, expert) pair returns in the combine all-to-all (precision.combine)."""
    return token_bytes(model.hidden_size, precision.combine)


def expert_weight_bytes(model: ModelSpec, precision: Precision, moe_tp: int = 1) -> float:
    """Bytes of one routed expert's weights on one GPU (split `moe_tp` ways), one layer."""
    return param_counts(model).expert * DTYPE_BYTES[precision.weights] / moe_tp


class MoECoefficients(NamedTuple):
    """Per-MoE-layer routed-expert costs on one GPU, for vectorised (numpy) callers.

    time(pairs, touched) = max(flop_s_per_pair · (pairs + half_pairs · touched),
                               weight_s_per_expert · touched + act_s_per_pair · pairs,
                               floor_s)
    pairs: (token, expert) assignments routed to this GPU; touched: distinct local experts hit;
    floor_s: the grouped GEMMs' and the MoE kernels' (top-k, permute, unpermute) launch floors.
    """

    flop_s_per_pair: float
    half_pairs: float
    weight_s_per_expert: float
    act_s_per_pair: float
    floor_s: float = 0.0


class UniformRouting(NamedTuple):
    """What uniform routing puts on one GPU per MoE layer (StageCostModel.uniform_moe_load)."""

    experts_per_rank: float  # local experts (E / ep, ceil)
    group_factor: float  # tokens entering the EP group per replica token
    keep: float  # P(a token does not pick a given expert) = 1 − k/E
    pairs_per_token: float  # (token, expert) pairs on this GPU per replica token


def moe_coefficients(
    model: ModelSpec,
    hw: HardwareSpec,
    precision: Precision,
    sharding: tuple[int, int, int | None],
    half_pairs: float,
    floor_s: float,
) -> tuple[MoECoefficients, UniformRouting]:
    """Routed experts of one MoE layer on one GPU; `sharding`: (tp, ep, moe_tp) as
    params.expert_sharding takes them.

    Two grouped GEMMs (gate_up, down) stream each touched expert's weights at
    `grouped_gemm_hbm_efficiency`; with the top-k / permute / unpermute kernels of the engine
    they cost at least `floor_s` per layer."""
    c = param_counts(model)
    sh = expert_sharding(model, *sharding)
    if not model.is_moe:
        return MoECoefficients(0.0, 0.0, 0.0, 0.0), UniformRouting(
            sh.experts_per_rank, 0.0, 1.0, 0.0
        )
    wb, rb = DTYPE_BYTES[precision.weights], residual_bytes(precision)
    rate = peak_flops(hw, matmul_dtype(precision)) * hw.matmul_efficiency
    bw = hw.hbm_bandwidth_GBps * 1e9 * hw.grouped_gemm_hbm_efficiency
    expert_rank = c.expert / sh.moe_tp  # params of one local expert shard
    h, inter = model.hidden_size, model.moe_intermediate_size / sh.moe_tp
    coeffs = MoECoefficients(
        flop_s_per_pair=2.0 * expert_rank / rate,
        half_pairs=half_pairs,
        weight_s_per_expert=expert_rank * wb / bw,
        act_s_per_pair=rb * (2.0 * h + 6.0 * inter) / bw,
        floor_s=floor_s,
    )
    k, e = model.experts_per_token, model.num_experts
    routing = UniformRouting(
        sh.experts_per_rank, sh.group_factor, 1.0 - k / e, sh.group_factor * k / sh.ep
    )
    return coeffs, routing


class MoELayerCost:
    """Seconds of routed-expert GEMMs per step from per-(layer, rank) loads (module docstring).

    `coeffs`: one GPU's per-layer coefficients (StageCostModel.moe, which already accounts for
    the dtype and the moe_tp split); `slots_per_rank`: physical experts each EP rank holds.

    Rank speeds (a slow GPU, docs/faults.md): `set_rank_speed` gives each EP rank a compute and
    an HBM factor in (0, 1]; a rank's FLOP term is then divided by its compute factor and its
    memory term by its HBM factor (the kernel floors do not change).
    """

    __slots__ = ("_a", "_compute", "_f", "_floor", "_half", "_hbm", "_w", "slots_per_rank")

    def __init__(self, coeffs: MoECoefficients, slots_per_rank: int) -> None:
        if slots_per_rank < 1:
            raise ValueError(f"slots_per_rank must be >= 1, got {slots_per_rank}")
        self._f = coeffs.flop_s_per_pair
        self._half = coeffs.half_pairs
        self._w = coeffs.weight_s_per_expert
        self._a = coeffs.act_s_per_pair
        self._floor = coeffs.floor_s
        self.slots_per_rank = slots_per_rank
        self._compute: F64 | None = None  # per-rank speed factors; None: all at full speed
        self._hbm: F64 | None = None

    @property
    def slowed(self) -> bool:
        return self._compute is not None

    def set_rank_speed(self, compute: F64, hbm: F64) -> None:
        """Per-rank (compute, HBM) speed factors, (ranks,) each; all ones: full speed."""
        if bool((compute == 1.0).all() and (hbm == 1.0).all()):
            self._compute = self._hbm = None
        else:
            self._compute, self._hbm = compute.astype(np.float64), hbm.astype(np.float64)

    def _terms(self, pairs: F64, tokens: float) -> tuple[F64, F64]:
        """(FLOP seconds, memory seconds) per (layer, rank) at full speed."""
        touched = self.touched(pairs, tokens)
        return (pairs + self._half * touched) * self._f, touched * self._w + pairs * self._a

    def rank_seconds(self, pairs: F64, tokens: float) -> tuple[F64, F64]:
        """(full-speed, actual) expert-GEMM seconds of each rank, Σ over layers, (ranks,)."""
        comp, mem = self._terms(pairs, tokens)
        nominal = np.maximum(comp, mem).sum(axis=0)
        if self._compute is None or self._hbm is None:
            return nominal, nominal
        actual = np.maximum(comp / self._compute, mem / self._hbm).sum(axis=0)
        return nominal, actual

    def touched(self, pairs: F64, tokens: float) -> F64:
        """Expected distinct slots hit per (layer, rank): n · (1 − (1 − pairs/(T·n))^T)."""
        n = float(self.slots_per_rank)
        if tokens <= 0:
            return np.zeros_like(pairs)
        hit = pairs / (tokens * n)  # per-token probability of hitting one slot
        np.clip(hit, 0.0, 1.0 - 1e-15, out=hit)
        # (1 − hit)^T as exp(T · log1p(−hit)): float pow is slow for large exponents
        return n * (1.0 - np.exp(tokens * np.log1p(-hit)))

    def layer_s(self, pairs: F64, tokens: float) -> F64:
        """Seconds of each MoE layer: max over ranks of the rank's GEMM time. `pairs` is
        (layers, ranks), or (steps, layers, ranks); the result drops the ranks axis."""
        comp, mem = self._terms(pairs, tokens)
        if self._compute is not None and self._hbm is not None:
            comp, mem = comp / self._compute, mem / self._hbm
        out: F64 = np.maximum(np.maximum(comp, mem).max(axis=-1), self._floor)
        return out

    def step_s(self, pairs: F64, tokens: float) -> float:
        """Σ over layers of max over ranks (seconds); `pairs` is (layers, ranks)."""
        if tokens <= 0 or pairs.size == 0:
            return 0.0
        return float(self.layer_s(pairs, tokens).sum())

    def steps_s(self, pairs: F64, tokens: float) -> F64:
        """`step_s` of several steps at once, bit for bit: `pairs` is (steps, layers, ranks),
        the result (steps,) seconds (each step's layers summed as one step's are)."""
        if tokens <= 0 or pairs.size == 0:
            return np.zeros(pairs.shape[0])
        out: F64 = self.layer_s(pairs, tokens).sum(axis=1)
        return out
