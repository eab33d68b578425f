"""Serving-engine rules and launch configs: vLLM, SGLang, TensorRT-LLM (docs/planner.md §5).

`verdict(engine, layout, model, a2a)` says whether one engine can run a layout as ONE server
launch, and if not, which rule it breaks (one line, with the numbers). `launch_config` writes
the command line (and TensorRT-LLM's extra_llm_api_options YAML) for a layout an engine can
express. Flag names follow DESIGN.md §1 and each engine's own argument parser:

- vLLM (`vllm serve`): --tensor-parallel-size, --pipeline-parallel-size, --data-parallel-size,
  --enable-expert-parallel (EP size = TP × DP), --enable-eplb + --eplb-config,
  --max-num-seqs, --max-num-batched-tokens, --gpu-memory-utilization, --block-size,
  --max-model-len, --[no-]enable-chunked-prefill, --kv-cache-dtype.
  On an MoE model the DP ranks of one server are never independent: expert layers form a
  TP group (or, with --enable-expert-parallel, an EP group) of size TP × DP.
- SGLang (`python -m sglang.launch_server`): --tp-size (all GPUs of the server when
  --enable-dp-attention is on; attention TP = tp_size / dp_size, which must divide),
  --dp-size, --ep-size (MoE TP = tp_size / ep_size), --enable-dp-attention, --enable-eplb,
  --ep-num-redundant-experts, --moe-a2a-backend (deepep / mooncake / nixl need
  ep_size == tp_size), --pp-size, --max-running-requests and --chunked-prefill-size (both
  split over the DP-attention ranks, so the per-rank values are multiplied by dp),
  --mem-fraction-static (weights + KV pool), --page-size, --context-length, --kv-cache-dtype.
- TensorRT-LLM (`trtllm-serve MODEL --extra_llm_api_options cfg.yaml`): --tp_size, --pp_size,
  --ep_size, --max_batch_size, --max_num_tokens, --max_seq_len,
  --kv_cache_free_gpu_memory_fraction on the command line; tensor_parallel_size,
  pipeline_parallel_size, moe_expert_parallel_size, moe_tensor_parallel_size
  (moe_tensor_parallel_size × moe_expert_parallel_size == tensor_parallel_size),
  enable_attention_dp (attention weights replicated on every rank: attention TP = 1),
  enable_chunked_prefill, kv_cache_config, scheduler_config, moe_config in the YAML.
  One trtllm-serve is one replica: there is no data-parallel replica flag.

Context parallelism (cp > 1; verified against each engine's source / docs, docs/planner.md §5):
- vLLM: --prefill-context-parallel-size (ParallelConfig.prefill_context_parallel_size; "PCP
  does not support data parallelism yet"; its PCP ranks keep the replica's KV cache
  replicated, not sharded: "PCP expands the process world size but does not increase the
  KV-cache shard count").
- TensorRT-LLM: `context_parallel_size` in the extra_llm_api_options YAML (LlmArgs field);
  the PyTorch backend's default cp_config.cp_type is ULYSSES (heads split over tp × cp).
- SGLang: not emitted — its prefill CP (--attn-cp-size, carved out of --tp-size) is
  documented for DSA / DeepSeek-V4-series models.

Disaggregated prefill / decode (`disaggregated_launch`): two server groups plus a router,
KV over NIXL in every engine:
- SGLang: launch_server --disaggregation-mode prefill | decode
  --disaggregation-transfer-backend nixl; router `python -m sglang_router.launch_router
  --pd-disaggregation --prefill URL --decode URL`.
- vLLM: two `vllm serve` with --kv-transfer-config '{"kv_connector": "NixlConnector",
  "kv_role": "kv_producer" | "kv_consumer"}' (vLLM ships no production PD proxy: noted).
- TensorRT-LLM: context and generation `trtllm-serve` instances whose YAML carries
  `cache_transceiver_config: {backend: NIXL, max_tokens_in_buffer}` (context servers also
  `disable_overlap_scheduler: true`), then `trtllm-serve disaggregated -c disagg_config.yaml`
  with `context_servers` / `generation_servers` ({num_instances, urls}). One trtllm-serve per
  replica here is fine: the disaggregated server routes over the instances.
"""

from __future__ import annotations

import json
import math
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field

import yaml

from clustersim.config.schema import Experiment, Layout, ModelSpec
from clustersim.model.memory import GIB, MemoryPlan

VLLM_SERVE = ("vllm", "serve")
SGLANG_LAUNCH = ("python", "-m", "sglang.launch_server")
TRTLLM_SERVE = ("trtllm-serve",)
SGLANG_ROUTER = ("python", "-m", "sglang_router.launch_router")
KV_TRANSFER = "nixl"  # SGLang --disaggregation-transfer-backend
VLLM_KV_CONNECTOR = "NixlConnector"
TRTLLM_CACHE_BACKEND = "NIXL"  # cache_transceiver_config.backend
PREFILL_PORT = 30000  # first server port of the prefill pool (SGLang's docs' ports)
DECODE_PORT = 30001
ROUTER_PORT = 8000
TRTLLM_BACKEND = "pytorch"
# SGLang all-to-all MoE backends that force ep_size == tp_size
SGLANG_A2A_NEEDS_EP_EQ_TP = ("deepep", "mooncake", "nixl")
SGLANG_KV_DTYPE = {"fp8": "fp8_e4m3", "bf16": "bf16"}
VLLM_KV_DTYPE = {"fp8": "fp8"}
TRTLLM_KV_DTYPE = {"fp8": "fp8"}
VLLM_BLOCK_SIZES = (1, 8, 16, 32, 64, 128)  # --block-size choices (tokens)
# MLA attention kernels (FlashMLA, CUTLASS MLA) page the latent KV cache in 64-token blocks.
MLA_BLOCK_SIZE = 64
# vLLM --all2all-backend for the DeepEP kernels the simulation times (sim/all_to_all.py):
# DeepEP normal (high-throughput) kernels serve every batch; low-latency ones only decode.
VLLM_DEEPEP_HT = "deepep_high_throughput"
VLLM_DEEPEP_LL = "deepep_low_latency"


@dataclass(frozen=True)
class Verdict:
    """Whether `engine` runs a layout as one server; `rule`: what it breaks (else '')."""

    engine: str
    ok: bool
    rule: str = ""
    workaround: str = ""


@dataclass(frozen=True)
class LaunchConfig:
    """One engine's launch config for one layout (or the rule that prevents it)."""

    engine: str
    label: str
    ok: bool
    rule: str = ""
    workaround: str = ""
    argv: tuple[str, ...] = ()  # the server command (empty when not ok or disaggregated)
    files: dict[str, str] = field(default_factory=dict)  # file name → content (YAML)
    notes: tuple[str, ...] = ()
    # disaggregated deployments: (what it is, argv) per command, in launch order
    commands: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def script(self) -> str:
        """A shell script: notes as comments, any config files as heredocs, the command(s)
        (a disaggregated deployment's commands each under a `# --- what` header, separated by
        blank lines)."""
        lines = ["#!/usr/bin/env bash", f"# {self.engine} launch config for layout {self.label}"]
        lines += [f"# note: {n}" for n in self.notes]
        if not self.ok:
            lines.append(f"# NOT EXPRESSIBLE: {self.rule}")
            if self.workaround:
                lines.append(f"# workaround: {self.workaround}")
            return "\n".join(lines) + "\n"
        for name, text in self.files.items():
            lines += [f"cat > {shlex.quote(name)} <<'EOF'", text.rstrip("\n"), "EOF"]
        if self.argv:
            lines.append(format_command(self.argv))
        for what, argv in self.commands:
            lines += ["", f"# --- {what}", format_command(argv)]
        return "\n".join(lines) + "\n"

    def to_json(self) -> dict[str, object]:
        return {
            "engine": self.engine,
            "label": self.label,
            "ok": self.ok,
            "rule": self.rule,
            "workaround": self.workaround,
            "command": format_command(self.argv) if self.ok else None,
            "argv": list(self.argv),
            "commands": [
                {"what": what, "command": format_command(argv), "argv": list(argv)}
                for what, argv in self.commands
            ],
            "files": dict(self.files),
            "notes": list(self.notes),
        }


def format_command(argv: tuple[str, ...]) -> str:
    """argv as one shell line, one `--flag value` per continuation line (leading
    `VAR=value` environment assignments and the program stay on the first line)."""
    if not argv:
        return ""
    parts: list[str] = []
    for tok in argv:
        if tok.startswith("--") or not parts:
            parts.append(shlex.quote(tok))
        else:
            parts[-1] += " " + shlex.quote(tok)
    return " \\\n    ".join(parts)


# --------------------------------------------------------------------------- layout modes


def is_dp_attention(layout: Layout) -> bool:
    """DP-attention + EP: experts over all tp × dp GPUs, attention per DP rank."""
    return layout.dp > 1 and (layout.dp_attention or layout.ep == layout.tp * layout.dp)


def moe_tp_of(layout: Layout) -> int:
    """GPUs each expert's matrices are split over (TensorRT-LLM moe_tensor_parallel_size)."""
    if layout.moe_tp is not None:
        return layout.moe_tp
    return layout.tp if layout.ep == 1 else 1


def _separate_servers(layout: Layout) -> str:
    return (
        f"run dp = {layout.dp} independent servers of one replica "
        f"(tp={layout.tp} pp={layout.pp}) behind a load balancer"
    )


# --------------------------------------------------------------------------- rules


def verdict(engine: str, layout: Layout, model: ModelSpec, a2a_backend: str = "auto") -> Verdict:
    """Can `engine` express `layout` for `model` as one server launch? (rules in module doc)"""
    if layout.cp > 1:
        rule, workaround = _cp_rule(engine, layout, model)
        if rule:
            return Verdict(engine, False, rule, workaround)
    check = {"vllm": _vllm_rule, "sglang": _sglang_rule, "trtllm": _trtllm_rule}[engine]
    rule, workaround = check(layout, model, a2a_backend)
    return Verdict(engine, not rule, rule, workaround)


def _cp_rule(engine: str, layout: Layout, model: ModelSpec) -> tuple[str, str]:
    """What context parallelism (cp > 1) breaks in `engine` ('' when it can run it)."""
    cp = layout.cp
    if engine == "sglang":
        return (
            f"SGLang: cp = {cp}: its prefill context parallelism (--attn-cp-size, carved out "
            f"of --tp-size) is documented for DSA / DeepSeek-V4-series models only; clustersim "
            f"emits no SGLang CP flags for {model.name}",
            "use vLLM (--prefill-context-parallel-size) or TensorRT-LLM "
            "(context_parallel_size)",
        )
    if engine == "vllm" and layout.dp > 1:
        return (
            f"vLLM: prefill context parallelism does not support data parallelism yet "
            f"(cp = {cp}, dp = {layout.dp})",
            _separate_servers(layout),
        )
    if engine == "trtllm":
        heads = model.num_attention_heads
        if heads % (layout.tp * cp) != 0:
            return (
                f"TensorRT-LLM: the PyTorch backend's context parallelism (cp_type ULYSSES) "
                f"splits attention heads over tp × cp = {layout.tp * cp}, which does not "
                f"divide num_attention_heads = {heads}",
                "",
            )
    return "", ""


def pool_verdict(
    engine: str, role: str, layout: Layout, model: ModelSpec, a2a_backend: str = "auto"
) -> Verdict:
    """Can `engine` serve one pool (`role` prefill | decode) of a disaggregated deployment?

    As a co-located server (`verdict`), except: TensorRT-LLM runs a pool's dp replicas as
    dp trtllm-serve instances behind its disaggregated server (so dp > 1 is fine when the
    instance layout is), and vLLM's prefill context parallelism is not documented with a
    KV connector."""
    if engine == "vllm" and layout.cp > 1:
        return Verdict(
            engine,
            False,
            f"vLLM: prefill context parallelism (cp = {layout.cp}) in a disaggregated "
            "prefill pool: not documented with a KV connector (its experimental direct-KV "
            "path rejects KV connectors)",
        )
    if engine == "trtllm" and not is_dp_attention(layout) and layout.dp > 1:
        inner = verdict(engine, trtllm_instance(layout), model, a2a_backend)
        return Verdict(engine, inner.ok, inner.rule, inner.workaround)
    return verdict(engine, layout, model, a2a_backend)


def trtllm_instance(layout: Layout) -> Layout:
    """One TensorRT-LLM server of a pool: the replica (dp = 1), or the whole DP-attention
    group (one server, enable_attention_dp)."""
    if is_dp_attention(layout) or layout.dp == 1:
        return layout
    return layout.model_copy(update={"dp": 1})


def disagg_verdict(
    engine: str, prefill: Layout, decode: Layout, model: ModelSpec, a2a_backend: str = "auto"
) -> Verdict:
    """Both pools must be expressible: the first pool rule broken, prefixed with the pool."""
    for role, layout in (("prefill", prefill), ("decode", decode)):
        v = pool_verdict(engine, role, layout, model, a2a_backend)
        if not v.ok:
            return Verdict(engine, False, f"{role} pool: {v.rule}", v.workaround)
    return Verdict(engine, True)


def verdicts(
    engines: Sequence[str], layout: Layout, model: ModelSpec, a2a: str = "auto"
) -> dict[str, Verdict]:
    return {e: verdict(e, layout, model, a2a) for e in engines}


def _vllm_rule(layout: Layout, model: ModelSpec, _a2a: str) -> tuple[str, str]:
    tp, dp, ep = layout.tp, layout.dp, layout.ep
    if not model.is_moe:
        return "", ""
    if is_dp_attention(layout):
        return "", ""
    if layout.moe_tp is not None and 1 < ep < tp:
        return (
            f"vLLM has no hybrid expert split (moe_tp = {layout.moe_tp} × ep = {ep}): with "
            f"--enable-expert-parallel every expert lives whole on one rank, EP size = TP × DP",
            "",
        )
    if dp > 1:
        what = (
            f"--enable-expert-parallel makes EP size = TP × DP = {tp * dp}, but the layout has "
            f"ep = {ep}"
            if ep > 1
            else f"expert layers of one server form a TP group of TP × DP = {tp * dp} GPUs"
        )
        return (
            f"vLLM: {what}; its DP ranks of an MoE model run in lock-step, so independent "
            f"replicas (dp = {dp}) cannot be one server",
            _separate_servers(layout),
        )
    return "", ""


def _sglang_a2a(layout: Layout, a2a: str) -> str:
    """The --moe-a2a-backend value for a layout ('none' for no flag)."""
    if a2a != "auto":
        return a2a
    tp_size = layout.tp * layout.dp if is_dp_attention(layout) else layout.tp
    return "deepep" if layout.ep > 1 and layout.ep == tp_size else "none"


def _sglang_rule(layout: Layout, model: ModelSpec, a2a: str) -> tuple[str, str]:
    if not model.is_moe:
        return "", ""
    backend = _sglang_a2a(layout, a2a)
    dpa = is_dp_attention(layout)
    tp_size = layout.tp * layout.dp if dpa else layout.tp
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


def _trtllm_rule(layout: Layout, model: ModelSpec, _a2a: str) -> tuple[str, str]:
    tp, dp, ep = layout.tp, layout.dp, layout.ep
    if is_dp_attention(layout):
        if tp > 1:
            return (
                f"TensorRT-LLM enable_attention_dp replicates attention weights on every rank "
                f"(attention TP = 1); the layout needs attention TP = {tp} per DP rank",
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
    if dp > 1:
        return (
            f"TensorRT-LLM: one trtllm-serve is one replica (no data-parallel replica flag); "
            f"the layout has dp = {dp}",
            _separate_servers(layout),
        )
    return "", ""


# --------------------------------------------------------------------------- launch configs


def launch_config(
    engine: str, exp: Experiment, memory: MemoryPlan, label: str, a2a_backend: str = "auto"
) -> LaunchConfig:
    """The launch config of `exp` (its layout) for `engine`, or the rule that prevents it."""
    v = verdict(engine, exp.layout, exp.model, a2a_backend)
    if not v.ok:
        return LaunchConfig(engine, label, False, v.rule, v.workaround)
    build = {"vllm": _vllm_config, "sglang": _sglang_config, "trtllm": _trtllm_config}[engine]
    argv, files, notes = build(exp, memory, label, a2a_backend)
    notes = [*notes, *_common_notes(exp, engine)]
    return LaunchConfig(engine, label, True, argv=tuple(argv), files=files, notes=tuple(notes))


def _model_id(exp: Experiment) -> str:
    return exp.model.hf_id or exp.model.name


def _redundant(exp: Experiment) -> int:
    eplb = exp.experts.eplb if exp.experts is not None else None
    return eplb.redundant_experts if eplb is not None and exp.layout.ep > 1 else 0


def _max_model_len(
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


def _block_size(exp: Experiment) -> tuple[int, str | None]:
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


def _nodes_spanned(exp: Experiment, gpus_per_server: int) -> int:
    return math.ceil(gpus_per_server / exp.topology.gpus_per_node)


def _common_notes(exp: Experiment, engine: str) -> list[str]:
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


def _vllm_config(
    exp: Experiment, memory: MemoryPlan, label: str, _a2a: str
) -> tuple[list[str], dict[str, str], list[str]]:
    lay, s = exp.layout, exp.serving
    argv = [*VLLM_SERVE, _model_id(exp)]
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
    redundant = _redundant(exp)
    if redundant:
        argv += ["--enable-eplb", "--eplb-config", json.dumps({"num_redundant_experts": redundant})]
    argv += ["--max-num-seqs", str(s.max_num_seqs)]
    argv += ["--max-num-batched-tokens", str(s.max_num_batched_tokens)]
    argv += ["--gpu-memory-utilization", _fmt(_vllm_utilisation(exp, memory))]
    block, block_note = _block_size(exp)
    if block in VLLM_BLOCK_SIZES:
        argv += ["--block-size", str(block)]
    else:
        notes.append(f"block_size {block} is not a vLLM --block-size choice; not set")
    notes += [n for n in (block_note,) if n]
    # vLLM's PCP ranks each hold the replica's whole KV cache (not sharded over cp)
    length, note = _max_model_len(exp, memory, shards=1 if lay.cp > 1 else None)
    argv += ["--max-model-len", str(length)]
    argv.append("--enable-chunked-prefill" if s.chunked_prefill else "--no-enable-chunked-prefill")
    kv = VLLM_KV_DTYPE.get(exp.precision.kv_cache)
    if kv:
        argv += ["--kv-cache-dtype", kv]
    notes += [n for n in (note,) if n]
    if s.kv_admission == "reserve_full":
        notes.append("kv_admission reserve_full has no vLLM equivalent (vLLM preempts)")
    if lay.cp > 1:
        notes.append(
            f"--prefill-context-parallel-size {lay.cp}: vLLM's prefill context parallelism is "
            "experimental (V2 model runner; supported attention backends only) and keeps the "
            f"replica's KV cache on every PCP rank, so a replica holds 1/{lay.cp} of the KV "
            "tokens simulated (CP-sharded KV)"
        )
    nodes = _nodes_spanned(exp, lay.gpus)
    if nodes > 1:
        notes.append(
            f"spans {nodes} nodes: start it on a Ray cluster, or per node with "
            "--data-parallel-size-local / --data-parallel-address / --data-parallel-rpc-port"
        )
    return argv, {}, notes


def _vllm_utilisation(exp: Experiment, memory: MemoryPlan) -> float:
    """--gpu-memory-utilization: the experiment's, or (TensorRT-LLM KV rule) the share of
    device memory that weights + activations + the planned KV cache + reserved take."""
    s, hw = exp.serving, exp.hardware
    if s.kv_cache_free_memory_fraction is None:
        return s.gpu_memory_utilization
    used = max(
        st.weights_bytes + st.activation_bytes + max(st.kv_bytes, 0.0) for st in memory.stages
    )
    return min(1.0, (used + hw.reserved_memory_GiB * GIB) / (hw.memory_GiB * GIB))


def _sglang_config(
    exp: Experiment, memory: MemoryPlan, label: str, a2a: str
) -> tuple[list[str], dict[str, str], list[str]]:
    lay, s = exp.layout, exp.serving
    dpa = exp.model.is_moe and is_dp_attention(lay)
    tp_size = lay.tp * lay.dp if dpa else lay.tp
    ranks = lay.dp if dpa else 1  # SGLang divides these limits over the DP-attention ranks
    argv = [*SGLANG_LAUNCH, "--model-path", _model_id(exp)]
    argv += ["--tp-size", str(tp_size), "--pp-size", str(lay.pp), "--dp-size", str(lay.dp)]
    notes: list[str] = []
    if dpa:
        argv.append("--enable-dp-attention")
    if exp.model.is_moe and lay.ep > 1:
        argv += ["--ep-size", str(lay.ep)]
        backend = _sglang_a2a(lay, a2a)
        if backend != "none":
            argv += ["--moe-a2a-backend", backend]
    redundant = _redundant(exp)
    if redundant:
        argv += ["--enable-eplb", "--ep-num-redundant-experts", str(redundant)]
    argv += ["--max-running-requests", str(s.max_num_seqs * ranks)]
    chunk = s.max_num_batched_tokens * ranks if s.chunked_prefill else -1
    argv += ["--chunked-prefill-size", str(chunk)]
    argv += ["--mem-fraction-static", _fmt(_sglang_static_fraction(exp, memory))]
    page, page_note = _block_size(exp)
    argv += ["--page-size", str(page)]
    notes += [n for n in (page_note,) if n]
    length, note = _max_model_len(exp, memory)
    argv += ["--context-length", str(length)]
    kv = SGLANG_KV_DTYPE.get(exp.precision.kv_cache)
    if kv and exp.precision.kv_cache != "bf16":
        argv += ["--kv-cache-dtype", kv]
    notes += [n for n in (note,) if n]
    if ranks > 1:
        notes.append(
            f"--max-running-requests and --chunked-prefill-size are totals over the {ranks} "
            f"DP-attention ranks (SGLang divides them by --dp-size): {s.max_num_seqs} sequences "
            f"and {s.max_num_batched_tokens} tokens per rank"
        )
    if lay.dp > 1 and not dpa:
        notes.append("--dp-size replicas: SGLang's router (sglang_router) is the production front")
    servers_gpus = lay.gpus
    nodes = _nodes_spanned(exp, servers_gpus)
    if nodes > 1:
        notes.append(
            f"spans {nodes} nodes: add --nnodes {nodes} --node-rank <i> --dist-init-addr "
            "<head>:<port> on each node"
        )
    return argv, {}, notes


def _sglang_static_fraction(exp: Experiment, memory: MemoryPlan) -> float:
    """--mem-fraction-static: (weights + the planned KV pool) / device memory, worst stage."""
    hw = exp.hardware
    tokens_per_gpu = memory.kv_tokens_per_replica / exp.layout.cp
    need = max(st.weights_bytes + tokens_per_gpu * st.kv_bytes_per_token for st in memory.stages)
    return min(1.0, need / (hw.memory_GiB * GIB))


def _trtllm_config(
    exp: Experiment, memory: MemoryPlan, label: str, _a2a: str
) -> tuple[list[str], dict[str, str], list[str]]:
    lay, s = exp.layout, exp.serving
    dpa = exp.model.is_moe and is_dp_attention(lay)
    tp_size = lay.tp * lay.dp if dpa else lay.tp
    length, note = _max_model_len(exp, memory)
    fraction = _trtllm_free_fraction(exp, memory)
    cfg_name = f"{label}.trtllm.yaml"
    argv = [*TRTLLM_SERVE, _model_id(exp), "--backend", TRTLLM_BACKEND]
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
    argv += ["--kv_cache_free_gpu_memory_fraction", _fmt(fraction)]
    argv += ["--extra_llm_api_options", cfg_name]
    kv_cfg: dict[str, object] = {"free_gpu_memory_fraction": round(fraction, 3)}
    kv = TRTLLM_KV_DTYPE.get(exp.precision.kv_cache)
    if kv:
        kv_cfg["dtype"] = kv
    if lay.cp > 1:
        cfg["context_parallel_size"] = lay.cp
    cfg["enable_chunked_prefill"] = s.chunked_prefill
    cfg["kv_cache_config"] = kv_cfg
    policy = "GUARANTEED_NO_EVICT" if s.kv_admission == "reserve_full" else "MAX_UTILIZATION"
    cfg["scheduler_config"] = {"capacity_scheduler_policy": policy}
    redundant = _redundant(exp)
    if redundant:
        slots = exp.model.num_experts + redundant
        cfg["moe_config"] = {"load_balancer": {"num_slots": slots, "layer_updates_per_iter": 1}}
    notes = [n for n in (note,) if n]
    if s.kv_cache_free_memory_fraction is None:
        notes.append(
            f"kv_cache free fraction {fraction:.3f} reproduces the planned KV cache "
            f"({memory.kv_per_gpu_bytes / GIB:.2f} GiB per GPU) under TensorRT-LLM's rule"
        )
    if lay.cp > 1:
        notes.append(
            f"context_parallel_size {lay.cp}: TensorRT-LLM's PyTorch backend runs it as "
            "cp_config.cp_type ULYSSES by default (all-to-all over attention heads); the "
            "simulation models ring attention with the same per-rank tokens and KV shard"
        )
    nodes = _nodes_spanned(exp, lay.gpus)
    if nodes > 1:
        notes.append(f"spans {nodes} nodes: launch under mpirun / srun (trtllm-llmapi-launch)")
    text = yaml.safe_dump(cfg, sort_keys=False)
    return argv, {cfg_name: text}, notes


def _trtllm_free_fraction(exp: Experiment, memory: MemoryPlan) -> float:
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


def _fmt(x: float) -> str:
    """A fraction with 3 decimals, rounded down so the engine never gets more than planned."""
    return f"{math.floor(x * 1000) / 1000:.3f}"


# --------------------------------------------------------------------------- disaggregated

PoolView = tuple[Experiment, MemoryPlan]  # a pool as its servers see it: its view, its memory


@dataclass(frozen=True)
class _PoolSite:
    """Where a pool's servers listen, and the GPUs they use when both pools share a node."""

    role: str  # prefill | decode
    host: str
    port: int
    first_gpu: int | None  # first GPU index on the shared node; None: the pool has its nodes


def disaggregated_launch(
    engine: str, label: str, pools: tuple[PoolView, PoolView], a2a_backend: str = "auto"
) -> LaunchConfig:
    """Launch config of a disaggregated deployment for `engine` (module docstring): both pool
    servers and the router, or the rule one pool breaks."""
    (pf, _), (dc, _) = pools
    v = disagg_verdict(engine, pf.layout, dc.layout, pf.model, a2a_backend)
    if not v.ok:
        return LaunchConfig(engine, label, False, v.rule, v.workaround)
    n_pf, n_dc = pf.layout.gpus, dc.layout.gpus
    shared = n_pf + n_dc <= pf.topology.gpus_per_node  # placement: prefill first, then decode
    sites = (
        _PoolSite("prefill", "127.0.0.1" if shared else "<prefill-host>", PREFILL_PORT,
                  0 if shared else None),
        _PoolSite("decode", "127.0.0.1" if shared else "<decode-host>", DECODE_PORT,
                  n_pf if shared else None),
    )
    build = {"vllm": _vllm_disagg, "sglang": _sglang_disagg, "trtllm": _trtllm_disagg}[engine]
    commands, files, notes = build(pools, sites, a2a_backend)
    if not shared:
        notes.append(
            "replace <prefill-host> / <decode-host> with the address of each pool's first "
            "node (prefill pool on the first GPUs of the topology, decode pool after it)"
        )
    notes += _common_notes(pf, engine)
    return LaunchConfig(
        engine, label, True, files=files, notes=tuple(notes), commands=tuple(commands)
    )


Commands = list[tuple[str, tuple[str, ...]]]
DisaggParts = tuple[Commands, dict[str, str], list[str]]


def _visible(site: _PoolSite, gpus: int) -> list[str]:
    """CUDA_VISIBLE_DEVICES=… when the pools share a node (the engine sees its pool only)."""
    if site.first_gpu is None:
        return []
    ids = ",".join(str(site.first_gpu + i) for i in range(gpus))
    return [f"CUDA_VISIBLE_DEVICES={ids}"]


def _pool_notes(role: str, notes: list[str]) -> list[str]:
    return [f"{role} pool: {n}" for n in notes]


def _sglang_disagg(
    pools: tuple[PoolView, PoolView], sites: tuple[_PoolSite, _PoolSite], a2a: str
) -> DisaggParts:
    commands: Commands = []
    notes: list[str] = []
    for (exp, memory), site in zip(pools, sites, strict=True):
        argv, _, pool_notes = _sglang_config(exp, memory, site.role, a2a)
        argv += ["--disaggregation-mode", site.role]
        argv += ["--disaggregation-transfer-backend", KV_TRANSFER]
        argv += ["--host", site.host, "--port", str(site.port)]
        if site.first_gpu:  # a decode pool sharing the prefill pool's node
            argv += ["--base-gpu-id", str(site.first_gpu)]
        commands.append((f"{site.role} server ({exp.layout.gpus} GPUs)", tuple(argv)))
        notes += _pool_notes(site.role, pool_notes)
    pf, dc = sites
    router = [*SGLANG_ROUTER, "--pd-disaggregation"]
    router += ["--prefill", f"http://{pf.host}:{pf.port}", "--decode", f"http://{dc.host}:{dc.port}"]
    router += ["--host", "0.0.0.0", "--port", str(ROUTER_PORT)]
    commands.append(("router (clients connect here)", tuple(router)))
    return commands, {}, notes


def _vllm_disagg(
    pools: tuple[PoolView, PoolView], sites: tuple[_PoolSite, _PoolSite], a2a: str
) -> DisaggParts:
    commands: Commands = []
    notes: list[str] = []
    roles = {"prefill": "kv_producer", "decode": "kv_consumer"}
    for (exp, memory), site in zip(pools, sites, strict=True):
        argv, _, pool_notes = _vllm_config(exp, memory, site.role, a2a)
        kv = {"kv_connector": VLLM_KV_CONNECTOR, "kv_role": roles[site.role]}
        argv = [*_visible(site, exp.layout.gpus), *argv, "--port", str(site.port)]
        argv += ["--kv-transfer-config", json.dumps(kv)]
        commands.append((f"{site.role} server ({exp.layout.gpus} GPUs)", tuple(argv)))
        notes += _pool_notes(site.role, pool_notes)
    pf, dc = sites
    notes.append(
        "vLLM ships no production prefill/decode router: put a PD-aware proxy in front (for a "
        "test, vLLM's tests/v1/kv_connector/nixl_integration/toy_proxy_server.py "
        f"--prefiller-hosts {pf.host} --prefiller-ports {pf.port} --decoder-hosts {dc.host} "
        f"--decoder-ports {dc.port}); set VLLM_NIXL_SIDE_CHANNEL_HOST on each server when the "
        "pools are on different hosts"
    )
    return commands, {}, notes


def _trtllm_disagg(
    pools: tuple[PoolView, PoolView], sites: tuple[_PoolSite, _PoolSite], a2a: str
) -> DisaggParts:
    commands: Commands = []
    files: dict[str, str] = {}
    notes: list[str] = []
    servers: dict[str, dict[str, object]] = {}
    port = PREFILL_PORT
    buffer_tokens = pools[0][0].serving.max_num_batched_tokens
    for (exp, memory), site in zip(pools, sites, strict=True):
        inst = trtllm_instance(exp.layout)
        n = 1 if inst is exp.layout else exp.layout.dp
        argv, inst_files, pool_notes = _trtllm_config(
            exp.model_copy(update={"layout": inst}), memory, site.role, a2a
        )
        ((name, text),) = inst_files.items()
        cfg = yaml.safe_load(text)
        if site.role == "prefill":  # the overlap scheduler is not supported on context servers
            cfg["disable_overlap_scheduler"] = True
        cfg["cache_transceiver_config"] = {
            "backend": TRTLLM_CACHE_BACKEND,
            "max_tokens_in_buffer": buffer_tokens,
        }
        files[name] = yaml.safe_dump(cfg, sort_keys=False)
        argv = [*_visible(site, inst.gpus), *argv, "--host", site.host, "--port", str(port)]
        what = "context (prefill)" if site.role == "prefill" else "generation (decode)"
        commands.append((f"{what} server 1 of {n} ({inst.gpus} GPUs each)", tuple(argv)))
        servers[site.role] = {
            "num_instances": n,
            "urls": [f"{site.host}:{port + i}" for i in range(n)],
        }
        if n > 1:
            notes.append(
                f"{site.role} pool: start {n} such servers, one per replica's {inst.gpus} GPUs, "
                f"on ports {port}..{port + n - 1} (disagg_config.yaml lists them)"
            )
        notes += _pool_notes(site.role, pool_notes)
        port += n
    disagg = {
        "hostname": "0.0.0.0",
        "port": ROUTER_PORT,
        "backend": TRTLLM_BACKEND,
        "context_servers": servers["prefill"],
        "generation_servers": servers["decode"],
    }
    files["disagg_config.yaml"] = yaml.safe_dump(disagg, sort_keys=False)
    commands.append(
        ("disaggregated server (clients connect here)",
         (*TRTLLM_SERVE, "disaggregated", "-c", "disagg_config.yaml"))
    )
    notes.append(
        f"cache_transceiver_config.max_tokens_in_buffer = {buffer_tokens} (the prefill "
        "chunk); TensorRT-LLM recommends ≥ the longest prompt, at the cost of buffer memory "
        "the plan did not reserve"
    )
    return commands, files, notes
