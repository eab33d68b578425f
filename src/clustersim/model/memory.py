"""Per-GPU memory plan of a layout: weights + activation workspace + KV cache, and the fit check.

Budget per GPU (bytes):
    usable = memory_GiB · 2**30 · gpu_memory_utilization − reserved_memory_GiB · 2**30
    kv     = usable − weights(stage) − activations(stage)
or, with serving.kv_cache_free_memory_fraction = f set (TensorRT-LLM's rule: a share of the
memory still free once the model is loaded):
    usable = memory_GiB · 2**30 − reserved_memory_GiB · 2**30
    kv     = f · (usable − weights(stage) − activations(stage))
Every pipeline stage is checked; the replica's KV capacity in tokens is the minimum over
stages of kv(stage) / KV bytes per token on that stage's GPUs, times cp (with context
parallelism a token's KV lives on exactly one CP rank).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from clustersim.config.schema import (
    DTYPE_BYTES,
    HardwareSpec,
    Layout,
    ModelSpec,
    Precision,
    ServingSpec,
    SpeculativeSpec,
)
from clustersim.model.params import (
    HIGH_PRECISION_BYTES,
    expert_sharding,
    kv_elements_per_token_per_layer,
    kv_heads_per_rank,
    param_counts,
    residual_bytes,
)

GIB = float(2**30)
LOGITS_BYTES = 4.0  # fp32 logits
LOGITS_COPIES = 2.0  # logits + softmax / sampling workspace


def stage_layer_counts(num_layers: int, pp: int) -> list[int]:
    """Layers per pipeline stage, as vLLM splits them: L // pp each, the remainder added one
    by one to the stages before the last (which also carries the LM head), from the back."""
    if pp <= 0 or pp > num_layers:
        raise ValueError(f"pp must be in 1..{num_layers} (num_layers), got {pp}")
    counts = [num_layers // pp] * pp
    for i in range(2, num_layers % pp + 2):
        counts[-i] += 1
    return counts


def stage_layer_ranges(num_layers: int, pp: int) -> list[range]:
    """Layer indices of each pipeline stage (consecutive, covering 0..num_layers-1)."""
    out: list[range] = []
    start = 0
    for n in stage_layer_counts(num_layers, pp):
        out.append(range(start, start + n))
        start += n
    return out


def dense_layers_in(model: ModelSpec, layers: range) -> int:
    """How many of `layers` are dense (all of them for a dense model)."""
    if not model.is_moe:
        return len(layers)
    return max(0, min(layers.stop, model.first_dense_layers) - layers.start)


@dataclass(frozen=True)
class StageMemory:
    """One pipeline stage, per GPU (bytes; tokens)."""

    stage: int
    layers: int
    weights_bytes: float
    activation_bytes: float
    kv_bytes: float  # usable − weights − activations (× the free fraction when set; negative
    # when it does not fit)
    kv_bytes_per_token: float  # this stage's layers, one GPU's share
    kv_tokens: int  # floor(kv_bytes / kv_bytes_per_token), ≥ 0


@dataclass(frozen=True)
class MemoryPlan:
    """Memory of one replica's GPUs (the worst stage where a single number is given)."""

    weights_per_gpu_bytes: float  # largest stage
    activation_per_gpu_bytes: float  # largest stage
    kv_per_gpu_bytes: float  # smallest stage (may be negative when nothing is left)
    kv_tokens_per_replica: int  # min over stages of kv tokens, × cp
    kv_blocks_per_replica: int  # kv_tokens_per_replica // block_size
    fits: bool  # weights + activations fit on every stage and ≥ 1 KV block remains
    reason: str  # one line with the numbers in GiB when not fits, else ""
    usable_per_gpu_bytes: float  # memory × utilisation (1 with a free fraction) − reserved
    max_model_len: int  # serving.max_model_len or the model's max_context
    max_model_len_fits: bool  # one max_model_len sequence fits in the replica's KV cache
    stages: tuple[StageMemory, ...]


def stage_weight_bytes(
    model: ModelSpec,
    precision: Precision,
    layers: range,
    tp: int,
    first_stage: bool,
    last_stage: bool,
    ep: int = 1,
    moe_tp: int | None = None,
    redundant_experts: int = 0,
) -> float:
    """Weight bytes on one GPU of a stage holding `layers`, TP degree `tp`.

    Attention and dense MLP are split `tp` ways (KV projections per KV head, replicated when
    tp > KV heads; MLA down projections replicated); routed experts follow `expert_sharding`;
    shared experts are TP-split; the embedding (first stage) and LM head (last stage) are
    vocab-parallel over `tp`. A tied LM head costs nothing extra unless it sits on another stage.
    With ep > 1, `redundant_experts` (EPLB) add slots: ceil((E + R) / ep) experts per GPU.
    """
    c = param_counts(model)
    wb = DTYPE_BYTES[precision.weights]
    hb = HIGH_PRECISION_BYTES
    n = len(layers)
    n_dense = dense_layers_in(model, layers)
    n_moe = n - n_dense
    sh = expert_sharding(model, tp, ep, moe_tp)
    per_layer = (
        c.attention.linear_per_rank(model, tp) * wb + (c.attention.norms + c.layer_norms) * hb
    )
    total = n * per_layer + n_dense * c.dense_mlp / tp * wb
    if n_moe:
        per_rank = sh.experts_per_rank
        if sh.ep > 1 and redundant_experts:
            per_rank = math.ceil((model.num_experts + redundant_experts) / sh.ep)
        routed = per_rank * c.expert / sh.moe_tp
        shared = c.num_shared_experts * c.expert / tp
        total += n_moe * ((routed + shared) * wb + c.router * hb)
    if first_stage:
        total += c.embedding / tp * hb
    if last_stage:
        head = c.lm_head if c.lm_head else (0 if first_stage else c.embedding)
        total += (head / tp + c.final_norm) * hb
    return total


def stage_activation_bytes(
    model: ModelSpec,
    precision: Precision,
    layers: range,
    tp: int,
    last_stage: bool,
    serving: ServingSpec,
    cp: int = 1,
    ep: int = 1,
    moe_tp: int | None = None,
) -> float:
    """Peak activation workspace of one forward step of max_num_batched_tokens (per GPU).

    An estimate in the spirit of vLLM's profiling run: the largest live set of one layer,
    T × 16-bit × (residual + normed input + attention output: 3h, plus the QKV projection
    output on this rank, plus the FFN's gate/up output and activation: 3 × intermediate / tp;
    for MoE layers the k permuted copies of each routed token with their 3 × moe_intermediate
    intermediates), plus fp32 logits and sampling workspace for max_num_seqs rows on the last
    stage. CUDA graphs, NCCL buffers and allocator slack belong to reserved_memory_GiB.
    """
    t = math.ceil(serving.max_num_batched_tokens / cp)
    rb = residual_bytes(precision)
    h, heads = model.hidden_size, model.num_attention_heads
    if model.uses_mla:
        qk = model.qk_nope_head_dim + model.qk_rope_head_dim
        qkv = heads / tp * (2 * qk + model.v_head_dim) + model.kv_lora_rank + model.qk_rope_head_dim
    else:
        qkv = (heads / tp + 2 * kv_heads_per_rank(model, tp)) * model.head_dim
    ffn = 0.0
    if dense_layers_in(model, layers):
        ffn = 3.0 * model.intermediate_size / tp
    if len(layers) > dense_layers_in(model, layers):
        sh = expert_sharding(model, tp, ep, moe_tp)
        rows = model.experts_per_token * sh.group_factor / sh.ep  # routed rows per local token
        moe = rows * (h + 3.0 * model.moe_intermediate_size / sh.moe_tp)
        moe += 3.0 * model.num_shared_experts * model.moe_intermediate_size / tp
        ffn = max(ffn, moe)
    act = t * rb * (3.0 * h + qkv + ffn)
    if last_stage:
        rows_out = min(serving.max_num_seqs, serving.max_num_batched_tokens)
        act += rows_out * model.vocab_size / tp * LOGITS_BYTES * LOGITS_COPIES
    return act


def _gib(x: float) -> str:
    return f"{x / GIB:.2f} GiB"


def drafter_memory(
    model: ModelSpec, precision: Precision, tp: int, layout: Layout, spec: SpeculativeSpec
) -> tuple[float, float]:
    """The speculative drafter on one GPU of the last stage: (weight bytes, KV bytes per
    token). mtp / eagle: one layer of the target's shape (head and embedding shared);
    draft_model: the whole draft model, TP-sharded like the target, experts not split."""
    from clustersim.model.speculative_cost import draft_model_of, drafter_shape  # (drafters)

    kv_b = DTYPE_BYTES[precision.kv_cache]
    if spec.method == "draft_model":
        draft = draft_model_of(spec)
        layers = range(draft.num_layers)
        weights = stage_weight_bytes(draft, precision, layers, tp, True, True)
        return weights, kv_elements_per_token_per_layer(draft, tp) * kv_b * draft.num_layers
    shape, layers = drafter_shape(model, spec)
    weights = stage_weight_bytes(
        model, precision, layers, tp, False, False, layout.ep, layout.moe_tp
    )
    if shape.vocab_size != model.vocab_size:  # an EAGLE-3 head's own LM head (16-bit)
        weights += shape.vocab_size * model.hidden_size * HIGH_PRECISION_BYTES / tp
    return weights, kv_elements_per_token_per_layer(model, tp) * kv_b * len(layers)


def plan_memory(
    model: ModelSpec,
    hw: HardwareSpec,
    precision: Precision,
    layout: Layout,
    serving: ServingSpec,
    redundant_experts: int = 0,
) -> MemoryPlan:
    """Weights, activations and KV cache per GPU of one replica, and whether it fits.

    `redundant_experts`: EPLB's extra expert slots per MoE layer, spread over the ep ranks.
    """
    tp, pp, cp = layout.tp, layout.pp, layout.cp
    if pp > model.num_layers:
        raise ValueError(f"pp={pp} exceeds num_layers={model.num_layers}")
    free_fraction = serving.kv_cache_free_memory_fraction  # None: vLLM's rule
    share = 1.0 if free_fraction is not None else serving.gpu_memory_utilization
    usable = hw.memory_GiB * GIB * share - hw.reserved_memory_GiB * GIB
    kv_b = DTYPE_BYTES[precision.kv_cache]
    per_layer_kv = kv_elements_per_token_per_layer(model, tp) * kv_b
    ranges = stage_layer_ranges(model.num_layers, pp)
    stages: list[StageMemory] = []
    for s, layers in enumerate(ranges):
        first, last = s == 0, s == pp - 1
        w = stage_weight_bytes(
            model,
            precision,
            layers,
            tp,
            first,
            last,
            layout.ep,
            layout.moe_tp,
            redundant_experts,
        )
        a = stage_activation_bytes(
            model, precision, layers, tp, last, serving, cp, layout.ep, layout.moe_tp
        )
        per_token = per_layer_kv * len(layers)
        if last and serving.speculative is not None:  # the drafter sits with the LM head
            draft_w, draft_kv = drafter_memory(model, precision, tp, layout, serving.speculative)
            w, per_token = w + draft_w, per_token + draft_kv
        kv = usable - w - a
        if free_fraction is not None and kv > 0:
            kv *= free_fraction  # TensorRT-LLM: a share of what is left after loading
        tokens = max(0, math.floor(kv / per_token)) if kv > 0 else 0
        stages.append(StageMemory(s, len(layers), w, a, kv, per_token, tokens))
    worst_w = max(stages, key=lambda st: st.weights_bytes + st.activation_bytes)
    limiting = min(stages, key=lambda st: st.kv_tokens)
    kv_tokens = limiting.kv_tokens * cp
    blocks = kv_tokens // serving.block_size
    max_len = serving.max_model_len or model.max_context
    where = (
        f"{model.name} on {hw.name} ({precision.weights} weights, "
        f"tp={tp} pp={pp} cp={cp} ep={layout.ep}"
        + (f", {redundant_experts} redundant experts)" if redundant_experts else ")")
    )
    budget = (
        f"usable {_gib(usable)} = {hw.memory_GiB:.2f} GiB × {share:.2f}"
        f" − {hw.reserved_memory_GiB:.2f} GiB reserved"
    )
    if free_fraction is not None:
        budget += f"; KV gets {free_fraction:.2f} of what weights and activations leave"
    if worst_w.kv_bytes <= 0:
        stage = f" on stage {worst_w.stage}" if pp > 1 else ""
        reason = (
            f"{where}: weights {_gib(worst_w.weights_bytes)} + activations "
            f"{_gib(worst_w.activation_bytes)} per GPU{stage} exceed {budget}"
        )
    elif blocks < 1:
        reason = (
            f"{where}: {_gib(limiting.kv_bytes)} per GPU left for KV cache holds "
            f"{kv_tokens} tokens, less than one block of {serving.block_size} "
            f"({budget})"
        )
    else:
        reason = ""
    return MemoryPlan(
        weights_per_gpu_bytes=max(st.weights_bytes for st in stages),
        activation_per_gpu_bytes=max(st.activation_bytes for st in stages),
        kv_per_gpu_bytes=min(st.kv_bytes for st in stages),
        kv_tokens_per_replica=kv_tokens,
        kv_blocks_per_replica=blocks,
        fits=not reason,
        reason=reason,
        usable_per_gpu_bytes=usable,
        max_model_len=max_len,
        max_model_len_fits=kv_tokens >= max_len,
        stages=tuple(stages),
    )
