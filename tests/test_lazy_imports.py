"""Start-up cost: commands load only the modules they use (docs/performance.md, issue 15).

Each case runs the command line in a fresh interpreter and lists the heavy packages it loaded:
`--help` and `validate` need none of pandas, pyarrow, networkx, matplotlib or the planner's
search (faults included: their targets are looked up without the networkx graph; an
experiment reading a trace file loads pandas to read it); `run` without faults builds no
networkx graph, loads no planner or plots, and a plain run no pandas.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("pandas", "pyarrow", "networkx", "matplotlib", "scipy", "clustersim.planner.search")

PROBE = """
import contextlib, io, json, sys
from clustersim.cli import main
with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    code = main(sys.argv[1:])
heavy = {heavy!r}
loaded = sorted(
    {{h for h in heavy for m in sys.modules if m == h or m.startswith(h + ".")}}
)
print(json.dumps({{"code": code, "loaded": loaded}}))
"""

DENSE = """
name: tiny
seed: 1
model: llama-3.1-8b
topology: {name: t, nodes: 1, gpus_per_node: 8, gpu: h100-sxm,
  nvlink: {domain: node, bandwidth_GBps: 450, latency_us: 2.0}}
layout: {tp: 1, dp: 8}
precision: {weights: bf16, activations: bf16, kv_cache: bf16}
serving: {router: least_outstanding}
workload:
  arrival: {process: poisson, rate_rps: 50}
  prompt_tokens: {dist: fixed, value: 128}
  output_tokens: {dist: fixed, value: 8}
horizon: {requests: 4}
"""


def loaded_after(argv: list[str], heavy: tuple[str, ...] = HEAVY) -> list[str]:
    """Which of `heavy` (packages or modules) a fresh interpreter has loaded after
    `clustersim ARGV`."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(heavy=heavy), *argv],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["code"] == 0, done.stderr
    loaded: list[str] = result["loaded"]
    return loaded


@pytest.fixture
def dense(tmp_path: Path) -> Path:
    path = tmp_path / "dense.yaml"
    path.write_text(DENSE)
    return path


def test_help_loads_no_heavy_module() -> None:
    assert loaded_after(["--help"]) == []


@pytest.mark.parametrize(
    "experiment",
    ["dense_tp_vs_pp.yaml", "disagg_deepseek.yaml", "node_failure.yaml", "link_degradation.yaml"],
)
def test_validate_loads_no_heavy_module(experiment: str) -> None:
    assert loaded_after(["validate", str(ROOT / "experiments" / experiment)]) == []


def test_validate_of_a_written_file_loads_no_heavy_module(dense: Path) -> None:
    assert loaded_after(["validate", str(dense)]) == []


def test_run_without_faults_loads_no_graph_planner_or_plots(dense: Path, tmp_path: Path) -> None:
    """pyarrow writes the result tables; they are built and summarised as numpy columns
    (metrics/table.py), so a plain run never imports pandas."""
    argv = ["run", str(dense), "--no-report", "--quiet", "--out", str(tmp_path / "out")]
    assert loaded_after(argv) == ["pyarrow"]


FEATURES = (
    "clustersim.faults",
    "clustersim.sim.fault_runtime",
    "clustersim.disagg",
    "clustersim.moe.ep_group",
    "clustersim.moe.moe_runtime",
    "clustersim.workload.sessions",
    "clustersim.capacity.search",
    "clustersim.serving.speculative",
    "clustersim.serving.speculative_decode",
    "clustersim.model.speculative_cost",
    "clustersim.serving.prefix_cache",
    "clustersim.serving.prefix_match",
    "clustersim.serving.prefix_lane",
    "clustersim.serving.prefix_routers",
    "tqdm",
    "numpy.ma",
)


def test_a_plain_quiet_run_loads_no_feature_it_does_not_use(dense: Path, tmp_path: Path) -> None:
    """No faults, disaggregation, MoE, sessions, prefix caching or speculative decoding in the
    file: none of their modules load, nor the capacity search's; no progress bar with --quiet;
    the summary's percentiles without numpy.ma."""
    argv = ["run", str(dense), "--no-report", "--quiet", "--out", str(tmp_path / "out")]
    assert loaded_after(argv, FEATURES) == []


def test_command_line_asks_openblas_for_one_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """Before numpy loads, the command line sets OPENBLAS_NUM_THREADS=1 (a user's value
    stands; once numpy is loaded the setting could not act, so nothing is set)."""
    from clustersim.cli.entry import one_blas_thread

    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    one_blas_thread()  # numpy is loaded in this process: too late to matter
    assert "OPENBLAS_NUM_THREADS" not in os.environ
    monkeypatch.delitem(sys.modules, "numpy")
    one_blas_thread()
    assert os.environ["OPENBLAS_NUM_THREADS"] == "1"
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "4")
    one_blas_thread()
    assert os.environ["OPENBLAS_NUM_THREADS"] == "4"


def test_a_run_loads_numpy_with_one_blas_thread(dense: Path, tmp_path: Path) -> None:
    argv = ["run", str(dense), "--no-report", "--quiet", "--out", str(tmp_path / "out")]
    probe = "import os, sys\nfrom clustersim.cli import main\nmain(sys.argv[1:])\n"
    probe += "print(os.environ.get('OPENBLAS_NUM_THREADS'))"
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    done = subprocess.run(
        [sys.executable, "-c", probe, *argv], capture_output=True, text=True, check=True, env=env
    )
    assert done.stdout.strip().splitlines()[-1] == "1"
