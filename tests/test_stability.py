"""Stability verdict: trend of queue / KV use across the measured window (metrics/stability)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest

from clustersim.config.schema import Experiment
from clustersim.metrics.experiment import summarize_experiment
from clustersim.metrics.stability import pooled_stability, stability_summary, trend
from clustersim.sim.engine import run_experiment

MakeExperiment = Callable[..., Experiment]

# One replica serving one sequence at a time, fixed lengths: an M/D/1 queue (tests/test_theory)
MD1 = """\
name: md1
seed: 0
model: llama-3.1-8b
topology: dgx_h100_x1
layout: {tp: 1}
serving: {max_num_seqs: 1, engine_overrides: {frontend_ms: 0}}  # a bare queue
workload:
  arrival: {process: poisson, rate_rps: 1.0}
  prompt_tokens: {dist: fixed, value: 64}
  output_tokens: {dist: fixed, value: 2}
horizon: {requests: 1}
output: {iterations: false}
"""


def service_time_s(make: MakeExperiment) -> float:
    req = run_experiment(make(MD1)).requests
    return float((req["finish_s"] - req["arrival_s"]).iloc[0])


def test_trend_of_a_line_and_of_noise() -> None:
    t = np.arange(100.0) + 0.5
    rng = np.random.default_rng(1)
    up = trend(t, 0.5 * t + rng.normal(0.0, 1.0, 100))
    assert up["slope_per_s"] == pytest.approx(0.5, rel=0.05) and up["t_stat"] > 10
    assert up["batches"] == 10
    flat = trend(t, rng.normal(3.0, 1.0, 100))
    assert abs(flat["t_stat"]) < 3 and flat["mean"] == pytest.approx(3.0, abs=0.3)
    assert trend(t[:3], t[:3])["slope_per_s"] is None  # too short to tell


def test_verdict_needs_a_material_rise() -> None:
    starts = np.arange(0.0, 50.0)
    tiny = pd.DataFrame({"bin_start_s": starts, "queue_len": 0.001 * starts})  # +0.05 requests
    s = stability_summary(tiny, 0.0, 50.0, 1.0)
    assert s["queue"]["t_stat"] > 1e6 and s["stable"] is True  # certain, but tiny
    big = pd.DataFrame({"bin_start_s": starts, "queue_len": 2.0 * starts})
    s = stability_summary(big, 10.0, 50.0, 1.0)
    assert s["stable"] is False and s["latency_quantiles"] == "horizon-dependent"
    assert s["queue"]["rise"] == pytest.approx(80.0)
    assert stability_summary(big, 0.0, 2.0, 1.0)["stable"] is None  # two windows: no verdict


def test_pooled_verdict() -> None:
    assert pooled_stability([{"stable": True}, {"stable": False}])["unstable_replicates"] == [1]
    assert pooled_stability([{"stable": True}, {"stable": True}])["stable"] is True
    assert pooled_stability([{"stable": None}])["stable"] is None


# Theory: M/D/1 at ρ = 0.5 is positive recurrent (stable); at ρ = 1.3 the queue grows by
# (λ − μ) = 0.3/D requests per second, ~26 per second here. Three seeds each.
@pytest.mark.parametrize(("rho", "stable"), [(0.5, True), (1.3, False)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_md1_stable_below_capacity_unstable_above(
    make_experiment: MakeExperiment, rho: float, stable: bool, seed: int
) -> None:
    d = service_time_s(make_experiment)
    exp = make_experiment(
        MD1,
        [
            f"workload.arrival.rate_rps={rho / d!r}",
            'horizon={"duration_s": 40, "warmup_s": 10}',
            f"seed={seed}",
        ],
    )
    summary, _ = summarize_experiment(exp, run_experiment(exp))
    verdict = summary["stability"]
    assert verdict["stable"] is stable
    if not stable:
        growth = (rho - 1.0) / d  # requests per second
        assert verdict["queue"]["slope_per_s"] == pytest.approx(growth, rel=0.25)
        assert verdict["latency_quantiles"] == "horizon-dependent"
