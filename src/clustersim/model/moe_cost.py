"""Routed-expert cost of MoE layers from sampled per-rank loads, and EP traffic sizes.

`StageCostModel` (cost.py) prices the routed experts analytically for uniform routing; this
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
— exact for uniform routing (ep = 1: E · (1 − (1 − k/E)^T), as cost.py), an upper bound when
a rank's load is skewed over its slots (by concavity).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from clustersim.config.schema import DTYPE_BYTES, ModelSpec, Precision
from clustersim.model.cost import MoECoefficients
from clustersim.model.params import param_counts

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


class MoELayerCost:
    """Seconds of routed-expert GEMMs per step from per-(layer, rank) loads (module docstring).

    `coeffs`: one GPU's per-layer coefficients (StageCostModel.moe, which already accounts for
    the dtype and the moe_tp split); `slots_per_rank`: physical experts each EP rank holds.
    """

    __slots__ = ("_a", "_f", "_floor", "_half", "_w", "slots_per_rank")

    def __init__(self, coeffs: MoECoefficients, slots_per_rank: int) -> None:
        if slots_per_rank < 1:
            raise ValueError(f"slots_per_rank must be >= 1, got {slots_per_rank}")
        self._f = coeffs.flop_s_per_pair
        self._half = coeffs.half_pairs
        self._w = coeffs.weight_s_per_expert
        self._a = coeffs.act_s_per_pair
        self._floor = coeffs.floor_s
        self.slots_per_rank = slots_per_rank

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
        """Seconds of each MoE layer: max over ranks of the rank's GEMM time (shape: layers)."""
        touched = self.touched(pairs, tokens)
        comp = (pairs + self._half * touched) * self._f
        mem = touched * self._w + pairs * self._a
        out: F64 = np.maximum(np.maximum(comp, mem).max(axis=1), self._floor)
        return out

    def step_s(self, pairs: F64, tokens: float) -> float:
        """Σ over layers of max over ranks (seconds); `pairs` is (layers, ranks)."""
        if tokens <= 0 or pairs.size == 0:
            return 0.0
        return float(self.layer_s(pairs, tokens).sum())
