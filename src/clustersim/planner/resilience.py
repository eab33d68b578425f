"""`plan.resilience: n_plus_1` — the chosen layout must also meet the SLO with its worst single
node down (docs/planner.md, docs/faults.md).

The worst node of a layout is argued, then simulated: a node failure stops every replica with
a GPU on that node, so the node touching the most replicas removes the most capacity (ties:
the lowest node index; on a symmetric placement every node is equivalent). Each layout that
meets the SLO plainly is simulated again with that node down for the whole run (`node_down`
from t = 0, detected at once: the steady state of N − 1), and judged on the same SLO. The
resilient pick is the best-ranked layout meeting both; the guarantee costs its GPUs minus the
plain pick's. Disaggregated candidates are not checked (faults with pools are not simulated).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from clustersim.config.schema import Experiment, FaultEventSpec, FaultsSpec
from clustersim.planner.rank import Row, judge
from clustersim.planner.search import ExecutorName, SimJob, default_workers, run_jobs
from clustersim.planner.space import Candidate
from clustersim.planner.spec import PlanSpec


@dataclass(frozen=True)
class NodeDownCheck:
    label: str
    node: str  # the node taken down
    meets: bool | None  # None: the degraded run failed to build
    misses: tuple[str, ...] = ()
    attainment: float | None = None  # SLO attainment with the node down


@dataclass(frozen=True)
class Resilience:
    checks: dict[str, NodeDownCheck]
    plain: Row | None  # the best layout without the guarantee
    pick: Row | None  # the best layout meeting the SLO with its worst node down

    @property
    def extra_gpus(self) -> int | None:
        """GPUs the guarantee costs over the plain pick (None: either is missing)."""
        if self.plain is None or self.pick is None:
            return None
        return self.pick.gpus - self.plain.gpus

    def to_json(self) -> dict[str, Any]:
        return {
            "mode": "n_plus_1",
            "plain": self.plain.label if self.plain else None,
            "plain_gpus": self.plain.gpus if self.plain else None,
            "pick": self.pick.label if self.pick else None,
            "pick_gpus": self.pick.gpus if self.pick else None,
            "extra_gpus": self.extra_gpus,
            "checks": [
                {
                    "layout": c.label,
                    "node_down": c.node,
                    "slo_met": c.meets,
                    "misses": list(c.misses),
                    "attainment": c.attainment,
                }
                for c in self.checks.values()
            ],
        }


def worst_node(cand: Candidate) -> str:
    """The node whose loss stops the most of the candidate's replicas (lowest index on ties)."""
    cluster = cand.built.cluster
    hits: Counter[int] = Counter()
    for rp in cand.built.placement.replicas:
        nodes = {cluster.node_of(g) for stage in rp.stages for g in stage}
        hits.update(nodes)
    node = min(hits, key=lambda n: (-hits[n], n))
    return f"n{node}"


def with_node_down(exp: Experiment, node: str) -> Experiment:
    """The experiment with `node` down for the whole run, detected at once."""
    faults = FaultsSpec(
        events=[FaultEventSpec(kind="node_down", target=node, at_s=0.0)],
        detect_s=0.0,
        on_failure="retry",
    )
    return exp.model_copy(update={"faults": faults})


def check_n_plus_1(
    spec: PlanSpec,
    ranked: Sequence[Row],
    candidates: Sequence[Candidate],
    plain: Row | None,
    executor: ExecutorName,
    quiet: bool,
) -> tuple[Resilience, list[Row]]:
    """Simulate every co-located layout that meets the SLO with its worst node down; the
    ranked rows with a note on each checked one, and the resilient pick."""
    by_label = {c.label: c for c in candidates}
    meeting = [
        r
        for r in ranked
        if r.status == "simulated" and r.meets and not by_label[r.label].disaggregated
    ]
    nodes = {r.label: worst_node(by_label[r.label]) for r in meeting}
    jobs = [SimJob(r.label, with_node_down(by_label[r.label].exp, nodes[r.label])) for r in meeting]
    results = run_jobs(
        jobs,
        executor,
        spec.options.workers or default_workers(),
        quiet,
        desc="plan: n+1 check",
    )
    checks: dict[str, NodeDownCheck] = {}
    for i, job in enumerate(jobs):
        res = results.get(i)
        node = nodes[job.label]
        if res is None or res.summary is None:
            checks[job.label] = NodeDownCheck(job.label, node, None)
            continue
        meets, misses, _worst = judge(res.summary, spec.base.slo)
        slo = res.summary.get("slo") or {}
        checks[job.label] = NodeDownCheck(job.label, node, meets, misses, slo.get("attainment"))
    rows = [_noted(r, checks.get(r.label)) for r in ranked]
    pick = next((r for r in rows if r.label in checks and checks[r.label].meets), None)
    return Resilience(checks, plain, pick), rows


def _noted(row: Row, check: NodeDownCheck | None) -> Row:
    if check is None:
        return row
    if check.meets is None:
        note = f"n+1: {check.node} down did not run"
    elif check.meets:
        note = f"n+1: meets the SLO with {check.node} down"
    else:
        note = f"n+1: misses with {check.node} down ({'; '.join(check.misses)})"
    return replace(row, notes=(*row.notes, note))
