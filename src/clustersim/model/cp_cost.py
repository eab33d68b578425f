"""Context parallelism (CP): what one CP rank of a stage computes in a step, and what the CP
ring carries (docs/disaggregation.md §2). Pure arithmetic on StageCostModel; no simpy.

Notation: cp CP ranks (each a TP group of tp GPUs), L_s layers on the stage, P prefill tokens,
D decode tokens (one per decoding sequence), b = KV bytes per token per layer on one TP rank.

**Prefill.** A chunk's tokens are split over the cp ranks with the load-balanced causal split
of Megatron-Core / TensorRT-LLM CP (the sequence is cut into 2·cp pieces, rank r holding
pieces r and 2·cp−1−r), so each rank runs ceil(P/cp) tokens through its layers and computes
1/cp of the causal (query, key) pairs. Ring attention: in every attention layer, cp−1 ring
steps, each sending the KV block the rank holds — the local shard of that layer's KV,
ceil(ctx/cp) tokens × b bytes, ctx = the context the chunk attends to (offset + chunk) — to
the ring successor while attention runs on the block in hand. One layer costs
c + (cp−1)·max(c, m) (c = attention on one block = A/cp, A the rank's attention seconds in
the layer, m = one block's transfer). Layers are identical, so over the stage this is
A_s/cp + max((cp−1)/cp·A_s, (cp−1)·L_s·m) with A_s = L_s·A: the replica runs the ring's bytes
of all layers as one fabric transfer (latency: one ring hop per layer-step) alongside
`overlap_s` = (cp−1)/cp·A_s, after the rest of the compute (`serial_s`).

**Decode.** Not split by CP: every CP rank runs every decoding sequence through its (full
TP-shard of the) linear layers — no decode speedup — and reads only the 1/cp of each
sequence's KV it holds; the partial attention outputs (plus a log-sum-exp per head) are merged
by a ring all-gather over the CP ranks in every layer: cp−1 steps of
D × heads/tp × (d_v·r + 4) bytes (r the residual-stream bytes). This is the decode pattern of
engines that keep CP-sharded KV for decode (vLLM decode context parallelism, TensorRT-LLM
Helix); Megatron / TRT-LLM context parallelism itself is a prefill (context-phase) technique.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from clustersim.config.schema import DTYPE_BYTES, ModelSpec, Precision
from clustersim.model.params import kv_elements_per_token_per_layer, residual_bytes
from clustersim.model.stage_cost import StageCostModel

LSE_BYTES = 4.0  # fp32 log-sum-exp per head per token, merged with the partial outputs


@dataclass(frozen=True)
class CPStep:
    """One step of one CP rank (every rank is symmetric under the balanced split)."""

    serial_s: float  # compute not hidden under the ring exchange (seconds)
    overlap_s: float  # prefill attention the ring exchange runs alongside (seconds)
    rank_tokens: int  # tokens through the rank's layers: ceil(P/cp) + D
    ring_bytes: float  # ring attention: bytes each ring member sends its successor, all layers
    combine_bytes: float  # decode merge: bytes each ring member sends its successor, all layers

    @property
    def compute_s(self) -> float:
        return self.serial_s + self.overlap_s


class CPStageCost:
    """Step cost of one CP rank of a stage: `base` is that rank's TP-shard cost model."""

    def __init__(
        self, base: StageCostModel, model: ModelSpec, precision: Precision, cp: int
    ) -> None:
        if cp < 2:
            raise ValueError(f"CPStageCost needs cp >= 2, got {cp}")
        self.base = base
        self.cp = cp
        self.num_layers = base.num_layers
        self.allreduces_per_step = base.allreduces_per_step
        # bytes per token per layer on one TP rank
        self.kv_bytes_per_token_layer = (
            kv_elements_per_token_per_layer(model, base.tp) * DTYPE_BYTES[precision.kv_cache]
        )
        heads = model.num_attention_heads / base.tp
        v_dim = model.v_head_dim if model.uses_mla else model.head_dim
        self.partial_bytes_per_token_layer = heads * (v_dim * residual_bytes(precision) + LSE_BYTES)
        self.ring_layer_steps = self.num_layers * (cp - 1)  # ring hops per step, each layer

    def shard_tokens(self, tokens: int) -> int:
        """Tokens of `tokens` that one CP rank holds (ceil: the largest shard)."""
        return math.ceil(tokens / self.cp)

    def step(
        self,
        prefill_tokens: int,
        prefill_attn_pairs: float,
        prefill_ctx_tokens: int,
        decode_tokens: int,
        decode_ctx_tokens: int,
        prefill_seqs: int = 1,
    ) -> CPStep:
        """One CP rank's share of a replica step (arguments as the replica's Batch)."""
        cp = self.cp
        p = self.shard_tokens(prefill_tokens)
        pairs = prefill_attn_pairs / cp
        total = self.base.compute_s(
            p, pairs, decode_tokens, self.shard_tokens(decode_ctx_tokens), prefill_seqs
        )
        overlap = self.base.prefill_attention_s(pairs) * (cp - 1) / cp
        ring = self.shard_tokens(prefill_ctx_tokens) * self.kv_bytes_per_token_layer
        combine = decode_tokens * self.partial_bytes_per_token_layer
        return CPStep(
            serial_s=total - overlap,
            overlap_s=overlap,
            rank_tokens=p + decode_tokens,
            ring_bytes=ring * self.ring_layer_steps,
            combine_bytes=combine * self.ring_layer_steps,
        )

    def allreduce_bytes(self, tokens: int) -> float:
        """One TP all-reduce message of one CP rank's `tokens` tokens."""
        return self.base.allreduce_bytes(tokens)


def ring_block_bytes(
    model: ModelSpec, precision: Precision, tp: int, cp: int, ctx_tokens: int
) -> float:
    """Bytes one ring member sends per layer per ring step: its local shard of one layer's
    KV, ceil(ctx_tokens / cp) tokens on one TP rank."""
    per_token = kv_elements_per_token_per_layer(model, tp) * DTYPE_BYTES[precision.kv_cache]
    return math.ceil(ctx_tokens / cp) * per_token
