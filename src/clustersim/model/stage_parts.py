"""The parts of a pipeline stage's step outside its layers' kernels: the embedding gather
(first stage), the LM head (last stage), the engine's host time, and which layers the stage
holds (model/stage_cost.py adds them up)."""

from __future__ import annotations

from typing import NamedTuple

from clustersim.catalog.engines import EngineProfile
from clustersim.catalog.operator_tables import load_operator_table
from clustersim.config.schema import HardwareSpec, ModelSpec, Precision
from clustersim.model.attention_cost import AttentionCost
from clustersim.model.kernels import (
    LinearCost,
    StepFloors,
    add_gemms_s,
    curve_s,
    measured_curve,
    peak_flops,
    wider,
)
from clustersim.model.params import HIGH_PRECISION_BYTES, residual_bytes

LOGITS_BYTES = 4.0  # fp32 logits written by the LM head

# StageCostModel.compute_s keeps at most this many batch shapes' parts (then recomputes)
MAX_STEP_PARTS = 1 << 16


class StageEnds(NamedTuple):
    """The embedding gather (first stage) and LM head (last stage) of a stage, seconds."""

    embed_s: float  # per token (0 unless the first stage)
    lm_head: bool  # the last stage: it computes logits
    lm_flop_s: float  # per LM-head row at matmul_efficiency
    lm_weight_s: float  # streaming the LM-head weights once
    lm_act_s: float  # per LM-head row of activations + logits
    # the LM head measured by the hardware's operator table: (rows, seconds), else None
    lm_curve: tuple[tuple[float, ...], tuple[float, ...]] | None = None


def lm_head_s(ends: StageEnds, rows: int, m_half: float, floor: float) -> float:
    """Seconds of the LM head over `rows` rows (last stage), at least `floor`."""
    if ends.lm_curve is not None:
        comp = curve_s(*ends.lm_curve, rows)
    else:
        comp = (rows + m_half) * ends.lm_flop_s
        mem = ends.lm_weight_s + rows * ends.lm_act_s
        if mem > comp:
            comp = mem
    return comp if comp > floor else floor


def stage_ends(
    model: ModelSpec, hw: HardwareSpec, precision: Precision, tp: int, first: bool, last: bool
) -> StageEnds:
    """Embedding gather and LM head with 16-bit weights (the sampling kernels: step floors)."""
    h, v, rb = model.hidden_size, model.vocab_size, residual_bytes(precision)
    bw = hw.hbm_bandwidth_GBps * 1e9 * hw.hbm_efficiency
    lm_dtype = wider("bf16", precision.activations)
    rate = peak_flops(hw, lm_dtype) * hw.matmul_efficiency
    lm_params = v * h / tp
    lm_curve = None
    if last and hw.operator_table is not None and lm_dtype == "bf16":
        shape = (float(h), float(-(-v // tp)), 1.0)
        lm_curve = measured_curve(load_operator_table(hw.operator_table), "lm_head", "bf16", shape)
    return StageEnds(
        embed_s=h * (HIGH_PRECISION_BYTES + rb) / bw if first else 0.0,
        lm_head=last,
        lm_flop_s=2.0 * lm_params / rate,
        lm_weight_s=lm_params * HIGH_PRECISION_BYTES / bw,
        lm_act_s=(h * rb + v / tp * LOGITS_BYTES) / bw,
        lm_curve=lm_curve,
    )


class HostCost(NamedTuple):
    """Engine host time per step (scheduler, sampling, and where the engine loop streams
    responses, detokenise + send), charged on the first stage, seconds."""

    step_s: float
    seq_s: float  # per sequence in the step
    overlap: bool  # host work overlaps the GPU's (the step takes the longer of the two)


def host_cost(engine: EngineProfile, first_stage: bool) -> HostCost:
    on = 1e-6 if first_stage else 0.0
    return HostCost(
        (engine.host_step_us + engine.stream_step_us) * on,
        (engine.host_seq_us + engine.stream_seq_us) * on,
        engine.host_overlap,
    )


def stage_start(
    model: ModelSpec, tp: int, num_layers: int, first_stage: bool, first_layer: int | None
) -> int:
    """The stage's first layer (None: 0 on the first stage, else after the leading dense
    layers); ValueError for a stage that is not inside the model."""
    start = (
        first_layer if first_layer is not None else (0 if first_stage else model.first_dense_layers)
    )
    if tp < 1 or num_layers < 1 or start < 0 or start + num_layers > model.num_layers:
        raise ValueError(
            f"bad stage: tp={tp}, layers {start}..{start + num_layers - 1} of {model.num_layers}"
        )
    return start


class StepPart(NamedTuple):
    """The terms of a step's time that depend on its batch shape only, seconds (the context
    read and the prefill pairs are added by StageCostModel.compute_s)."""

    linear_s: float  # the step floor's overhead, then the GEMMs and elementwise kernels
    attn_floor_s: float
    decode_seqs_s: float  # decode tokens × per-sequence decode attention
    embed_s: float
    lm_head_s: float | None  # the last stage only
    moe_s: float | None  # routed experts under uniform routing (MoE stages only)
    host_s: float


def step_part(
    linear: LinearCost,
    attention: AttentionCost,
    ends: StageEnds,
    host: HostCost,
    floors: StepFloors,
    m_half: float,
    shape: tuple[int, int, int],
    moe_s: float | None,
) -> StepPart:
    """A batch shape's StepPart, each term with StageCostModel.dense_part_s's operations in
    its order. shape: (tokens > 0, decode tokens, LM-head rows); floors: the step's (graph or
    eager) kernel floors; moe_s: its routed experts' seconds (None: not a MoE stage)."""
    t, decode_tokens, seqs = shape
    floor, s, elt_floor, attn_floor = floors
    s = add_gemms_s(s, linear, t, t + m_half, floor)
    elt = t * linear.elementwise_s
    s += elt if elt > elt_floor else elt_floor
    lm_s = lm_head_s(ends, seqs, m_half, floor) if ends.lm_head else None
    decode_seqs_s = decode_tokens * attention.decode_s_per_seq
    host_s = host.step_s + seqs * host.seq_s
    return StepPart(s, attn_floor, decode_seqs_s, t * ends.embed_s, lm_s, moe_s, host_s)
