"""Command line: exit codes, one-line errors, validate table, run directories, sweeps."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from clustersim import cli
from clustersim.cli import points as cli_points
from clustersim.cli import run as cli_run
from clustersim.config.schema import Experiment
from clustersim.sim.engine import BuildError, RunOutput

TINY = """\
name: tiny
seed: 3
model: llama-3.1-8b
topology: dgx_h100_x1
layout: {tp: 1, dp: 1}
workload:
  arrival: {process: poisson, rate_rps: 20}
  prompt_tokens: {dist: fixed, value: 128}
  output_tokens: {dist: fixed, value: 8}
horizon: {requests: 12}
slo: {ttft_p99_s: 1.0, tpot_p99_s: 0.1}
"""


def write(tmp_path: Path, text: str, name: str = "exp.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def assert_one_line_error(err: str) -> str:
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("clustersim: error: ")
    return lines[0]


# --------------------------------------------------------------------------- exit codes


def test_missing_file_is_exit_2_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope.yaml"
    assert cli.main(["run", str(missing), "--quiet"]) == 2
    line = assert_one_line_error(capsys.readouterr().err)
    assert "nope.yaml" in line


def test_bad_key_is_exit_2_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, TINY + "servng: {}\n")
    assert cli.main(["validate", str(path)]) == 2
    line = assert_one_line_error(capsys.readouterr().err)
    assert "exp.yaml" in line and "servng" in line


def test_bad_set_override_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, TINY)
    code = cli.main(["run", str(path), "--quiet", "--out", str(tmp_path / "r"), "--set",
                     "layout.tp=zero"])  # fmt: skip
    assert code == 2
    assert_one_line_error(capsys.readouterr().err)
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("command", ["run", "plan"])
def test_out_naming_a_file_is_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    text = TINY if command == "run" else TINY.replace("layout: {tp: 1, dp: 1}\n", "")
    path = write(tmp_path, text)
    out = write(tmp_path, "", name="a_file")
    assert cli.main([command, str(path), "--quiet", "--out", str(out)]) == 2
    assert assert_one_line_error(capsys.readouterr().err).endswith(f"{out}: not a directory")


def test_usage_errors_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == 2
    assert cli.main(["plan", "x.yaml"]) == 2  # no such file
    assert cli.main(["--help"]) == 0
    assert "Traceback" not in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv", [["run"], ["plan", "x.yaml", "--executor", "spark"], ["frobnicate"], []]
)
def test_usage_errors_are_one_line(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert err.startswith("clustersim") and "error:" in err


def test_internal_error_is_exit_1_with_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*_: Any) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(cli_points, "load_sweep", boom)
    assert cli.main(["validate", str(write(tmp_path, TINY))]) == 1
    assert "Traceback" in capsys.readouterr().err


# --------------------------------------------------------------------------- validate


def test_validate_prints_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["validate", str(write(tmp_path, TINY))]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["model", "GPUs", "weights/GPU", "GiB", "KV", "tokens/replica", "fits"]
    assert out[1].split()[:2] == ["llama-3.1-8b", "1"]
    assert out[1].split()[-1] == "yes"
    assert 14.0 < float(out[1].split()[2]) < 16.5  # 8B params × 2 bytes ≈ 15 GiB


def test_validate_not_fitting_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, TINY.replace("llama-3.1-8b", "llama-3.1-405b"))
    assert cli.main(["validate", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out.splitlines()[1].split()[-1] == "no"
    assert str(path) in assert_one_line_error(captured.err)


def test_validate_placement_error_is_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, TINY.replace("{tp: 1, dp: 1}", "{tp: 16, dp: 1}"))
    assert cli.main(["validate", str(path)]) == 2
    assert str(path) in assert_one_line_error(capsys.readouterr().err)


def test_validate_a_plan_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plan = TINY.replace("layout: {tp: 1, dp: 1}\n", "") + "plan: {max_gpus: 4}\n"
    path = write(tmp_path, plan)
    assert cli.main(["validate", str(path)]) == 0
    assert "llama-3.1-8b on dgx_h100_x1 (1..4 GPUs)" in capsys.readouterr().out
    assert cli.main(["validate", str(path), "--set", "plan.max_gpus=99"]) == 2
    assert "plan.max_gpus" in assert_one_line_error(capsys.readouterr().err)


# --------------------------------------------------------------------------- run (fake engine)

SWEPT = TINY + "sweep:\n  workload.arrival.rate_rps: [1, 2, 3]\n"


def fake_run(exp: Experiment, progress: Any = None, built: Any = None) -> RunOutput:
    """A stand-in simulator: 4 requests, fails (bad input) when the rate is 3."""
    rate = getattr(exp.workload.arrival, "rate_rps", 0.0)
    if rate == 3:
        raise BuildError("layout.tp = 1: cannot do that")
    if progress is not None:
        progress(1.0)
        progress(2.5)
    arrival = np.array([0.0, 1.0, 2.0, 3.0])
    n = len(arrival)
    requests = pd.DataFrame(
        {
            "id": np.arange(n),
            "arrival_s": arrival,
            "first_token_s": arrival + 0.1 * rate,
            "finish_s": arrival + 1.0,
            "prompt_tokens": np.full(n, 128),
            "output_tokens": np.full(n, 8),
            "replica": np.zeros(n, dtype=int),
            "ttft_s": np.full(n, 0.1 * rate),
            "tpot_s": np.full(n, 0.9 / 7),
            "e2e_s": np.ones(n),
            "queue_s": np.zeros(n),
            "preemptions": np.zeros(n, dtype=int),
            "dropped": np.zeros(n, dtype=bool),
        }
    )
    links = pd.DataFrame(
        {"link": [0], "kind": ["nvlink"], "bin_start_s": [0.0], "bytes": [1.0],
         "utilisation": [0.5]}
    )  # fmt: skip
    return RunOutput(
        requests=requests,
        iterations=pd.DataFrame({"replica": [0], "start_s": [0.0], "end_s": [0.1]}),
        links=links,
        experts=None,
        gpus=exp.layout.gpus,
        sim={"events": 10.0, "wall_s": 0.01, "simulated_s": 4.0},
    )


def test_sweep_stops_at_bad_point_and_keeps_earlier(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli_run, "run_tables", fake_run)
    path = write(tmp_path, SWEPT)
    out_root = tmp_path / "results"
    assert cli.main(["run", str(path), "--out", str(out_root)]) == 2  # progress bar shown
    captured = capsys.readouterr()
    line = assert_one_line_error(captured.err.splitlines()[-1])
    assert str(path) in line and "rate_rps=3" in line and "cannot do that" in line
    (sweep_dir,) = (out_root / "tiny").iterdir()
    points = sorted(p.name for p in sweep_dir.iterdir() if p.is_dir())
    assert points == ["rate_rps=1", "rate_rps=2"]
    for point in points:
        summary = json.loads((sweep_dir / point / "summary.json").read_text())
        assert summary["requests_completed"] == 4
    table = pd.read_csv(sweep_dir / "sweep.csv")
    assert list(table["label"]) == points
    assert list(table["workload.arrival.rate_rps"]) == [1, 2]
    assert list(table["ttft_p99_s"]) == pytest.approx([0.1, 0.2])
    assert "rate_rps=1" in captured.out and "rate_rps=2" in captured.out


def test_run_twice_gives_two_directories(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli_run, "run_tables", fake_run)
    path = write(tmp_path, TINY)
    args = ["run", str(path), "--quiet", "--out", str(tmp_path / "r")]
    assert cli.main(args) == 0
    assert cli.main(args) == 0
    dirs = sorted((tmp_path / "r" / "tiny").iterdir())
    assert len(dirs) == 2
    for d in dirs:
        assert (d / "summary.json").exists() and (d / "config.resolved.yaml").exists()
    stdout = capsys.readouterr().out
    assert str(dirs[0]) in stdout or str(dirs[1]) in stdout


# --------------------------------------------------------------------------- run (real engine)


def test_run_end_to_end_is_deterministic(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, TINY)
    args = ["run", str(path), "--quiet", "--out", str(tmp_path / "r")]
    assert cli.main(args) == 0
    assert cli.main(args) == 0
    first, second = sorted((tmp_path / "r" / "tiny").iterdir())
    for name in ("requests.parquet", "links.parquet", "iterations.parquet"):
        if (first / name).exists():
            assert (first / name).read_bytes() == (second / name).read_bytes(), name
    summary = json.loads((first / "summary.json").read_text())
    assert summary["requests_completed"] + summary["requests_dropped"] == 12
    assert summary["gpus"] == 1
    assert 0.0 <= summary["slo"]["attainment"] <= 1.0
    assert "tiny" in capsys.readouterr().out
