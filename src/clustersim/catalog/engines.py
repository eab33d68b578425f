"""Serving-engine profiles: what an engine launches per layer and what its host costs per step.

`serving.engine` names one of these (default `vllm`). The GPU side of a kernel (its roofline
and its floor, `HardwareSpec.kernel_floor_us`) lives in the hardware profile; this file holds
what differs between engines running the same kernels (docs/cost_model.md §6, with sources):

- **kernels per layer** beyond the GEMMs (which every engine runs as one kernel per
  projection: qkv, o, gate_up, down; MLA and MoE add theirs, model/kernels.py): the elementwise
  kernels left unfused (norms, rope, KV append, activation, activation quantisation), the
  attention kernels and, for MoE layers, router / top-k / permute / unpermute kernels;
- **CUDA graphs**: decode steps up to `graph_max_batch` sequences replay a captured graph, so
  a kernel costs its GPU floor only; other steps launch every kernel from the host and a kernel
  costs at least `eager_launch_us` (the host cannot issue kernels faster than that);
- **host time per step**: scheduling, input preparation, sampling bookkeeping,
  detokenisation and output streaming — `host_step_us` + `host_seq_us` per running sequence;
  with `host_overlap` (an overlap scheduler: SGLang, vLLM V1 async scheduling, TensorRT-LLM's
  PyTorch backend) it hides behind the GPU step, otherwise it adds to it;
- **front end**: per request, HTTP + tokenisation before the engine sees it (`frontend_ms`);
- **all-reduce algorithm choice**: the engine's custom one-shot / two-shot all-reduce for
  small messages inside an NVLink domain, NCCL beyond (network/collectives.py).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Literal

from clustersim.config.schema import ServingSpec

EngineName = Literal["vllm", "sglang", "trtllm"]
DEFAULT_ENGINE: EngineName = "vllm"

KIB = 1024
MIB = 1024 * 1024


@dataclass(frozen=True)
class EngineProfile:
    """One serving engine's per-kernel, per-step and per-request costs (units in names)."""

    name: EngineName
    version: str  # the engine release these counts and costs describe
    # kernels per transformer layer, besides the GEMMs (counted by model/kernels.py)
    elementwise_kernels: int  # unfused norms / residual adds, rope, KV append, activation
    fp8_quant_kernels: int  # extra activation-quantisation kernels when activations are fp8
    attention_kernels: int  # decode attention kernels (split-KV merge included)
    moe_kernels: int  # MoE layer: top-k, align / permute, unpermute + reduce (router GEMM apart)
    step_kernels: int  # per step: embedding, final norm, sampling (softmax / top-k / argmax)
    # CUDA graphs
    graph_max_batch: int  # decode-only steps with at most this many sequences replay a graph
    eager_launch_us: float  # host time to launch one kernel outside a graph, µs
    # host
    host_step_us: float  # per step: scheduler, input preparation, graph replay launch, µs
    host_seq_us: float  # per running sequence per step: scheduling, sampling bookkeeping, µs
    # streaming to clients (serving.streaming), where the engine loop does it: per step and per
    # streamed sequence (detokenise, build and send the response), µs
    stream_step_us: float
    stream_seq_us: float
    host_overlap: bool  # host work of step n+1 overlaps GPU work of step n
    frontend_ms: float  # per request, before the engine: HTTP, tokenisation, ms
    # without chunked prefill, whole prompts join the running decodes in one step (in-flight
    # batching) instead of running in prefill-only steps
    mixed_prefill: bool
    # all-reduce algorithms (network/collectives.py)
    custom_allreduce: bool  # one-shot / two-shot kernels inside one NVLink domain
    oneshot_max_bytes: int  # one-shot below this message size (bytes)
    twoshot_max_bytes: int  # two-shot below this (bytes); NCCL above
    # speculative decoding: graph_max_batch counts sequences of k + 1 verify tokens each
    # (SGLang's cuda_graph_runner: num_tokens_per_bs = speculative_num_draft_tokens), not
    # tokens (vLLM's capture sizes)
    graph_batch_in_sequences: bool = False


# vLLM V1 (0.10-0.11): Python scheduler in the engine core process, detokenisation in the
# front-end process; FlashAttention-3 / FlashInfer; fused add-RMSNorm, rotary,
# reshape_and_cache, silu_and_mul; custom all-reduce (csrc/custom_all_reduce.cuh: one-shot
# below 256 KiB at 8 GPUs / 512 KiB at ≤ 4, two-shot up to 8 MiB).
_VLLM = EngineProfile(
    name="vllm",
    version="0.11",
    elementwise_kernels=5,
    fp8_quant_kernels=2,
    attention_kernels=1,
    moe_kernels=4,
    step_kernels=6,
    graph_max_batch=512,
    eager_launch_us=8.0,
    host_step_us=1500.0,
    host_seq_us=12.0,
    stream_step_us=0.0,
    stream_seq_us=0.0,
    host_overlap=False,
    frontend_ms=4.0,
    mixed_prefill=False,
    custom_allreduce=True,
    oneshot_max_bytes=256 * KIB,
    twoshot_max_bytes=8 * MIB,
)

ENGINES: dict[str, EngineProfile] = {
    p.name: p
    for p in (
        _VLLM,
        # SGLang (0.4-0.5): the same kernels through FlashInfer and vLLM's custom all-reduce;
        # the overlap scheduler is on by default (host work of the next batch runs while the
        # GPU executes this one); CUDA graphs up to cuda_graph_max_bs (160 by default).
        replace(
            _VLLM,
            name="sglang",
            version="0.5",
            graph_max_batch=160,
            host_overlap=True,
            graph_batch_in_sequences=True,
        ),
        # TensorRT-LLM (C++ executor + TensorRT engine, as in the v0.14-v0.17 measurements of
        # docs/calibration.md): rope and KV append fused into the attention plugin, the
        # residual add + RMSNorm (+ fp8 quantisation) fused; C++ runtime launches cheaply;
        # no overlap scheduler; Triton front end.
        EngineProfile(
            name="trtllm",
            version="0.14-0.17",
            elementwise_kernels=3,
            fp8_quant_kernels=0,
            attention_kernels=1,
            moe_kernels=4,
            step_kernels=4,
            graph_max_batch=0,
            eager_launch_us=3.0,
            host_step_us=300.0,
            host_seq_us=1.0,
            stream_step_us=4000.0,
            stream_seq_us=15.0,
            host_overlap=False,
            frontend_ms=8.0,
            mixed_prefill=True,
            custom_allreduce=True,
            oneshot_max_bytes=128 * KIB,
            twoshot_max_bytes=8 * MIB,
        ),
    )
}


def engine_names() -> list[str]:
    """Names of the built-in engine profiles, sorted."""
    return sorted(ENGINES)


def get_engine(name: str) -> EngineProfile:
    """The built-in engine profile `name`; KeyError listing the known names otherwise."""
    try:
        return ENGINES[name]
    except KeyError:
        raise KeyError(f"unknown engine {name!r}; known: {', '.join(engine_names())}") from None


def serving_engine(serving: ServingSpec) -> EngineProfile:
    """The profile `serving.engine` names, with `serving.engine_overrides` applied (integer
    fields rounded)."""
    base = get_engine(serving.engine)
    if not serving.streaming:
        base = replace(base, stream_step_us=0.0, stream_seq_us=0.0)
    if not serving.engine_overrides:
        return base
    kinds = {f.name: f.type for f in fields(EngineProfile)}
    values: dict[str, float | int] = {}
    for key, value in serving.engine_overrides.items():
        values[key] = round(value) if kinds[key] in ("int", int) else float(value)
    return replace(base, **values)  # type: ignore[arg-type]
