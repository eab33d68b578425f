"""Step time of pure-decode steps with its context-independent part precomputed (the decode
leap: serving/decode_leap.py).

Between two events that change a lane's batch, its decode steps differ only in the context
they read: step x reads ctx_offset + n·x tokens (serving/decode_set.py). `DecodeStepCost(cost,
n).step_s(ctx)` equals `cost.compute_s(0, 0.0, n, ctx, 0)` bit for bit: the terms that do not
depend on ctx are computed once with the scalar code's operations, and the decode-attention
term is added in the same order as `StageCostModel.dense_part_s` adds it, followed by the same
additions (embedding, LM head, routed experts, host time).
"""

from __future__ import annotations

from clustersim.model.kernels import add_gemms_s, step_seqs
from clustersim.model.stage_cost import StageCostModel
from clustersim.model.stage_parts import lm_head_s


class DecodeStepCost:
    """`compute_s(0, 0.0, n, ctx, 0)` of one stage for a fixed decode batch of n ≥ 1."""

    __slots__ = (
        "_attn_floor",
        "_before_attn",
        "_embed",
        "_host",
        "_lm",
        "_moe",
        "_overlap",
        "_per_seq",
        "_per_token",
    )

    def __init__(self, cost: StageCostModel, n: int) -> None:
        graph = n <= cost._graph_max_batch
        floor, s, elt_floor, self._attn_floor = cost._graph if graph else cost._eager
        lin, att, ends = cost.linear, cost.attention, cost.ends
        s = add_gemms_s(s, lin, n, n + cost._m_half, floor)
        elt = n * lin.elementwise_s
        s += elt if elt > elt_floor else elt_floor
        self._before_attn = s  # GEMMs and elementwise kernels, seconds
        self._per_token = att.decode_s_per_token
        self._per_seq = n * att.decode_s_per_seq
        self._embed = n * ends.embed_s
        seqs = step_seqs(0, n, 0)
        self._lm: float | None = None
        if ends.lm_head:
            self._lm = lm_head_s(ends, seqs, cost._m_half, floor)
        self._moe: float | None = None
        if cost._n_moe:
            self._moe = cost._n_moe * cost.moe_layer_s(*cost.uniform_moe_load(n))
        host = cost.host
        self._host = host.step_s + seqs * host.seq_s
        self._overlap = host.overlap

    def step_s(self, ctx_tokens: int) -> float:
        """Seconds of the step when its sequences read `ctx_tokens` tokens of context."""
        attn = ctx_tokens * self._per_token + self._per_seq
        floor = self._attn_floor
        s = self._before_attn + (attn if attn > floor else floor)
        s += self._embed
        if self._lm is not None:
            s += self._lm
        if self._moe is not None:
            s += self._moe
        host = self._host
        if self._overlap:
            return s if s > host else host
        return s + host

    def run_s(self, ctx_tokens: int, n: int, k: int) -> list[float]:
        """`step_s` of k consecutive steps of n sequences, the first reading `ctx_tokens`
        tokens of context (each next one n more): the same operations, in a local loop."""
        per_token, per_seq, floor = self._per_token, self._per_seq, self._attn_floor
        before, embed, lm, moe = self._before_attn, self._embed, self._lm, self._moe
        host, overlap = self._host, self._overlap
        out: list[float] = []
        for ctx in range(ctx_tokens, ctx_tokens + n * k, n):
            attn = ctx * per_token + per_seq
            s = before + (attn if attn > floor else floor) + embed
            if lm is not None:
                s += lm
            if moe is not None:
                s += moe
            if overlap:
                out.append(s if s > host else host)
            else:
                out.append(s + host)
        return out

    def dense_run_s(self, ctx_tokens: int, n: int, k: int) -> list[float]:
        """`StageCostModel.dense_part_s(0, 0.0, n, ctx, 0)` of k consecutive steps (the GPU
        seconds without routed experts and host time; each step reads n more tokens), bit
        for bit: a sampled-routing stage adds its routed experts, then the host time
        (moe/routed_leap.py)."""
        per_token, per_seq, floor = self._per_token, self._per_seq, self._attn_floor
        before, embed, lm = self._before_attn, self._embed, self._lm
        out: list[float] = []
        for ctx in range(ctx_tokens, ctx_tokens + n * k, n):
            attn = ctx * per_token + per_seq
            s = before + (attn if attn > floor else floor) + embed
            if lm is not None:
                s += lm
            out.append(s)
        return out
