"""plan.resilience: n_plus_1 — the pick also meets the SLO with its worst node down."""

from __future__ import annotations

import json
from pathlib import Path

from clustersim.planner.report import format_report, write_plan
from clustersim.planner.resilience import node_classes, with_node_down
from clustersim.planner.run import run_plan
from clustersim.planner.spec import load_plan

# Llama-3.1-8B on two 8×H100 nodes at light load: one TP4 replica meets the SLO; with its
# node down nothing is left, so the resilient layout needs a replica on the other node too.
PLAN = """
name: n_plus_1
seed: 5
model: llama-3.1-8b
topology: h100x16_ib
serving: {{max_num_seqs: 128, max_num_batched_tokens: 4096, router: least_outstanding}}
workload:
  arrival: {{process: poisson, rate_rps: 4}}
  prompt_tokens: {{dist: fixed, value: 512}}
  output_tokens: {{dist: fixed, value: 32}}
horizon: {{duration_s: 6, warmup_s: 1}}
slo: {{ttft_p99_s: 0.5, tpot_p99_s: 0.05}}
plan: {{engines: [vllm], candidates: {{tp: [4], pp: [1]}}, disaggregation: "off",
        workers: 2{extra}}}
"""


def plan(tmp_path: Path, extra: str) -> Path:
    path = tmp_path / "plan.yaml"
    path.write_text(PLAN.format(extra=extra))
    return path


def test_n_plus_1_picks_a_layout_that_survives_its_worst_node(tmp_path: Path) -> None:
    plain = run_plan(load_plan(plan(tmp_path, "")), tmp_path / "plain", "local", quiet=True)
    assert plain.best is not None and plain.best.gpus == 4 and plain.resilience is None
    result = run_plan(
        load_plan(plan(tmp_path, ", resilience: n_plus_1")), tmp_path / "n1", "local", quiet=True
    )
    res = result.resilience
    assert res is not None and res.plain is not None and res.pick is not None
    assert res.plain.gpus == 4 and result.best is res.pick
    # TP4 × DP2 packs both replicas on node 0; the first to survive a node is TP4 × DP3
    assert res.pick.gpus == 12 and res.extra_gpus == 8
    assert res.checks[res.plain.label].meets is False
    # TP4 × DP3: n0 holds two replicas, n1 one — two classes, both simulated; n0 is worst
    pick = res.checks[res.pick.label]
    assert pick.node == "n0" and [d.node for d in pick.simulated] == ["n0", "n1"]
    assert all(d.meets for d in pick.simulated)
    paths = write_plan(result)
    data = json.loads(paths["plan.json"].read_text())
    assert data["resilience"]["pick_gpus"] == 12 and data["resilience"]["extra_gpus"] == 8
    assert data["best"] == res.pick.label
    checked = {c["layout"]: c for c in data["resilience"]["checks"]}
    assert [d["node"] for d in checked[res.pick.label]["nodes_simulated"]] == ["n0", "n1"]
    text = format_report(result, paths)
    assert f"n+1: {res.pick.label} (12 GPUs) meets the SLO" in text and "+8 GPUs" in text


def test_node_classes_and_node_down_experiment(tmp_path: Path) -> None:
    """Nodes holding the same positions of the layout form one class (one simulation)."""
    spec = load_plan(plan(tmp_path, ""))
    from clustersim.planner.space import enumerate_space

    space = enumerate_space(spec, 512.0)
    by_dp = {c.layout.dp: c for c in space.candidates}
    assert node_classes(by_dp[3]) == {"n0": ("n0",), "n1": ("n1",)}  # two replicas vs one
    assert node_classes(by_dp[4]) == {"n0": ("n0", "n1")}  # two whole replicas on each
    assert node_classes(by_dp[1]) == {"n0": ("n0",)}  # n1 unused: not simulated
    cand = by_dp[3]
    exp = with_node_down(cand.exp, "n0")
    assert exp.faults is not None and exp.faults.events[0].target == "n0"
    assert cand.exp.faults is None
