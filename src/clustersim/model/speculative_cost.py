"""Step time of a speculative-decoding verify step (docs/speculative.md, docs/cost_model.md).

A lane with `serving.speculative` forms batches whose decoding sequences each run k + 1
query tokens (serving/speculative_decode.py): `decode_tokens` = n·(k + 1) and
`decode_ctx_tokens` = Σ over the n sequences of the context their first query token reads.
`SpeculativeStageCost` prices such a step on one stage:

  target    the stage's own cost model over the n·(k + 1) rows (GEMMs, routed experts, LM
            head, TP all-reduces), with decode attention as a verify kernel runs it: the
            KV of each sequence is read once for its k + 1 queries, the FLOPs grow with
            every query (Σ_j ctx + j), and the per-sequence attention overhead is paid once
            per sequence; host time is paid per sequence, not per query token
  drafter   last stage only: k sequential draft passes, one query token per sequence each,
            the first also over the step's prefill tokens (the drafter sees every prompt):
            mtp — one decoder layer of the target's shape (its last, an MoE layer for
            DeepSeek-V3) + the shared LM head; eagle — the head's layer(s) of the target's
            shape (its first) + the target's LM head, or an EAGLE-3 head's own LM head over
            its draft vocabulary (catalog/eagle_heads.py); draft_model — the whole catalog
            model with its own embedding and head. GPU time only, on the stage's TP group
            (its all-reduces are not put on the fabric).

DP attention (moe/ep_group.py): `LockstepVerify` prices the same step for the lock-step group
of DP ranks — each rank's dense part with the verify attention above, and the drafter's k
passes per rank (the slowest rank sets each pass) with the drafter's MoE layer over the whole
group's draft tokens, routed uniformly over the EP ranks.

Pure arithmetic on StageCostModel; no simpy.
"""

from __future__ import annotations

from collections.abc import Sequence

from clustersim.catalog.eagle_heads import eagle_head
from clustersim.catalog.engines import EngineProfile, serving_engine
from clustersim.catalog.models import get_model
from clustersim.config.schema import (
    Experiment,
    HardwareSpec,
    ModelSpec,
    Precision,
    SpeculativeSpec,
)
from clustersim.model.attention_cost import decode_terms
from clustersim.model.stage_cost import StageCost, StageCostModel


def drafter_layers(model: ModelSpec, method: str, head_layers: int = 1) -> range:
    """The target layers whose shape an mtp / eagle drafter has: mtp the last layer
    (DeepSeek-V3's MTP module is a full MoE block), eagle the first `head_layers`."""
    return range(model.num_layers - 1, model.num_layers) if method == "mtp" else range(head_layers)


def drafter_shape(model: ModelSpec, spec: SpeculativeSpec) -> tuple[ModelSpec, range]:
    """The model whose layers an mtp / eagle draft pass runs, and which of its layers: an
    EAGLE-3 head (catalog/eagle_heads.py) runs its own LM head over its draft vocabulary."""
    if spec.method != "eagle":
        return model, drafter_layers(model, spec.method)
    head = eagle_head(model, spec.draft_model)
    shape = model
    if head.draft_vocab is not None:
        shape = model.model_copy(update={"vocab_size": head.draft_vocab})
    return shape, drafter_layers(model, "eagle", head.num_layers)


def draft_model_of(spec: SpeculativeSpec) -> ModelSpec:
    """The separate drafter of method draft_model (a built-in model, checked at load)."""
    if spec.draft_model is None:
        raise ValueError("method draft_model needs a draft_model")
    return get_model(spec.draft_model)


def drafter_cost_model(
    model: ModelSpec,
    hw: HardwareSpec,
    precision: Precision,
    tp: int,
    spec: SpeculativeSpec,
    *,
    ep: int = 1,
    moe_tp: int | None = None,
    cuda_graphs: bool = True,
    engine: EngineProfile | None = None,
) -> StageCostModel:
    """A cost model of one draft pass on one GPU of the last stage's TP group, run by
    `engine` (None: the default; its host time is not used: `gpu_s`)."""
    if spec.method == "draft_model":
        draft = draft_model_of(spec)
        return StageCostModel(
            draft,
            hw,
            precision,
            tp,
            draft.num_layers,
            True,
            True,
            engine=engine,
            cuda_graphs=cuda_graphs,
        )
    shape, layers = drafter_shape(model, spec)
    return StageCostModel(
        shape,
        hw,
        precision,
        tp,
        len(layers),
        False,
        True,
        ep=ep,
        moe_tp=moe_tp,
        first_layer=layers.start,
        engine=engine,
        cuda_graphs=cuda_graphs,
    )


def gpu_s(
    cost: StageCostModel,
    prefill_tokens: int,
    prefill_attn_pairs: float,
    decode_tokens: int,
    decode_ctx_tokens: int,
    prefill_seqs: int = 1,
) -> float:
    """GPU seconds of one pass (uniform expert routing), without host time."""
    s = cost.dense_part_s(
        prefill_tokens, prefill_attn_pairs, decode_tokens, decode_ctx_tokens, prefill_seqs
    )
    tokens = prefill_tokens + decode_tokens
    if cost.num_moe_layers and tokens > 0:
        s += cost.num_moe_layers * cost.moe_layer_s(*cost.uniform_moe_load(tokens))
    return s


class VerifyAttention:
    """Rewrites a verify step's decode context so that the stage's attention term prices
    k + 1 queries per sequence: KV read once, FLOPs per query, one per-sequence overhead."""

    def __init__(
        self, model: ModelSpec, hw: HardwareSpec, precision: Precision, tp: int, k: int
    ) -> None:
        flop_s, read_s = decode_terms(model, hw, precision, tp)
        per_token = max(flop_s, read_s)
        self.k = k
        self.flop_share = flop_s / per_token  # ≤ 1
        self.read_share = read_s / per_token  # ≤ 1
        # the stage charges decode_seq_overhead per query token; a sequence pays it once
        seq_s = hw.decode_seq_overhead_us * 1e-6
        self.seq_in_tokens = seq_s / per_token if per_token > 0 else 0.0

    def context_tokens(self, seqs: int, first_ctx_tokens: int) -> int:
        """The decode_ctx_tokens to hand the stage's cost model for `seqs` sequences whose
        first query tokens read Σ `first_ctx_tokens` of context."""
        k = self.k
        flops = (k + 1) * first_ctx_tokens + seqs * k * (k + 1) / 2.0  # Σ_j (ctx + j)
        reads = first_ctx_tokens + seqs * k  # the KV of the k drafts as well
        ctx = max(self.flop_share * flops, self.read_share * reads)
        return max(0, round(ctx - seqs * k * self.seq_in_tokens))


class SpeculativeStageCost:
    """One stage's StageCost under speculative decoding (see the module docstring)."""

    def __init__(
        self,
        target: StageCost,
        analytic: StageCostModel,
        attention: VerifyAttention,
        drafter: StageCostModel | None,
    ) -> None:
        self.target = target
        self.k = attention.k
        self.attention = attention
        self.drafter = drafter  # None: not the last stage
        self.allreduces_per_step = target.allreduces_per_step
        host = analytic.host
        # host time is per sequence: take back what the target charged for the k drafts
        self._extra_host_per_seq = 0.0 if host.overlap else self.k * host.seq_s

    def compute_s(
        self,
        prefill_tokens: int,
        prefill_attn_pairs: float,
        decode_tokens: int,
        decode_ctx_tokens: int,
        prefill_seqs: int = 1,
    ) -> float:
        seqs = decode_tokens // (self.k + 1)
        ctx = self.attention.context_tokens(seqs, decode_ctx_tokens) if seqs else 0
        s = self.target.compute_s(
            prefill_tokens, prefill_attn_pairs, decode_tokens, ctx, prefill_seqs
        )
        s -= seqs * self._extra_host_per_seq
        if self.drafter is not None:
            s += self.drafter_s(
                prefill_tokens, prefill_attn_pairs, seqs, decode_ctx_tokens, prefill_seqs
            )
        return s

    def drafter_s(
        self,
        prefill_tokens: int,
        prefill_attn_pairs: float,
        seqs: int,
        ctx_tokens: int,
        prefill_seqs: int,
    ) -> float:
        """k draft passes: the first over the prefill tokens and one token per decoding
        sequence, the others one token per sequence over a context one token longer."""
        d = self.drafter
        if d is None or (seqs == 0 and prefill_tokens == 0):
            return 0.0
        s = gpu_s(d, prefill_tokens, prefill_attn_pairs, seqs, ctx_tokens, prefill_seqs)
        rows = seqs + (prefill_seqs if prefill_tokens else 0)
        for i in range(1, self.k):
            s += gpu_s(d, 0, 0.0, rows, ctx_tokens + rows * i)
        return s

    def allreduce_bytes(self, tokens: int) -> float:
        return self.target.allreduce_bytes(tokens)

    def handoff_bytes(self, tokens: int) -> float:
        return self.target.handoff_bytes(tokens)


def _verify_parts(exp: Experiment, spec: SpeculativeSpec) -> tuple[VerifyAttention, StageCostModel]:
    """The verify step's attention over k + 1 queries and the drafter's cost model, for the
    experiment's layout."""
    lay = exp.layout
    attention = VerifyAttention(exp.model, exp.hardware, exp.precision, lay.tp, spec.num_tokens)
    drafter = drafter_cost_model(
        exp.model,
        exp.hardware,
        exp.precision,
        lay.tp,
        spec,
        ep=lay.ep,
        moe_tp=lay.moe_tp,
        cuda_graphs=exp.serving.cuda_graphs,
        engine=serving_engine(exp.serving),
    )
    return attention, drafter


def speculative_stage_costs(
    exp: Experiment,
    targets: Sequence[StageCost],
    analytic: Sequence[StageCostModel],
) -> list[SpeculativeStageCost]:
    """Each pipeline stage's verify-step cost; the drafter runs on the last stage."""
    spec = exp.serving.speculative
    if spec is None:
        raise ValueError("speculative_stage_costs needs serving.speculative")
    attention, drafter = _verify_parts(exp, spec)
    last = len(targets) - 1
    return [
        SpeculativeStageCost(t, a, attention, drafter if s == last else None)
        for s, (t, a) in enumerate(zip(targets, analytic, strict=True))
    ]


RankStep = tuple[int, float, int, int, int]
"""One DP rank's share of a step: (prefill tokens, prefill (query, key) pairs, decoding
sequences, Σ context of their first query tokens, prefill chunks)."""


class LockstepVerify:
    """Speculative decoding in the lock-step DP-attention group (moe/ep_group.py): every DP
    rank verifies k + 1 query tokens per decoding sequence and runs the drafter on its own
    sequences; the routed experts of both see the whole group's tokens."""

    def __init__(self, attention: VerifyAttention, drafter: StageCostModel, dp: int) -> None:
        self.k = attention.k
        self.attention = attention
        self.drafter = drafter  # one draft pass on one GPU of a DP rank's TP group
        self.dp = dp

    def verify_ctx(self, decode_tokens: int, decode_ctx_tokens: int) -> int:
        """The decode_ctx_tokens a rank's dense part is priced with (VerifyAttention)."""
        seqs = decode_tokens // (self.k + 1)
        return self.attention.context_tokens(seqs, decode_ctx_tokens) if seqs else 0

    def draft_rows(self, ranks: Sequence[RankStep]) -> int:
        """Draft tokens of one step over the group, Σ over the k passes: the first pass runs
        each rank's prefill tokens and decoding sequences, the others one row per sequence."""
        first = sum(pf + seqs for pf, _, seqs, _, _ in ranks)
        later = sum(seqs + (pseqs if pf else 0) for pf, _, seqs, _, pseqs in ranks)
        return first + (self.k - 1) * later

    def drafter_s(self, ranks: Sequence[RankStep]) -> float:
        """GPU seconds of the k draft passes: per pass, the slowest rank's dense part plus
        the MoE layers over the group's rows of that pass (uniform routing)."""
        d = self.drafter
        busy = [r for r in ranks if r[0] or r[2]]
        if not busy:
            return 0.0
        first = max(d.dense_part_s(pf, pairs, seqs, ctx, ps) for pf, pairs, seqs, ctx, ps in busy)
        s = first + self._moe_s(sum(pf + seqs for pf, _, seqs, _, _ in busy))
        rows = [seqs + (ps if pf else 0) for pf, _, seqs, _, ps in busy]
        for i in range(1, self.k):
            dense = max(
                d.dense_part_s(0, 0.0, n, ctx + n * i)
                for n, (_, _, _, ctx, _) in zip(rows, busy, strict=True)
            )
            s += dense + self._moe_s(sum(rows))
        return s

    def _moe_s(self, group_rows: int) -> float:
        """The drafter's MoE layers over `group_rows` tokens of the whole DP group."""
        d = self.drafter
        if not d.num_moe_layers or group_rows <= 0:
            return 0.0
        return d.num_moe_layers * d.moe_layer_s(*d.uniform_moe_load(group_rows / self.dp))


def lockstep_verify(exp: Experiment) -> LockstepVerify:
    """The DP-attention group's verify pricing (a DP rank is one TP group, pp = 1)."""
    spec = exp.serving.speculative
    if spec is None:
        raise ValueError("lockstep_verify needs serving.speculative")
    attention, drafter = _verify_parts(exp, spec)
    return LockstepVerify(attention, drafter, exp.layout.dp)
