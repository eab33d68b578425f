"""`clustersim capacity`: bisection over the arrival rate (capacity/), and the M/D/1 knee
against Pollaczek–Khinchine."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from clustersim import cli
from clustersim.capacity.probe import slo_failures
from clustersim.capacity.search import Probe, find_capacity
from clustersim.config.schema import Experiment, SLOSpec
from clustersim.sim.engine import run_experiment

MakeExperiment = Callable[..., Experiment]


def threshold_probe(knee: float, calls: list[float]) -> Callable[[float], Probe]:
    def probe(rate: float) -> Probe:
        calls.append(rate)
        return Probe(rate, rate <= knee)

    return probe


@pytest.mark.parametrize(("knee", "start"), [(37.3, 10.0), (37.3, 500.0), (1.0, 1.0)])
def test_bisection_brackets_the_knee_to_five_percent(knee: float, start: float) -> None:
    calls: list[float] = []
    cap = find_capacity(threshold_probe(knee, calls), start)
    assert cap.converged and cap.half_width is not None and cap.half_width <= 0.05
    assert cap.lo is not None and cap.hi is not None and cap.lo <= knee < cap.hi
    assert cap.capacity_rps == cap.lo
    assert cap.knee_rps == pytest.approx(knee, rel=0.05)
    assert [p.rate_rps for p in cap.probes] == sorted(calls)
    assert len(calls) <= 12


def test_nothing_passes_and_nothing_fails() -> None:
    never = find_capacity(lambda r: Probe(r, False), 8.0, max_probes=6)
    assert never.capacity_rps is None and not never.converged
    always = find_capacity(lambda r: Probe(r, True), 8.0, max_probes=6)
    assert always.hi is None and always.capacity_rps == 8.0 * 2**5


def test_probes_stay_inside_the_rate_range() -> None:
    """A pass at the top of the range ends the search (capacity ≥ it); a failure at the
    bottom too: no probe runs at a rate the schema or the run-size limits refuse."""
    calls: list[float] = []
    always = find_capacity(threshold_probe(1e12, calls), 8.0, rate_range=(1.0, 100.0))
    assert always.hi is None and always.lo == 100.0 and max(calls) == 100.0
    calls.clear()
    never = find_capacity(threshold_probe(0.0, calls), 8.0, rate_range=(1.0, 100.0))
    assert never.lo is None and never.hi == 1.0 and min(calls) == 1.0
    calls.clear()
    inside = find_capacity(threshold_probe(37.3, calls), 8.0, rate_range=(1.0, 100.0))
    assert inside.lo is not None and inside.lo <= 37.3 < (inside.hi or 0)


def test_rate_range_follows_the_limits(make_experiment: MakeExperiment) -> None:
    from clustersim.capacity.probe import rate_range
    from clustersim.config.schema.workload import MAX_RATE_RPS

    timed = make_experiment(MD1, ['horizon={"duration_s": 100}'])
    lo, hi = rate_range(timed)
    assert lo == 1e-6 and hi == min(MAX_RATE_RPS, timed.limits.max_requests / 100)
    counted = make_experiment(MD1, ['horizon={"requests": 1000}'])
    lo, hi = rate_range(counted)
    assert lo == 1000 / (counted.limits.max_time_bins * counted.output.time_bin_s)
    assert hi == MAX_RATE_RPS


def test_slo_failures() -> None:
    summary = {
        "stability": {"stable": True},
        "slo": {"attainment": 0.995},
        "ttft_s": {"mean": 0.2},
        "queue_s": {"mean": 0.05},
    }
    assert slo_failures(summary, SLOSpec(ttft_mean_s=0.3, queue_mean_s=0.1)) == ()
    assert slo_failures(summary, SLOSpec(queue_mean_s=0.01)) == ("queue_mean",)
    unstable = {**summary, "stability": {"stable": False}, "slo": {"attainment": 0.9}}
    assert slo_failures(unstable, SLOSpec()) == ("unstable", "attainment")


MD1 = """\
name: md1cap
seed: 0
model: llama-3.1-8b
topology: dgx_h100_x1
layout: {tp: 1}
serving: {max_num_seqs: 1, engine_overrides: {frontend_ms: 0}}
workload:
  arrival: {process: poisson, rate_rps: 20}
  prompt_tokens: {dist: fixed, value: 64}
  output_tokens: {dist: fixed, value: 2}
horizon: {duration_s: 60, warmup_s: 10}
output: {iterations: false}
"""
RHO_KNEE = 0.6


def test_md1_capacity_matches_pollaczek_khinchine(
    make_experiment: MakeExperiment, tmp_path: Path
) -> None:
    # D: one request alone (finish − arrival; queue 0); M/D/1 mean wait W(ρ) = ρD / (2(1 − ρ))
    alone = make_experiment(MD1, ['horizon={"requests": 1}'])
    req = run_experiment(alone).requests
    d = float((req["finish_s"] - req["arrival_s"]).iloc[0])
    bound = RHO_KNEE * d / (2.0 * (1.0 - RHO_KNEE))
    knee = RHO_KNEE / d  # the rate whose PK mean wait equals the bound, req/s
    path = tmp_path / "md1.yaml"
    path.write_text(MD1 + f"slo: {{queue_mean_s: {bound!r}}}\n")
    out = tmp_path / "results"
    assert cli.main(["capacity", str(path), "--out", str(out), "--quiet"]) == 0
    (run,) = (out / "md1cap-capacity").iterdir()
    result = json.loads((run / "capacity.json").read_text())
    lo, hi = result["bracket_rps"]
    assert result["converged"] and (hi - lo) / (hi + lo) <= 0.05
    # tolerance: ±5 % bisection + the estimation error of the probes' mean wait. Near ρ = 0.6,
    # d ln W / dρ = 1/ρ + 1/(1 − ρ) ≈ 4.2, so a 10 % error in the mean wait of 3 × ~2500
    # requests moves the knee by ~1.5 % of ρ; 8 % covers both.
    assert result["knee_rps"] == pytest.approx(knee, rel=0.08)
    assert lo <= knee * 1.03 and hi >= knee * 0.97
    table = pd.read_csv(run / "capacity.csv")
    assert list(table["rate_rps"]) == sorted(table["rate_rps"])
    assert (table["replicates"] == 3).all()
    assert table.loc[table["passed"], "queue_mean_s"].max() <= bound
    assert (run / "capacity.png").stat().st_size > 0


def test_capacity_needs_a_rate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "burst.yaml"
    path.write_text(MD1.replace("{process: poisson, rate_rps: 20}", "{process: burst}")
                    .replace("duration_s: 60, warmup_s: 10", "requests: 10"))  # fmt: skip
    assert cli.main(["capacity", str(path), "--out", str(tmp_path), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "workload.arrival.process: expected poisson or gamma" in err


def test_probes_fanned_out_give_the_same_table(tmp_path: Path) -> None:
    path = tmp_path / "md1.yaml"
    short = MD1.replace("duration_s: 60", "duration_s: 20")
    path.write_text(short + "slo: {queue_mean_s: 0.007}\n")
    tables = []
    for name, extra in (("serial", []), ("pool", ["--workers", "2"])):
        out = tmp_path / name
        args = ["capacity", str(path), "--out", str(out), "--quiet", "--replicates", "2", *extra]
        assert cli.main(args) == 0
        (run,) = (out / "md1cap-capacity").iterdir()
        tables.append((run / "capacity.csv").read_bytes())
    assert tables[0] == tables[1]


def test_capacity_per_sweep_point(tmp_path: Path) -> None:
    # two replicas (round robin) sustain about twice one replica's rate
    path = tmp_path / "md1.yaml"
    short = (
        MD1.replace("duration_s: 60", "duration_s: 20")
        .replace(
            "layout: {tp: 1}",
            "layout: {tp: 1}\nserving: {max_num_seqs: 1, router: round_robin, "
            "engine_overrides: {frontend_ms: 0}}",
        )
        .replace("serving: {max_num_seqs: 1, engine_overrides: {frontend_ms: 0}}\n", "")
    )
    path.write_text(short + "slo: {queue_mean_s: 0.007}\nsweep:\n  layout.dp: [1, 2]\n")
    out = tmp_path / "out"
    assert cli.main(["capacity", str(path), "--out", str(out), "--quiet", "--replicates", "2"]) == 0
    (root,) = (out / "md1cap-capacity").iterdir()
    points = pd.read_csv(root / "capacity_points.csv")
    assert list(points["label"]) == ["dp=1", "dp=2"]
    assert (root / "dp=2" / "capacity.png").is_file()
    one, two = points["knee_rps"]
    assert two > 1.5 * one
