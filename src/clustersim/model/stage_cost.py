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
overlap scheduler (`with_host`). Peaks, GEMMs and kernel floors: model/kernels.py; attention:
model/attention_cost.py; routed experts: model/moe_cost.py. Efficiencies ≤ 1 keep every term
above the ideal roofline at peak.

`compute_s` is on the simulator's hot path: all coefficients are precomputed in __init__ and
the terms that depend only on the batch shape (GEMMs, LM head, host) are kept per
(prefill tokens, decode tokens, prefill chunks), so a call adds the attention terms to them.
"""

from __future__ import annotations

from typing import Protocol

from clustersim.catalog.engines import DEFAULT_ENGINE, EngineProfile, get_engine
from clustersim.config.schema import HardwareSpec, ModelSpec, Precision
from clustersim.model.attention_cost import AttentionCost, attention_cost
from clustersim.model.kernels import (
    LinearCost,
    add_gemms_s,
    kernel_floors_s,
    linear_cost,
    step_floors,
    step_seqs,
)
from clustersim.model.moe_cost import MoECoefficients, UniformRouting, moe_coefficients
from clustersim.model.params import residual_bytes
from clustersim.model.stage_parts import (
    MAX_STEP_PARTS,
    StepPart,
    host_cost,
    lm_head_s,
    stage_ends,
    stage_start,
    step_part,
)


class StageCost(Protocol):
    """What a replica asks of one stage's cost model (StageCostModel, a sampled-routing MoE
    stage, a speculative verify step, a degraded stage): seconds and bytes of one step."""

    allreduces_per_step: int

    def compute_s(
        self,
        prefill_tokens: int,
        prefill_attn_pairs: float,
        decode_tokens: int,
        decode_ctx_tokens: int,
        prefill_seqs: int = 1,
    ) -> float: ...

    def allreduce_bytes(self, tokens: int) -> float: ...

    def handoff_bytes(self, tokens: int) -> float: ...


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
    decode steps up to the engine's graph batch replay a CUDA graph; queries_per_seq: k + 1
    with speculative decoding (verify graphs: EngineProfile.graph_batch_in_sequences).
    """

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
        queries_per_seq: int = 1,
    ) -> None:
        start = stage_start(model, tp, num_layers, first_stage, first_layer)
        if matmul_half_tokens is None:
            matmul_half_tokens = hw.matmul_half_tokens
        if matmul_half_tokens < 0:
            raise ValueError("matmul_half_tokens must be ≥ 0")
        n_dense = num_layers
        if model.is_moe:
            n_dense = max(0, min(start + num_layers, model.first_dense_layers) - start)
        self.engine = eng = engine if engine is not None else get_engine(DEFAULT_ENGINE)
        self.tp, self.num_layers = tp, num_layers
        self.first_stage, self.last_stage = first_stage, last_stage
        self.num_dense_layers, self.num_moe_layers = n_dense, num_layers - n_dense
        self.hidden_size = model.hidden_size
        self._residual_bytes = residual_bytes(precision)
        self.allreduces_per_step = 2 * num_layers if tp > 1 else 0
        self._m_half = float(matmul_half_tokens)
        layers = (num_layers, n_dense, self.num_moe_layers)
        self.linear: LinearCost = linear_cost(model, hw, precision, tp, layers, eng)
        self.attention: AttentionCost = attention_cost(model, hw, precision, tp, num_layers)
        self.ends = stage_ends(model, hw, precision, tp, first_stage, last_stage)
        self.host = host_cost(eng, first_stage)
        # least times of a step replaying a CUDA graph / launched eagerly
        graph_s, eager_s = kernel_floors_s(hw, eng)
        base_s = hw.step_overhead_us * 1e-6
        step_kernels = eng.step_kernels if last_stage else 0
        per_layer = (self.linear.elementwise_kernels, eng.attention_kernels)
        self._graph = step_floors(graph_s, base_s, step_kernels, per_layer, num_layers)
        self._eager = step_floors(eager_s, base_s, step_kernels, per_layer, num_layers)
        per_seq = queries_per_seq if eng.graph_batch_in_sequences else 1  # tokens a seq
        self._graph_max_batch = eng.graph_max_batch * per_seq if cuda_graphs else -1
        # routed experts (uniform routing here; sampled per-rank loads price them elsewhere,
        # from numpy with graph floors: moe_cost.py)
        self._n_moe = float(self.num_moe_layers)
        self.moe: MoECoefficients
        self.routing: UniformRouting
        self.moe, self.routing = moe_coefficients(
            model,
            hw,
            precision,
            (tp, ep, moe_tp),
            self._m_half,
            (2 + eng.moe_kernels) * graph_s,
        )
        self.experts_per_rank = self.routing.experts_per_rank
        # compute_s: context-free parts by (prefill tokens, decode tokens, prefill chunks)
        self._parts: dict[tuple[int, int, int], StepPart] = {}
        self._decode_s_per_token = self.attention.decode_s_per_token
        self._prefill_s_per_pair = self.attention.prefill_s_per_pair
        self._host_overlap = self.host.overlap

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
        key = (prefill_tokens, decode_tokens, prefill_seqs)
        part = self._parts.get(key)
        if part is None:
            if prefill_tokens + decode_tokens <= 0:  # an empty step: the overhead only
                return self.with_host(self._graph.overhead_s, step_seqs(0, 0, prefill_seqs))
            part = self._step_part(*key)
            if len(self._parts) < MAX_STEP_PARTS:
                self._parts[key] = part
        # dense_part_s's additions in its order, the context-free terms precomputed
        s, attn_floor, decode_seqs_s, embed_s, lm_s, moe_s, host_s = part
        if decode_tokens:
            attn = decode_ctx_tokens * self._decode_s_per_token + decode_seqs_s
            s += attn if attn > attn_floor else attn_floor
        if prefill_tokens:
            attn = prefill_attn_pairs * self._prefill_s_per_pair
            s += attn if attn > attn_floor else attn_floor
        s += embed_s
        if lm_s is not None:
            s += lm_s
        if moe_s is not None:
            s += moe_s
        if self._host_overlap:
            return s if s > host_s else host_s
        return s + host_s

    def cached_terms(self) -> tuple[dict[tuple[int, int, int], StepPart], float, float, bool]:
        """What `compute_s` reads for a batch shape it has seen: the cached context-free
        parts by (prefill tokens, decode tokens, prefill chunks), seconds a decode context
        token, seconds a prefill (query, key) pair, whether host time overlaps. The TP1 lane
        (serving/tp1_lane.py) repeats compute_s's arithmetic on them, in the same order, and
        calls compute_s for a shape not cached yet: a change here is a change there."""
        return self._parts, self._decode_s_per_token, self._prefill_s_per_pair, self._host_overlap

    def _step_part(self, prefill_tokens: int, decode_tokens: int, prefill_seqs: int) -> StepPart:
        """compute_s's context-free terms for a batch shape (t = prefill + decode > 0)."""
        graph = prefill_tokens == 0 and decode_tokens <= self._graph_max_batch
        t = prefill_tokens + decode_tokens
        moe_s = self._n_moe * self.moe_layer_s(*self.uniform_moe_load(t)) if self._n_moe else None
        seqs = step_seqs(prefill_tokens, decode_tokens, prefill_seqs)
        floors = self._graph if graph else self._eager
        shape = (t, decode_tokens, seqs)
        return step_part(
            self.linear, self.attention, self.ends, self.host, floors, self._m_half, shape, moe_s
        )

    def with_host(self, gpu_s: float, num_seqs: int) -> float:
        """A step's seconds given its GPU seconds: + host time, or max with it when the engine
        overlaps host and GPU work."""
        h = self.host
        host = h.step_s + num_seqs * h.seq_s
        if h.overlap:
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
        Σ_layers max_ranks moe_layer_s, then `with_host`): `compute_s`'s additions up to its
        routed experts, on the same cached context-free part (stage_parts.step_part)."""
        key = (prefill_tokens, decode_tokens, prefill_seqs)
        part = self._parts.get(key)
        if part is None:
            if prefill_tokens + decode_tokens <= 0:
                return self._graph.overhead_s
            part = self._step_part(*key)
            if len(self._parts) < MAX_STEP_PARTS:
                self._parts[key] = part
        s, attn_floor, decode_seqs_s, embed_s, lm_s = part[:5]
        if decode_tokens:
            attn = decode_ctx_tokens * self._decode_s_per_token + decode_seqs_s
            s += attn if attn > attn_floor else attn_floor
        if prefill_tokens:
            attn = prefill_attn_pairs * self._prefill_s_per_pair
            s += attn if attn > attn_floor else attn_floor
        s += embed_s
        if lm_s is not None:
            s += lm_s
        return s

    # ------------------------------------------------------------------ MoE hooks

    def uniform_moe_load(self, tokens: float) -> tuple[float, float]:
        """(pairs, touched experts) on this GPU per MoE layer when `tokens` replica tokens are
        routed uniformly: touched = E_local · (1 − (1 − k/E)^G), G the EP group's tokens."""
        if not self._n_moe:
            return 0.0, 0.0
        r = self.routing
        touched = r.experts_per_rank * (1.0 - r.keep ** (tokens * r.group_factor))
        return tokens * r.pairs_per_token, touched

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
        return prefill_attn_pairs * self.attention.prefill_s_per_pair

    # ------------------------------------------------------------------ communication sizes

    def allreduce_bytes(self, tokens: int) -> float:
        """Bytes of one TP all-reduce message (the hidden states of `tokens` tokens)."""
        return tokens * self.hidden_size * self._residual_bytes

    def handoff_bytes(self, tokens: int) -> float:
        """Bytes sent to the next pipeline stage for `tokens` tokens."""
        return tokens * self.hidden_size * self._residual_bytes

    # ------------------------------------------------------------------ inspection

    def breakdown(
        self, pt: int, pairs: float, dt: int, ctx: int, prefill_seqs: int = 1
    ) -> dict[str, float]:
        """Seconds per operator group of a step (`stage_breakdown`; not for the hot path)."""
        return stage_breakdown(self, pt, pairs, dt, ctx, prefill_seqs)


def stage_breakdown(
    cost: StageCostModel,
    prefill_tokens: int,
    prefill_attn_pairs: float,
    decode_tokens: int,
    decode_ctx_tokens: int,
    prefill_seqs: int = 1,
) -> dict[str, float]:
    """Seconds per operator group of a step on `cost`'s stage (same model as compute_s).

    Groups: linear (GEMMs, each at least a kernel floor, + elementwise kernels),
    attn_prefill, attn_decode, moe, embed, lm_head, overhead, host (the part of the host
    time not hidden behind the GPU), total (= compute_s)."""
    t = prefill_tokens + decode_tokens
    out = dict.fromkeys(
        ("linear", "attn_prefill", "attn_decode", "moe", "embed", "lm_head", "overhead"), 0.0
    )
    floor, out["overhead"], elt_floor, attn_floor = (
        cost._graph if cost.uses_graph(prefill_tokens, decode_tokens) else cost._eager
    )
    lin, att, ends = cost.linear, cost.attention, cost.ends
    if t > 0:
        out["linear"] = add_gemms_s(0.0, lin, t, t + cost._m_half, floor) + max(
            t * lin.elementwise_s, elt_floor
        )
        if decode_tokens:
            out["attn_decode"] = max(
                decode_ctx_tokens * att.decode_s_per_token + decode_tokens * att.decode_s_per_seq,
                attn_floor,
            )
        if prefill_tokens:
            out["attn_prefill"] = max(prefill_attn_pairs * att.prefill_s_per_pair, attn_floor)
        out["embed"] = t * ends.embed_s
        if ends.lm_head:
            lm_rows = step_seqs(prefill_tokens, decode_tokens, prefill_seqs)
            out["lm_head"] = lm_head_s(ends, lm_rows, cost._m_half, floor)
        if cost._n_moe:
            out["moe"] = cost._n_moe * cost.moe_layer_s(*cost.uniform_moe_load(t))
    gpu = sum(out.values())
    seqs = step_seqs(prefill_tokens, decode_tokens, prefill_seqs)
    out["host"] = cost.with_host(gpu, seqs) - gpu
    out["total"] = gpu + out["host"]
    return out
