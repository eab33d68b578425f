"""Run directories, atomic writes, byte-identical parquet, sweep tables."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from clustersim.results import writer
from clustersim.results.writer import (
    atomic_write,
    new_point_dir,
    new_run_dir,
    sweep_row,
    write_run,
    write_sweep_table,
)
from clustersim.sim.engine import RunOutput

NOW = datetime(2025, 3, 1, 12, 30, 5, tzinfo=timezone.utc)
RESOLVED = {"name": "demo", "seed": 7, "layout": {"tp": 2, "dp": 1}}


def fake_output(moe: bool = False, iterations: bool = True) -> RunOutput:
    rng = np.random.default_rng(0)
    n = 50
    arrival = np.sort(rng.uniform(0, 10, n))
    requests = pd.DataFrame(
        {
            "id": np.arange(n),
            "arrival_s": arrival,
            "finish_s": arrival + rng.uniform(1, 2, n),
            "output_tokens": rng.integers(1, 100, n),
            "dropped": np.zeros(n, dtype=bool),
        },
        index=np.arange(100, 100 + n),  # a non-default index must not leak into the file
    )
    links = pd.DataFrame(
        {"link": [0, 1], "kind": ["nvlink", "network"], "bin_start_s": [0.0, 0.0],
         "bytes": [1e9, 2e9], "utilisation": [0.1, 0.2]}
    )  # fmt: skip
    steps = pd.DataFrame({"replica": [0, 0], "start_s": [0.0, 0.1], "end_s": [0.1, 0.2]})
    experts = pd.DataFrame({"bin_start_s": [0.0, 0.0], "rank": [0, 1], "tokens": [5, 7]})
    return RunOutput(
        requests=requests,
        iterations=steps if iterations else steps.iloc[0:0],
        links=links,
        experts=experts if moe else None,
        gpus=2,
    )


SUMMARY = {"requests_completed": 50, "ttft_s": {"p99": float("nan")}, "sim": {"wall_s": 1.5}}


def test_run_dir_name_and_never_reused(tmp_path: Path) -> None:
    first = new_run_dir(tmp_path, "demo", RESOLVED, now=NOW)
    second = new_run_dir(tmp_path, "demo", RESOLVED, now=NOW)
    assert first.parent == tmp_path / "demo"
    assert first.name == f"20250301T123005Z-{writer.config_hash(RESOLVED)}"
    assert len(writer.config_hash(RESOLVED)) == 8
    assert second.name == first.name + "-2"
    assert first.is_dir() and second.is_dir()
    other = new_run_dir(tmp_path, "demo", {**RESOLVED, "seed": 8}, now=NOW)
    assert other.name.split("-")[1] != first.name.split("-")[1]


def test_point_dir_is_path_safe(tmp_path: Path) -> None:
    point = new_point_dir(tmp_path, "workload=../w/x.yaml")
    assert point.parent == tmp_path
    assert "/" not in point.name and point.is_dir()
    assert new_point_dir(tmp_path, "workload=../w/x.yaml").name == point.name + "-2"


def test_write_run_files(tmp_path: Path) -> None:
    run_dir = new_run_dir(tmp_path, "demo", RESOLVED, now=NOW)
    write_run(run_dir, RESOLVED, fake_output(moe=True), SUMMARY)
    names = sorted(p.name for p in run_dir.iterdir())
    assert names == [
        "config.resolved.yaml",
        "experts.parquet",
        "iterations.parquet",
        "links.parquet",
        "requests.parquet",
        "summary.json",
    ]
    assert yaml.safe_load((run_dir / "config.resolved.yaml").read_text()) == RESOLVED
    text = (run_dir / "summary.json").read_text()
    assert json.loads(text) == {
        "requests_completed": 50,
        "sim": {"wall_s": 1.5},
        "ttft_s": {"p99": None},
    }
    assert text.index('"requests_completed"') < text.index('"sim"') < text.index('"ttft_s"')
    back = pd.read_parquet(run_dir / "requests.parquet")
    assert list(back.columns) == ["id", "arrival_s", "finish_s", "output_tokens", "dropped"]
    assert list(back.index) == list(range(50))


def test_optional_tables_skipped(tmp_path: Path) -> None:
    run_dir = new_run_dir(tmp_path, "demo", RESOLVED, now=NOW)
    out = fake_output(moe=False, iterations=False)
    write_run(run_dir, RESOLVED, out, SUMMARY)
    names = {p.name for p in run_dir.iterdir()}
    assert "experts.parquet" not in names and "iterations.parquet" not in names
    no_steps = replace(out, iterations=None)  # type: ignore[arg-type]  # recording off
    run_dir2 = new_run_dir(tmp_path, "demo", RESOLVED, now=NOW)
    write_run(run_dir2, RESOLVED, no_steps, SUMMARY)
    assert not (run_dir2 / "iterations.parquet").exists()


def test_parquet_bytes_are_deterministic(tmp_path: Path) -> None:
    dirs = [new_run_dir(tmp_path, "demo", RESOLVED, now=NOW) for _ in range(2)]
    for d in dirs:
        write_run(d, RESOLVED, fake_output(moe=True), SUMMARY)
    for name in ("requests.parquet", "iterations.parquet", "links.parquet", "experts.parquet"):
        assert (dirs[0] / name).read_bytes() == (dirs[1] / name).read_bytes(), name


def test_atomic_write_leaves_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "x.bin"
    atomic_write(target, lambda f: f.write(b"old"))

    def broken(f: Any) -> None:
        f.write(b"half")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        atomic_write(target, broken)
    assert target.read_bytes() == b"old"  # the earlier content survives
    assert [p.name for p in tmp_path.iterdir()] == ["x.bin"]
    assert oct(target.stat().st_mode & 0o777) == oct(writer.FILE_MODE)


def test_write_run_leaves_no_temp_files(tmp_path: Path) -> None:
    run_dir = new_run_dir(tmp_path, "demo", RESOLVED, now=NOW)
    write_run(run_dir, RESOLVED, fake_output(moe=True), SUMMARY)
    assert not [p for p in run_dir.iterdir() if p.name.startswith(".")]


def test_sweep_table(tmp_path: Path) -> None:
    summary = {
        "gpus": 8,
        "requests_completed": 10,
        "ttft_s": {"p50": 0.1, "p99": float("nan")},
        "slo": {"attainment": 0.9, "goodput_rps": 3.0},
    }
    rows = [
        sweep_row("skew=0.0", {"experts.routing.skew": 0.0, "layout": {"tp": 2}}, tmp_path / "a",
                  summary),
        sweep_row("skew=auto", {"experts.routing.skew": "auto", "layout": {"tp": 4}},
                  tmp_path / "b", summary),
    ]  # fmt: skip
    write_sweep_table(tmp_path, rows)
    csv = pd.read_csv(tmp_path / "sweep.csv")
    assert list(csv.columns[:4]) == ["label", "experts.routing.skew", "layout", "run_dir"]
    assert list(csv["layout"]) == ['{"tp":2}', '{"tp":4}']
    assert list(csv["slo_attainment"]) == [0.9, 0.9]
    assert csv["ttft_p99_s"].isna().all()
    table = pd.read_parquet(tmp_path / "sweep.parquet")
    assert list(table["experts.routing.skew"]) == ["0.0", "auto"]  # mixed kinds → strings
    assert list(table.columns) == list(csv.columns)
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == [
        "sweep.csv",
        "sweep.parquet",
    ]


@pytest.mark.parametrize(
    "experiment",
    sorted(
        p.name
        for p in (Path(__file__).parents[1] / "experiments").glob("*.yaml")
        if not p.name.startswith("plan_")  # (plan specs, not experiments)
    ),
)
def test_resolved_yaml_is_what_the_python_emitter_writes(experiment: str) -> None:
    """libyaml's emitter (when PyYAML has it) gives the text `yaml.safe_dump` gives."""
    from clustersim.cli.points import load_points
    from clustersim.config.load import resolved_config

    path = Path(__file__).parents[1] / "experiments" / experiment
    for point in load_points(path, []):
        resolved = resolved_config(point.exp)
        expected = yaml.safe_dump(dict(resolved), sort_keys=False, allow_unicode=True)
        assert writer.resolved_yaml(resolved) == expected


def test_resolved_yaml_without_libyaml(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(yaml, "CSafeDumper", raising=False)
    data = {"name": "démo", "layout": {"tp": 2}, "tags": ["a", "b"], "rate": 0.1}
    assert writer.resolved_yaml(data) == yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def test_write_run_leaves_the_collector_as_it_found_it(tmp_path: Path) -> None:
    import gc

    seen: list[bool] = []
    real = writer.write_parquet

    def spy(path: Path, df: Any) -> None:
        seen.append(gc.isenabled())
        real(path, df)

    try:
        writer.write_parquet = spy  # type: ignore[assignment]
        assert gc.isenabled()
        write_run(tmp_path, RESOLVED, fake_output(), {"x": 1})
    finally:
        writer.write_parquet = real  # type: ignore[assignment]
    assert seen and not any(seen)  # paused while writing
    assert gc.isenabled()
