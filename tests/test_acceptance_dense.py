"""Acceptance (dense): experiments/dense_tp_vs_pp.yaml through the CLI, horizon shortened.

Llama-3.1-70B on two 8×H100 nodes, TP8×DP2 against TP8×PP2: every result file is written,
DP keeps every byte on NVLink, PP hands activations between the nodes over InfiniBand, and
the pipeline records bubbles.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from clustersim import cli

REPO = Path(__file__).resolve().parents[1]
EXPERIMENT = REPO / "experiments" / "dense_tp_vs_pp.yaml"
SHORT = [
    "--set", "horizon.duration_s=20",
    "--set", "horizon.warmup_s=5",
    "--set", "workload.arrival.rate_rps=4",
]  # fmt: skip
DP, PP = "layout=tp8-dp2", "layout=tp8-pp2"
HIDDEN = 8192  # llama-3.1-70b hidden_size
ACT_BYTES = 2  # bf16 hidden states per element (precision.activations)

# DESIGN.md §2 summary.json keys (nested paths)
SUMMARY_KEYS = [
    "requests_completed", "requests_dropped", "gpus",
    "throughput.input_tokens_per_s", "throughput.output_tokens_per_s",
    "throughput.output_tokens_per_s_per_gpu",
    *(f"{m}.{s}" for m in ("ttft_s", "tpot_s", "e2e_s") for s in ("mean", "p50", "p90", "p99")),
    "slo.attainment", "slo.goodput_rps",
    "links.max_utilisation", "links.busiest",
    "experts.imbalance",
    "sim.events", "sim.wall_s", "sim.simulated_s",
]  # fmt: skip
RUN_FILES = [
    "config.resolved.yaml",
    "requests.parquet",
    "iterations.parquet",
    "links.parquet",
    "summary.json",
]


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("acceptance")
    assert cli.main(["run", str(EXPERIMENT), "--out", str(out), "--quiet", *SHORT]) == 0
    (found,) = (out / "dense_tp_vs_pp").iterdir()
    return found


def lookup(data: dict[str, Any], dotted: str) -> Any:
    node: Any = data
    for key in dotted.split("."):
        assert isinstance(node, dict) and key in node, f"summary.json lacks {dotted}"
        node = node[key]
    return node


def table(sweep_dir: Path, point: str, name: str) -> pd.DataFrame:
    return pd.read_parquet(sweep_dir / point / name)


def test_every_result_file_is_written(sweep_dir: Path) -> None:
    assert (sweep_dir / "sweep.csv").is_file()
    with (sweep_dir / "sweep.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["label"] for r in rows] == [DP, PP]
    assert [int(r["gpus"]) for r in rows] == [16, 16]
    for point in (DP, PP):
        for name in RUN_FILES:
            assert (sweep_dir / point / name).is_file(), (point, name)
        assert (sweep_dir / point / "report.html").is_file()
        assert list((sweep_dir / point).glob("*.png"))
        resolved = yaml.safe_load((sweep_dir / point / "config.resolved.yaml").read_text())
        assert resolved["seed"] == 7 and resolved["horizon"]["duration_s"] == 20
        assert resolved["model"]["name"] == "llama-3.1-70b"


@pytest.mark.parametrize("point", [DP, PP])
def test_summary_has_every_design_key(sweep_dir: Path, point: str) -> None:
    summary = json.loads((sweep_dir / point / "summary.json").read_text())
    for key in SUMMARY_KEYS:
        lookup(summary, key)
    req = table(sweep_dir, point, "requests.parquet")
    measured = req[req["arrival_s"] >= 5.0]
    assert summary["requests_completed"] == int(measured["finish_s"].notna().sum()) > 0
    assert summary["gpus"] == 16
    assert lookup(summary, "experts.imbalance") is None  # dense model
    assert 0.0 < lookup(summary, "links.max_utilisation") <= 1.0 + 1e-9
    assert lookup(summary, "sim.simulated_s") >= 20.0 * 0.9


def test_both_points_serve_the_same_traffic(sweep_dir: Path) -> None:
    a, b = (table(sweep_dir, p, "requests.parquet") for p in (DP, PP))
    cols = ["arrival_s", "prompt_tokens", "output_tokens"]
    pd.testing.assert_frame_equal(a[cols], b[cols])
    assert 40 <= len(a) <= 130  # ~ 4 req/s over 20 s


def test_pp_sends_activations_over_the_network_and_dp_does_not(sweep_dir: Path) -> None:
    dp_links = table(sweep_dir, DP, "links.parquet")
    assert dp_links.loc[dp_links["kind"] == "network", "bytes"].sum() == 0
    assert dp_links.loc[dp_links["kind"] == "nvlink", "bytes"].sum() > 0
    pp_links = table(sweep_dir, PP, "links.parquet")
    network = pp_links[pp_links["kind"] == "network"]
    assert network["bytes"].sum() > 0
    # Exactly the PP handoffs leave node 0: every stage-0 step sends its tokens' hidden states,
    # 1/8 per TP rank, each over its own rail NIC.
    it = table(sweep_dir, PP, "iterations.parquet")
    handoff = float(it.loc[it["stage"] == 0, "batch_tokens"].sum()) * HIDDEN * ACT_BYTES
    up = network[network["link"].str.startswith("n0.nic")].groupby("link")["bytes"].sum()
    assert len(up) == 8
    assert up.sum() == pytest.approx(handoff, rel=1e-9)
    assert up.to_numpy() == pytest.approx([handoff / 8] * 8, rel=1e-9)


def test_pipeline_records_bubbles(sweep_dir: Path) -> None:
    pp = table(sweep_dir, PP, "iterations.parquet")
    assert sorted(pp["stage"].unique()) == [0, 1]
    assert (pp["bubble_s"] >= 0).all() and pp["bubble_s"].sum() > 0
    dp = table(sweep_dir, DP, "iterations.parquet")
    assert (dp["bubble_s"] == 0).all() and set(dp["stage"]) == {0}
