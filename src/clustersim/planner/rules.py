"""The rule-of-thumb layout: what a practitioner would pick without simulating (pure).

Order (docs/planner.md §4), each step recorded as a reason with its numbers:
1. TP first, inside the NVLink domain: the smallest TP at which the model fits without PP
   (for MoE: with experts spread over EP ranks as in step 3), then doubling TP while the
   analytic batch-1 decode step improves by ≥ DIMINISHING_RETURNS (or while it still exceeds
   the TPOT bound).
2. PP minimally: only when no TP inside the domain fits; the fewest stages that fit at the
   domain's largest TP.
3. EP maximally for MoE: experts over every GPU of the layout (DP-attention + EP, ep = tp × dp)
   when dp > 1, else over the TP group (ep = tp).
4. CP only for long prompts (p99 prompt ≥ plan.long_prompt_tokens) and a TTFT bound: when the
   TP unit alone prefills the p99 prompt (the p99 TTFT lower bound) in more than
   target_utilisation × the TTFT bound, the smallest cp whose bound fits there (same TP; pp 1).
5. DP last: enough replicas for the offered load at plan.target_utilisation of the analytic
   per-replica capacity (closed loop: concurrency / the analytic batch), within max_gpus.
6. Disaggregation (when disaggregated candidates exist) only when prompts are long (mean ≥
   plan.disagg_prompt_tokens) AND the TPOT bound is tight: a co-located step that carries one
   prefill chunk (min(mean prompt, max_num_batched_tokens) tokens) next to the pick's decode
   batch takes longer than the TPOT bound, so every decode sharing a step with a prompt misses
   it whatever the chunk schedule. Then: the fewest-GPU disaggregated candidate whose pools
   use the pick's TP (and EP rule, and CP in the prefill pool) with both pools' analytic
   capacity ≥ offered / target_utilisation. plan.disaggregation: only always disaggregates.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from clustersim.config.schema import Layout, TopologySpec
from clustersim.planner.analytic import Estimate, WorkloadStats, mixed_step_s
from clustersim.planner.engines import is_dp_attention
from clustersim.planner.space import Candidate
from clustersim.planner.spec import PlanSpec

DIMINISHING_RETURNS = 0.20  # a TP doubling must cut the batch-1 decode step by ≥ 20 %


@dataclass(frozen=True)
class RulePick:
    label: str | None  # None when no candidate fits the rules
    reasons: tuple[str, ...]


def _ms(x: float) -> str:
    return f"{x * 1e3:.2f} ms"


def nvlink_domain_gpus(topo: TopologySpec) -> int:
    """GPUs in one NVLink domain: a node, or an NVL rack."""
    if topo.nvlink is not None and topo.nvlink.rack_size is not None:
        return topo.nvlink.rack_size
    return topo.gpus_per_node


class _Rules:
    def __init__(
        self,
        spec: PlanSpec,
        candidates: Sequence[Candidate],
        estimates: dict[str, Estimate],
        stats: WorkloadStats,
        reference: Sequence[Candidate] = (),
    ) -> None:
        self.spec = spec
        self.moe = spec.base.model.is_moe
        colocated = [c for c in (*reference, *candidates) if not c.disaggregated]
        self.cands = [c for c in colocated if c.layout.cp == 1]
        self.cp_cands = [c for c in colocated if c.layout.cp > 1]
        self.disagg = [c for c in candidates if c.disaggregated]
        self.est = estimates
        self.stats = stats
        self.reasons: list[str] = []
        self.domain = nvlink_domain_gpus(spec.base.topology)

    def find(self, pred: Callable[[Layout], bool], cp: int = 1) -> list[Candidate]:
        pool = self.cands if cp == 1 else self.cp_cands
        return sorted(
            (c for c in pool if c.layout.cp == cp and pred(c.layout)),
            key=lambda c: (c.gpus, c.layout.pp, c.layout.dp, c.label),
        )

    def unit(self, tp: int, pp: int, cp: int = 1) -> Candidate | None:
        """The smallest candidate with this TP, PP and CP under the EP rule (step 3)."""
        found = self.find(lambda lay: lay.tp == tp and lay.pp == pp and self.ep_rule(lay), cp)
        return found[0] if found else None

    def ep_rule(self, lay: Layout) -> bool:
        if not self.moe:
            return True
        if lay.dp > 1:
            return is_dp_attention(lay)
        return lay.ep == lay.tp and lay.moe_tp is None

    def pick_tp_pp(self) -> tuple[int, int] | None:
        tps = sorted({c.layout.tp for c in self.cands if c.layout.tp <= self.domain})
        fitting = [tp for tp in tps if self.unit(tp, 1) is not None]
        if not fitting:
            return self._pp_fallback(tps)
        tp = fitting[0]
        unit = self.unit(tp, 1)
        assert unit is not None
        self.reasons.append(
            f"TP: {tp} is the smallest TP inside the {self.domain}-GPU NVLink domain that fits "
            f"without PP ({unit.label}: {unit.memory.weights_per_gpu_bytes / 2**30:.1f} GiB "
            "weights per GPU)"
        )
        return self._grow_tp(tp, [t for t in fitting if t > tp]), 1

    def _grow_tp(self, tp: int, larger: list[int]) -> int:
        bound = self.spec.base.slo.tpot_p99_s
        for nxt in larger:
            cur_u, nxt_u = self.unit(tp, 1), self.unit(nxt, 1)
            assert cur_u is not None and nxt_u is not None
            cur, new = self.est[cur_u.label].tpot_lb_s, self.est[nxt_u.label].tpot_lb_s
            gain = 1.0 - new / cur if cur > 0 else 0.0
            too_slow = bound is not None and cur > bound
            if gain >= DIMINISHING_RETURNS or (too_slow and new < cur):
                slow = gain < DIMINISHING_RETURNS
                why = "still above the TPOT bound" if slow else f"≥ {DIMINISHING_RETURNS:.0%}"
                self.reasons.append(
                    f"TP {tp} → {nxt}: batch-1 decode step {_ms(cur)} → {_ms(new)} "
                    f"(−{gain:.0%}, {why})"
                )
                tp = nxt
            else:
                self.reasons.append(
                    f"TP stays {tp}: {nxt} would cut the batch-1 decode step only {_ms(cur)} → "
                    f"{_ms(new)} (−{gain:.0%} < {DIMINISHING_RETURNS:.0%}: diminishing returns)"
                )
                break
        return tp

    def _pp_fallback(self, tps: list[int]) -> tuple[int, int] | None:
        if not tps:
            self.reasons.append(f"no candidate with TP inside the {self.domain}-GPU domain")
            return None
        tp = tps[-1]
        pps = sorted({c.layout.pp for c in self.cands if c.layout.tp == tp})
        for pp in pps:
            unit = self.unit(tp, pp)
            if unit is not None:
                self.reasons.append(
                    f"TP {tp} (largest inside the {self.domain}-GPU domain) does not fit alone; "
                    f"PP {pp} is the fewest stages that fit ({unit.label})"
                )
                return tp, pp
        self.reasons.append(f"no PP depth fits at TP {tp}")
        return None

    def pick_cp(self, tp: int, pp: int) -> int:
        """Step 4: the CP degree (1 unless long prompts break the TTFT bound)."""
        opts, stats = self.spec.options, self.stats
        if stats.p99_prompt < opts.long_prompt_tokens:
            return 1
        head = f"CP: p99 prompt {stats.p99_prompt:,.0f} ≥ {opts.long_prompt_tokens:,} tokens"
        bound = self.spec.base.slo.ttft_p99_s
        unit = self.unit(tp, pp)
        if bound is None or unit is None:
            self.reasons.append(f"{head}, but no TTFT bound to meet: cp 1")
            return 1
        util = opts.target_utilisation
        room = util * bound
        lb = self.est[unit.label].ttft_p99_lb_s
        if lb <= room:
            self.reasons.append(
                f"{head}; {unit.label} prefills it alone in {lb:.2f} s ≤ {util:.0%} of the "
                f"{bound:g} s TTFT bound: no CP needed"
            )
            return 1
        cps = sorted({c.layout.cp for c in self.cp_cands if c.layout.tp == tp})
        units = [(cp, u) for cp in cps if (u := self.unit(tp, pp, cp)) is not None]
        if not units:
            self.reasons.append(
                f"{head}; {unit.label} prefills it alone in {lb:.2f} s > {util:.0%} of the "
                f"{bound:g} s TTFT bound, but no CP candidate has TP {tp} and PP {pp} "
                "(CP with PP is not simulated): cp 1"
            )
            return 1
        fits = [(cp, u) for cp, u in units if self.est[u.label].ttft_p99_lb_s <= room]
        cp, cp_unit = fits[0] if fits else units[-1]
        new = self.est[cp_unit.label].ttft_p99_lb_s
        short = "" if fits else " (the largest CP enumerated; still above)"
        self.reasons.append(
            f"{head}; {unit.label} prefills it alone in {lb:.2f} s > {util:.0%} of the "
            f"{bound:g} s TTFT bound → cp {cp}: {cp_unit.label} in {new:.2f} s{short}"
        )
        return cp

    def pick_dp(self, tp: int, pp: int, cp: int = 1) -> Candidate | None:
        unit = self.unit(tp, pp, cp)
        if unit is None:
            return None
        est = self.est[unit.label]
        per_unit = est.replica_capacity_rps
        util = self.spec.options.target_utilisation
        offered = self.stats.offered_rps
        concurrency = getattr(self.spec.base.workload.arrival, "concurrency", None)
        if offered is not None and per_unit > 0:
            need = math.ceil(offered / (per_unit * util))
            why = (
                f"offered {offered:.2f} req/s ÷ ({per_unit:.2f} req/s per replica × "
                f"{util:.0%} target utilisation)"
            )
        elif isinstance(concurrency, int) and est.batch_seqs > 0:
            need = math.ceil(concurrency / (est.batch_seqs * util))
            why = (
                f"{concurrency} requests in flight ÷ ({est.batch_seqs:.0f} per replica × "
                f"{util:.0%})"
            )
        else:
            need = unit.layout.dp
            why = "no offered rate to size for"
        need = max(need, unit.layout.dp)
        options = self.find(lambda lay: lay.tp == tp and lay.pp == pp and self.ep_rule(lay), cp)
        at_least = [c for c in options if c.layout.dp >= need]
        pick = at_least[0] if at_least else options[-1]
        capped = "" if at_least else f"; capped at {pick.layout.dp} by max_gpus / candidates"
        self.reasons.append(f"DP: {need} replicas needed ({why}){capped} → {pick.label}")
        if self.moe:
            lay = pick.layout
            what = (
                f"DP-attention + EP over all {lay.ep} GPUs"
                if is_dp_attention(lay)
                else f"experts sharded over the TP group (ep = {lay.ep})"
            )
            self.reasons.append(f"EP maximal: {what}")
        return pick

    def disaggregate(self, pick: Candidate | None, forced: bool) -> Candidate | None:
        """Step 6: the disaggregated pick, or None to stay co-located (reason either way)."""
        if not self.disagg:
            return None
        if not forced:
            why = self.interference(pick)
            if why is None:
                return None
        else:
            why = "plan.disaggregation: only"
        matching = [c for c in self.disagg if pick is not None and self.same_unit(c, pick)]
        options = matching or self.disagg
        offered = self.stats.offered_rps
        need = None if offered is None else offered / self.spec.options.target_utilisation

        def enough(c: Candidate) -> bool:
            est = self.est[c.label]
            return need is None or min(est.prefill_capacity_rps, est.decode_capacity_rps) >= need

        ranked = sorted(options, key=lambda c: (c.gpus, c.label))
        fit = [c for c in ranked if enough(c)]
        by_capacity = max(ranked, key=lambda c: (self.est[c.label].capacity_rps, -c.gpus))
        chosen = fit[0] if fit else by_capacity
        est = self.est[chosen.label]
        which = "pools with the pick's TP" if matching else "any pools (none use the pick's TP)"
        size = (
            f"fewest GPUs whose prefill ({est.prefill_capacity_rps:.2f} req/s) and decode "
            f"({est.decode_capacity_rps:.2f} req/s) pools cover "
            + (f"{need:.2f} req/s" if need is not None else "the load")
            if fit
            else f"none covers {need:.2f} req/s: the highest capacity"
        )
        self.reasons.append(f"disaggregate ({why}) → {chosen.label}: {which}, {size}")
        return chosen

    def interference(self, pick: Candidate | None) -> str | None:
        """Why prompts interfere with decodes beyond the TPOT bound (None: stay co-located;
        the reason line is recorded either way)."""
        opts, stats = self.spec.options, self.stats
        bound = self.spec.base.slo.tpot_p99_s
        if pick is None:
            return None
        if stats.mean_prompt < opts.disagg_prompt_tokens:
            self.reasons.append(
                f"stay co-located: mean prompt {stats.mean_prompt:,.0f} < "
                f"{opts.disagg_prompt_tokens:,} tokens (plan.disagg_prompt_tokens)"
            )
            return None
        if bound is None:
            self.reasons.append("stay co-located: no TPOT bound for prefill to interfere with")
            return None
        chunk = max(1, min(pick.exp.serving.max_num_batched_tokens, round(stats.mean_prompt)))
        step = mixed_step_s(pick.exp, pick.built, stats, chunk)
        what = f"a {pick.label} step carrying a {chunk:,}-token prefill chunk takes {_ms(step)}"
        if step <= bound:
            self.reasons.append(
                f"stay co-located: {what} ≤ the {_ms(bound)} TPOT bound (chunked prefill "
                "keeps decodes inside it)"
            )
            return None
        return (
            f"mean prompt {stats.mean_prompt:,.0f} ≥ {opts.disagg_prompt_tokens:,} tokens and "
            f"{what} > the {_ms(bound)} TPOT bound"
        )

    def same_unit(self, cand: Candidate, pick: Candidate) -> bool:
        """Both pools use the pick's TP and EP rule; the prefill pool the pick's CP."""
        pools = cand.pool_layouts
        if pools is None:
            return False
        pf, dc = pools
        tp = pick.layout.tp
        ok = pf.tp == tp and dc.tp == tp and self.ep_rule(pf) and self.ep_rule(dc)
        return ok and pf.cp == pick.layout.cp


def rule_of_thumb(
    spec: PlanSpec,
    candidates: Sequence[Candidate],
    estimates: dict[str, Estimate],
    stats: WorkloadStats,
    reference: Sequence[Candidate] = (),
    only_disaggregated: bool = False,
) -> RulePick:
    """The layout the rules of the module docstring pick among the candidates, with reasons.

    `reference`: co-located candidates the steps reason about without picking them
    (plan.disaggregation: only, with `only_disaggregated` set)."""
    rules = _Rules(spec, candidates, estimates, stats, reference)
    tp_pp = rules.pick_tp_pp()
    pick = None
    if tp_pp is not None:
        cp = rules.pick_cp(*tp_pp)
        pick = rules.pick_dp(*tp_pp, cp)
    split = rules.disaggregate(pick, only_disaggregated)
    if split is not None:
        pick = split
    elif only_disaggregated:
        pick = None
    return RulePick(pick.label if pick is not None else None, tuple(rules.reasons))
