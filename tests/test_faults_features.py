"""Faults with other serving features (issue 11): speculative decoding (a slow GPU slows the
verify step — target, verify attention and drafter — and lost replicas retry as usual)."""

from __future__ import annotations

import numpy as np
import pytest

from clustersim.deployment.degraded import DegradedCosts, degraded_hardware
from clustersim.deployment.units import stage_costs
from clustersim.metrics.recorder import EMITTED_COLUMN
from clustersim.model.speculative_cost import SpeculativeStageCost, speculative_stage_costs
from clustersim.sim.engine import build, run_experiment
from conftest import MakeExperiment

SPECULATIVE = """\
name: spec_faults
seed: 3
model: llama-3.1-8b
topology: h100x16_ib
layout: {{tp: 2, dp: 8}}
serving: {{router: least_outstanding, speculative: {spec}}}
workload:
  arrival: {{process: poisson, rate_rps: 20}}
  prompt_tokens: {{dist: fixed, value: 512}}
  output_tokens: {{dist: fixed, value: 64}}
horizon: {{duration_s: 8}}
faults:
  detect_s: 0.5
  reload: {{bandwidth_GBps: 50}}
  events:
    - {{kind: gpu_slowdown, target: n0.g1, compute_factor: 0.5, hbm_factor: 0.5}}
    - {{kind: node_down, target: n1, at_s: 2, duration_s: 2}}
"""
EAGLE = "{method: eagle, num_tokens: 3, acceptance: 0.7}"
DRAFT = "{method: draft_model, num_tokens: 3, acceptance: 0.7, draft_model: llama-3.1-8b}"


@pytest.mark.parametrize("spec", [EAGLE, DRAFT])
def test_speculative_decoding_runs_with_faults(make_experiment: MakeExperiment, spec: str) -> None:
    """The slowed GPU's replica runs slower verify steps than every healthy one; the replicas
    of the lost node retry their requests elsewhere; every request finishes once."""
    out = run_experiment(make_experiment(SPECULATIVE.format(spec=spec)))
    req = out.requests
    assert np.isfinite(req["finish_s"]).all() and not req["failed"].any()
    assert req["retries"].sum() > 0
    median = out.iterations.groupby("replica")["compute_s"].median()
    assert median[0] > 1.4 * median.drop(0).max()
    assert (out.iterations[EMITTED_COLUMN] > 0).any()  # verify steps emitted their tokens


def test_degraded_verify_step_is_priced_on_the_slow_gpu(make_experiment: MakeExperiment) -> None:
    """DegradedCosts of a verify step = the verify step built on the degraded GPU."""
    exp = make_experiment(SPECULATIVE.format(spec=DRAFT))
    built = build(exp)
    costs = stage_costs(exp, built, exp.hardware)
    nominal = speculative_stage_costs(exp, costs, costs)[0]
    slowed = DegradedCosts(exp, built).stage_cost(nominal, 0, 0.5, 0.7)
    assert isinstance(slowed, SpeculativeStageCost)
    hw = degraded_hardware(exp.hardware, 0.5, 0.7)
    slow_costs = stage_costs(exp, built, hw)
    expected = speculative_stage_costs(
        exp.model_copy(update={"hardware": hw}), slow_costs, slow_costs
    )[0]
    step = (0, 0.0, 32 * 4, 32 * 600, 1)
    assert slowed.compute_s(*step) == pytest.approx(expected.compute_s(*step), rel=1e-12)
    assert slowed.compute_s(*step) > 1.3 * nominal.compute_s(*step)
