"""`plan.resilience: n_plus_1` — the chosen layout must also meet the SLO with its worst single
node down (docs/planner.md, docs/faults.md).

Every node position is simulated, and the worst taken. Nodes are equivalent when they hold
the same positions of the layout: a node's class is the multiset, over the replicas with a GPU
on it, of the (stage, CP rank, TP rank) positions of that replica's GPUs on the node — e.g.
every node of TP8 × DP4 holds "all of one replica's stage 0" and one representative (the
lowest index) stands for all four; PP2 across two nodes gives two classes (stage 0, stage 1).
Nodes no replica uses are not simulated (losing one changes nothing). Not part of the class:
a replica's index (router tie-breaks) and the node's place in the network (leaf), which the
catalog's leaf-spine topologies make symmetric. Each layout that meets the SLO plainly is
simulated again with each representative node down for the whole run (`node_down` from
t = 0, detected at once: the steady state of N − 1); its worst node is the one whose run
misses the SLO (a run that fails to build counts as missing), then has the lowest SLO
attainment (ties: lowest index). The resilient pick is the best-ranked layout meeting the SLO
with every representative down; the guarantee costs its GPUs minus the plain pick's.
Disaggregated candidates are not checked (faults with pools are not simulated).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from clustersim.config.schema import Experiment, FaultEventSpec, FaultsSpec
from clustersim.jobs import ExecutorName, SimJob, SimResult, default_workers, run_jobs
from clustersim.planner.rank import Row, judge
from clustersim.planner.search import simulate_job
from clustersim.planner.space import Candidate
from clustersim.planner.spec import PlanSpec


@dataclass(frozen=True)
class NodeDown:
    """One simulated node loss of one layout."""

    node: str  # the representative taken down
    represents: tuple[str, ...]  # every node of its class (itself included)
    meets: bool | None  # None: the degraded run failed to build
    misses: tuple[str, ...] = ()
    attainment: float | None = None  # SLO attainment with the node down

    def severity(self) -> tuple[bool, float, int]:
        """Sort key, worst first: missing the SLO, then lower attainment, then lower index."""
        att = self.attainment if self.attainment is not None else -math.inf
        return (self.meets is True, att, int(self.node[1:]))


@dataclass(frozen=True)
class NodeDownCheck:
    label: str
    node: str  # the worst node (none simulated: "")
    meets: bool | None  # with the worst node down; None: its run failed to build
    misses: tuple[str, ...] = ()
    attainment: float | None = None  # SLO attainment with the worst node down
    simulated: tuple[NodeDown, ...] = ()  # every representative, node order


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
                    "nodes_simulated": [
                        {
                            "node": d.node,
                            "represents": list(d.represents),
                            "slo_met": d.meets,
                            "attainment": d.attainment,
                        }
                        for d in c.simulated
                    ],
                }
                for c in self.checks.values()
            ],
        }


NodeClass = tuple[tuple[tuple[int, int, int], ...], ...]


def node_classes(cand: Candidate) -> dict[str, tuple[str, ...]]:
    """Representative node → every node of its class (module docstring), in node order;
    nodes no replica uses are left out."""
    cluster = cand.built.cluster
    held: dict[int, list[tuple[tuple[int, int, int], ...]]] = {}
    for rp in cand.built.placement.replicas:
        on_node: dict[int, list[tuple[int, int, int]]] = {}
        for s, stage in enumerate(rp.cp_groups):
            for c, group in enumerate(stage):
                for t, gpu in enumerate(group):
                    on_node.setdefault(cluster.node_of(gpu), []).append((s, c, t))
        for node, positions in on_node.items():
            held.setdefault(node, []).append(tuple(sorted(positions)))
    classes: dict[NodeClass, list[int]] = {}
    for node in sorted(held):
        classes.setdefault(tuple(sorted(held[node])), []).append(node)
    return {f"n{nodes[0]}": tuple(f"n{n}" for n in nodes) for nodes in classes.values()}


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
    """Simulate every co-located layout that meets the SLO with each representative node
    down; the ranked rows with a note on each checked one, and the resilient pick."""
    by_label = {c.label: c for c in candidates}
    meeting = [
        r
        for r in ranked
        if r.status == "simulated" and r.meets and not by_label[r.label].disaggregated
    ]
    classes = {r.label: node_classes(by_label[r.label]) for r in meeting}
    jobs = [
        SimJob(f"{r.label} ({node} down)", with_node_down(by_label[r.label].exp, node))
        for r in meeting
        for node in classes[r.label]
    ]
    owners = [(r.label, node) for r in meeting for node in classes[r.label]]
    results = run_jobs(
        jobs,
        executor,
        spec.options.workers or default_workers(),
        quiet,
        work=simulate_job,
        desc="plan: n+1 check",
        unit="node down",
    )
    downs: dict[str, list[NodeDown]] = {r.label: [] for r in meeting}
    for i, (label, node) in enumerate(owners):
        downs[label].append(_outcome(node, classes[label][node], results.get(i), spec))
    checks = {label: _worst(label, found) for label, found in downs.items()}
    rows = [_noted(r, checks.get(r.label)) for r in ranked]
    pick = next((r for r in rows if r.label in checks and checks[r.label].meets), None)
    return Resilience(checks, plain, pick), rows


def _outcome(
    node: str, represents: tuple[str, ...], res: SimResult | None, spec: PlanSpec
) -> NodeDown:
    if res is None or res.summary is None:
        return NodeDown(node, represents, None)
    meets, misses, _worst = judge(res.summary, spec.base.slo)
    slo = res.summary.get("slo") or {}
    return NodeDown(node, represents, meets, misses, slo.get("attainment"))


def _worst(label: str, found: Sequence[NodeDown]) -> NodeDownCheck:
    """The layout's check: its worst simulated node loss (none: nothing to lose, met)."""
    if not found:
        return NodeDownCheck(label, "", True)
    worst = min(found, key=NodeDown.severity)
    return NodeDownCheck(
        label, worst.node, worst.meets, worst.misses, worst.attainment, tuple(found)
    )


def _noted(row: Row, check: NodeDownCheck | None) -> Row:
    if check is None:
        return row
    if not check.simulated:
        note = "n+1: no node holds a replica"
    elif check.meets is None:
        note = f"n+1: {check.node} down did not run"
    elif check.meets:
        note = f"n+1: meets the SLO with any node down (worst: {check.node}{_of(check)})"
    else:
        note = f"n+1: misses with {check.node} down ({'; '.join(check.misses)}){_of(check)}"
    return replace(row, notes=(*row.notes, note))


def _of(check: NodeDownCheck) -> str:
    """The notes' suffix: how many node losses stood for how many nodes."""
    nodes = sum(len(d.represents) for d in check.simulated)
    return f"; {len(check.simulated)} simulated for {nodes} nodes"
