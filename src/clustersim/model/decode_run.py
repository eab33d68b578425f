"""Step times of a run of pure-decode steps, vectorised (the decode leap: serving/decode_leap.py).

Between two events that change a lane's batch, its decode steps differ only in the context
they read: step x reads ctx_offset + n·x tokens (serving/decode_set.py). `decode_run_s`
returns `StageCostModel.compute_s(0, 0.0, n, ctx[i], 0)` for every i, bit for bit: the
context-independent part is computed once with the scalar code's operations, and the
decode-attention term is added elementwise in the same order as `dense_part_s` adds it
(float64 arithmetic is the same elementwise as in scalars; int64 → float64 is exact below
2**53 tokens).
"""

from __future__ import annotations

import numpy as np

from clustersim.model.kernels import step_seqs
from clustersim.model.stage_cost import StageCostModel


def decode_run_s(cost: StageCostModel, n: int, ctx: np.ndarray) -> np.ndarray:
    """Seconds of decode-only steps of `n` sequences reading ctx[i] tokens of context each
    (int64 array) on the stage `cost` prices, host time included; n ≥ 1."""
    graph = n <= cost._graph_max_batch
    floor, s, elt_floor, attn_floor = cost._graph if graph else cost._eager
    rows = n + cost._m_half
    lin, att, ends = cost.linear, cost.attention, cost.ends
    for layers, flop_s, weight_s, act_s in lin.gemms:
        comp = rows * flop_s
        mem = weight_s + n * act_s
        if mem > comp:
            comp = mem
        s += layers * (comp if comp > floor else floor)
    elt = n * lin.elementwise_s
    s += elt if elt > elt_floor else elt_floor
    attn = ctx * att.decode_s_per_token + n * att.decode_s_per_seq
    gpu = s + np.where(attn > attn_floor, attn, attn_floor)
    gpu = gpu + n * ends.embed_s
    seqs = step_seqs(0, n, 0)
    if ends.lm_head:
        comp = (seqs + cost._m_half) * ends.lm_flop_s
        mem = ends.lm_weight_s + seqs * ends.lm_act_s
        if mem > comp:
            comp = mem
        gpu = gpu + (comp if comp > floor else floor)
    if cost._n_moe:
        gpu = gpu + cost._n_moe * cost.moe_layer_s(*cost.uniform_moe_load(n))
    host = cost.host
    host_s = host.step_s + seqs * host.seq_s
    if host.overlap:
        return np.where(gpu > host_s, gpu, host_s)
    return gpu + host_s
