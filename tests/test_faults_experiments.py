"""experiments/node_failure.yaml end to end (issue 11 acceptance): SLO attainment is lower
inside the fault window than outside, p99 TTFT recovers in finite time, no request is lost."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from clustersim.config.load import load_experiment
from clustersim.metrics.experiment import summarize_experiment
from clustersim.sim.engine import RunOutput, run_experiment

Result = tuple[dict[str, Any], RunOutput]
EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


@pytest.fixture(scope="module")
def node_failure() -> Result:
    exp = load_experiment(EXPERIMENTS / "node_failure.yaml")
    out = run_experiment(exp)
    summary, _timeline = summarize_experiment(exp, out)
    return summary, out


def test_node_failure_attainment_drops_inside_the_window(node_failure: Result) -> None:
    summary, _out = node_failure
    faults = summary["faults"]
    assert faults["slo_attainment_inside"] < faults["slo_attainment_outside"]
    assert faults["requests_retried"] > 0


def test_node_failure_recovers_in_finite_time(node_failure: Result) -> None:
    summary, _out = node_failure
    (event,) = summary["faults"]["recovery"]
    assert event["kind"] == "node_down" and event["recover_s"] is not None
    assert math.isfinite(event["recover_s"]) and event["recover_s"] > 0


def test_node_failure_loses_no_request(node_failure: Result) -> None:
    summary, out = node_failure
    req = out.requests
    assert not req["dropped"].any() and not req["failed"].any()
    assert np.isfinite(req["finish_s"].to_numpy(dtype=float)).all()
    assert summary["faults"]["requests_failed"] == 0
    assert out.faults is not None and out.faults["replicas_affected"].tolist() == ["1"]
