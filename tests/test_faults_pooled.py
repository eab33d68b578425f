"""A replicated run with faults: summary.json `faults` pooled over replicates (counts summed,
attainment inside / outside the pooled fraction) and `replicates.faults` intervals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clustersim import cli
from clustersim.metrics.fault_replicates import fault_intervals, pooled_faults
from clustersim.metrics.replicates import mean_ci95

FAULTY = """\
name: faulty
seed: 11
model: llama-3.1-8b
topology: dgx_h100_x1
layout: {tp: 1, dp: 4}
serving: {max_num_seqs: 32, router: least_outstanding}
workload:
  arrival: {process: poisson, rate_rps: 30}
  prompt_tokens: {dist: fixed, value: 256}
  output_tokens: {dist: fixed, value: 32}
horizon: {duration_s: 6, warmup_s: 1}
slo: {ttft_p99_s: 0.1, tpot_p99_s: 0.02}
output: {iterations: false}
faults:
  detect_s: 0.3
  reload: {bandwidth_GBps: 20}
  events: [{kind: gpu_down, target: n0.g0, at_s: 2, duration_s: 1.5}]
"""


def test_replicated_run_pools_the_faults_block(tmp_path: Path) -> None:
    exp = tmp_path / "faulty.yaml"
    exp.write_text(FAULTY)
    out = tmp_path / "results"
    assert cli.main(["run", str(exp), "--out", str(out), "--quiet", "--replicates", "3"]) == 0
    (run,) = (out / "faulty").iterdir()
    summary = json.loads((run / "summary.json").read_text())
    per = [json.loads((run / f"replicate-{k}" / "summary.json").read_text())["faults"]
           for k in range(3)]  # fmt: skip
    pooled = summary["faults"]
    for key in ("events", "requests_retried", "retries", "requests_inside", "requests_outside"):
        assert pooled[key] == sum(b[key] for b in per)
    assert pooled["retries"] > 0
    meeting = sum(round(b["slo_attainment_inside"] * b["requests_inside"]) for b in per)
    assert pooled["slo_attainment_inside"] == pytest.approx(meeting / pooled["requests_inside"])
    assert [e["replicate"] for e in pooled["recovery"]] == [0, 1, 2]
    stats = summary["replicates"]["faults"]
    inside = [b["slo_attainment_inside"] for b in per]
    assert stats["slo_attainment_inside"] == mean_ci95(inside)
    assert len(stats["recover_s"]) == 1  # one scheduled event, the same in every replicate
    recovered = [b["recovery"][0]["recover_s"] for b in per]
    assert stats["recover_s"][0]["unrecovered"] == sum(r is None for r in recovered)


def block(events: list[tuple[str, float]], inside: tuple[float, int], retried: int) -> dict:
    return {
        "events": len(events),
        "requests_retried": retried,
        "retries": retried,
        "requests_failed": 0,
        "requests_inside": inside[1],
        "requests_outside": 10,
        "slo_attainment_inside": inside[0],
        "slo_attainment_outside": 1.0,
        "baseline_ttft_p99_s": 0.1,
        "recovery_threshold_ttft_p99_s": None,
        "recovery": [
            {"kind": "gpu_down", "target": t, "start_s": s, "end_s": None, "recover_s": 2.0}
            for t, s in events
        ],
    }


def test_pooled_faults_by_hand() -> None:
    a = block([("n0.g0", 2.0)], (0.5, 4), 3)
    b = block([("n0.g1", 5.0), ("n0.g2", 7.0)], (0.75, 8), 1)  # random failures: other events
    pooled = pooled_faults([a, b])
    assert pooled["events"] == 3 and pooled["requests_retried"] == 4
    assert pooled["slo_attainment_inside"] == pytest.approx((2 + 6) / 12)
    assert pooled["slo_attainment_outside"] == 1.0
    assert pooled["baseline_ttft_p99_s"] == pytest.approx(0.1)
    assert pooled["recovery_threshold_ttft_p99_s"] is None
    assert [(e["target"], e["replicate"]) for e in pooled["recovery"]] == [
        ("n0.g0", 0),
        ("n0.g1", 1),
        ("n0.g2", 1),
    ]
    intervals = fault_intervals([a, b], mean_ci95)
    assert intervals["requests_retried"]["mean"] == 2.0
    assert "recover_s" not in intervals  # events differ: nothing to match across replicates
