"""The nearest layout an engine can express, for a layout it cannot: same GPUs, the fewest
and smallest changes. Distance: Σ |log2(new / old)| over tp, pp, dp, cp and ep, plus
DPA_FLIP when the MoE mode changes between DP-attention and independent replicas (a different
serving regime, so it costs more than doubling one axis) and 1 when moe_tp changes. Ties go to
fewer replicas, then fewer pipeline stages (PP does not cut a token's latency), then the
label. The layout is checked against the model's shape (heads, KV heads, experts) and the
engine's rules only: it is a suggestion, not simulated."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

from clustersim.config.schema import Layout, ModelSpec
from clustersim.planner.engines.common import is_dp_attention

DPA_FLIP = 5.0
Accepts = Callable[[Layout], bool]  # does the engine run this layout?


def nearest_layout(
    layout: Layout, model: ModelSpec, accepts: Accepts, max_tp: int | None = None
) -> Layout | None:
    """The closest layout on layout.gpus GPUs that `model` can take and `accepts` runs
    (None when there is none). `max_tp`: largest tp to consider (the NVLink domain), ignored
    when the layout's own tp is above it."""
    cap = layout.tp if max_tp is None or layout.tp > max_tp else max_tp
    best: tuple[float, int, int, str, Layout] | None = None
    for alt in _same_gpus(layout, model, cap):
        if alt == layout or not accepts(alt):
            continue
        key = (round(_distance(layout, alt), 9), alt.dp, alt.pp, describe(alt), alt)
        if best is None or key[:4] < best[:4]:
            best = key
    return best[4] if best is not None else None


def describe(layout: Layout) -> str:
    """tp=8 pp=1 dp=4 ep=32 dp_attention (cp, moe_tp, ep and the mode only where they apply)."""
    parts = [f"tp={layout.tp}", f"pp={layout.pp}", f"dp={layout.dp}"]
    if layout.cp > 1:
        parts.append(f"cp={layout.cp}")
    if layout.ep > 1:
        parts.append(f"ep={layout.ep}")
    if layout.moe_tp is not None:
        parts.append(f"moe_tp={layout.moe_tp}")
    if is_dp_attention(layout):
        parts.append("dp_attention")
    return " ".join(parts)


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def _same_gpus(layout: Layout, model: ModelSpec, max_tp: int) -> Iterator[Layout]:
    gpus = layout.gpus
    for tp in _divisors(gpus):
        if tp > max_tp or not _model_takes_tp(model, tp):
            continue
        for pp in _divisors(gpus // tp):
            if pp > model.num_layers:
                continue
            for cp in _divisors(gpus // (tp * pp)):
                dp = gpus // (tp * pp * cp)
                yield from _moe_variants(Layout(tp=tp, pp=pp, cp=cp, dp=dp), layout, model)


def _model_takes_tp(model: ModelSpec, tp: int) -> bool:
    heads, kv = model.num_attention_heads, model.num_kv_heads
    return heads % tp == 0 and (kv % tp == 0 or tp % kv == 0)


def _moe_variants(base: Layout, original: Layout, model: ModelSpec) -> Iterator[Layout]:
    """The dense layout as is; an MoE one with ep ∈ {1, tp, tp × dp, the original ep}, as
    independent replicas and (dp > 1) DP-attention, with the original moe_tp where it fits."""
    if not model.is_moe:
        yield base
        return
    ranks = base.tp * base.dp
    for ep in sorted({1, base.tp, ranks, original.ep}):
        if ranks % ep != 0 or model.num_experts % ep != 0:
            continue
        modes = (False, True) if base.dp > 1 and ep == ranks else (False,)
        for dpa in modes:
            alt = base.model_copy(update={"ep": ep, "dp_attention": dpa})
            yield alt
            mtp = original.moe_tp
            if mtp is not None and not dpa and mtp * ep == base.tp:
                yield alt.model_copy(update={"moe_tp": mtp})


def _distance(a: Layout, b: Layout) -> float:
    axes = ((a.tp, b.tp), (a.pp, b.pp), (a.dp, b.dp), (a.cp, b.cp), (a.ep, b.ep))
    d = sum(abs(math.log2(y / x)) for x, y in axes)
    if is_dp_attention(a) != is_dp_attention(b):
        d += DPA_FLIP
    if a.moe_tp != b.moe_tp:
        d += 1.0
    return d
