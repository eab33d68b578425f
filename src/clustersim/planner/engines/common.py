"""What the engines share: the layout modes (DP-attention, the MoE TP of a layout) and the
flag values every engine derives the same way from the experiment and its memory plan
(model id, max model length, KV block size, fractions, node span, precision notes)."""

from __future__ import annotations

import math

from clustersim.config.schema import Experiment, Layout
from clustersim.model.memory import MemoryPlan

# MLA attention kernels (FlashMLA, CUTLASS MLA) page the latent KV cache in 64-token blocks.
MLA_BLOCK_SIZE = 64


def is_dp_attention(layout: Layout) -> bool:
    """DP-attention + EP: experts over all tp × dp GPUs, attention per DP rank."""
    return layout.dp > 1 and (layout.dp_attention or layout.ep == layout.tp * layout.dp)


def moe_tp_of(layout: Layout) -> int:
    """GPUs each expert's matrices are split over (TensorRT-LLM moe_tensor_parallel_size)."""
    if layout.moe_tp is not None:
        return layout.moe_tp
    return layout.tp if layout.ep == 1 else 1


def separate_servers(layout: Layout) -> str:
    return (
        f"run dp = {layout.dp} independent servers of one replica "
        f"(tp={layout.tp} pp={layout.pp}) behind a load balancer"
    )


def model_id(exp: Experiment) -> str:
    return exp.model.hf_id or exp.model.name


def redundant_experts(exp: Experiment) -> int:
    eplb = exp.experts.eplb if exp.experts is not None else None
    return eplb.redundant_experts if eplb is not None and exp.layout.ep > 1 else 0


def max_model_len(
    exp: Experiment, memory: MemoryPlan, shards: int | None = None
) -> tuple[int, str | None]:
    """(max model length to launch with, note when it had to be cut to the KV capacity).

    `shards`: CP ranks the engine spreads one replica's KV over (default: layout.cp, as
    simulated; 1 for an engine that replicates the KV on every CP rank)."""
    want = exp.serving.max_model_len or exp.model.max_context
    cp = exp.layout.cp
    cap = memory.kv_tokens_per_replica // cp * (cp if shards is None else shards)
    if want <= cap:
        return want, None
    return cap, (
        f"max model length cut from {want} to {cap} tokens: one sequence must fit in the KV "
        f"cache of a replica ({cap} tokens), or the engine refuses to start"
    )


def block_size(exp: Experiment) -> tuple[int, str | None]:
    """(KV block / page size to launch with, note when the simulated one was changed): MLA
    models need 64-token blocks for their attention kernels."""
    size = exp.serving.block_size
    if not exp.model.uses_mla or size == MLA_BLOCK_SIZE:
        return size, None
    return MLA_BLOCK_SIZE, (
        f"KV block size {MLA_BLOCK_SIZE} instead of the simulated {size}: MLA attention "
        f"kernels page the latent KV cache in {MLA_BLOCK_SIZE}-token blocks "
        f"(simulate with serving.block_size={MLA_BLOCK_SIZE} to match)"
    )


def nodes_spanned(exp: Experiment, gpus_per_server: int) -> int:
    return math.ceil(gpus_per_server / exp.topology.gpus_per_node)


def fraction(x: float) -> str:
    """A fraction with 3 decimals, rounded down so the engine never gets more than planned."""
    return f"{math.floor(x * 1000) / 1000:.3f}"


def common_notes(exp: Experiment, engine: str) -> list[str]:
    """Notes every engine's config carries: how to serve quantised weights, fp4 KV."""
    notes: list[str] = []
    if exp.precision.weights in ("fp8", "fp4"):
        how = (
            "or use --quantization fp8 to quantise online"
            if engine != "trtllm"
            else "TensorRT-LLM loads pre-quantised checkpoints"
        )
        notes.append(
            f"{exp.precision.weights} weights: serve a checkpoint stored in "
            f"{exp.precision.weights} ({how})"
        )
    if exp.precision.kv_cache == "fp4":
        notes.append("fp4 KV cache: no flag emitted (engine support varies)")
    return notes
