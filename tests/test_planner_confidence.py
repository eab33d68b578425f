"""Planner with replicates: SLO classes at 95 % confidence, ranking, plan.csv."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from clustersim.config.schema import Layout, SLOSpec
from clustersim.planner.confidence import slo_class
from clustersim.planner.rank import Row, rank
from clustersim.planner.report import write_plan
from clustersim.planner.run import run_plan
from clustersim.planner.spec import load_plan

SLO = SLOSpec(ttft_p99_s=1.0, tpot_p99_s=0.1)


def summary(ttft_ci: list[float], tpot_ci: list[float] | None, dropped: int = 0) -> dict:
    block: dict[str, Any] = {"n": 3, "ttft_s": {"p99": {"mean": sum(ttft_ci) / 2, "ci95": ttft_ci}}}
    block["tpot_s"] = {"p99": {"mean": None, "ci95": tpot_ci}}
    return {
        "requests_completed": 100,
        "requests_dropped": dropped,
        "tpot_s": {"p99": 0.05},
        "replicates": block,
    }


def test_classes_from_the_intervals() -> None:
    assert slo_class(summary([0.5, 0.9], [0.05, 0.08]), SLO) == "meets"
    assert slo_class(summary([0.5, 1.2], [0.05, 0.08]), SLO) == "marginal"
    assert slo_class(summary([1.1, 1.2], [0.05, 0.08]), SLO) == "misses"
    assert slo_class(summary([0.5, 0.9], [0.11, 0.2]), SLO) == "misses"
    assert slo_class(summary([0.5, 0.9], [0.05, 0.08], dropped=1), SLO) == "misses"
    assert slo_class(summary([0.5, 0.9], None), SLO) == "marginal"  # no TPOT interval
    assert slo_class({"replicates": {"n": 1}}, SLO) is None  # a single run has no class


def test_confident_rows_rank_before_marginal_ones() -> None:
    def row(label: str, gpus: int, cls: str | None) -> Row:
        return Row(label, Layout(), gpus, "simulated", {}, meets=True, slo_class=cls)

    ranked = rank([row("a", 2, "marginal"), row("b", 4, "meets"), row("c", 2, "meets")])
    assert [r.label for r in ranked] == ["c", "b", "a"]


PLAN = """
name: conf_plan
seed: 5
replicates: 3
model: llama-3.1-8b
topology: dgx_h100_x1
serving: {max_num_seqs: 64}
workload:
  arrival: {process: poisson, rate_rps: 10}
  prompt_tokens: {dist: fixed, value: 512}
  output_tokens: {dist: fixed, value: 32}
horizon: {duration_s: 5, warmup_s: 1}
slo: {ttft_p99_s: 0.2, tpot_p99_s: 0.05}
plan: {max_gpus: 2, workers: 2, candidates: {tp: [1, 2], pp: [1], dp: [1]}, keep_runs: true}
"""


def test_replicated_plan_classes_its_candidates(tmp_path: Path) -> None:
    path = tmp_path / "plan.yaml"
    path.write_text(PLAN)
    result = run_plan(load_plan(path), tmp_path / "out", "local", quiet=True)
    simulated = [r for r in result.rows if r.status == "simulated"]
    assert simulated and all(r.slo_class in ("meets", "marginal", "misses") for r in simulated)
    for r in simulated:
        assert r.summary is not None and r.summary["replicates"]["n"] == 3
    write_plan(result)
    table = pd.read_csv(result.plan_dir / "plan.csv")
    assert set(table["slo_class"].dropna()) <= {"meets", "marginal", "misses"}
    run_dir = result.plan_dir / "runs" / simulated[0].label
    assert (run_dir / "summary.json").is_file()
    assert (run_dir / "replicate-2" / "requests.parquet").is_file()


def test_plan_report_html_and_report_command(tmp_path: Path) -> None:
    from clustersim import cli

    path = tmp_path / "plan.yaml"
    path.write_text(PLAN.replace("replicates: 3\n", ""))
    out = tmp_path / "out"
    assert cli.main(["plan", str(path), "--out", str(out), "--quiet"]) == 0
    (plan_dir,) = (out / "conf_plan").iterdir()
    html = (plan_dir / "report.html").read_text()
    assert "Candidates (rank order)" in html and "data:image/png;base64," in html
    assert "tp1-pp1-dp1" in html and "launch/" in html
    (plan_dir / "report.html").unlink()
    assert cli.main(["report", str(plan_dir)]) == 0
    assert (plan_dir / "report.html").read_text() == html


@pytest.mark.parametrize("target", [0.05, 0.5])
def test_replicates_grow_until_the_p99s_are_known(tmp_path: Path, target: float) -> None:
    # ±5 % is out of reach of a 5 s horizon (the budget stops it); ±50 % is reached early
    path = tmp_path / "plan.yaml"
    text = PLAN.replace("replicates: 3\n", "replicates: 2\n").replace(
        "keep_runs: true}", f"keep_runs: true, ci_rel_target: {target}, max_replicates: 6}}"
    )
    path.write_text(text)
    result = run_plan(load_plan(path), tmp_path / "out", "local", quiet=True)
    for r in result.rows:
        if r.status != "simulated":
            continue
        assert r.summary is not None
        block = r.summary["replicates"]
        n = block["n"]
        assert 2 <= n <= 6
        known = all(
            (block[m]["p99"]["ci95"][1] - block[m]["p99"]["ci95"][0]) / 2
            <= target * block[m]["p99"]["mean"]
            for m in ("ttft_s", "tpot_s")
        )
        assert known or n == 6  # stopped because known, or at the budget
        if target == 0.5:
            assert known and n < 6
        runs = result.plan_dir / "runs" / r.label
        assert len(list(runs.glob("replicate-*"))) == n
