"""`run --workers N` and `run --executor ray`: the same files as one run at a time."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pandas as pd
import pytest

from clustersim import cli

SWEEP = """\
name: fan
seed: 5
model: llama-3.1-8b
topology: dgx_h100_x1
layout: {tp: 1}
replicates: 2
serving: {max_num_seqs: 16}
workload:
  arrival: {process: poisson, rate_rps: 6}
  prompt_tokens: {dist: fixed, value: 128}
  output_tokens: {dist: fixed, value: 16}
horizon: {duration_s: 4, warmup_s: 1}
slo: {ttft_p99_s: 0.1}
sweep:
  workload.arrival.rate_rps: [6, 12]
"""
WITH_RUN_DIRS = ("sweep.parquet", "replicates.parquet")  # these name their own directories


def run_tree(exp: Path, out: Path, *extra: str) -> dict[str, object]:
    """Run `exp` into `out`; the files of its one result directory, comparable across runs."""
    args = ["run", str(exp), "--out", str(out), "--quiet", "--no-report", *extra]
    assert cli.main(args) == 0
    (root,) = (out / "fan").iterdir()
    files: dict[str, object] = {}
    for path in sorted(root.rglob("*")):
        if not path.is_file():
            continue
        key = str(path.relative_to(root))
        if path.name in WITH_RUN_DIRS:
            files[key] = pd.read_parquet(path).drop(columns="run_dir").to_dict("list")
        elif path.name == "summary.json":
            summary = json.loads(path.read_text())
            summary["sim"].pop("wall_s")  # the one wall-clock number
            files[key] = summary
        elif path.suffix in (".parquet", ".yaml"):
            files[key] = path.read_bytes()
    return files


@pytest.fixture(scope="module")
def experiment(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One experiment file for every run (its directory is in config.resolved.yaml)."""
    path = tmp_path_factory.mktemp("fan") / "fan.yaml"
    path.write_text(SWEEP)
    return path


@pytest.fixture(scope="module")
def serial(experiment: Path) -> dict[str, object]:
    return run_tree(experiment, experiment.parent / "serial")


def test_process_pool_gives_the_same_files(
    experiment: Path, serial: dict[str, object], tmp_path: Path
) -> None:
    pooled = run_tree(experiment, tmp_path / "pool", "--workers", "2")
    assert "rate_rps=6/replicate-1/requests.parquet" in serial
    assert pooled.keys() == serial.keys()
    assert [k for k in serial if pooled[k] != serial[k]] == []


def test_ray_gives_the_same_files(
    experiment: Path, serial: dict[str, object], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if importlib.util.find_spec("ray") is None:
        if os.environ.get("CI"):
            pytest.fail("ray is not importable in CI: the test extra installs it")
        pytest.skip("ray is not installed (pip install 'clustersim[ray]')")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    ray = run_tree(experiment, tmp_path / "ray", "--executor", "ray", "--workers", "2")
    assert ray.keys() == serial.keys()
    assert [k for k in serial if ray[k] != serial[k]] == []
