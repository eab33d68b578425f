"""KV-cache transfer of a disaggregated request: which GPU sends how many bytes to which
(pure; no simpy). docs/disaggregation.md §1.

The KV cache of a prompt of P tokens is sharded on the prefill unit by pipeline stage (its
layers), CP rank (1/cp of the tokens each, the balanced split) and TP rank (GQA: KV heads
split tp ways, replicated when tp > KV heads; MLA: the latent is whole on every TP rank,
memory.py). The decode unit (cp = 1) wants it sharded its own way. Every piece a decode GPU
holds is sent to it by a prefill GPU holding that piece, pairwise:

- pieces: GQA KV head h (2 · head_dim elements per token per layer), or MLA's one latent
  (kv_lora_rank + qk_rope_head_dim elements);
- for each (prefill stage s, decode stage t) the layers they share, each decode TP rank j
  holding piece h receives it from prefill TP rank `holders[h][j mod len(holders[h])]` (the
  holders of a replicated piece share the sending), from every CP rank (its 1/cp of the tokens).

Bytes moved = kv_bytes_per_token(model) × P × (copies of a piece on the decode side: 1 when
the decode TP ≤ KV heads (GQA) or decode tp = 1 (MLA); the decode tp for MLA, tp / KV for GQA
beyond that, since every replica of a piece must receive it).
"""

from __future__ import annotations

from collections.abc import Sequence

from clustersim.config.schema import DTYPE_BYTES, ModelSpec, Precision

Grid = Sequence[Sequence[Sequence[str]]]  # [stage][cp rank] → TP group (TP-rank order)
FlowCoef = tuple[str, str, float]  # (src GPU, dst GPU, bytes per prompt token)


def kv_pieces(model: ModelSpec, tp: int) -> tuple[int, list[list[int]]]:
    """(KV elements per token per layer of one piece, the TP ranks holding each piece)."""
    if model.uses_mla:
        return model.kv_lora_rank + model.qk_rope_head_dim, [list(range(tp))]
    kv = model.num_kv_heads
    holders: list[list[int]] = [[] for _ in range(kv)]
    if tp <= kv:  # rank i holds heads [i·kv/tp, (i+1)·kv/tp)
        per = kv // tp
        for h in range(kv):
            holders[h].append(h // per)
    else:  # rank i holds head i·kv // tp (each head on tp / kv ranks)
        for i in range(tp):
            holders[i * kv // tp].append(i)
    return 2 * model.head_dim, holders


def _overlap(a: range, b: range) -> int:
    return max(0, min(a.stop, b.stop) - max(a.start, b.start))


def kv_flow_coefficients(
    model: ModelSpec,
    precision: Precision,
    src_layers: Sequence[range],
    src_grid: Grid,
    dst_layers: Sequence[range],
    dst_grid: Grid,
) -> list[FlowCoef]:
    """Flows of one request's KV from a prefill unit to a decode unit, in bytes per prompt
    token (multiply by P). Pairs in first-seen order (deterministic); the decode unit must
    have cp = 1."""
    if any(len(stage) != 1 for stage in dst_grid):
        raise ValueError("the decode side of a KV transfer must have cp = 1")
    b = DTYPE_BYTES[precision.kv_cache]
    src_tp, dst_tp = len(src_grid[0][0]), len(dst_grid[0][0])
    elements, src_holders = kv_pieces(model, src_tp)
    _, dst_holders = kv_pieces(model, dst_tp)
    acc: dict[tuple[str, str], float] = {}
    for s, s_layers in enumerate(src_layers):
        cp = len(src_grid[s])
        for t, d_layers in enumerate(dst_layers):
            n = _overlap(s_layers, d_layers)
            if n == 0:
                continue
            per_rank = elements * b * n / cp  # bytes per prompt token from one CP rank
            for srcs, dsts in zip(src_holders, dst_holders, strict=True):
                for k, j in enumerate(dsts):
                    i = srcs[k % len(srcs)]
                    dst = dst_grid[t][0][j]
                    for c in range(cp):
                        key = (src_grid[s][c][i], dst)
                        acc[key] = acc.get(key, 0.0) + per_rank
    return [(src, dst, coef) for (src, dst), coef in acc.items()]


def scale_flows(coefs: Sequence[FlowCoef], tokens: int) -> list[tuple[str, str, float]]:
    """The flows of a prompt of `tokens` tokens (bytes)."""
    return [(src, dst, coef * tokens) for src, dst, coef in coefs]
