"""Roofline step-time model of one pipeline stage's TP shard (docs/cost_model.md §4, §6).

GPU time (seconds) = Σ over kernels of max(compute time, memory time, kernel floor) + overhead:

    linear      one Gemm per projection kernel (attention projections, dense MLP, shared
                experts, router), each at least a kernel floor; plus the elementwise kernels
                between them (norms, residual adds, rope, SiLU, KV write): memory-bound, added
                after the GEMMs, at least the engine's elementwise kernel count × floor
    attn_pf     prefill attention:  FLOPs ∝ (query, key) pairs, at attention_efficiency
    attn_dec    decode attention:   KV bytes read ∝ Σ context (at decode_attention_efficiency
                of HBM bandwidth), and its FLOPs (MLA: at mla_decode_efficiency); plus
                decode_seq_overhead_us per decoding sequence per layer; at least its kernels'
                floors
    moe         routed experts of each MoE layer (weights read only for touched experts), at
                least the grouped GEMMs' and MoE kernels' floors
    embed       first stage: embedding gather
    lm_head     last stage: logits for the rows that emit a token
    overhead    hw.step_overhead_us + the engine's per-step kernels × floor

Step time = GPU time + the engine's host time (first stage), or max of the two with an
overlap scheduler (`with_host`). A kernel's floor is hw.kernel_floor_us inside a CUDA graph,
at least the engine's eager launch time outside one (catalog/engines.py).

Compute time = FLOPs / (peak(dtype) · eff(M)); memory time = bytes / (HBM bw · hbm_efficiency).
Matmul efficiency falls for small GEMMs: eff(M) = matmul_efficiency · M / (M + M_half), M the
rows of the GEMM (tokens; routed pairs per expert for MoE): every GEMM costs M_half extra
token-rows. Efficiencies ≤ 1 keep every term above the ideal roofline at peak.

`compute_s` is on the simulator's hot path: all coefficients are precomputed in __init__ and
a call is a short loop over the stage's GEMM kernels, no allocation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from clustersim.catalog.engines import DEFAULT_ENGINE, EngineProfile, get_engine
from clustersim.config.schema import DTYPE_BYTES, DType, HardwareSpec, ModelSpec, Precision
from clustersim.model.params import (
    HIGH_PRECISION_BYTES,
    expert_sharding,
    kv_elements_per_token_per_layer,
    kv_heads_per_rank,
    param_counts,
    residual_bytes,
)

DEFAULT_MATMUL_HALF_TOKENS = 16.0  # GEMM rows at which matmul efficiency is half its maximum,
# HardwareSpec's default; Hopper profiles carry their own (docs/calibration.md)
LOGITS_BYTES = 4.0  # fp32 logits written by the LM head
_WIDER_FALLBACK: dict[str, tuple[DType, ...]] = {
    "fp4": ("fp4", "fp8", "bf16", "fp16"),
    "fp8": ("fp8", "bf16", "fp16"),
    "bf16": ("bf16", "fp16"),
    "fp16": ("fp16", "bf16"),
}


def wider(a: DType, b: DType) -> DType:
    """The dtype with more bytes per element (the one a mixed-precision kernel computes in)."""
    return a if DTYPE_BYTES[a] >= DTYPE_BYTES[b] else b


def matmul_dtype(precision: Precision) -> DType:
    """Tensor-core dtype of linear layers: fp8 weights × fp8 activations → fp8; fp8 weights
    with bf16 activations (weight-only quantisation) → bf16."""
    return wider(precision.weights, precision.activations)


def attention_dtype(precision: Precision) -> DType:
    """Tensor-core dtype of attention: fp8 only when both activations and KV cache are fp8."""
    return wider(precision.activations, precision.kv_cache)


def peak_flops(hw: HardwareSpec, dtype: str) -> float:
    """Dense peak FLOP/s for `dtype`, falling back to the next wider dtype the GPU supports."""
    for d in _WIDER_FALLBACK[dtype]:
        tf = hw.peak_tflops.get(d)
        if tf:
            return float(tf) * 1e12
    raise ValueError(f"hardware {hw.name!r} has no tensor-core peak for {dtype} or wider")


class MoECoefficients(NamedTuple):
    """Per-MoE-layer routed-expert costs on one GPU, for vectorised (numpy) callers.

    time(pairs, touched) = max(flop_s_per_pair · (pairs + half_pairs · touched),
                               weight_s_per_expert · touched + act_s_per_pair · pairs,
                               floor_s)
    pairs: (token, expert) assignments routed to this GPU; touched: distinct local experts hit;
    floor_s: the grouped GEMMs' and the MoE kernels' (top-k, permute, unpermute) launch floors.
    """

    flop_s_per_pair: float
    half_pairs: float
    weight_s_per_expert: float
    act_s_per_pair: float
    floor_s: float = 0.0


class Gemm(NamedTuple):
    """One GEMM kernel that each of `layers` layers of the stage runs on this GPU.

    time per layer(T rows) = max((T + M½) · flop_s, weight_s + T · act_s, floor)."""

    layers: float  # how many of the stage's layers run it
    flop_s: float  # s per token-row at matmul_efficiency (2 · params / rate)
    weight_s: float  # s to stream its weights once at hbm_efficiency
    act_s: float  # s per token of its input + output activations


class StageCostModel:
    """Step time of one pipeline stage's TP shard (one GPU; all TP ranks are symmetric).

    model, hw, precision: what runs where; tp: TP degree; num_layers: the stage's layers;
    first_stage / last_stage: whether it holds the embedding / LM head (and the scheduler: the
    engine's host time is charged on the first stage).
    Keyword-only: ep, moe_tp: expert sharding (see params.expert_sharding); first_layer: the
    stage's first layer index (None: 0 on the first stage, otherwise the stage is taken to hold
    none of the leading dense layers); matmul_half_tokens: M_half of the efficiency curve
    (None: the hardware profile's `matmul_half_tokens`); engine: the serving engine's kernel
    counts and host costs (None: the default engine, catalog/engines.py); cuda_graphs: whether
    decode steps up to the engine's graph batch replay a CUDA graph.
    """

    __slots__ = (
        "_attn_dec_s",
        "_attn_floor_eager_s",
        "_attn_floor_graph_s",
        "_attn_pf_s",
        "_attn_seq_s",
        "_elt_floor_eager_s",
        "_elt_floor_graph_s",
        "_elt_s",
        "_emb_s",
        "_floor_eager_s",
        "_floor_graph_s",
        "_gemms",
        "_graph_max_batch",
        "_host_overlap",
        "_host_seq_s",
        "_host_step_s",
        "_lm",
        "_lm_act_s",
        "_lm_flop_s",
        "_lm_w_s",
        "_m_half",
        "_moe_a",
        "_moe_f",
        "_moe_group",
        "_moe_keep",
        "_moe_pairs_per_tok",
        "_moe_w",
        "_n_moe",
        "_overhead_eager_s",
        "_overhead_graph_s",
        "_residual_bytes",
        "allreduces_per_step",
        "engine",
        "experts_per_rank",
        "first_stage",
        "hidden_size",
        "last_stage",
        "moe",
        "num_dense_layers",
        "num_layers",
        "num_moe_layers",
        "tp",
    )

    def __init__(
        self,
        model: ModelSpec,
        hw: HardwareSpec,
        precision: Precision,
        tp: int,
        num_layers: int,
        first_stage: bool,
        last_stage: bool,
        *,
        ep: int = 1,
        moe_tp: int | None = None,
        first_layer: int | None = None,
        matmul_half_tokens: float | None = None,
        engine: EngineProfile | None = None,
        cuda_graphs: bool = True,
    ) -> None:
        start = (
            first_layer
            if first_layer is not None
            else (0 if first_stage else model.first_dense_layers)
        )
        if tp < 1 or num_layers < 1 or start < 0 or start + num_layers > model.num_layers:
            raise ValueError(
                f"bad stage: tp={tp}, layers {start}..{start + num_layers - 1}"
                f" of {model.num_layers}"
            )
        if matmul_half_tokens is None:
            matmul_half_tokens = hw.matmul_half_tokens
        if matmul_half_tokens < 0:
            raise ValueError("matmul_half_tokens must be ≥ 0")
        n_dense = num_layers
        if model.is_moe:
            n_dense = max(0, min(start + num_layers, model.first_dense_layers) - start)
        self.engine = engine if engine is not None else get_engine(DEFAULT_ENGINE)
        self.tp, self.num_layers = tp, num_layers
        self.first_stage, self.last_stage = first_stage, last_stage
        self.num_dense_layers, self.num_moe_layers = n_dense, num_layers - n_dense
        self.hidden_size = model.hidden_size
        self._residual_bytes = residual_bytes(precision)
        self.allreduces_per_step = 2 * num_layers if tp > 1 else 0
        self._m_half = float(matmul_half_tokens)
        self._init_floors(hw, cuda_graphs)
        self._init_linear(model, hw, precision)
        self._init_attention(model, hw, precision)
        self._init_moe(model, hw, precision, ep, moe_tp)
        self._init_ends(model, hw, precision)
        self._init_host()

    # ------------------------------------------------------------------ coefficients

    def _init_floors(self, hw: HardwareSpec, cuda_graphs: bool) -> None:
        """Least time of one kernel: the GPU floor inside a CUDA graph; outside one, at least
        the host's launch time per kernel (the GPU cannot run kernels faster than they come)."""
        self._floor_graph_s = hw.kernel_floor_us * 1e-6
        self._floor_eager_s = max(hw.kernel_floor_us, self.engine.eager_launch_us) * 1e-6
        self._graph_max_batch = self.engine.graph_max_batch if cuda_graphs else -1

    def _init_linear(self, model: ModelSpec, hw: HardwareSpec, precision: Precision) -> None:
        """One Gemm per projection kernel (attention, dense MLP, shared experts, router), and
        the memory-bound elementwise kernels between them."""
        c, tp = param_counts(model), self.tp
        wb, rb = DTYPE_BYTES[precision.weights], self._residual_bytes
        flops_rate = peak_flops(hw, matmul_dtype(precision)) * hw.matmul_efficiency  # FLOP/s
        bw = hw.hbm_bandwidth_GBps * 1e9 * hw.hbm_efficiency  # bytes/s
        n, nd, nm = self.num_layers, self.num_dense_layers, self.num_moe_layers

        def gemm(layers: float, params: float, io: float, w_bytes: float = wb) -> Gemm:
            """A projection of `params` weights on this GPU reading + writing `io` elements
            per token."""
            return Gemm(layers, 2.0 * params / flops_rate, params * w_bytes / bw, rb * io / bw)

        h, heads = model.hidden_size, model.num_attention_heads
        gemms = attention_gemms(model, tp, gemm, n)
        if nd:
            inter = model.intermediate_size / tp
            gemms += [gemm(nd, 2.0 * h * inter, h + 2.0 * inter), gemm(nd, inter * h, inter + h)]
        if nm and c.num_shared_experts:
            inter = c.num_shared_experts * model.moe_intermediate_size / tp
            gemms += [gemm(nm, 2.0 * h * inter, h + 2.0 * inter), gemm(nm, inter * h, inter + h)]
        if nm:
            e = model.num_experts
            gemms.append(gemm(nm, h * e, h + e, HIGH_PRECISION_BYTES))  # router
        self._gemms = tuple(gemms)
        if model.uses_mla:
            qk = model.qk_nope_head_dim + model.qk_rope_head_dim
            proj_out = heads / tp * (qk + model.v_head_dim) + model.kv_lora_rank
        else:
            proj_out = (heads / tp + 2 * kv_heads_per_rank(model, tp)) * model.head_dim
        kv_write = kv_elements_per_token_per_layer(model, tp) * DTYPE_BYTES[precision.kv_cache]
        ffn = nd * model.intermediate_size / tp  # Σ layers of this rank's FFN width
        ffn += nm * c.num_shared_experts * model.moe_intermediate_size / tp
        # Elementwise kernels (memory-bound, they run between the GEMMs and overlap nothing):
        # two norms (read + write h) and two residual adds (read 2h, write h) = 10 h, rope on
        # q / k ≈ proj_out, SiLU·mul (read 2·I, write I), and the new token's KV write.
        elementwise = n * (rb * (10.0 * h + proj_out) + kv_write) + rb * 3.0 * ffn
        self._elt_s = elementwise / bw  # s per token
        kernels = self.engine.elementwise_kernels + (2 if model.uses_mla else 0)
        if precision.activations in ("fp8", "fp4"):
            kernels += self.engine.fp8_quant_kernels
        self._elt_floor_graph_s = n * kernels * self._floor_graph_s
        self._elt_floor_eager_s = n * kernels * self._floor_eager_s

    def _init_attention(self, model: ModelSpec, hw: HardwareSpec, precision: Precision) -> None:
        """Prefill: FLOPs per (query, key) pair. Decode: max(FLOPs, KV bytes) per context token
        (MLA: the absorbed FlashMLA-style kernel at `mla_decode_efficiency` of peak)."""
        heads = model.num_attention_heads / self.tp
        peak = peak_flops(hw, attention_dtype(precision))
        rate = peak * hw.attention_efficiency
        kv_eff = hw.decode_attention_efficiency or hw.hbm_efficiency
        bw = hw.hbm_bandwidth_GBps * 1e9 * kv_eff  # bytes/s of the decode KV read
        kv_bytes = kv_elements_per_token_per_layer(model, self.tp) * DTYPE_BYTES[precision.kv_cache]
        if model.uses_mla:
            qk = model.qk_nope_head_dim + model.qk_rope_head_dim
            pf_flops = 2.0 * heads * (qk + model.v_head_dim)  # non-absorbed (MHA) prefill
            # absorbed decode: scores over (kv_lora + rope), values over kv_lora
            latent = model.kv_lora_rank + model.qk_rope_head_dim
            dec_flops = 2.0 * heads * (latent + model.kv_lora_rank)
            dec_rate = peak * hw.mla_decode_efficiency
        else:
            pf_flops = 4.0 * heads * model.head_dim  # QKᵀ and PV, 2 FLOPs per MAC
            dec_flops = pf_flops
            dec_rate = rate
        n = self.num_layers
        self._attn_pf_s = n * pf_flops / rate  # s per (query, key) pair
        self._attn_dec_s = n * max(dec_flops / dec_rate, kv_bytes / bw)  # s per context token
        self._attn_seq_s = n * hw.decode_seq_overhead_us * 1e-6  # s per decoding sequence
        kernels = self.engine.attention_kernels
        self._attn_floor_graph_s = n * kernels * self._floor_graph_s
        self._attn_floor_eager_s = n * kernels * self._floor_eager_s

    def _init_moe(
        self, model: ModelSpec, hw: HardwareSpec, precision: Precision, ep: int, moe_tp: int | None
    ) -> None:
        """Routed experts of one MoE layer (uniform routing in compute_s; see moe_layer_s).

        Two grouped GEMMs (gate_up, down) stream each touched expert's weights at
        `grouped_gemm_hbm_efficiency`; with the top-k / permute / unpermute kernels of the
        engine they cost at least (2 + moe_kernels) kernel floors per layer."""
        c = param_counts(model)
        sh = expert_sharding(model, self.tp, ep, moe_tp)
        self._n_moe = float(self.num_moe_layers)
        self.experts_per_rank = sh.experts_per_rank
        # sampled MoE steps are priced per layer from numpy (moe_cost.py): graph floors
        moe_floor_s = (2 + self.engine.moe_kernels) * self._floor_graph_s
        if not model.is_moe:
            self.moe = MoECoefficients(0.0, 0.0, 0.0, 0.0)
            self._moe_group, self._moe_keep, self._moe_pairs_per_tok = 0.0, 1.0, 0.0
            self._moe_f = self._moe_w = self._moe_a = 0.0
            return
        wb, rb = DTYPE_BYTES[precision.weights], self._residual_bytes
        rate = peak_flops(hw, matmul_dtype(precision)) * hw.matmul_efficiency
        bw = hw.hbm_bandwidth_GBps * 1e9 * hw.grouped_gemm_hbm_efficiency
        expert_rank = c.expert / sh.moe_tp  # params of one local expert shard
        h, inter = model.hidden_size, model.moe_intermediate_size / sh.moe_tp
        self.moe = MoECoefficients(
            flop_s_per_pair=2.0 * expert_rank / rate,
            half_pairs=self._m_half,
            weight_s_per_expert=expert_rank * wb / bw,
            act_s_per_pair=rb * (2.0 * h + 6.0 * inter) / bw,
            floor_s=moe_floor_s,
        )
        self._moe_f, self._moe_w, self._moe_a = (
            self.moe.flop_s_per_pair,
            self.moe.weight_s_per_expert,
            self.moe.act_s_per_pair,
        )
        k, e = model.experts_per_token, model.num_experts
        self._moe_group = sh.group_factor  # tokens entering the EP group per replica token
        self._moe_keep = 1.0 - k / e  # P(a token does not pick a given expert)
        self._moe_pairs_per_tok = sh.group_factor * k / sh.ep  # pairs on this GPU per token

    def _init_ends(self, model: ModelSpec, hw: HardwareSpec, precision: Precision) -> None:
        """Embedding gather (first stage), LM head and sampling kernels (last stage), 16-bit
        weights; the per-step GPU overhead."""
        h, v, tp, rb = model.hidden_size, model.vocab_size, self.tp, self._residual_bytes
        bw = hw.hbm_bandwidth_GBps * 1e9 * hw.hbm_efficiency
        self._emb_s = h * (HIGH_PRECISION_BYTES + rb) / bw if self.first_stage else 0.0
        self._lm = self.last_stage
        lm_dtype = wider("bf16", precision.activations)
        rate = peak_flops(hw, lm_dtype) * hw.matmul_efficiency
        lm_params = v * h / tp
        self._lm_flop_s = 2.0 * lm_params / rate
        self._lm_w_s = lm_params * HIGH_PRECISION_BYTES / bw
        self._lm_act_s = (h * rb + v / tp * LOGITS_BYTES) / bw
        kernels = self.engine.step_kernels if self.last_stage else 0
        base = hw.step_overhead_us * 1e-6
        self._overhead_graph_s = base + kernels * self._floor_graph_s
        self._overhead_eager_s = base + kernels * self._floor_eager_s

    def _init_host(self) -> None:
        """Engine host time per step (scheduler, sampling, and where the engine loop streams
        responses, detokenise + send): charged on the first stage."""
        eng = self.engine
        on = 1e-6 if self.first_stage else 0.0
        self._host_step_s = (eng.host_step_us + eng.stream_step_us) * on
        self._host_seq_s = (eng.host_seq_us + eng.stream_seq_us) * on
        self._host_overlap = eng.host_overlap

    # ------------------------------------------------------------------ hot path

    def compute_s(
        self,
        prefill_tokens: int,
        prefill_attn_pairs: float,
        decode_tokens: int,
        decode_ctx_tokens: int,
        prefill_seqs: int = 1,
    ) -> float:
        """Seconds of one engine step on this stage (see module docstring), host time included.

        prefill_attn_pairs: Σ over prefill chunks of (query, key) pairs (chunk of L tokens at
        offset c: L·c + L(L+1)/2); decode_ctx_tokens: Σ context lengths of decode sequences;
        prefill_seqs: prefill chunks in the step (LM-head rows = decode_tokens + prefill_seqs).
        """
        gpu = self.dense_part_s(
            prefill_tokens, prefill_attn_pairs, decode_tokens, decode_ctx_tokens, prefill_seqs
        )
        t = prefill_tokens + decode_tokens
        if self._n_moe and t > 0:
            gpu += self._n_moe * self.moe_layer_s(*self.uniform_moe_load(t))
        seqs = step_seqs(prefill_tokens, decode_tokens, prefill_seqs)
        return self.with_host(gpu, seqs)

    def with_host(self, gpu_s: float, num_seqs: int) -> float:
        """A step's seconds given its GPU seconds: + host time, or max with it when the engine
        overlaps host and GPU work."""
        host = self._host_step_s + num_seqs * self._host_seq_s
        if self._host_overlap:
            return gpu_s if gpu_s > host else host
        return gpu_s + host

    def uses_graph(self, prefill_tokens: int, decode_tokens: int) -> bool:
        """Whether a step replays a CUDA graph: decode only, at most the engine's graph batch."""
        return prefill_tokens == 0 and decode_tokens <= self._graph_max_batch

    def dense_part_s(
        self,
        prefill_tokens: int,
        prefill_attn_pairs: float,
        decode_tokens: int,
        decode_ctx_tokens: int,
        prefill_seqs: int = 1,
    ) -> float:
        """GPU seconds of a step without the routed experts and without host time (add
        Σ_layers max_ranks moe_layer_s, then `with_host`)."""
        graph = prefill_tokens == 0 and decode_tokens <= self._graph_max_batch
        t = prefill_tokens + decode_tokens
        if t <= 0:
            return self._overhead_graph_s
        if graph:
            floor, s = self._floor_graph_s, self._overhead_graph_s
            elt_floor, attn_floor = self._elt_floor_graph_s, self._attn_floor_graph_s
        else:
            floor, s = self._floor_eager_s, self._overhead_eager_s
            elt_floor, attn_floor = self._elt_floor_eager_s, self._attn_floor_eager_s
        rows = t + self._m_half
        for layers, flop_s, weight_s, act_s in self._gemms:
            comp = rows * flop_s
            mem = weight_s + t * act_s
            if mem > comp:
                comp = mem
            s += layers * (comp if comp > floor else floor)
        elt = t * self._elt_s
        s += elt if elt > elt_floor else elt_floor
        if decode_tokens:
            attn = decode_ctx_tokens * self._attn_dec_s + decode_tokens * self._attn_seq_s
            s += attn if attn > attn_floor else attn_floor
        if prefill_tokens:
            attn = prefill_attn_pairs * self._attn_pf_s
            s += attn if attn > attn_floor else attn_floor
        s += t * self._emb_s
        if self._lm:
            lm_rows = step_seqs(prefill_tokens, decode_tokens, prefill_seqs)
            comp = (lm_rows + self._m_half) * self._lm_flop_s
            mem = self._lm_w_s + lm_rows * self._lm_act_s
            if mem > comp:
                comp = mem
            s += comp if comp > floor else floor
        return s

    # ------------------------------------------------------------------ MoE hooks

    def uniform_moe_load(self, tokens: float) -> tuple[float, float]:
        """(pairs, touched experts) on this GPU per MoE layer when `tokens` replica tokens are
        routed uniformly: touched = E_local · (1 − (1 − k/E)^G), G the EP group's tokens."""
        if not self._n_moe:
            return 0.0, 0.0
        touched = self.experts_per_rank * (1.0 - self._moe_keep ** (tokens * self._moe_group))
        return tokens * self._moe_pairs_per_tok, touched

    def moe_layer_s(self, pairs: float, touched_experts: float) -> float:
        """Seconds of one MoE layer's routed experts on a GPU given its routed (token, expert)
        pairs and distinct local experts touched — the hook for sampled per-rank loads: the
        step waits for the slowest rank, Σ over layers of max over ranks of this. At least the
        MoE kernels' floors (graph floors: the sampled path prices decode steps)."""
        m = self.moe
        comp = (pairs + m.half_pairs * touched_experts) * m.flop_s_per_pair
        mem = touched_experts * m.weight_s_per_expert + pairs * m.act_s_per_pair
        if mem > comp:
            comp = mem
        return comp if comp > m.floor_s else m.floor_s

    # ------------------------------------------------------------------ CP hook

    def prefill_attention_s(self, prefill_attn_pairs: float) -> float:
        """The prefill-attention part of compute_s (seconds) for `prefill_attn_pairs`
        (query, key) pairs on this GPU — what ring attention can overlap with its KV exchange
        (model/cp_cost.py)."""
        return prefill_attn_pairs * self._attn_pf_s

    # ------------------------------------------------------------------ communication sizes

    def allreduce_bytes(self, tokens: int) -> float:
        """Bytes of one TP all-reduce message (the hidden states of `tokens` tokens)."""
        return tokens * self.hidden_size * self._residual_bytes

    def handoff_bytes(self, tokens: int) -> float:
        """Bytes sent to the next pipeline stage for `tokens` tokens."""
        return tokens * self.hidden_size * self._residual_bytes

    # ------------------------------------------------------------------ inspection

    def breakdown(
        self,
        prefill_tokens: int,
        prefill_attn_pairs: float,
        decode_tokens: int,
        decode_ctx_tokens: int,
        prefill_seqs: int = 1,
    ) -> dict[str, float]:
        """Seconds per operator group (same model as compute_s; not for the hot path).

        Groups: linear (GEMMs, each at least a kernel floor, + elementwise kernels),
        attn_prefill, attn_decode, moe, embed, lm_head, overhead, host (the part of the host
        time not hidden behind the GPU), total (= compute_s)."""
        t = prefill_tokens + decode_tokens
        out = dict.fromkeys(
            ("linear", "attn_prefill", "attn_decode", "moe", "embed", "lm_head", "overhead"), 0.0
        )
        graph = self.uses_graph(prefill_tokens, decode_tokens)
        floor = self._floor_graph_s if graph else self._floor_eager_s
        out["overhead"] = self._overhead_graph_s if graph else self._overhead_eager_s
        if t > 0:
            elt_floor = self._elt_floor_graph_s if graph else self._elt_floor_eager_s
            attn_floor = self._attn_floor_graph_s if graph else self._attn_floor_eager_s
            rows = t + self._m_half
            out["linear"] = sum(
                g.layers * max(rows * g.flop_s, g.weight_s + t * g.act_s, floor)
                for g in self._gemms
            ) + max(t * self._elt_s, elt_floor)
            if decode_tokens:
                out["attn_decode"] = max(
                    decode_ctx_tokens * self._attn_dec_s + decode_tokens * self._attn_seq_s,
                    attn_floor,
                )
            if prefill_tokens:
                out["attn_prefill"] = max(prefill_attn_pairs * self._attn_pf_s, attn_floor)
            out["embed"] = t * self._emb_s
            if self._lm:
                lm_rows = step_seqs(prefill_tokens, decode_tokens, prefill_seqs)
                out["lm_head"] = max(
                    (lm_rows + self._m_half) * self._lm_flop_s,
                    self._lm_w_s + lm_rows * self._lm_act_s,
                    floor,
                )
            if self._n_moe:
                out["moe"] = self._n_moe * self.moe_layer_s(*self.uniform_moe_load(t))
        gpu = sum(out.values())
        seqs = step_seqs(prefill_tokens, decode_tokens, prefill_seqs)
        out["host"] = self.with_host(gpu, seqs) - gpu
        out["total"] = gpu + out["host"]
        return out


def step_seqs(prefill_tokens: int, decode_tokens: int, prefill_seqs: int) -> int:
    """Sequences a step runs (and LM-head rows it computes): every decoding sequence plus the
    step's prefill chunks, if it prefills at all."""
    return decode_tokens + (prefill_seqs if prefill_tokens > 0 else 0)


def attention_gemms(
    model: ModelSpec, tp: int, gemm: Callable[[float, float, float], Gemm], layers: float
) -> list[Gemm]:
    """The attention projection GEMMs of one layer on one of `tp` ranks, as
    gemm(layers, parameters on the rank, activation elements read + written per token).

    GQA: qkv (h → (H/tp + 2·KV_rank)·d), o ((H/tp)·d → h).
    MLA: the fused q_a + kv_a down projection (replicated on every rank; without q_lora q is
    its own sharded GEMM), q_b, the absorbed kv_b as its two batched halves (W_UK on the
    queries' nope part, W_UV on the attention output), o."""
    h, heads = model.hidden_size, model.num_attention_heads / tp
    if not model.uses_mla:
        d = model.head_dim
        qkv = (heads + 2 * kv_heads_per_rank(model, tp)) * d
        return [gemm(layers, h * qkv, h + qkv), gemm(layers, heads * d * h, heads * d + h)]
    nope, rope, v = model.qk_nope_head_dim, model.qk_rope_head_dim, model.v_head_dim
    lora_kv, lora_q = model.kv_lora_rank, model.q_lora_rank
    q_out = heads * (nope + rope)
    if lora_q:
        down = lora_q + lora_kv + rope
        out = [gemm(layers, h * down, h + down), gemm(layers, lora_q * q_out, lora_q + q_out)]
    else:
        kv_down = lora_kv + rope
        out = [gemm(layers, h * kv_down, h + kv_down), gemm(layers, h * q_out, h + q_out)]
    return [
        *out,
        gemm(layers, heads * nope * lora_kv, heads * (nope + lora_kv)),  # W_UK
        gemm(layers, heads * lora_kv * v, heads * (lora_kv + v)),  # W_UV
        gemm(layers, heads * v * h, heads * v + h),  # o
    ]


def causal_pairs(chunk_tokens: int, offset: int) -> float:
    """(query, key) pairs of a causal prefill chunk of `chunk_tokens` after `offset` tokens."""
    return chunk_tokens * offset + chunk_tokens * (chunk_tokens + 1) / 2.0
