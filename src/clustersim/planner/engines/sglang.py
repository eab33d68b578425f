"""SGLang (`python -m sglang.launch_server`): which layouts one server can run, and its
command line.

Flags (DESIGN.md §1 and SGLang's server arguments): --tp-size (all GPUs of the server when
--enable-dp-attention is on; attention TP = tp_size / dp_size, which must divide), --dp-size,
--ep-size (MoE TP = tp_size / ep_size), --enable-dp-attention, --enable-eplb,
--ep-num-redundant-experts, --eplb-rebalance-num-iterations (forward passes between
rebalances; the expert distribution recorder's buffer defaults to the same size),
--moe-a2a-backend (deepep / mooncake / nixl need ep_size == tp_size), --pp-size,
--max-running-requests and --chunked-prefill-size (both split over the DP-attention ranks, so
the per-rank values are multiplied by dp), --mem-fraction-static (weights + KV pool),
--page-size, --context-length, --kv-cache-dtype.

Context parallelism: not emitted — SGLang's prefill CP (--attn-cp-size, carved out of
--tp-size) is documented for DSA / DeepSeek-V4-series models.

Disaggregated: launch_server --disaggregation-mode prefill | decode
--disaggregation-transfer-backend nixl; router `python -m sglang_router.launch_router
--pd-disaggregation --prefill URL --decode URL`.
"""

from __future__ import annotations

from clustersim.config.schema import Experiment, Layout, ModelSpec
from clustersim.model.memory import GIB, MemoryPlan
from clustersim.planner.engines.base import (
    ROUTER_PORT,
    Broken,
    Commands,
    DisaggParts,
    Engine,
    Pools,
    PoolSite,
    ServerParts,
    pool_notes,
)
from clustersim.planner.engines.common import (
    block_size,
    fraction,
    is_dp_attention,
    max_model_len,
    model_id,
    nodes_spanned,
)
from clustersim.planner.engines.eplb import Rebalance, StepTime, rebalance_of
from clustersim.planner.engines.speculative import sglang_speculative

SGLANG_LAUNCH = ("python", "-m", "sglang.launch_server")
SGLANG_ROUTER = ("python", "-m", "sglang_router.launch_router")
KV_TRANSFER = "nixl"  # --disaggregation-transfer-backend
# all-to-all MoE backends that force ep_size == tp_size
SGLANG_A2A_NEEDS_EP_EQ_TP = ("deepep", "mooncake", "nixl")
SGLANG_KV_DTYPE = {"fp8": "fp8_e4m3", "bf16": "bf16"}


class SGLang(Engine):
    name = "sglang"

    def cp_rule(self, layout: Layout, model: ModelSpec) -> Broken:
        return (
            f"SGLang: cp = {layout.cp}: its prefill context parallelism (--attn-cp-size, "
            f"carved out of --tp-size) is documented for DSA / DeepSeek-V4-series models only; "
            f"clustersim emits no SGLang CP flags for {model.name}",
            "use vLLM (--prefill-context-parallel-size) or TensorRT-LLM (context_parallel_size)",
        )

    def rule(self, layout: Layout, model: ModelSpec, a2a: str) -> Broken:
        if not model.is_moe:
            return "", ""
        backend = a2a_backend(layout, a2a)
        tp_size = server_tp_size(layout)
        if layout.ep > 1 and tp_size % layout.ep != 0:
            return (
                f"SGLang: --ep-size {layout.ep} must divide --tp-size {tp_size} "
                "(MoE TP = tp_size / ep_size)",
                "",
            )
        if backend in SGLANG_A2A_NEEDS_EP_EQ_TP and layout.ep != tp_size:
            return (
                f"SGLang --moe-a2a-backend {backend} needs ep_size == tp_size "
                f"(ep = {layout.ep}, tp_size = {tp_size})",
                "use plan.sglang_moe_a2a_backend: none (all-reduce / all-gather dispatch)",
            )
        return "", ""

    def server(
        self, exp: Experiment, memory: MemoryPlan, label: str, a2a: str, step: StepTime | None
    ) -> ServerParts:
        return sglang_server(exp, memory, a2a, step)

    def disaggregated(
        self, pools: Pools, sites: tuple[PoolSite, PoolSite], a2a: str
    ) -> DisaggParts:
        commands: Commands = []
        notes: list[str] = []
        for (exp, memory, step), site in zip(pools.each(), sites, strict=True):
            argv, _, server_notes = sglang_server(exp, memory, a2a, step)
            argv += ["--disaggregation-mode", site.role]
            argv += ["--disaggregation-transfer-backend", KV_TRANSFER]
            argv += ["--host", site.host, "--port", str(site.port)]
            if site.first_gpu:  # a decode pool sharing the prefill pool's node
                argv += ["--base-gpu-id", str(site.first_gpu)]
            commands.append((f"{site.role} server ({exp.layout.gpus} GPUs)", tuple(argv)))
            notes += pool_notes(site.role, server_notes)
        pf, dc = sites
        router = [*SGLANG_ROUTER, "--pd-disaggregation"]
        router += ["--prefill", f"http://{pf.host}:{pf.port}"]
        router += ["--decode", f"http://{dc.host}:{dc.port}"]
        router += ["--host", "0.0.0.0", "--port", str(ROUTER_PORT)]
        commands.append(("router (clients connect here)", tuple(router)))
        return commands, {}, notes


def server_tp_size(layout: Layout) -> int:
    """--tp-size: every GPU of the server under DP-attention, else the replica's TP."""
    return layout.tp * layout.dp if is_dp_attention(layout) else layout.tp


def a2a_backend(layout: Layout, a2a: str) -> str:
    """The --moe-a2a-backend value for a layout ('none' for no flag)."""
    if a2a != "auto":
        return a2a
    return "deepep" if layout.ep > 1 and layout.ep == server_tp_size(layout) else "none"


def sglang_server(
    exp: Experiment, memory: MemoryPlan, a2a: str, step: StepTime | None
) -> ServerParts:
    lay, s = exp.layout, exp.serving
    dpa = exp.model.is_moe and is_dp_attention(lay)
    tp_size = lay.tp * lay.dp if dpa else lay.tp
    ranks = lay.dp if dpa else 1  # SGLang divides these limits over the DP-attention ranks
    argv = [*SGLANG_LAUNCH, "--model-path", model_id(exp)]
    argv += ["--tp-size", str(tp_size), "--pp-size", str(lay.pp), "--dp-size", str(lay.dp)]
    notes: list[str] = []
    if dpa:
        argv.append("--enable-dp-attention")
    if exp.model.is_moe and lay.ep > 1:
        argv += ["--ep-size", str(lay.ep)]
        backend = a2a_backend(lay, a2a)
        if backend != "none":
            argv += ["--moe-a2a-backend", backend]
    rebalance = rebalance_of(exp, step)
    if rebalance is not None:
        argv += _eplb_flags(rebalance)
        notes.append(_eplb_note(rebalance))
    argv += ["--max-running-requests", str(s.max_num_seqs * ranks)]
    chunk = s.max_num_batched_tokens * ranks if s.chunked_prefill else -1
    argv += ["--chunked-prefill-size", str(chunk)]
    argv += ["--mem-fraction-static", fraction(_static_fraction(exp, memory))]
    page, page_note = block_size(exp)
    argv += ["--page-size", str(page)]
    notes += [n for n in (page_note,) if n]
    length, note = max_model_len(exp, memory)
    argv += ["--context-length", str(length)]
    kv = SGLANG_KV_DTYPE.get(exp.precision.kv_cache)
    if kv and exp.precision.kv_cache != "bf16":
        argv += ["--kv-cache-dtype", kv]
    notes += [n for n in (note,) if n]
    spec_argv, spec_notes = sglang_speculative(exp)
    argv += spec_argv
    notes += spec_notes
    if ranks > 1:
        notes.append(
            f"--max-running-requests and --chunked-prefill-size are totals over the {ranks} "
            f"DP-attention ranks (SGLang divides them by --dp-size): {s.max_num_seqs} sequences "
            f"and {s.max_num_batched_tokens} tokens per rank"
        )
    if lay.dp > 1 and not dpa:
        notes.append("--dp-size replicas: SGLang's router (sglang_router) is the production front")
    nodes = nodes_spanned(exp, lay.gpus)
    if nodes > 1:
        notes.append(
            f"spans {nodes} nodes: add --nnodes {nodes} --node-rank <i> --dist-init-addr "
            "<head>:<port> on each node"
        )
    return argv, {}, notes


def _eplb_flags(rebalance: Rebalance) -> list[str]:
    """--enable-eplb, --ep-num-redundant-experts and --eplb-rebalance-num-iterations (SGLang
    server arguments): a rebalance every N forward passes, fitted to the expert distribution
    recorder's buffer, whose size defaults to N (the loads since the previous rebalance, as
    simulated)."""
    flags = ["--enable-eplb", "--ep-num-redundant-experts", str(rebalance.redundant)]
    if rebalance.steps is not None:
        flags += ["--eplb-rebalance-num-iterations", str(rebalance.steps)]
    return flags


def _eplb_note(rebalance: Rebalance) -> str:
    if rebalance.steps is not None:
        return f"{rebalance.conversion}: --eplb-rebalance-num-iterations (forward passes)"
    if rebalance.interval_s == 0:
        return (
            f"{rebalance.conversion}; SGLang's --enable-eplb rebalances every "
            "--eplb-rebalance-num-iterations forward passes (default 1000)"
        )
    return rebalance.conversion


def _static_fraction(exp: Experiment, memory: MemoryPlan) -> float:
    """--mem-fraction-static: (weights + the planned KV pool) / device memory, worst stage."""
    hw = exp.hardware
    tokens_per_gpu = memory.kv_tokens_per_replica / exp.layout.cp
    need = max(st.weights_bytes + tokens_per_gpu * st.kv_bytes_per_token for st in memory.stages)
    return min(1.0, need / (hw.memory_GiB * GIB))
