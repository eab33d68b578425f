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
4. DP last: enough replicas for the offered load at plan.target_utilisation of the analytic
   per-replica capacity (closed loop: concurrency / the analytic batch), within max_gpus.
5. CP only for prompts ≥ plan.long_prompt_tokens: noted, never picked.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from clustersim.config.schema import Layout
from clustersim.planner.analytic import Estimate, WorkloadStats
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


class _Rules:
    def __init__(
        self,
        spec: PlanSpec,
        candidates: Sequence[Candidate],
        estimates: dict[str, Estimate],
        stats: WorkloadStats,
    ) -> None:
        self.spec = spec
        self.moe = spec.base.model.is_moe
        self.cands = [c for c in candidates if c.layout.cp == 1]
        self.est = estimates
        self.stats = stats
        self.reasons: list[str] = []
        topo = spec.base.topology
        domain = topo.gpus_per_node
        if topo.nvlink is not None and topo.nvlink.rack_size is not None:
            domain = topo.nvlink.rack_size
        self.domain = domain

    def find(self, pred: Callable[[Layout], bool]) -> list[Candidate]:
        return sorted(
            (c for c in self.cands if pred(c.layout)),
            key=lambda c: (c.gpus, c.layout.pp, c.layout.dp, c.label),
        )

    def unit(self, tp: int, pp: int) -> Candidate | None:
        """The smallest candidate with this TP and PP under the EP rule (step 3)."""
        found = self.find(lambda lay: lay.tp == tp and lay.pp == pp and self.ep_rule(lay))
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
                why = "still above the TPOT bound" if gain < DIMINISHING_RETURNS else (
                    f"≥ {DIMINISHING_RETURNS:.0%}"
                )
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

    def pick_dp(self, tp: int, pp: int) -> Candidate | None:
        unit = self.unit(tp, pp)
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
        options = self.find(lambda lay: lay.tp == tp and lay.pp == pp and self.ep_rule(lay))
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

    def cp_note(self) -> None:
        opts = self.spec.options
        if self.stats.p99_prompt >= opts.long_prompt_tokens:
            self.reasons.append(
                f"CP: p99 prompt {self.stats.p99_prompt:,.0f} ≥ {opts.long_prompt_tokens:,} "
                "tokens would call for context parallelism; the rule of thumb does not pick it "
                "(CP candidates are enumerated and, where the simulator builds them, simulated)"
            )


def rule_of_thumb(
    spec: PlanSpec,
    candidates: Sequence[Candidate],
    estimates: dict[str, Estimate],
    stats: WorkloadStats,
) -> RulePick:
    """The layout the rules of the module docstring pick among the candidates, with reasons."""
    rules = _Rules(spec, candidates, estimates, stats)
    tp_pp = rules.pick_tp_pp()
    pick = rules.pick_dp(*tp_pp) if tp_pp is not None else None
    rules.cp_note()
    return RulePick(pick.label if pick is not None else None, tuple(rules.reasons))
