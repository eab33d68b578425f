"""End-to-end plans on small cases: CLI, files, pruning safety, bounds, Ray = process pool."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest
import yaml

from clustersim.cli import main
from clustersim.planner.report import plan_rows, write_plan
from clustersim.planner.run import PlanResult, run_plan
from clustersim.planner.spec import load_plan

# Llama-3.1-8B on one 8×H100 node at 40 req/s: one GPU is overloaded, the best needs 3.
SMALL = """
name: small_plan
seed: 5
model: llama-3.1-8b
topology: dgx_h100_x1
serving: {{max_num_seqs: 128, max_num_batched_tokens: 4096}}
workload:
  arrival: {{process: poisson, rate_rps: 40}}
  prompt_tokens: {{dist: lognormal, median: 1024, sigma: 0.6, max: 4096}}
  output_tokens: {{dist: lognormal, median: 128, sigma: 0.5, max: 512}}
horizon: {{duration_s: 8, warmup_s: 1}}
slo: {{ttft_p99_s: 0.25, tpot_p99_s: 0.025}}  # vLLM host time: a 7.7 ms floor per step at TP1
plan: {{max_gpus: 4, workers: 2{extra}}}
"""


def small_plan(tmp_path: Path, extra: str = "", name: str = "plan_small.yaml") -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / name
    path.write_text(SMALL.format(extra=extra))
    return path


def run(tmp_path: Path, extra: str = "", executor: str = "local") -> PlanResult:
    spec = load_plan(small_plan(tmp_path, extra))
    return run_plan(spec, tmp_path / "out", executor, quiet=True)  # type: ignore[arg-type]


def ranking(result: PlanResult) -> list[tuple[object, ...]]:
    return [
        (r.label, r.status, r.meets, r.metric("ttft_s", "p99"), r.metric("tpot_s", "p99"))
        for r in result.rows
    ]


def test_cli_plan_writes_the_plan_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "results"
    rc = main(["plan", str(small_plan(tmp_path)), "--out", str(out), "--quiet"])
    text = capsys.readouterr().out
    assert rc == 0
    assert "simulated best: tp1-pp1-dp3 (3 GPUs" in text
    assert "rule of thumb: tp4-pp1-dp1" in text and "→ they differ" in text
    (plan_dir,) = (out / "small_plan").iterdir()
    for name in ("plan.csv", "plan.json", "rejected.csv", "pareto.png"):
        assert (plan_dir / name).stat().st_size > 0
    assert (plan_dir / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    launch = plan_dir / "launch" / "tp1-pp1-dp3"
    assert "vllm serve meta-llama/Llama-3.1-8B" in (launch / "vllm.sh").read_text()
    assert "--data-parallel-size 3" in (launch / "vllm.sh").read_text()
    # TensorRT-LLM: one replica's trtllm-serve and its YAML, run dp = 3 times
    trtllm = (launch / "trtllm.sh").read_text()
    assert "trtllm-serve meta-llama/Llama-3.1-8B" in trtllm and "NOT EXPRESSIBLE" not in trtllm
    assert "--extra_llm_api_options tp1-pp1-dp3.trtllm.yaml" in trtllm
    assert "run dp = 3 copies of this command" in trtllm
    assert (
        yaml.safe_load((launch / "tp1-pp1-dp3.trtllm.yaml").read_text())["tensor_parallel_size"]
        == 1
    )
    data = json.loads((plan_dir / "plan.json").read_text())
    assert data["best"] == "tp1-pp1-dp3"
    assert data["rule_of_thumb"]["layout"] == "tp4-pp1-dp1" and data["rule_of_thumb"]["reasons"]
    assert {c["label"] for c in data["candidates"]} >= {"tp1-pp1-dp3", "tp4-pp1-dp1"}
    assert data["counts"]["candidates"] == 12 and data["counts"]["rejected"] == 1
    assert data["rejected"][0]["stage"] == "model"
    assert [e["engine"] for e in data["emitted"]] == ["vllm", "sglang", "trtllm"]
    csv = (plan_dir / "plan.csv").read_text().splitlines()
    assert csv[0].startswith("rank,layout,gpus,tp,pp,dp,ep,cp,moe_tp,dp_attention,status,slo_met")
    assert csv[1].startswith("1,tp1-pp1-dp3,3,")


def no_wall(summary: object) -> dict[str, object]:
    """A summary without sim.wall_s (the only timing-dependent number)."""
    assert isinstance(summary, dict)
    return {k: v for k, v in summary.items() if k != "sim"} | {"events": summary["sim"]["events"]}


def test_pruning_never_removes_the_simulated_best(tmp_path: Path) -> None:
    pruned = run(tmp_path)
    full = run(tmp_path, ", prune: false, search: exhaustive")
    assert pruned.best is not None and full.best is not None
    assert pruned.best.label == full.best.label == "tp1-pp1-dp3"
    assert len(pruned.pruned) > 0 and not full.pruned
    assert {p.bound for p in pruned.pruned} >= {"gpus"}
    # every simulated layout of the pruned plan has the same numbers in the full one
    full_rows = {r.label: r for r in full.rows}
    for r in pruned.rows:
        if r.status == "simulated":
            assert no_wall(r.summary) == no_wall(full_rows[r.label].summary)
    # a pruned layout never met the SLO in the full plan with fewer GPUs than the best
    for p in pruned.pruned:
        other = full_rows[p.label]
        assert not other.meets or other.gpus >= full.best.gpus


def test_analytic_bounds_hold_in_simulation(tmp_path: Path) -> None:
    full = run(tmp_path, ", prune: false, search: exhaustive")
    checked = 0
    for r in full.rows:
        est = full.estimates[r.label]
        tpot, ttft = r.metric("tpot_s", "p99"), r.metric("ttft_s", "p99")
        assert tpot is not None and ttft is not None
        assert tpot >= est.tpot_lb_s, r.label
        assert ttft >= est.ttft_p99_lb_s, r.label
        checked += 1
    assert checked == 12


def test_ray_executor_gives_the_same_ranking(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if importlib.util.find_spec("ray") is None:
        if os.environ.get("CI"):
            pytest.fail("ray is not importable in CI: the test extra installs it")
        pytest.skip("ray is not installed (pip install 'clustersim[ray]')")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    extra = ", prune: false, search: exhaustive"
    local = run(tmp_path / "local", extra, "local")
    ray = run(tmp_path / "ray", extra, "ray")
    assert ranking(ray) == ranking(local)
    assert ray.best is not None and local.best is not None and ray.best.label == local.best.label
    write_plan(local)
    write_plan(ray)
    assert (local.plan_dir / "plan.csv").read_text() == (ray.plan_dir / "plan.csv").read_text()


def test_emit_requested_labels(tmp_path: Path) -> None:
    result = run(
        tmp_path, ", emit: [tp2-pp2-dp1, tp4-pp1-dp1], engines: [vllm, trtllm], keep_runs: true"
    )
    simulated = [r.label for r in result.rows if r.status == "simulated"]
    for label in simulated:
        assert (result.plan_dir / "runs" / label / "summary.json").is_file()
    assert [(c.label, c.engine, c.ok) for c in result.configs] == [
        ("tp2-pp2-dp1", "vllm", True),
        ("tp2-pp2-dp1", "trtllm", True),
        ("tp4-pp1-dp1", "vllm", True),
        ("tp4-pp1-dp1", "trtllm", True),
    ]
    rows = plan_rows(result)
    assert rows[0]["layout"] == "tp1-pp1-dp3" and rows[0]["slo_met"] is True


def test_bad_inputs_exit_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(small_plan(tmp_path).read_text() + "layout: {tp: 2}\n")
    assert main(["plan", str(bad), "--out", str(tmp_path / "r"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "bad.yaml: layout: the planner chooses" in err
    # nothing fits: a 70B model on one GPU
    rc = main(
        [
            "plan",
            str(small_plan(tmp_path)),
            "--quiet",
            "--out",
            str(tmp_path / "r"),
            "--set",
            "model=llama-3.1-70b",
            "--set",
            "plan.max_gpus=1",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.count("\n") == 0
    assert "no layout of 1..1 GPUs can run" in err and "GiB" in err
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").rglob("plan.json"))


def test_moe_plan_runs_and_emits_dp_attention(tmp_path: Path) -> None:
    path = tmp_path / "moe.yaml"
    path.write_text(
        """
name: moe_plan
seed: 1
model: mixtral-8x7b
topology: dgx_h100_x1
precision: {weights: fp8, activations: fp8, kv_cache: fp8}
serving: {max_num_seqs: 64, max_num_batched_tokens: 2048}
workload:
  arrival: {process: poisson, rate_rps: 4}
  prompt_tokens: {dist: fixed, value: 256}
  output_tokens: {dist: fixed, value: 16}
horizon: {duration_s: 3}
slo: {ttft_p99_s: 1.0, tpot_p99_s: 0.05}
experts: {eplb: {redundant_experts: 4, rebalance_interval_s: 0.5}}
plan:
  workers: 2
  candidates: {layouts: [{tp: 2, dp: 2, ep: 4, dp_attention: true}, {tp: 2, ep: 2}]}
  emit: [tp2-pp1-dp2-ep4-dpa]
  search: exhaustive
"""
    )
    result = run_plan(load_plan(path), tmp_path / "out", "local", quiet=True)
    assert {r.label: r.status for r in result.rows} == {
        "tp2-pp1-dp2-ep4-dpa": "simulated",
        "tp2-pp1-dp1-ep2": "simulated",
    }
    cfgs = {c.engine: c for c in result.configs}
    assert "--enable-expert-parallel" in cfgs["vllm"].argv
    assert "--enable-dp-attention" in cfgs["sglang"].argv
    assert not cfgs["trtllm"].ok
    assert cfgs["trtllm"].nearest.startswith("tp=1 pp=1 dp=4 ep=4 dp_attention")
    # the EPLB interval in steps of the emitted layout's simulated mean TPOT
    row = result.row("tp2-pp1-dp2-ep4-dpa")
    assert row is not None
    tpot = row.metric("tpot_s", "mean")
    assert tpot is not None
    steps = round(0.5 / tpot)
    argv = list(cfgs["sglang"].argv)
    assert argv[argv.index("--eplb-rebalance-num-iterations") + 1] == str(steps)
    assert (
        f"EPLB: rebalance every 0.5 s = {steps} steps at {tpot * 1e3:.2f} ms per step "
        "(simulated mean TPOT of tp2-pp1-dp2-ep4-dpa)" in cfgs["vllm"].script()
    )
