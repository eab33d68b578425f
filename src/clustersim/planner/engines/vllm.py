"""vLLM (`vllm serve`): which layouts one server can run, and its command line.

Flags (DESIGN.md §1 and vLLM's engine arguments): --tensor-parallel-size,
--pipeline-parallel-size, --data-parallel-size, --enable-expert-parallel (EP size = TP × DP:
no other ep), --all2all-backend (docs.vllm.ai serving/expert_parallel_deployment:
deepep_high_throughput for prefill, deepep_low_latency for decode), --enable-eplb +
--eplb-config (EPLBConfig: window_size, step_interval, num_redundant_experts), --max-num-seqs,
--max-num-batched-tokens, --gpu-memory-utilization, --block-size, --max-model-len,
--[no-]enable-chunked-prefill, --kv-cache-dtype. On an MoE model the DP ranks of one server are
never independent: expert layers form a TP group (or, with --enable-expert-parallel, an EP
group) of size TP × DP.

Context parallelism: --prefill-context-parallel-size (ParallelConfig.prefill_context_parallel_size;
"PCP does not support data parallelism yet"; its PCP ranks keep the replica's KV cache
replicated, not sharded: "PCP expands the process world size but does not increase the
KV-cache shard count").

Disaggregated: two `vllm serve` with --kv-transfer-config '{"kv_connector": "NixlConnector",
"kv_role": "kv_producer" | "kv_consumer"}' (vLLM ships no production PD proxy: noted).
"""

from __future__ import annotations

import json

from clustersim.config.schema import Experiment, Layout, ModelSpec
from clustersim.model.memory import GIB, MemoryPlan
from clustersim.planner.engines.base import (
    Broken,
    Commands,
    DisaggParts,
    Engine,
    Pools,
    PoolSite,
    ServerParts,
    Verdict,
    pool_notes,
    visible_devices,
)
from clustersim.planner.engines.common import (
    block_size,
    fraction,
    is_dp_attention,
    max_model_len,
    model_id,
    nodes_spanned,
    separate_servers,
)
from clustersim.planner.engines.eplb import Rebalance, StepTime, rebalance_of
from clustersim.planner.engines.speculative import vllm_speculative

VLLM_SERVE = ("vllm", "serve")
VLLM_KV_CONNECTOR = "NixlConnector"
VLLM_KV_DTYPE = {"fp8": "fp8"}
VLLM_BLOCK_SIZES = (1, 8, 16, 32, 64, 128)  # --block-size choices (tokens)
# vLLM --all2all-backend for the DeepEP kernels the simulation times (sim/all_to_all.py):
# DeepEP normal (high-throughput) kernels serve every batch; low-latency ones only decode.
VLLM_DEEPEP_HT = "deepep_high_throughput"
VLLM_DEEPEP_LL = "deepep_low_latency"


class VLLM(Engine):
    name = "vllm"

    def cp_rule(self, layout: Layout, model: ModelSpec) -> Broken:
        if layout.dp > 1:
            return (
                f"vLLM: prefill context parallelism does not support data parallelism yet "
                f"(cp = {layout.cp}, dp = {layout.dp})",
                separate_servers(layout),
            )
        return "", ""

    def rule(self, layout: Layout, model: ModelSpec, a2a: str) -> Broken:
        tp, dp, ep = layout.tp, layout.dp, layout.ep
        if not model.is_moe:
            return "", ""
        if is_dp_attention(layout):
            return "", ""
        if layout.moe_tp is not None and 1 < ep < tp:
            return (
                f"vLLM has no hybrid expert split (moe_tp = {layout.moe_tp} × ep = {ep}): with "
                f"--enable-expert-parallel every expert lives whole on one rank, "
                f"EP size = TP × DP",
                "",
            )
        if dp == 1 and 1 < ep != tp:
            return (
                f"vLLM: --enable-expert-parallel makes EP size = TP × DP = {tp}, but the "
                f"layout has ep = {ep}",
                "",
            )
        if dp > 1:
            what = (
                f"--enable-expert-parallel makes EP size = TP × DP = {tp * dp}, but the layout "
                f"has ep = {ep}"
                if ep > 1
                else f"expert layers of one server form a TP group of TP × DP = {tp * dp} GPUs"
            )
            return (
                f"vLLM: {what}; its DP ranks of an MoE model run in lock-step, so independent "
                f"replicas (dp = {dp}) cannot be one server",
                separate_servers(layout),
            )
        return "", ""

    def pool_verdict(self, layout: Layout, model: ModelSpec, a2a: str) -> Verdict:
        """vLLM's prefill context parallelism is not documented with a KV connector."""
        if layout.cp > 1:
            return Verdict(
                self.name,
                False,
                f"vLLM: prefill context parallelism (cp = {layout.cp}) in a disaggregated "
                "prefill pool: not documented with a KV connector (its experimental direct-KV "
                "path rejects KV connectors)",
            )
        return self.verdict(layout, model, a2a)

    def server(
        self, exp: Experiment, memory: MemoryPlan, label: str, a2a: str, step: StepTime | None
    ) -> ServerParts:
        return vllm_server(exp, memory, step)

    def disaggregated(
        self, pools: Pools, sites: tuple[PoolSite, PoolSite], a2a: str
    ) -> DisaggParts:
        commands: Commands = []
        notes: list[str] = []
        roles = {"prefill": "kv_producer", "decode": "kv_consumer"}
        for (exp, memory, step), site in zip(pools.each(), sites, strict=True):
            argv, _, server_notes = vllm_server(exp, memory, step)
            kv = {"kv_connector": VLLM_KV_CONNECTOR, "kv_role": roles[site.role]}
            argv = [*visible_devices(site, exp.layout.gpus), *argv, "--port", str(site.port)]
            argv += ["--kv-transfer-config", json.dumps(kv)]
            commands.append((f"{site.role} server ({exp.layout.gpus} GPUs)", tuple(argv)))
            notes += pool_notes(site.role, server_notes)
        pf, dc = sites
        notes.append(
            "vLLM ships no production prefill/decode router: put a PD-aware proxy in front (for "
            "a test, vLLM's tests/v1/kv_connector/nixl_integration/toy_proxy_server.py "
            f"--prefiller-hosts {pf.host} --prefiller-ports {pf.port} --decoder-hosts "
            f"{dc.host} --decoder-ports {dc.port}); set VLLM_NIXL_SIDE_CHANNEL_HOST on each "
            "server when the pools are on different hosts"
        )
        return commands, {}, notes


def vllm_server(exp: Experiment, memory: MemoryPlan, step: StepTime | None) -> ServerParts:
    lay, s = exp.layout, exp.serving
    argv = [*VLLM_SERVE, model_id(exp)]
    argv += ["--tensor-parallel-size", str(lay.tp), "--pipeline-parallel-size", str(lay.pp)]
    argv += ["--data-parallel-size", str(lay.dp)]
    notes: list[str] = []
    if exp.model.is_moe and lay.ep > 1:
        argv += ["--enable-expert-parallel", "--all2all-backend", VLLM_DEEPEP_HT]
        notes.append(
            f"--all2all-backend {VLLM_DEEPEP_HT}: the DeepEP normal kernels simulated for steps "
            f"with prefill tokens; the simulation times decode-only steps with DeepEP's "
            f"low-latency kernels, which one vLLM server cannot switch to (a decode-only "
            f"deployment would use {VLLM_DEEPEP_LL})"
        )
    if lay.cp > 1:
        argv += ["--prefill-context-parallel-size", str(lay.cp)]
    rebalance = rebalance_of(exp, step)
    if rebalance is not None:
        argv += ["--enable-eplb", "--eplb-config", json.dumps(_eplb_config(rebalance))]
        notes.append(_eplb_note(rebalance))
    argv += ["--max-num-seqs", str(s.max_num_seqs)]
    argv += ["--max-num-batched-tokens", str(s.max_num_batched_tokens)]
    argv += ["--gpu-memory-utilization", fraction(_utilisation(exp, memory))]
    block, block_note = block_size(exp)
    if block in VLLM_BLOCK_SIZES:
        argv += ["--block-size", str(block)]
    else:
        notes.append(f"block_size {block} is not a vLLM --block-size choice; not set")
    notes += [n for n in (block_note,) if n]
    # vLLM's PCP ranks each hold the replica's whole KV cache (not sharded over cp)
    length, note = max_model_len(exp, memory, shards=1 if lay.cp > 1 else None)
    argv += ["--max-model-len", str(length)]
    argv.append("--enable-chunked-prefill" if s.chunked_prefill else "--no-enable-chunked-prefill")
    kv = VLLM_KV_DTYPE.get(exp.precision.kv_cache)
    if kv:
        argv += ["--kv-cache-dtype", kv]
    notes += [n for n in (note,) if n]
    if s.kv_admission == "reserve_full":
        notes.append("kv_admission reserve_full has no vLLM equivalent (vLLM preempts)")
    spec_argv, spec_notes = vllm_speculative(exp)
    argv += spec_argv
    notes += spec_notes
    if lay.cp > 1:
        notes.append(
            f"--prefill-context-parallel-size {lay.cp}: vLLM's prefill context parallelism is "
            "experimental (V2 model runner; supported attention backends only) and keeps the "
            f"replica's KV cache on every PCP rank, so a replica holds 1/{lay.cp} of the KV "
            "tokens simulated (CP-sharded KV)"
        )
    nodes = nodes_spanned(exp, lay.gpus)
    if nodes > 1:
        notes.append(
            f"spans {nodes} nodes: start it on a Ray cluster, or per node with "
            "--data-parallel-size-local / --data-parallel-address / --data-parallel-rpc-port"
        )
    return argv, {}, notes


def _eplb_config(rebalance: Rebalance) -> dict[str, int]:
    """--eplb-config (vLLM EPLBConfig, docs.vllm.ai api/vllm/config/parallel): step_interval
    steps between rearrangements, fitted to the loads of the last window_size steps — both the
    simulated interval, so the fit sees the loads since the previous rebalance, as simulated."""
    cfg: dict[str, int] = {}
    if rebalance.steps is not None:
        cfg = {"window_size": rebalance.steps, "step_interval": rebalance.steps}
    return {**cfg, "num_redundant_experts": rebalance.redundant}


def _eplb_note(rebalance: Rebalance) -> str:
    if rebalance.steps is not None:
        return f"{rebalance.conversion}: --eplb-config step_interval = window_size"
    if rebalance.interval_s == 0:
        return (
            f"{rebalance.conversion}; vLLM's EPLB has no static mode: it rearranges every "
            "step_interval steps (default 3000)"
        )
    return rebalance.conversion


def _utilisation(exp: Experiment, memory: MemoryPlan) -> float:
    """--gpu-memory-utilization: the experiment's, or (TensorRT-LLM KV rule) the share of
    device memory that weights + activations + the planned KV cache + reserved take."""
    s, hw = exp.serving, exp.hardware
    if s.kv_cache_free_memory_fraction is None:
        return s.gpu_memory_utilization
    used = max(
        st.weights_bytes + st.activation_bytes + max(st.kv_bytes, 0.0) for st in memory.stages
    )
    return min(1.0, (used + hw.reserved_memory_GiB * GIB) / (hw.memory_GiB * GIB))
