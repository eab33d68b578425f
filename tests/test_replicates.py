"""Replicates: seeds, Student-t intervals, pooling, and `run --replicates N` end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from clustersim import cli
from clustersim.metrics.replicates import mean_ci95, replicate_seeds, t975
from clustersim.results.compare import compare_runs

TINY = """\
name: tiny
seed: 11
model: llama-3.1-8b
topology: dgx_h100_x1
layout: {tp: 1}
serving: {max_num_seqs: 32}
workload:
  arrival: {process: poisson, rate_rps: 8}
  prompt_tokens: {dist: fixed, value: 256}
  output_tokens: {dist: fixed, value: 32}
horizon: {duration_s: 6, warmup_s: 1}
slo: {ttft_p99_s: 0.05, tpot_p99_s: 0.02}
output: {iterations: false}
"""


@pytest.mark.parametrize("df", [1, 2, 5, 29, 30, 31, 45, 100, 1000])
def test_t975_matches_scipy(df: int) -> None:
    assert t975(df) == pytest.approx(float(stats.t.ppf(0.975, df)), abs=2e-7)


def test_replicate_seeds_are_deterministic_distinct_and_one_is_the_seed() -> None:
    assert replicate_seeds(7, 1) == [7]
    seeds = replicate_seeds(7, 5)
    assert seeds == replicate_seeds(7, 5)
    assert len(set(seeds)) == 5 and 7 not in seeds
    assert replicate_seeds(7, 3) == seeds[:3]  # SeedSequence.spawn children are prefix-stable
    assert replicate_seeds(8, 5) != seeds
    assert all(0 <= s < 2**63 for s in seeds)


def test_mean_ci95_by_hand() -> None:
    x = [1.0, 2.0, 3.0, 6.0]  # mean 3, sample sd √(14/3)
    out = mean_ci95(x)
    half = 3.182446305 * np.sqrt(14 / 3) / 2
    assert out["mean"] == 3.0
    assert out["ci95"] == pytest.approx([3.0 - half, 3.0 + half])
    assert mean_ci95([2.5]) == {"mean": 2.5, "ci95": None}
    assert mean_ci95([None, 1.0, None, 3.0])["ci95"] is not None  # nulls are skipped
    assert mean_ci95([]) == {"mean": None, "ci95": None}


def run_dir_of(out: Path) -> Path:
    (found,) = (out / "tiny").iterdir()
    return found


@pytest.fixture(scope="module")
def replicated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("replicated")
    exp = base / "tiny.yaml"
    exp.write_text(TINY)
    out = base / "results"
    assert cli.main(["run", str(exp), "--out", str(out), "--quiet", "--replicates", "3"]) == 0
    return run_dir_of(out)


def test_replicated_run_directory_and_summary(replicated: Path) -> None:
    summary = json.loads((replicated / "summary.json").read_text())
    block = summary["replicates"]
    assert block["n"] == 3 and block["seeds"] == replicate_seeds(11, 3)
    per = [json.loads((replicated / f"replicate-{k}" / "summary.json").read_text())
           for k in range(3)]  # fmt: skip
    # pooled counts are sums; the interval is about the replicates' mean
    assert summary["requests_completed"] == sum(s["requests_completed"] for s in per)
    for group, key in [("ttft_s", "p99"), ("slo", "goodput_rps"), ("slo", "attainment"),
                       ("throughput", "output_tokens_per_s")]:  # fmt: skip
        values = [s[group][key] for s in per]
        stat = block[group][key]
        assert stat["mean"] == pytest.approx(np.mean(values))
        lo, hi = stat["ci95"]
        assert lo <= stat["mean"] <= hi
    assert len(set(s["ttft_s"]["p99"] for s in per)) == 3  # the seeds really differ
    # pooled latency statistics are over every replicate's requests together
    req = pd.read_parquet(replicated / "requests.parquet")
    assert sorted(req["replicate"].unique()) == [0, 1, 2]
    done = req[(req["arrival_s"] >= 1.0) & ~req["dropped"]]
    assert summary["ttft_s"]["p99"] == pytest.approx(np.percentile(done["ttft_s"], 99))
    table = pd.read_csv(replicated / "replicates.csv")
    assert list(table["replicate"]) == [0, 1, 2]
    for k in range(3):
        cfg = (replicated / f"replicate-{k}" / "config.resolved.yaml").read_text()
        assert f"seed: {block['seeds'][k]}" in cfg and "replicates: 1" in cfg


def test_a_replicate_reruns_to_identical_bytes(replicated: Path, tmp_path: Path) -> None:
    config = replicated / "replicate-1" / "config.resolved.yaml"
    assert cli.main(["run", str(config), "--out", str(tmp_path), "--quiet", "--no-report"]) == 0
    again = run_dir_of(tmp_path)
    for name in ("requests.parquet", "timeline.parquet"):
        assert (again / name).read_bytes() == (replicated / "replicate-1" / name).read_bytes()


def test_report_and_compare_read_a_replicated_run(replicated: Path, tmp_path: Path) -> None:
    html = (replicated / "report.html").read_text()
    assert "Replicates (3 seeds)" in html and "95 % CI" in html
    result = compare_runs(replicated, replicated / "replicate-0", tmp_path)
    keys = {r.key for r in result.rows}
    assert "replicates.ttft_s.p99.mean" in keys


def test_single_run_says_it_has_no_interval(tmp_path: Path) -> None:
    exp = tmp_path / "tiny.yaml"
    exp.write_text(TINY)
    assert cli.main(["run", str(exp), "--out", str(tmp_path / "r"), "--quiet"]) == 0
    run = run_dir_of(tmp_path / "r")
    block = json.loads((run / "summary.json").read_text())["replicates"]
    assert block["n"] == 1 and block["seeds"] == [11]
    assert block["ttft_s"]["p99"]["ci95"] is None
    assert "no interval" in block["method"]
    assert "no confidence interval" in (run / "report.html").read_text()
    assert not list(run.glob("replicate-*"))


def test_sweep_rows_and_plots_carry_intervals() -> None:
    from clustersim.results.plots import sweep_values
    from clustersim.results.writer import interval_columns

    summary = {"replicates": {"n": 3, "ttft_s": {"p99": {"mean": 2.0, "ci95": [1.5, 3.0]}}}}
    cells = interval_columns(summary)
    assert cells["replicates"] == 3
    assert (cells["ttft_p99_s_mean"], cells["ttft_p99_s_ci_lo"], cells["ttft_p99_s_ci_hi"]) == (
        2.0, 1.5, 3.0,
    )  # fmt: skip
    assert interval_columns({"replicates": {"n": 1}}) == {}
    table = pd.DataFrame(
        {"ttft_p99_s": [2.1, 0.7], "ttft_p99_s_mean": [2.0, None],
         "ttft_p99_s_ci_lo": [1.5, None], "ttft_p99_s_ci_hi": [3.0, None]}
    )  # fmt: skip
    y, yerr = sweep_values(table, "ttft_p99_s")
    assert list(y) == [2.0, 0.7]  # the replicates' mean where there is an interval
    assert yerr is not None and yerr.tolist() == [[0.5, 0.0], [1.0, 0.0]]


def test_compare_says_whether_intervals_overlap() -> None:
    from clustersim.results.compare import interval_rows

    def summary(lo: float, hi: float) -> dict:
        stat = {"mean": (lo + hi) / 2, "ci95": [lo, hi]}
        return {"slo": {"goodput_rps": 1.0}, "replicates": {"n": 3, "slo": {"goodput_rps": stat}}}

    (row,) = interval_rows(summary(1.0, 2.0), summary(2.5, 3.0))
    assert row[0] == "slo.goodput_rps" and row[3] == "differ (disjoint)"
    (row,) = interval_rows(summary(1.0, 2.0), summary(1.5, 3.0))
    assert row[3] == "overlap"
