"""Parameter counts, weight bytes and KV-cache bytes of a ModelSpec (MLA- and MoE-aware).

Counting rules (no biases; Qwen's q/k norms and DeepSeek's router bias are ignored, < 0.01 %):
- GQA attention: q (h × H·d), k and v (h × KV·d each), o (H·d × h).
- MLA attention (DeepSeek): q_a (h × q_lora) + q_b (q_lora × H·(nope+rope)) — or a single
  h × H·(nope+rope) when q_lora_rank is 0 — kv_a (h × (kv_lora + rope)),
  kv_b (kv_lora × H·(nope + v)), o (H·v × h), plus q_a / kv_a layer norms.
- Dense MLP: gated, 3 matrices of h × intermediate.
- MoE layer: E routed + S shared experts of 3 × h × moe_intermediate, router h × E.
- RMSNorms: 2 × h per layer, h for the final norm. Embedding V × h; LM head V × h unless tied.

Bytes: linear weights use `precision.weights`; embeddings, LM head, norms and router stay
16-bit (FP8 / FP4 checkpoints such as ModelOpt's and DeepSeek's leave them unquantised).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from clustersim.config.schema import DTYPE_BYTES, ModelSpec, Precision

HIGH_PRECISION_BYTES = 2.0  # embeddings, LM head, norms, router: bf16 in every checkpoint
RESIDUAL_BYTES_MIN = 2.0  # the residual stream stays 16-bit even with fp8 / fp4 GEMM inputs


def residual_bytes(precision: Precision) -> float:
    """Bytes per element of hidden states between layers (TP all-reduce, PP handoff): the
    activation dtype, but at least 16 bit — fp8 / fp4 activations are quantised only at GEMM
    inputs (TensorRT-LLM, vLLM and SGLang all-reduce and hand off bf16 hidden states)."""
    return max(DTYPE_BYTES[precision.activations], RESIDUAL_BYTES_MIN)


@dataclass(frozen=True)
class AttentionParams:
    """One layer's attention parameters, split by how tensor parallelism treats them."""

    sharded: int  # split over TP ranks (q / q_b, kv_b, o)
    kv_proj: int  # GQA k and v projections: split by KV head, replicated when tp > KV heads
    replicated: int  # MLA down projections q_a, kv_a: a full copy on every TP rank
    norms: int  # MLA q_a / kv_a layer norms (replicated, 16-bit)

    @property
    def total(self) -> int:
        return self.sharded + self.kv_proj + self.replicated + self.norms

    def linear_per_rank(self, model: ModelSpec, tp: int) -> float:
        """Linear (matmul) parameters held by one of `tp` ranks."""
        kv_share = kv_heads_per_rank(model, tp) / model.num_kv_heads
        return self.sharded / tp + self.kv_proj * kv_share + self.replicated


@dataclass(frozen=True)
class ParamCounts:
    """Parameter counts of a model, by component (elements, not bytes)."""

    attention: AttentionParams  # per layer (every layer has attention)
    dense_mlp: int  # per dense layer: 3 × h × intermediate
    expert: int  # one routed or shared expert: 3 × h × moe_intermediate
    router: int  # per MoE layer: h × E
    layer_norms: int  # per layer: 2 × h
    embedding: int  # V × h
    lm_head: int  # V × h, 0 when tied to the embedding
    final_norm: int  # h
    num_dense_layers: int
    num_moe_layers: int
    num_experts: int
    experts_per_token: int
    num_shared_experts: int

    @property
    def per_dense_layer(self) -> int:
        return self.attention.total + self.dense_mlp + self.layer_norms

    @property
    def per_moe_layer(self) -> int:
        experts = (self.num_experts + self.num_shared_experts) * self.expert
        return self.attention.total + experts + self.router + self.layer_norms

    @property
    def per_moe_layer_active(self) -> int:
        experts = (self.experts_per_token + self.num_shared_experts) * self.expert
        return self.attention.total + experts + self.router + self.layer_norms

    @property
    def embeddings(self) -> int:
        return self.embedding + self.lm_head + self.final_norm

    @property
    def total(self) -> int:
        return (
            self.num_dense_layers * self.per_dense_layer
            + self.num_moe_layers * self.per_moe_layer
            + self.embeddings
        )

    @property
    def active(self) -> int:
        """Parameters touched per token (routed experts: top-k only), embeddings included."""
        return (
            self.num_dense_layers * self.per_dense_layer
            + self.num_moe_layers * self.per_moe_layer_active
            + self.embeddings
        )


def attention_params(model: ModelSpec) -> AttentionParams:
    """One layer's attention parameters (see module docstring for the shapes)."""
    h, heads = model.hidden_size, model.num_attention_heads
    if not model.uses_mla:
        q_o = 2 * h * heads * model.head_dim
        kv = 2 * h * model.num_kv_heads * model.head_dim
        return AttentionParams(sharded=q_o, kv_proj=kv, replicated=0, norms=0)
    qk = model.qk_nope_head_dim + model.qk_rope_head_dim
    kv_a = h * (model.kv_lora_rank + model.qk_rope_head_dim)
    kv_b = model.kv_lora_rank * heads * (model.qk_nope_head_dim + model.v_head_dim)
    o = heads * model.v_head_dim * h
    if model.q_lora_rank > 0:
        q_a, q_b = h * model.q_lora_rank, model.q_lora_rank * heads * qk
    else:
        q_a, q_b = 0, h * heads * qk
    return AttentionParams(
        sharded=q_b + kv_b + o,
        kv_proj=0,
        replicated=q_a + kv_a,
        norms=model.q_lora_rank + model.kv_lora_rank,
    )


def param_counts(model: ModelSpec) -> ParamCounts:
    """All parameter counts of `model`."""
    h = model.hidden_size
    n_moe = model.num_moe_layers
    return ParamCounts(
        attention=attention_params(model),
        dense_mlp=3 * h * model.intermediate_size,
        expert=3 * h * model.moe_intermediate_size if model.is_moe else 0,
        router=h * model.num_experts,
        layer_norms=2 * h,
        embedding=model.vocab_size * h,
        lm_head=0 if model.tie_word_embeddings else model.vocab_size * h,
        final_norm=h,
        num_dense_layers=model.num_layers - n_moe,
        num_moe_layers=n_moe,
        num_experts=model.num_experts,
        experts_per_token=model.experts_per_token,
        num_shared_experts=model.num_shared_experts,
    )


def total_params(model: ModelSpec) -> int:
    return param_counts(model).total


def active_params(model: ModelSpec) -> int:
    """Parameters used per token (dense: all of them)."""
    return param_counts(model).active


def weight_bytes(model: ModelSpec, precision: Precision) -> float:
    """Bytes of the whole model's weights: linear layers at `precision.weights`, embeddings,
    LM head, norms and routers at 16 bit."""
    c = param_counts(model)
    wb = DTYPE_BYTES[precision.weights]
    a = c.attention
    attn_linear = a.sharded + a.kv_proj + a.replicated
    linear = (
        model.num_layers * attn_linear
        + c.num_dense_layers * c.dense_mlp
        + c.num_moe_layers * (c.num_experts + c.num_shared_experts) * c.expert
    )
    high = model.num_layers * (a.norms + c.layer_norms) + c.num_moe_layers * c.router + c.embeddings
    return linear * wb + high * HIGH_PRECISION_BYTES


def kv_heads_per_rank(model: ModelSpec, tp: int) -> int:
    """KV heads one TP rank holds: KV / tp, at least one (replicated when tp > KV)."""
    return max(1, math.ceil(model.num_kv_heads / tp))


def kv_elements_per_token_per_layer(model: ModelSpec, tp: int = 1) -> int:
    """KV-cache elements one token adds to one layer on one TP rank.

    MLA: the latent (kv_lora_rank + qk_rope_head_dim), not sharded by TP — every rank holds
    the full latent, as vLLM and SGLang do. GQA: 2 × (KV heads on the rank) × head_dim.
    """
    if model.uses_mla:
        return model.kv_lora_rank + model.qk_rope_head_dim
    return 2 * kv_heads_per_rank(model, tp) * model.head_dim


def kv_bytes_per_token(model: ModelSpec, precision: Precision) -> float:
    """KV-cache bytes per token for the whole model (all layers, unsharded)."""
    per_layer = kv_elements_per_token_per_layer(model, tp=1)
    return per_layer * model.num_layers * DTYPE_BYTES[precision.kv_cache]


@dataclass(frozen=True)
class ExpertSharding:
    """How one MoE layer's routed experts are spread over GPUs.

    - ep == 1: every GPU of the TP group holds all experts, each split `tp` ways.
    - ep > 1: experts are split over `ep` ranks (ceil(E / ep) each), each expert split
      `moe_tp` ways (TensorRT-LLM's moe_tp × moe_ep == tp; vLLM / SGLang EP: moe_tp = 1).
    `group_factor` = replicas (DP attention ranks) whose tokens feed one EP group:
    ep × moe_tp / tp, at least 1 — vLLM / SGLang EP spans the DP replicas (EP = TP × DP),
    TensorRT-LLM's EP lives inside one TP group.
    """

    experts_per_rank: float  # E / ep (ceil)
    moe_tp: int  # ways each expert's matrices are split
    group_factor: float  # tokens entering the EP group = replica tokens × group_factor
    ep: int


def expert_sharding(
    model: ModelSpec, tp: int, ep: int = 1, moe_tp: int | None = None
) -> ExpertSharding:
    """Expert placement for a TP group of `tp`, an EP group of `ep` (see ExpertSharding)."""
    if not model.is_moe or ep <= 1:
        mtp = moe_tp if moe_tp is not None else tp
        return ExpertSharding(float(model.num_experts), mtp, 1.0, 1)
    mtp = moe_tp if moe_tp is not None else 1
    per_rank = float(math.ceil(model.num_experts / ep))
    return ExpertSharding(per_rank, mtp, max(1.0, ep * mtp / tp), ep)
