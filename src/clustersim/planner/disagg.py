"""Disaggregated prefill / decode candidates (docs/planner.md §2b).

Mode (plan.disaggregation): `off`, `also` (co-located and disaggregated candidates), `only`
(disaggregated only), or `auto` (default) = `also` for an MoE model or a workload whose mean
prompt reaches plan.disagg_prompt_tokens, else `off`. Explicit plan.candidates.layouts turn it
off (they name co-located layouts).

Pool sizes (GPUs): whole NVLink domains (nodes on PCIe-only hosts) when the topology has two
or more; on a single domain 1, 2, 4, … (powers of two below the domain size). Both pools
together take min_gpus..max_gpus GPUs.

Pool layouts, per role and size n: pp = 1; dense: every tp × dp (× cp in the prefill pool when
CP is enumerated) = n; MoE: DP-attention + EP (ep = tp × dp) or ep = tp. plan.candidates'
axis filters apply to each pool (its `gpus` filter to the total). Each is checked as that pool
(space.Checker with `role`: the pool's serving overrides, memory plan, engine rules); a
failure is a rejected row `P[label]` / `D[label]` with its stage and numbers.

Pool bounds: a prefill pool whose p99 TTFT lower bound (prefill alone) exceeds slo.ttft_p99_s,
or a decode pool whose TPOT lower bound (batch-1 decode step) exceeds slo.tpot_p99_s, is
rejected at 'pool bound' — every combination holding it would fail that bound. Of the others,
the plan.pool_layouts with the highest analytic pool capacity (req/s; ties to the label) per
role and size are combined ('pool choice' for the rest), plus the one shaped like the rule of
thumb's co-located pick (`prefer` = its TP and CP: the prefill pool with that TP × CP, the
decode pool with that TP, MoE pools under its EP rule), so the rule's disaggregated pick can
be simulated: at most |sizes|² × (pool_layouts + 1)² combinations.

Combinations: every prefill size p and decode size d in range, every kept prefill × decode
layout: the experiment with its `disaggregation:` block is built (disagg/pools.py: prefill pool
placed first, decode pool on the GPUs left) and must be expressible by one target engine for
both pools (`disagg_verdict`). Labels: `P[tp8-pp1-dp1]+D[tp4-pp1-dp2]`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from clustersim.config.schema import (
    DisaggregationSpec,
    Experiment,
    Layout,
    PoolServing,
    PoolSpec,
    TopologySpec,
)
from clustersim.planner.analytic import Estimate, PoolRole, WorkloadStats, estimate
from clustersim.planner.engines import Verdict, disagg_verdict, is_dp_attention
from clustersim.planner.space import (
    Candidate,
    Checker,
    Rejected,
    Space,
    disagg_label,
    grid,
    layout_label,
    passes_filter,
    pool_label,
)
from clustersim.planner.spec import PlanSpec
from clustersim.sim.engine import BuildError, build
from clustersim.topology.placement import PlacementError

ROLES: tuple[PoolRole, PoolRole] = ("prefill", "decode")
Shape = tuple[int, int]  # (tp, cp) of the rule of thumb's co-located pick


@dataclass(frozen=True)
class DisaggSpace:
    mode: str  # the resolved mode: off | also | only
    candidates: tuple[Candidate, ...]
    rejected: tuple[Rejected, ...]
    pool_estimates: dict[str, Estimate]  # pool label (P[…] / D[…]) → the pool's estimate
    notes: tuple[str, ...] = ()


def resolve_mode(spec: PlanSpec, mean_prompt: float) -> tuple[str, str]:
    """(off | also | only, why) for plan.disaggregation (module docstring)."""
    opts = spec.options
    if opts.candidates.layouts is not None:
        return "off", "plan.candidates.layouts lists co-located layouts"
    if opts.disaggregation != "auto":
        return opts.disaggregation, f"plan.disaggregation: {opts.disaggregation}"
    model = spec.base.model
    if model.is_moe:
        return "also", f"auto: {model.name} is an MoE model"
    if mean_prompt >= opts.disagg_prompt_tokens:
        return "also", (
            f"auto: mean prompt {mean_prompt:,.0f} ≥ {opts.disagg_prompt_tokens:,} tokens"
        )
    return "off", (
        f"auto: dense model and mean prompt {mean_prompt:,.0f} < "
        f"{opts.disagg_prompt_tokens:,} tokens"
    )


def domain_size(topology: TopologySpec) -> int:
    """GPUs of one NVLink domain (a node on PCIe-only hosts)."""
    nvlink = topology.nvlink
    if nvlink is not None and nvlink.rack_size is not None:
        return nvlink.rack_size
    return topology.gpus_per_node


def pool_sizes(topology: TopologySpec, max_gpus: int) -> list[int]:
    """GPU counts one pool may take (module docstring), each leaving room for the other."""
    domain = domain_size(topology)
    domains = topology.num_gpus // domain
    if domains >= 2:
        sizes = [k * domain for k in range(1, domains)]
    else:
        sizes = [2**i for i in range(domain.bit_length()) if 2**i < domain]
    smallest = min(sizes, default=0)
    return [n for n in sizes if n + smallest <= max_gpus]


def pool_layouts(moe: bool, gpus: int, with_cp: bool) -> list[Layout]:
    """The layouts one pool of `gpus` GPUs may take (module docstring), in grid order."""
    out: list[Layout] = []
    for lay in grid(moe, gpus, gpus, with_cp and not moe):
        if lay.pp != 1:
            continue
        if moe and not (is_dp_attention(lay) or (lay.ep == lay.tp and lay.moe_tp is None)):
            continue
        out.append(lay)
    return out


class _Pools:
    """Checks, estimates and picks the pool layouts of one plan."""

    def __init__(
        self, spec: PlanSpec, stats: WorkloadStats, with_cp: bool, prefer: Shape | None
    ) -> None:
        self.spec = spec
        self.stats = stats
        self.with_cp = with_cp
        self.prefer = prefer
        self.checker = Checker(spec)
        self.rejected: list[Rejected] = []
        self.estimates: dict[str, Estimate] = {}
        self.axes = spec.options.candidates.model_copy(update={"gpus": None, "layouts": None})

    def kept(self, role: PoolRole, gpus: int) -> list[Candidate]:
        """The pool layouts of `role` on `gpus` GPUs that are combined (module docstring)."""
        moe = self.spec.base.model.is_moe
        ok: list[tuple[Candidate, Estimate]] = []
        for lay in pool_layouts(moe, gpus, self.with_cp and role == "prefill"):
            if not passes_filter(lay, self.axes):
                continue
            label = layout_label(lay, moe)
            tag = pool_label(role, label)
            result = self.checker.check(lay, label, role)
            if isinstance(result, Rejected):
                self.rejected.append(replace(result, label=tag))
                continue
            est = estimate(result.exp, result.built, self.stats, role)
            self.estimates[tag] = est
            why = self.bound(role, est)
            if why:
                self.rejected.append(Rejected(tag, lay, "pool bound", why))
                continue
            ok.append((result, est))
        ok.sort(key=lambda ce: (-ce[1].capacity_rps, ce[0].label))
        k = self.spec.options.pool_layouts
        shaped = [c for c, _ in ok[k:] if self.rule_shaped(role, c.layout)][:1]
        for cand, est in ok[k:]:
            if any(cand is c for c in shaped):
                continue
            self.rejected.append(
                Rejected(
                    pool_label(role, cand.label),
                    cand.layout,
                    "pool choice",
                    f"{role} pool of {gpus} GPUs: analytic capacity {est.capacity_rps:.2f} "
                    f"req/s, not among the {k} highest (plan.pool_layouts; the lowest kept "
                    f"has {ok[k - 1][1].capacity_rps:.2f} req/s)",
                )
            )
        return [c for c, _ in ok[:k]] + shaped

    def rule_shaped(self, role: PoolRole, lay: Layout) -> bool:
        """A pool layout shaped like the rule of thumb's pick (module docstring)."""
        if self.prefer is None:
            return False
        tp, cp = self.prefer
        if lay.tp != tp or lay.cp != (cp if role == "prefill" else 1):
            return False
        if not self.spec.base.model.is_moe:
            return True
        return is_dp_attention(lay) if lay.dp > 1 else lay.ep == lay.tp

    def bound(self, role: str, est: Estimate) -> str:
        """Why the pool's own bound rules it out ('' when it does not)."""
        slo = self.spec.base.slo
        ttft, tpot = slo.ttft_p99_s, slo.tpot_p99_s
        if role == "prefill" and ttft is not None and est.ttft_p99_lb_s > ttft:
            return (
                f"prefill pool: p99 TTFT lower bound {est.ttft_p99_lb_s:.3f} s (prefill "
                f"alone) > SLO {ttft:.3f} s"
            )
        if role == "decode" and tpot is not None and est.tpot_lb_s > tpot:
            return (
                f"decode pool: TPOT lower bound {est.tpot_lb_s * 1e3:.1f} ms (batch-1 "
                f"decode step) > SLO {tpot * 1e3:.1f} ms"
            )
        return ""


def enumerate_disaggregated(
    spec: PlanSpec, stats: WorkloadStats, with_cp: bool, prefer: Shape | None = None
) -> DisaggSpace:
    """The disaggregated candidates of the plan (module docstring); `prefer`: the (tp, cp) of
    the rule of thumb's co-located pick, whose pool shapes are always combined."""
    mode, why = resolve_mode(spec, stats.mean_prompt)
    topo = spec.base.topology
    sizes = pool_sizes(topo, spec.max_gpus)
    if mode == "off":
        return DisaggSpace(mode, (), (), {}, (f"disaggregation off ({why})",))
    if not sizes:
        note = f"disaggregation {mode} ({why}), but {spec.max_gpus} GPUs hold no two pools"
        return DisaggSpace("off", (), (), {}, (note,))
    pools = _Pools(spec, stats, with_cp, prefer)
    kept = {(role, n): pools.kept(role, n) for role in ROLES for n in sizes}
    candidates: list[Candidate] = []
    rejected = pools.rejected
    opts = spec.options
    for p in sizes:
        for d in sizes:
            total = p + d
            if not opts.min_gpus <= total <= spec.max_gpus:
                continue
            if opts.candidates.gpus is not None and total not in opts.candidates.gpus:
                continue
            for pf in kept[("prefill", p)]:
                for dc in kept[("decode", d)]:
                    result = combine(spec, pf, dc)
                    if isinstance(result, Candidate):
                        candidates.append(result)
                    else:
                        rejected.append(result)
    splits = sum(1 for p in sizes for d in sizes if opts.min_gpus <= p + d <= spec.max_gpus)
    note = (
        f"disaggregation {mode} ({why}): pool sizes {', '.join(map(str, sizes))} GPUs, "
        f"{splits} prefill/decode splits × ≤ ({opts.pool_layouts} + 1)² pool layouts → "
        f"{len(candidates)} disaggregated candidates"
    )
    return DisaggSpace(mode, tuple(candidates), tuple(rejected), pools.estimates, (note,))


def disagg_experiment(
    base: Experiment,
    prefill: Candidate,
    decode: Candidate,
    serving: Sequence[PoolServing],
    label: str,
) -> Experiment:
    """The base experiment with a `disaggregation:` block of the two pool candidates."""
    spec = DisaggregationSpec(
        prefill=PoolSpec(layout=prefill.layout, serving=serving[0], experts=prefill.exp.experts),
        decode=PoolSpec(layout=decode.layout, serving=serving[1], experts=decode.exp.experts),
    )
    return base.model_copy(update={"disaggregation": spec, "name": f"{base.name}-{label}"})


def combine(spec: PlanSpec, prefill: Candidate, decode: Candidate) -> Candidate | Rejected:
    """One prefill pool + one decode pool, built and checked against the engines."""
    opts = spec.options
    label = disagg_label(prefill.label, decode.label)
    layouts = (prefill.layout, decode.layout)
    model = spec.base.model
    v: dict[str, Verdict] = {
        e: disagg_verdict(e, prefill.layout, decode.layout, model, opts.sglang_moe_a2a_backend)
        for e in opts.engines
    }
    if not any(x.ok for x in v.values()):
        rules = "; ".join(f"{name}: {x.rule}" for name, x in v.items())
        reason = f"no target engine can run both pools — {rules}"
        return Rejected(label, decode.layout, "engines", reason, layouts)
    serving = (opts.pool_serving.prefill, opts.pool_serving.decode)
    exp = disagg_experiment(spec.base, prefill, decode, serving, label)
    try:
        built = build(exp)
    except (BuildError, PlacementError) as err:
        return Rejected(label, decode.layout, "build", " ".join(str(err).split()), layouts)
    assert built.pools is not None
    views = [
        Candidate(c.label, pb.exp, pb.built, c.verdicts, c.notes)
        for c, pb in zip((prefill, decode), built.pools, strict=True)
    ]
    notes = [f"disaggregated: prefill {prefill.gpus} GPUs + decode {decode.gpus} GPUs"]
    notes += [f"{role} pool: {n}" for role, c in zip(ROLES, views, strict=True) for n in c.notes]
    return Candidate(label, exp, built, v, tuple(notes), pools=(views[0], views[1]))


def with_disaggregated(space: Space, dis: DisaggSpace) -> Space:
    """The plan's space with the disaggregated candidates added (`only`: the co-located
    candidates become the rule of thumb's reference, neither simulated nor ranked)."""
    only = dis.mode == "only"
    colocated = () if only else space.candidates
    return replace(
        space,
        candidates=(*colocated, *dis.candidates),
        rejected=(*space.rejected, *dis.rejected),
        notes=(*space.notes, *dis.notes),
        disaggregation=dis.mode,
        reference=space.candidates if only else (),
    )
