"""Attention time of one stage's TP shard (docs/cost_model.md §4).

Prefill: FLOPs per causal (query, key) pair at attention_efficiency. Decode: max(FLOPs, KV
bytes) per context token read (KV at decode_attention_efficiency of HBM bandwidth; MLA: the
absorbed FlashMLA-style kernel at mla_decode_efficiency of peak), plus
decode_seq_overhead_us per decoding sequence per layer.
"""

from __future__ import annotations

from typing import NamedTuple

from clustersim.config.schema import DTYPE_BYTES, HardwareSpec, ModelSpec, Precision
from clustersim.model.kernels import attention_dtype, peak_flops
from clustersim.model.params import kv_elements_per_token_per_layer


class AttentionCost(NamedTuple):
    """Seconds of a stage's attention on one GPU, summed over its layers."""

    prefill_s_per_pair: float  # per causal (query, key) pair
    decode_s_per_token: float  # per context token a decoding sequence reads
    decode_s_per_seq: float  # per decoding sequence


def _prefill_s_and_decode_terms(
    model: ModelSpec, hw: HardwareSpec, precision: Precision, tp: int
) -> tuple[float, float, float, float]:
    """One layer on one of `tp` ranks: (prefill FLOPs per pair, their FLOP/s, decode FLOP
    seconds per (query, context token), decode KV-read seconds per context token)."""
    heads = model.num_attention_heads / tp
    peak = peak_flops(hw, attention_dtype(precision))
    rate = peak * hw.attention_efficiency
    kv_eff = hw.decode_attention_efficiency or hw.hbm_efficiency
    bw = hw.hbm_bandwidth_GBps * 1e9 * kv_eff  # bytes/s of the decode KV read
    kv_bytes = kv_elements_per_token_per_layer(model, tp) * DTYPE_BYTES[precision.kv_cache]
    if model.uses_mla:
        qk = model.qk_nope_head_dim + model.qk_rope_head_dim
        pf_flops = 2.0 * heads * (qk + model.v_head_dim)  # non-absorbed (MHA) prefill
        # absorbed decode: scores over (kv_lora + rope), values over kv_lora
        latent = model.kv_lora_rank + model.qk_rope_head_dim
        dec_flops = 2.0 * heads * (latent + model.kv_lora_rank)
        dec_rate = peak * hw.mla_decode_efficiency
    else:
        pf_flops = 4.0 * heads * model.head_dim  # QKᵀ and PV, 2 FLOPs per MAC
        dec_flops = pf_flops
        dec_rate = rate
    return pf_flops, rate, dec_flops / dec_rate, kv_bytes / bw


def decode_terms(
    model: ModelSpec, hw: HardwareSpec, precision: Precision, tp: int
) -> tuple[float, float]:
    """Decode attention of one layer on one of `tp` ranks: (FLOP seconds per query token per
    context token, KV-read seconds per context token read once per sequence)."""
    _, _, flop_s, read_s = _prefill_s_and_decode_terms(model, hw, precision, tp)
    return flop_s, read_s


def attention_cost(
    model: ModelSpec, hw: HardwareSpec, precision: Precision, tp: int, layers: int
) -> AttentionCost:
    """The attention coefficients of `layers` layers on one of `tp` ranks."""
    pf_flops, rate, flop_s, read_s = _prefill_s_and_decode_terms(model, hw, precision, tp)
    n = layers
    return AttentionCost(
        n * pf_flops / rate,
        n * max(flop_s, read_s),
        n * hw.decode_seq_overhead_us * 1e-6,
    )


def causal_pairs(chunk_tokens: int, offset: int) -> float:
    """(query, key) pairs of a causal prefill chunk of `chunk_tokens` after `offset` tokens."""
    return chunk_tokens * offset + chunk_tokens * (chunk_tokens + 1) / 2.0
