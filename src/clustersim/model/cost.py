"""Roofline step-time model of one pipeline stage's TP shard (docs/cost_model.md).

Step time (seconds) = Σ over operator groups of max(compute time, memory time) + overhead:

    linear      attention projections, dense MLPs, shared experts, router (all the stage's layers),
                plus the elementwise kernels between them (norms, residual adds, rope, SiLU,
                KV write): memory-bound, added after the GEMMs' max, never hidden under it
    attn_pf     prefill attention:  FLOPs ∝ (query, key) pairs, at attention_efficiency
    attn_dec    decode attention:   KV bytes read ∝ Σ context (at decode_attention_efficiency
                of HBM bandwidth), and its FLOPs; plus decode_seq_overhead_us per decoding
                sequence per layer
    moe         routed experts of each MoE layer (weights read only for touched experts)
    embed       first stage: embedding gather
    lm_head     last stage: logits for the rows that emit a token
    overhead    hw.step_overhead_us, once per step

Compute time = FLOPs / (peak(dtype) · eff(M)); memory time = bytes / (HBM bw · hbm_efficiency).
Matmul efficiency falls for small GEMMs: eff(M) = matmul_efficiency · M / (M + M_half), M the
rows of the GEMM (tokens; routed pairs per expert for MoE). Written out, a linear group's
compute time is (M + M_half) · 2·params / (peak · matmul_efficiency): every GEMM costs M_half
extra token-rows. Efficiencies ≤ 1 keep every term above the ideal roofline at peak.

`compute_s` is on the simulator's hot path: all coefficients are precomputed in __init__ and
a call is a few dozen float operations, no allocation.
"""

from __future__ import annotations

from typing import NamedTuple

from clustersim.config.schema import DTYPE_BYTES, DType, HardwareSpec, ModelSpec, Precision
from clustersim.model.params import (
    HIGH_PRECISION_BYTES,
    expert_sharding,
    kv_elements_per_token_per_layer,
    kv_heads_per_rank,
    param_counts,
    residual_bytes,
)

DEFAULT_MATMUL_HALF_TOKENS = 16.0  # GEMM rows at which matmul efficiency is half its maximum,
# HardwareSpec's default; Hopper profiles carry their own (docs/calibration.md)
LOGITS_BYTES = 4.0  # fp32 logits written by the LM head
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


class MoECoefficients(NamedTuple):
    """Per-MoE-layer routed-expert costs on one GPU, for vectorised (numpy) callers.

    time(pairs, touched) = max(flop_s_per_pair · (pairs + half_pairs · touched),
                               weight_s_per_expert · touched + act_s_per_pair · pairs)
    pairs: (token, expert) assignments routed to this GPU; touched: distinct local experts hit.
    """

    flop_s_per_pair: float
    half_pairs: float
    weight_s_per_expert: float
    act_s_per_pair: float


class StageCostModel:
    """Step time of one pipeline stage's TP shard (one GPU; all TP ranks are symmetric).

    model, hw, precision: what runs where; tp: TP degree; num_layers: the stage's layers;
    first_stage / last_stage: whether it holds the embedding / LM head.
    Keyword-only: ep, moe_tp: expert sharding (see params.expert_sharding); first_layer: the
    stage's first layer index (None: 0 on the first stage, otherwise the stage is taken to hold
    none of the leading dense layers); matmul_half_tokens: M_half of the efficiency curve
    (None: the hardware profile's `matmul_half_tokens`).
    """

    __slots__ = (
        "_attn_dec_s",
        "_attn_pf_s",
        "_attn_seq_s",
        "_elt_s",
        "_emb_s",
        "_lin_act_s",
        "_lin_flop_s",
        "_lin_w_s",
        "_lm",
        "_lm_act_s",
        "_lm_flop_s",
        "_lm_w_s",
        "_m_half",
        "_moe_a",
        "_moe_f",
        "_moe_group",
        "_moe_keep",
        "_moe_pairs_per_tok",
        "_moe_w",
        "_n_moe",
        "_overhead_s",
        "_residual_bytes",
        "allreduces_per_step",
        "experts_per_rank",
        "first_stage",
        "hidden_size",
        "last_stage",
        "moe",
        "num_dense_layers",
        "num_layers",
        "num_moe_layers",
        "tp",
    )

    def __init__(
        self,
        model: ModelSpec,
        hw: HardwareSpec,
        precision: Precision,
        tp: int,
        num_layers: int,
        first_stage: bool,
        last_stage: bool,
        *,
        ep: int = 1,
        moe_tp: int | None = None,
        first_layer: int | None = None,
        matmul_half_tokens: float | None = None,
    ) -> None:
        start = (
            first_layer
            if first_layer is not None
            else (0 if first_stage else model.first_dense_layers)
        )
        if tp < 1 or num_layers < 1 or start < 0 or start + num_layers > model.num_layers:
            raise ValueError(
                f"bad stage: tp={tp}, layers {start}..{start + num_layers - 1}"
                f" of {model.num_layers}"
            )
        if matmul_half_tokens is None:
            matmul_half_tokens = hw.matmul_half_tokens
        if matmul_half_tokens < 0:
            raise ValueError("matmul_half_tokens must be ≥ 0")
        n_dense = num_layers
        if model.is_moe:
            n_dense = max(0, min(start + num_layers, model.first_dense_layers) - start)
        self.tp, self.num_layers = tp, num_layers
        self.first_stage, self.last_stage = first_stage, last_stage
        self.num_dense_layers, self.num_moe_layers = n_dense, num_layers - n_dense
        self.hidden_size = model.hidden_size
        self._residual_bytes = residual_bytes(precision)
        self.allreduces_per_step = 2 * num_layers if tp > 1 else 0
        self._m_half = float(matmul_half_tokens)
        self._overhead_s = hw.step_overhead_us * 1e-6
        self._init_linear(model, hw, precision)
        self._init_attention(model, hw, precision)
        self._init_moe(model, hw, precision, ep, moe_tp)
        self._init_ends(model, hw, precision)

    # ------------------------------------------------------------------ coefficients

    def _init_linear(self, model: ModelSpec, hw: HardwareSpec, precision: Precision) -> None:
        """Attention projections + dense MLP + shared experts + router, all stage layers."""
        c, tp = param_counts(model), self.tp
        wb, rb = DTYPE_BYTES[precision.weights], self._residual_bytes
        flops_rate = peak_flops(hw, matmul_dtype(precision)) * hw.matmul_efficiency  # FLOP/s
        bw = hw.hbm_bandwidth_GBps * 1e9 * hw.hbm_efficiency  # bytes/s
        n, nd, nm = self.num_layers, self.num_dense_layers, self.num_moe_layers
        attn = c.attention.linear_per_rank(model, tp)
        shared = c.num_shared_experts * c.expert / tp
        params = n * attn + nd * c.dense_mlp / tp + nm * (shared + c.router)
        w_bytes = (n * attn + nd * c.dense_mlp / tp + nm * shared) * wb
        w_bytes += nm * c.router * HIGH_PRECISION_BYTES
        h, heads = model.hidden_size, model.num_attention_heads
        if model.uses_mla:
            qk = model.qk_nope_head_dim + model.qk_rope_head_dim
            proj_out = heads / tp * (qk + model.v_head_dim) + model.kv_lora_rank
            attn_out = heads / tp * model.v_head_dim
        else:
            proj_out = (heads / tp + 2 * kv_heads_per_rank(model, tp)) * model.head_dim
            attn_out = heads / tp * model.head_dim
        kv_write = kv_elements_per_token_per_layer(model, tp) * DTYPE_BYTES[precision.kv_cache]
        ffn = nd * model.intermediate_size / tp  # Σ layers of this rank's FFN width
        ffn += nm * c.num_shared_experts * model.moe_intermediate_size / tp
        # Bytes per token. GEMM operands (read by the GEMM kernels, inside their roofline):
        # qkv h → proj_out, o attn_out → h, gate_up h → 2·I, down I → h.
        gemm_io = rb * (n * (2.0 * h + proj_out + attn_out) + nd * 2.0 * h + 3.0 * ffn)
        # Elementwise kernels (memory-bound, they run between the GEMMs and overlap nothing):
        # two norms (read + write h) and two residual adds (read 2h, write h) = 10 h, rope on
        # q / k ≈ proj_out, SiLU·mul (read 2·I, write I), and the new token's KV write.
        elementwise = n * (rb * (10.0 * h + proj_out) + kv_write) + rb * 3.0 * ffn
        self._lin_flop_s = 2.0 * params / flops_rate  # s per token-row
        self._lin_w_s = w_bytes / bw  # s per step
        self._lin_act_s = gemm_io / bw  # s per token, inside the GEMMs' max(compute, memory)
        self._elt_s = elementwise / bw  # s per token, added

    def _init_attention(self, model: ModelSpec, hw: HardwareSpec, precision: Precision) -> None:
        """Prefill: FLOPs per (query, key) pair. Decode: max(FLOPs, KV bytes) per context token."""
        heads = model.num_attention_heads / self.tp
        rate = peak_flops(hw, attention_dtype(precision)) * hw.attention_efficiency
        kv_eff = hw.decode_attention_efficiency or hw.hbm_efficiency
        bw = hw.hbm_bandwidth_GBps * 1e9 * kv_eff  # bytes/s of the decode KV read
        kv_bytes = kv_elements_per_token_per_layer(model, self.tp) * DTYPE_BYTES[precision.kv_cache]
        if model.uses_mla:
            qk = model.qk_nope_head_dim + model.qk_rope_head_dim
            pf_flops = 2.0 * heads * (qk + model.v_head_dim)  # non-absorbed (MHA) prefill
            # absorbed decode: scores over (kv_lora + rope), values over kv_lora
            latent = model.kv_lora_rank + model.qk_rope_head_dim
            dec_flops = 2.0 * heads * (latent + model.kv_lora_rank)
        else:
            pf_flops = 4.0 * heads * model.head_dim  # QKᵀ and PV, 2 FLOPs per MAC
            dec_flops = pf_flops
        n = self.num_layers
        self._attn_pf_s = n * pf_flops / rate  # s per (query, key) pair
        self._attn_dec_s = n * max(dec_flops / rate, kv_bytes / bw)  # s per context token
        self._attn_seq_s = n * hw.decode_seq_overhead_us * 1e-6  # s per decoding sequence

    def _init_moe(
        self, model: ModelSpec, hw: HardwareSpec, precision: Precision, ep: int, moe_tp: int | None
    ) -> None:
        """Routed experts of one MoE layer (uniform routing in compute_s; see moe_layer_s)."""
        c = param_counts(model)
        sh = expert_sharding(model, self.tp, ep, moe_tp)
        self._n_moe = float(self.num_moe_layers)
        self.experts_per_rank = sh.experts_per_rank
        if not model.is_moe:
            self.moe = MoECoefficients(0.0, 0.0, 0.0, 0.0)
            self._moe_group, self._moe_keep, self._moe_pairs_per_tok = 0.0, 1.0, 0.0
            self._moe_f = self._moe_w = self._moe_a = 0.0
            return
        wb, rb = DTYPE_BYTES[precision.weights], self._residual_bytes
        rate = peak_flops(hw, matmul_dtype(precision)) * hw.matmul_efficiency
        bw = hw.hbm_bandwidth_GBps * 1e9 * hw.hbm_efficiency
        expert_rank = c.expert / sh.moe_tp  # params of one local expert shard
        h, inter = model.hidden_size, model.moe_intermediate_size / sh.moe_tp
        self.moe = MoECoefficients(
            flop_s_per_pair=2.0 * expert_rank / rate,
            half_pairs=self._m_half,
            weight_s_per_expert=expert_rank * wb / bw,
            act_s_per_pair=rb * (2.0 * h + 6.0 * inter) / bw,
        )
        self._moe_f, self._moe_w, self._moe_a = (
            self.moe.flop_s_per_pair,
            self.moe.weight_s_per_expert,
            self.moe.act_s_per_pair,
        )
        k, e = model.experts_per_token, model.num_experts
        self._moe_group = sh.group_factor  # tokens entering the EP group per replica token
        self._moe_keep = 1.0 - k / e  # P(a token does not pick a given expert)
        self._moe_pairs_per_tok = sh.group_factor * k / sh.ep  # pairs on this GPU per token

    def _init_ends(self, model: ModelSpec, hw: HardwareSpec, precision: Precision) -> None:
        """Embedding gather (first stage) and LM head (last stage), 16-bit weights."""
        h, v, tp, rb = model.hidden_size, model.vocab_size, self.tp, self._residual_bytes
        bw = hw.hbm_bandwidth_GBps * 1e9 * hw.hbm_efficiency
        self._emb_s = h * (HIGH_PRECISION_BYTES + rb) / bw if self.first_stage else 0.0
        self._lm = self.last_stage
        lm_dtype = wider("bf16", precision.activations)
        rate = peak_flops(hw, lm_dtype) * hw.matmul_efficiency
        lm_params = v * h / tp
        self._lm_flop_s = 2.0 * lm_params / rate
        self._lm_w_s = lm_params * HIGH_PRECISION_BYTES / bw
        self._lm_act_s = (h * rb + v / tp * LOGITS_BYTES) / bw

    # ------------------------------------------------------------------ hot path

    def compute_s(
        self,
        prefill_tokens: int,
        prefill_attn_pairs: float,
        decode_tokens: int,
        decode_ctx_tokens: int,
        prefill_seqs: int = 1,
    ) -> float:
        """Seconds of one engine step on this stage (see module docstring).

        prefill_attn_pairs: Σ over prefill chunks of (query, key) pairs (chunk of L tokens at
        offset c: L·c + L(L+1)/2); decode_ctx_tokens: Σ context lengths of decode sequences;
        prefill_seqs: prefill chunks in the step (LM-head rows = decode_tokens + prefill_seqs).
        """
        t = prefill_tokens + decode_tokens
        if t <= 0:
            return self._overhead_s
        mh = self._m_half
        comp = (t + mh) * self._lin_flop_s
        mem = self._lin_w_s + t * self._lin_act_s
        s = self._overhead_s + (comp if comp > mem else mem) + t * self._elt_s
        s += prefill_attn_pairs * self._attn_pf_s + decode_ctx_tokens * self._attn_dec_s
        s += decode_tokens * self._attn_seq_s
        s += t * self._emb_s
        if self._n_moe:
            g = t * self._moe_group
            touched = self.experts_per_rank * (1.0 - self._moe_keep**g)
            pairs = t * self._moe_pairs_per_tok
            comp = (pairs + mh * touched) * self._moe_f
            mem = touched * self._moe_w + pairs * self._moe_a
            s += self._n_moe * (comp if comp > mem else mem)
        if self._lm:
            rows = decode_tokens + (prefill_seqs if prefill_tokens > 0 else 0)
            comp = (rows + mh) * self._lm_flop_s
            mem = self._lm_w_s + rows * self._lm_act_s
            s += comp if comp > mem else mem
        return s

    # ------------------------------------------------------------------ MoE hooks

    def uniform_moe_load(self, tokens: float) -> tuple[float, float]:
        """(pairs, touched experts) on this GPU per MoE layer when `tokens` replica tokens are
        routed uniformly: touched = E_local · (1 − (1 − k/E)^G), G the EP group's tokens."""
        if not self._n_moe:
            return 0.0, 0.0
        touched = self.experts_per_rank * (1.0 - self._moe_keep ** (tokens * self._moe_group))
        return tokens * self._moe_pairs_per_tok, touched

    def moe_layer_s(self, pairs: float, touched_experts: float) -> float:
        """Seconds of one MoE layer's routed experts on a GPU given its routed (token, expert)
        pairs and distinct local experts touched — the hook for sampled per-rank loads: the
        step waits for the slowest rank, Σ over layers of max over ranks of this."""
        m = self.moe
        comp = (pairs + m.half_pairs * touched_experts) * m.flop_s_per_pair
        mem = touched_experts * m.weight_s_per_expert + pairs * m.act_s_per_pair
        return comp if comp > mem else mem

    def dense_part_s(
        self,
        prefill_tokens: int,
        prefill_attn_pairs: float,
        decode_tokens: int,
        decode_ctx_tokens: int,
        prefill_seqs: int = 1,
    ) -> float:
        """compute_s without the routed experts (add Σ_layers max_ranks moe_layer_s)."""
        full = self.compute_s(
            prefill_tokens, prefill_attn_pairs, decode_tokens, decode_ctx_tokens, prefill_seqs
        )
        if not self._n_moe:
            return full
        t = prefill_tokens + decode_tokens
        return full - self._n_moe * self.moe_layer_s(*self.uniform_moe_load(t))

    # ------------------------------------------------------------------ CP hook

    def prefill_attention_s(self, prefill_attn_pairs: float) -> float:
        """The prefill-attention part of compute_s (seconds) for `prefill_attn_pairs`
        (query, key) pairs on this GPU — what ring attention can overlap with its KV exchange
        (model/cp_cost.py)."""
        return prefill_attn_pairs * self._attn_pf_s

    # ------------------------------------------------------------------ communication sizes

    def allreduce_bytes(self, tokens: int) -> float:
        """Bytes of one TP all-reduce message (the hidden states of `tokens` tokens)."""
        return tokens * self.hidden_size * self._residual_bytes

    def handoff_bytes(self, tokens: int) -> float:
        """Bytes sent to the next pipeline stage for `tokens` tokens."""
        return tokens * self.hidden_size * self._residual_bytes

    # ------------------------------------------------------------------ inspection

    def breakdown(
        self,
        prefill_tokens: int,
        prefill_attn_pairs: float,
        decode_tokens: int,
        decode_ctx_tokens: int,
        prefill_seqs: int = 1,
    ) -> dict[str, float]:
        """Seconds per operator group (same model as compute_s; not for the hot path)."""
        t = prefill_tokens + decode_tokens
        out = dict.fromkeys(
            ("linear", "attn_prefill", "attn_decode", "moe", "embed", "lm_head"), 0.0
        )
        out["overhead"] = self._overhead_s
        if t > 0:
            mh = self._m_half
            out["linear"] = (
                max((t + mh) * self._lin_flop_s, self._lin_w_s + t * self._lin_act_s)
                + t * self._elt_s
            )
            out["attn_prefill"] = prefill_attn_pairs * self._attn_pf_s
            out["attn_decode"] = (
                decode_ctx_tokens * self._attn_dec_s + decode_tokens * self._attn_seq_s
            )
            out["embed"] = t * self._emb_s
            if self._n_moe:
                out["moe"] = self._n_moe * self.moe_layer_s(*self.uniform_moe_load(t))
            if self._lm:
                rows = decode_tokens + (prefill_seqs if prefill_tokens > 0 else 0)
                out["lm_head"] = max(
                    (rows + mh) * self._lm_flop_s, self._lm_w_s + rows * self._lm_act_s
                )
        out["total"] = sum(out.values())
        return out


def causal_pairs(chunk_tokens: int, offset: int) -> float:
    """(query, key) pairs of a causal prefill chunk of `chunk_tokens` after `offset` tokens."""
    return chunk_tokens * offset + chunk_tokens * (chunk_tokens + 1) / 2.0
