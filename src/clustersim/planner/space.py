"""The layout space of a plan: enumerate, filter, check, and say why each layout is out.

Enumeration (pure, `grid`): for every GPU count n in min_gpus..max_gpus, every factorisation
n = tp × pp × cp × dp (cp > 1 only when the workload's p99 prompt reaches
plan.long_prompt_tokens), and for an MoE model every expert placement the simulator knows
(docs/moe.md §1): ep = 1 (experts TP-split in each replica), ep = tp (experts sharded in each
TP group), ep × moe_tp = tp with 1 < moe_tp < tp (TensorRT-LLM / SGLang hybrid split), and
DP-attention + EP (dp > 1, ep = tp × dp).

Each layout then passes, in order (the first failing check is its reason in `rejected`):
filters (plan.candidates; counted, not listed) → model (tp divides the attention heads, KV heads
split or replicate evenly, pp ≤ layers) → not simulated yet (cp > 1, as the engine's build
says) → topology (placement; TP groups inside one NVLink domain unless
plan.allow_tp_across_nodes) → engines (at least one target engine expresses it) → expert
parallelism (the simulator's EP rules) → memory (the memory plan, with its numbers) → build.

Disaggregated prefill / decode candidates are built from pool layouts checked here with
`role` set (planner/disagg.py): the same checks on the experiment as that pool sees it (its
serving overrides), with the pool's engine rules (`pool_verdict`).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field

from clustersim.config.schema import Experiment, Layout, ModelSpec, PoolServing
from clustersim.model.memory import MemoryPlan, plan_memory
from clustersim.moe.ep_layout import EPLayoutError, resolve_ep_layout
from clustersim.planner.engines import Verdict, is_dp_attention, pool_verdict, verdicts
from clustersim.planner.spec import CandidateFilter, PlanSpec
from clustersim.sim.engine import Build, BuildError, build
from clustersim.topology.graph import Cluster, build_cluster
from clustersim.topology.placement import Placement, PlacementError, place

# rejection stages, in check order
STAGES = (
    "model",
    "not simulated yet",
    "topology",
    "engines",
    "expert parallelism",
    "memory",
    "build",
    "pool bound",  # disaggregated pool layouts: the pool's own analytic bound fails
    "pool choice",  # ... or it is not among the plan.pool_layouts best by capacity
)
POOL_TAGS = {"prefill": "P", "decode": "D"}


@dataclass(frozen=True)
class Candidate:
    """A layout that passed every check: its experiment, build and engine verdicts."""

    label: str
    exp: Experiment
    built: Build
    verdicts: dict[str, Verdict]
    notes: tuple[str, ...] = ()
    # disaggregated: the (prefill, decode) pools, each a Candidate whose exp is the pool's
    # view of the experiment (its layout, serving, experts) and built the pool's build
    pools: tuple[Candidate, Candidate] | None = None

    @property
    def disaggregated(self) -> bool:
        return self.pools is not None

    @property
    def layout(self) -> Layout:
        """The layout; for a disaggregated candidate the decode pool's (see `pools`)."""
        return self.pools[1].layout if self.pools is not None else self.exp.layout

    @property
    def pool_layouts(self) -> tuple[Layout, Layout] | None:
        return (self.pools[0].layout, self.pools[1].layout) if self.pools is not None else None

    @property
    def gpus(self) -> int:
        if self.pools is not None:
            return sum(p.gpus for p in self.pools)
        return self.exp.layout.gpus

    @property
    def memory(self) -> MemoryPlan:
        return self.built.memory


@dataclass(frozen=True)
class Rejected:
    label: str
    layout: Layout  # a disaggregated combination: the decode pool's (see `pools`)
    stage: str  # one of STAGES
    reason: str  # one line, with the numbers
    pools: tuple[Layout, Layout] | None = None  # a disaggregated combination's pools


@dataclass(frozen=True)
class Space:
    candidates: tuple[Candidate, ...]
    rejected: tuple[Rejected, ...]
    filtered_out: int  # layouts the plan.candidates filters excluded
    cp_enumerated: bool
    notes: tuple[str, ...] = field(default=())
    disaggregation: str = "off"  # the resolved plan.disaggregation: off | also | only
    # plan.disaggregation: only — co-located candidates the rule of thumb reasons about,
    # neither simulated nor ranked
    reference: tuple[Candidate, ...] = ()


# --------------------------------------------------------------------------- labels, grid


def disagg_label(prefill: str, decode: str) -> str:
    """`P[tp8-pp1-dp1]+D[tp1-pp1-dp8-ep8-dpa]` from the pools' layout labels."""
    return f"{pool_label('prefill', prefill)}+{pool_label('decode', decode)}"


def pool_label(role: str, label: str) -> str:
    return f"{POOL_TAGS[role]}[{label}]"


def layout_label(layout: Layout, moe: bool) -> str:
    """`tp8-pp1-dp2`, plus `-ep16-dpa` (DP-attention), `-ep4-moetp2`, `-cp2` as they apply."""
    label = f"tp{layout.tp}-pp{layout.pp}-dp{layout.dp}"
    if moe:
        label += f"-ep{layout.ep}"
        if is_dp_attention(layout):
            label += "-dpa"
        if layout.moe_tp is not None:
            label += f"-moetp{layout.moe_tp}"
    if layout.cp > 1:
        label += f"-cp{layout.cp}"
    return label


def divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def expert_variants(tp: int, pp: int, dp: int, cp: int) -> Iterator[Layout]:
    """The MoE layouts of one (tp, pp, dp, cp) factorisation (module docstring)."""
    yield Layout(tp=tp, pp=pp, dp=dp, cp=cp, ep=1)
    if tp > 1:
        yield Layout(tp=tp, pp=pp, dp=dp, cp=cp, ep=tp)
    for moe_tp in divisors(tp):
        if 1 < moe_tp < tp:
            yield Layout(tp=tp, pp=pp, dp=dp, cp=cp, ep=tp // moe_tp, moe_tp=moe_tp)
    if dp > 1:
        yield Layout(tp=tp, pp=pp, dp=dp, cp=cp, ep=tp * dp, dp_attention=True)


def grid(moe: bool, min_gpus: int, max_gpus: int, with_cp: bool) -> list[Layout]:
    """Every layout of min_gpus..max_gpus GPUs (module docstring), in a fixed order."""
    out: list[Layout] = []
    for n in range(min_gpus, max_gpus + 1):
        for tp in divisors(n):
            for pp in divisors(n // tp):
                rest = n // (tp * pp)
                for cp in divisors(rest) if with_cp else [1]:
                    dp = rest // cp
                    if moe:
                        out.extend(expert_variants(tp, pp, dp, cp))
                    else:
                        out.append(Layout(tp=tp, pp=pp, dp=dp, cp=cp))
    return out


def passes_filter(layout: Layout, f: CandidateFilter) -> bool:
    """True when every axis list of the filter that is set contains the layout's value."""
    checks: list[tuple[list[int] | list[bool] | None, int | bool]] = [
        (f.tp, layout.tp),
        (f.pp, layout.pp),
        (f.dp, layout.dp),
        (f.ep, layout.ep),
        (f.cp, layout.cp),
        (f.dp_attention, is_dp_attention(layout)),
        (f.gpus, layout.gpus),
    ]
    return all(allowed is None or value in allowed for allowed, value in checks)


# --------------------------------------------------------------------------- checks


def model_rule(layout: Layout, model: ModelSpec) -> str:
    """Why the model cannot take this layout ('' when it can)."""
    tp, heads, kv = layout.tp, model.num_attention_heads, model.num_kv_heads
    if heads % tp != 0:
        return f"tp = {tp} does not divide num_attention_heads = {heads} ({model.name})"
    if kv % tp != 0 and tp % kv != 0:
        return (
            f"tp = {tp} neither divides num_kv_heads = {kv} nor is a multiple of it ({model.name})"
        )
    if layout.pp > model.num_layers:
        return f"pp = {layout.pp} exceeds num_layers = {model.num_layers} ({model.name})"
    if not model.is_moe and (layout.ep > 1 or layout.dp_attention or layout.moe_tp):
        return f"expert parallelism on a dense model ({model.name})"
    return ""


def speculative_rule(layout: Layout, base: Experiment, role: str | None) -> str:
    """Why speculative decoding cannot be simulated on this layout ('' when it can): the
    schema refuses it with CP (config/schema); `role`: the pool it is checked as, if any."""
    if base.serving.speculative is None or layout.cp == 1:
        return ""
    where = "" if role is None else f" (the {role} pool)"
    return f"serving.speculative is not simulated with context parallelism yet{where}"


def topology_rule(placement: Placement, cluster: Cluster, allow_across: bool) -> str:
    """Why the placement breaks the plan's topology rule ('' when it does not)."""
    if allow_across:
        return ""
    crossing = [w for w in placement.warnings if " span " in w]
    if not crossing:
        return ""
    size = cluster.nvlink_domain_size or cluster.gpus_per_node
    where = "NVLink domain" if cluster.nvlink_domain_size else "node"
    return (
        f"tp = {placement.layout.tp} > the {size}-GPU {where}: {crossing[0]} "
        "(set plan.allow_tp_across_nodes: true to allow)"
    )


def pool_base(base: Experiment, serving: PoolServing) -> Experiment:
    """The base experiment as a pool sees it: `serving` overrides key by key (as
    sim/pools.pool_experiment does for a disaggregated run)."""
    merged = base.serving.model_copy(update=serving.model_dump(exclude_none=True))
    return base.model_copy(update={"serving": merged})


def candidate_experiment(base: Experiment, layout: Layout, label: str) -> Experiment:
    """The base experiment with `layout`; an EPLB block is dropped where ep = 1 (every GPU
    holds every expert, there is nothing to balance)."""
    experts = base.experts
    if experts is not None and experts.eplb is not None and layout.ep == 1:
        experts = experts.model_copy(update={"eplb": None})
    return base.model_copy(
        update={"layout": layout, "experts": experts, "name": f"{base.name}-{label}"}
    )


class Checker:
    """Runs the checks of the module docstring for one plan (cluster built once)."""

    def __init__(self, spec: PlanSpec) -> None:
        self.spec = spec
        self.base = spec.base
        self.cluster = build_cluster(self.base.topology, self.base.hardware)
        serving = spec.options.pool_serving
        self.pool_bases = {
            "prefill": pool_base(self.base, serving.prefill),
            "decode": pool_base(self.base, serving.decode),
        }

    def check(self, layout: Layout, label: str, role: str | None = None) -> Candidate | Rejected:
        """`role` (prefill | decode): check `layout` as that pool of a disaggregated
        deployment (its serving overrides, its engine rules); the label stays the layout's."""
        opts = self.spec.options
        base = self.base if role is None else self.pool_bases[role]
        model = base.model
        reason = model_rule(layout, model)
        if reason:
            return Rejected(label, layout, "model", reason)
        reason = speculative_rule(layout, base, role)
        if reason:
            return Rejected(label, layout, "not simulated yet", reason)
        exp = candidate_experiment(base, layout, label)
        if layout.cp > 1:
            try:
                build(exp)
            except (BuildError, PlacementError) as err:
                return Rejected(label, layout, _stage_of(str(err), "build"), str(err))
        try:
            placement = place(layout, self.cluster, model)
        except PlacementError as err:
            return Rejected(label, layout, "topology", str(err))
        reason = topology_rule(placement, self.cluster, opts.allow_tp_across_nodes)
        if reason:
            return Rejected(label, layout, "topology", reason)
        a2a = opts.sglang_moe_a2a_backend
        if role is None:
            v = verdicts(opts.engines, layout, model, a2a)
        else:
            v = {e: pool_verdict(e, role, layout, model, a2a) for e in opts.engines}
        if not any(x.ok for x in v.values()):
            rules = "; ".join(f"{name}: {x.rule}" for name, x in v.items())
            return Rejected(label, layout, "engines", f"no target engine can run it — {rules}")
        try:
            ep = resolve_ep_layout(exp, placement)
        except EPLayoutError as err:
            return Rejected(label, layout, _stage_of(str(err), "expert parallelism"), str(err))
        redundant = ep.redundant if ep is not None else 0
        mem = plan_memory(model, base.hardware, base.precision, layout, base.serving, redundant)
        if not mem.fits:
            return Rejected(label, layout, "memory", mem.reason)
        try:
            built = build(exp)
        except (BuildError, PlacementError) as err:
            return Rejected(label, layout, _stage_of(str(err), "build"), str(err))
        notes = tuple(placement.warnings)
        if base.experts is not None and base.experts.eplb is not None and layout.ep == 1:
            notes += ("experts.eplb dropped: ep = 1 holds every expert on every GPU",)
        return Candidate(label, exp, built, v, notes)


def _stage_of(message: str, default: str) -> str:
    return "not simulated yet" if "not simulated" in message else default


def enumerate_space(spec: PlanSpec, p99_prompt_tokens: float) -> Space:
    """Every layout of the plan, checked: candidates and rejections (module docstring)."""
    opts = spec.options
    model = spec.base.model
    with_cp = p99_prompt_tokens >= opts.long_prompt_tokens
    explicit = opts.candidates.layouts
    raw = (
        list(explicit)
        if explicit is not None
        else grid(model.is_moe, opts.min_gpus, spec.max_gpus, with_cp)
    )
    checker = Checker(spec)
    candidates: list[Candidate] = []
    rejected: list[Rejected] = []
    filtered = 0
    seen: set[str] = set()
    for layout in raw:
        label = layout_label(layout, model.is_moe)
        if label in seen:
            continue
        seen.add(label)
        in_range = opts.min_gpus <= layout.gpus <= spec.max_gpus
        if not in_range or not passes_filter(layout, opts.candidates):
            filtered += 1
            continue
        result = checker.check(layout, label)
        if isinstance(result, Candidate):
            candidates.append(result)
        else:
            rejected.append(result)
    notes: list[str] = []
    if with_cp:
        notes.append(
            f"p99 prompt {p99_prompt_tokens:,.0f} tokens ≥ {opts.long_prompt_tokens:,}: "
            "context-parallel layouts enumerated"
        )
    return Space(tuple(candidates), tuple(rejected), filtered, with_cp, tuple(notes))


def rejected_counts(rejected: tuple[Rejected, ...]) -> list[tuple[str, int, str]]:
    """(stage, count, first reason) per stage present, in check order."""
    out: list[tuple[str, int, str]] = []
    for stage, group in itertools.groupby(
        sorted(rejected, key=lambda r: STAGES.index(r.stage)), key=lambda r: r.stage
    ):
        rows = list(group)
        out.append((stage, len(rows), rows[0].reason))
    return out
