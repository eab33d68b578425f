"""TensorRT-LLM (`trtllm-serve MODEL --extra_llm_api_options cfg.yaml`): which layouts one
server can run, its command line and its YAML.

Command line: --tp_size, --pp_size, --ep_size, --max_batch_size, --max_num_tokens,
--max_seq_len, --kv_cache_free_gpu_memory_fraction. YAML (LlmArgs): tensor_parallel_size,
pipeline_parallel_size, moe_expert_parallel_size, moe_tensor_parallel_size
(moe_tensor_parallel_size × moe_expert_parallel_size == tensor_parallel_size),
enable_attention_dp (attention weights replicated on every rank: attention TP = 1),
enable_chunked_prefill, kv_cache_config, scheduler_config, moe_config.

One trtllm-serve is one replica: there is no data-parallel replica flag, so a layout of dp > 1
independent replicas gets one replica's command and YAML and a note to run dp copies behind a
load balancer. DP-attention is not that: one server over all tp × dp ranks with
enable_attention_dp (attention per rank, experts over moe_expert_parallel_size).

EPLB: moe_config.load_balancer {num_slots = experts + redundant, layer_updates_per_iter}
(examples/wide_ep/ep_load_balancer/README.md: the MoE layers re-placed per iteration; 0 =
static placement). There is no interval: online, one pass over the MoE layers takes
ceil(layers / layer_updates_per_iter) iterations.

Context parallelism: `context_parallel_size` in the YAML (LlmArgs field); the PyTorch
backend's default cp_config.cp_type is ULYSSES (heads split over tp × cp).

Disaggregated: context and generation `trtllm-serve` instances whose YAML carries
`cache_transceiver_config: {backend: NIXL, max_tokens_in_buffer}` (context servers also
`disable_overlap_scheduler: true`), then `trtllm-serve disaggregated -c disagg_config.yaml`
with `context_servers` / `generation_servers` ({num_instances, urls}). One trtllm-serve per
replica here is fine: the disaggregated server routes over the instances.
"""

from __future__ import annotations

import math

import yaml

from clustersim.config.schema import Experiment, Layout, ModelSpec
from clustersim.model.memory import GIB, MemoryPlan
from clustersim.planner.engines.base import (
    PREFILL_PORT,
    ROUTER_PORT,
    Broken,
    Commands,
    DisaggParts,
    Engine,
    Pools,
    PoolSite,
    ServerParts,
    pool_notes,
    visible_devices,
)
from clustersim.planner.engines.common import (
    fraction,
    is_dp_attention,
    max_model_len,
    model_id,
    moe_tp_of,
    nodes_spanned,
)
from clustersim.planner.engines.eplb import Rebalance, StepTime, rebalance_of
from clustersim.planner.engines.speculative import trtllm_speculative

TRTLLM_SERVE = ("trtllm-serve",)
TRTLLM_BACKEND = "pytorch"
TRTLLM_CACHE_BACKEND = "NIXL"  # cache_transceiver_config.backend
TRTLLM_KV_DTYPE = {"fp8": "fp8"}


class TensorRTLLM(Engine):
    name = "trtllm"

    def cp_rule(self, layout: Layout, model: ModelSpec) -> Broken:
        heads, split = model.num_attention_heads, layout.tp * layout.cp
        if heads % split != 0:
            return (
                f"TensorRT-LLM: the PyTorch backend's context parallelism (cp_type ULYSSES) "
                f"splits attention heads over tp × cp = {split}, which does not "
                f"divide num_attention_heads = {heads}",
                "",
            )
        return "", ""

    def rule(self, layout: Layout, model: ModelSpec, a2a: str) -> Broken:
        tp, ep = layout.tp, layout.ep
        if is_dp_attention(layout):
            if tp > 1:
                return (
                    f"TensorRT-LLM enable_attention_dp replicates attention weights on every "
                    f"rank (attention TP = 1); the layout needs attention TP = {tp} per DP rank",
                    "",
                )
            return "", ""
        if model.is_moe:
            mtp = moe_tp_of(layout)
            if mtp * ep != tp:
                return (
                    f"TensorRT-LLM: moe_tensor_parallel_size × moe_expert_parallel_size = "
                    f"{mtp} × {ep} = {mtp * ep} must equal tensor_parallel_size = {tp}",
                    "",
                )
        return "", ""

    def server(
        self, exp: Experiment, memory: MemoryPlan, label: str, a2a: str, step: StepTime | None
    ) -> ServerParts:
        """One trtllm-serve is one replica (there is no data-parallel replica flag): with
        dp > 1 independent replicas, the command and YAML of one, run dp times."""
        inst = instance(exp.layout)
        argv, files, notes = trtllm_server(
            exp.model_copy(update={"layout": inst}), memory, label, step
        )
        if inst is not exp.layout:
            notes.insert(0, replicas_note(exp.layout.dp, inst.gpus))
        return argv, files, notes

    def disaggregated(
        self, pools: Pools, sites: tuple[PoolSite, PoolSite], a2a: str
    ) -> DisaggParts:
        commands: Commands = []
        files: dict[str, str] = {}
        notes: list[str] = []
        servers: dict[str, dict[str, object]] = {}
        port = PREFILL_PORT
        buffer_tokens = pools.views[0][0].serving.max_num_batched_tokens
        for (exp, memory, step), site in zip(pools.each(), sites, strict=True):
            inst = instance(exp.layout)
            n = 1 if inst is exp.layout else exp.layout.dp
            argv, inst_files, server_notes = trtllm_server(
                exp.model_copy(update={"layout": inst}), memory, site.role, step
            )
            ((name, text),) = inst_files.items()
            files[name] = _with_cache_transceiver(text, site.role, buffer_tokens)
            argv = [*visible_devices(site, inst.gpus), *argv]
            argv += ["--host", site.host, "--port", str(port)]
            what = "context (prefill)" if site.role == "prefill" else "generation (decode)"
            commands.append((f"{what} server 1 of {n} ({inst.gpus} GPUs each)", tuple(argv)))
            servers[site.role] = {
                "num_instances": n,
                "urls": [f"{site.host}:{port + i}" for i in range(n)],
            }
            if n > 1:
                notes.append(
                    f"{site.role} pool: start {n} such servers, one per replica's {inst.gpus} "
                    f"GPUs, on ports {port}..{port + n - 1} (disagg_config.yaml lists them)"
                )
            notes += pool_notes(site.role, server_notes)
            port += n
        disagg = {
            "hostname": "0.0.0.0",
            "port": ROUTER_PORT,
            "backend": TRTLLM_BACKEND,
            "context_servers": servers["prefill"],
            "generation_servers": servers["decode"],
        }
        files["disagg_config.yaml"] = yaml.safe_dump(disagg, sort_keys=False)
        router = (*TRTLLM_SERVE, "disaggregated", "-c", "disagg_config.yaml")
        commands.append(("disaggregated server (clients connect here)", router))
        notes.append(
            f"cache_transceiver_config.max_tokens_in_buffer = {buffer_tokens} (the prefill "
            "chunk); TensorRT-LLM recommends ≥ the longest prompt, at the cost of buffer memory "
            "the plan did not reserve"
        )
        return commands, files, notes


def instance(layout: Layout) -> Layout:
    """One TensorRT-LLM server of a pool: the replica (dp = 1), or the whole DP-attention
    group (one server, enable_attention_dp)."""
    if is_dp_attention(layout) or layout.dp == 1:
        return layout
    return layout.model_copy(update={"dp": 1})


def replicas_note(dp: int, gpus: int) -> str:
    return (
        f"one trtllm-serve is one replica (no data-parallel replica flag): run dp = {dp} "
        f"copies of this command, one per replica's {gpus} GPUs (CUDA_VISIBLE_DEVICES and "
        "--port per copy), behind a load balancer"
    )


def _with_cache_transceiver(text: str, role: str, buffer_tokens: int) -> str:
    """A pool server's YAML with the KV cache transceiver (and, on context servers, the
    overlap scheduler off: it is not supported there); its comment lines kept on top."""
    comments = "".join(ln + "\n" for ln in text.splitlines() if ln.startswith("#"))
    cfg = yaml.safe_load(text)
    if role == "prefill":
        cfg["disable_overlap_scheduler"] = True
    cfg["cache_transceiver_config"] = {
        "backend": TRTLLM_CACHE_BACKEND,
        "max_tokens_in_buffer": buffer_tokens,
    }
    return comments + yaml.safe_dump(cfg, sort_keys=False)


def trtllm_server(
    exp: Experiment, memory: MemoryPlan, label: str, step: StepTime | None
) -> ServerParts:
    lay, s = exp.layout, exp.serving
    dpa = exp.model.is_moe and is_dp_attention(lay)
    tp_size = lay.tp * lay.dp if dpa else lay.tp
    length, note = max_model_len(exp, memory)
    free = _free_fraction(exp, memory)
    cfg_name = f"{label}.trtllm.yaml"
    argv = [*TRTLLM_SERVE, model_id(exp), "--backend", TRTLLM_BACKEND]
    argv += ["--tp_size", str(tp_size), "--pp_size", str(lay.pp)]
    cfg: dict[str, object] = {
        "tensor_parallel_size": tp_size,
        "pipeline_parallel_size": lay.pp,
    }
    if exp.model.is_moe:
        ep = lay.ep
        argv += ["--ep_size", str(ep)]
        cfg["moe_expert_parallel_size"] = ep
        cfg["moe_tensor_parallel_size"] = tp_size // ep if dpa else moe_tp_of(lay)
        cfg["enable_attention_dp"] = dpa
    argv += ["--max_batch_size", str(s.max_num_seqs), "--max_num_tokens"]
    argv += [str(s.max_num_batched_tokens), "--max_seq_len", str(length)]
    argv += ["--kv_cache_free_gpu_memory_fraction", fraction(free)]
    argv += ["--extra_llm_api_options", cfg_name]
    kv_cfg: dict[str, object] = {"free_gpu_memory_fraction": round(free, 3)}
    kv = TRTLLM_KV_DTYPE.get(exp.precision.kv_cache)
    if kv:
        kv_cfg["dtype"] = kv
    if lay.cp > 1:
        cfg["context_parallel_size"] = lay.cp
    cfg["enable_chunked_prefill"] = s.chunked_prefill
    cfg["kv_cache_config"] = kv_cfg
    policy = "GUARANTEED_NO_EVICT" if s.kv_admission == "reserve_full" else "MAX_UTILIZATION"
    cfg["scheduler_config"] = {"capacity_scheduler_policy": policy}
    rebalance = rebalance_of(exp, step)
    if rebalance is not None:
        cfg["moe_config"] = {"load_balancer": _load_balancer(exp, rebalance)}
    notes = [n for n in (note,) if n]
    speculative, spec_notes = trtllm_speculative(exp)
    if speculative is not None:
        cfg["speculative_config"] = speculative
        notes += spec_notes
    if rebalance is not None:
        notes.append(_eplb_note(exp, rebalance))
    if s.kv_cache_free_memory_fraction is None:
        notes.append(
            f"kv_cache free fraction {free:.3f} reproduces the planned KV cache "
            f"({memory.kv_per_gpu_bytes / GIB:.2f} GiB per GPU) under TensorRT-LLM's rule"
        )
    if lay.cp > 1:
        notes.append(
            f"context_parallel_size {lay.cp}: TensorRT-LLM's PyTorch backend runs it as "
            "cp_config.cp_type ULYSSES by default (all-to-all over attention heads); the "
            "simulation models ring attention with the same per-rank tokens and KV shard"
        )
    nodes = nodes_spanned(exp, lay.gpus)
    if nodes > 1:
        notes.append(f"spans {nodes} nodes: launch under mpirun / srun (trtllm-llmapi-launch)")
    header = f"# {rebalance.conversion}\n" if rebalance is not None else ""
    return argv, {cfg_name: header + yaml.safe_dump(cfg, sort_keys=False)}, notes


def _updates_per_iter(exp: Experiment, rebalance: Rebalance) -> int:
    """moe_config.load_balancer.layer_updates_per_iter: MoE layers whose expert weights are
    re-placed per iteration, 0 = a static placement (TensorRT-LLM
    examples/wide_ep/ep_load_balancer/README.md). One pass over the L MoE layers takes
    ceil(L / k) iterations: k = ceil(L / steps) puts a pass at most every `steps`."""
    if rebalance.interval_s == 0:
        return 0
    if rebalance.steps is None:
        return 1
    return math.ceil(exp.model.num_moe_layers / rebalance.steps)


def _load_balancer(exp: Experiment, rebalance: Rebalance) -> dict[str, int]:
    return {
        "num_slots": exp.model.num_experts + rebalance.redundant,
        "layer_updates_per_iter": _updates_per_iter(exp, rebalance),
    }


def _eplb_note(exp: Experiment, rebalance: Rebalance) -> str:
    k = _updates_per_iter(exp, rebalance)
    if k == 0:
        return f"{rebalance.conversion}: layer_updates_per_iter 0 (static placement)"
    layers = exp.model.num_moe_layers
    every = math.ceil(layers / k)
    text = (
        f"{rebalance.conversion}: TensorRT-LLM re-places layer_updates_per_iter = {k} MoE "
        f"layer(s) per iteration, one pass over the {layers} MoE layers every {every} "
        "iterations"
    )
    if rebalance.steps is not None and every < rebalance.steps:
        text += (
            f" — faster than the simulated {rebalance.steps}: the slowest online setting "
            "TensorRT-LLM has"
        )
    return text


def _free_fraction(exp: Experiment, memory: MemoryPlan) -> float:
    """kv_cache_free_gpu_memory_fraction: the experiment's, or the share of the memory left
    after weights + activations that holds the planned KV cache (limiting stage)."""
    s, hw = exp.serving, exp.hardware
    if s.kv_cache_free_memory_fraction is not None:
        return s.kv_cache_free_memory_fraction
    total = hw.memory_GiB * GIB - hw.reserved_memory_GiB * GIB
    tokens_per_gpu = memory.kv_tokens_per_replica / exp.layout.cp
    shares = []
    for st in memory.stages:
        free = total - st.weights_bytes - st.activation_bytes
        if free > 0:
            shares.append(tokens_per_gpu * st.kv_bytes_per_token / free)
    return min(1.0, max(shares, default=1.0))
