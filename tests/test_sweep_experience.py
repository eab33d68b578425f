"""Sweep experience: labels say what runs after --set, every point builds before any runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from clustersim import cli
from clustersim.config.load import load_sweep
from clustersim.config.sweep import SweepPoint, apply_inside

SWEEP = """\
name: sw
model: llama-3.1-8b
topology: dgx_h100_x1
workload:
  arrival: {process: poisson, rate_rps: 4}
  prompt_tokens: {dist: fixed, value: 64}
  output_tokens: {dist: fixed, value: 8}
horizon: {duration_s: 2}
output: {iterations: false}
sweep:
  layout:
    - {tp: 1, dp: 2}
    - {tp: 2, pp: 2}
"""


def test_set_inside_a_swept_section_relabels_the_points(tmp_path: Path) -> None:
    path = tmp_path / "sw.yaml"
    path.write_text(SWEEP)
    plain = load_sweep(path)
    assert [p.label for p, _ in plain] == ["layout=tp1-dp2", "layout=tp2-pp2"]
    points = load_sweep(path, ["layout.dp=1"])
    assert [p.label for p, _ in points] == ["layout=tp1-dp1", "layout=tp2-pp2-dp1"]
    assert [p.overrides["layout"] for p, _ in points] == [
        {"tp": 1, "dp": 1},
        {"tp": 2, "pp": 2, "dp": 1},
    ]
    assert [e.layout.dp for _, e in points] == [1, 1]  # the label matches what runs
    same = load_sweep(path, ["seed=3"])  # a --set elsewhere leaves labels alone
    assert [p.label for p, _ in same] == ["layout=tp1-dp2", "layout=tp2-pp2"]


def test_apply_inside_makes_labels_unique() -> None:
    points = [SweepPoint("a", {"layout": {"tp": 1, "dp": 2}}),
              SweepPoint("b", {"layout": {"tp": 1, "dp": 4}})]  # fmt: skip
    shown = apply_inside(points, [(("layout", "dp"), 1)])
    assert [p.label for p in shown] == ["layout=tp1-dp1", "layout=tp1-dp1-2"]


def test_every_point_builds_before_the_first_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "sw.yaml"
    path.write_text(SWEEP.replace("{tp: 2, pp: 2}", "{tp: 16}"))  # 16 GPUs on an 8-GPU box
    out = tmp_path / "results"
    assert cli.main(["run", str(path), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "[layout=tp16]" in err
    assert not out.exists() or not any(out.rglob("*.parquet"))  # nothing ran
