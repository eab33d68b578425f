"""Faults with other serving features (issue 11): speculative decoding (a slow GPU slows the
verify step — target, verify attention and drafter — and lost replicas retry as usual)."""

from __future__ import annotations

import numpy as np
import pytest

from clustersim.deployment.degraded import DegradedCosts, degraded_hardware
from clustersim.deployment.units import stage_costs
from clustersim.metrics.recorder import EMITTED_COLUMN
from clustersim.model.speculative_cost import SpeculativeStageCost, speculative_stage_costs
from clustersim.sim.engine import BuildError, build, run_experiment
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


# ---------------------------------------------------------------------- DP-attention + EP

DP_ATTENTION = """\
name: dpa_faults
seed: 11
model: mixtral-8x7b
topology: dgx_h100_x1
layout: {tp: 1, dp: 8, ep: 8, dp_attention: true}
precision: {weights: fp8, activations: fp8, kv_cache: fp8}
serving: {max_num_seqs: 64, max_num_batched_tokens: 1024, router: least_outstanding}
workload:
  arrival: {process: poisson, rate_rps: 100}
  prompt_tokens: {dist: fixed, value: 128}
  output_tokens: {dist: fixed, value: 64}
horizon: {duration_s: 3}
"""


@pytest.mark.parametrize("spec", [None, DRAFT.replace("num_tokens: 3", "num_tokens: 2")])
def test_dp_attention_group_stops_when_one_gpu_is_lost(
    make_experiment: MakeExperiment, spec: str | None
) -> None:
    """One GPU of the lock-step EP group fails: every DP rank stops (no step runs until the
    group is repaired and has reloaded), their requests are retried, each finishes once —
    with and without speculative decoding (a fresh rank keeps verifying)."""
    faults = """faults:
  detect_s: 0.1
  reload: {bandwidth_GBps: 100}
  events: [{kind: gpu_down, target: n0.g3, at_s: 1.0, duration_s: 0.5}]
"""
    text = DP_ATTENTION
    if spec is not None:
        text = text.replace("least_outstanding}", f"least_outstanding, speculative: {spec}}}")
    out = run_experiment(make_experiment(text + faults))
    req = out.requests
    assert np.isfinite(req["finish_s"]).all() and not req["failed"].any()
    assert req["retries"].sum() > 0
    assert out.faults is not None and out.faults["replicas_affected"].iloc[0] == "0,1,2,3,4,5,6,7"
    it = out.iterations
    reload_s = build(make_experiment(text + faults)).memory.weights_per_gpu_bytes / 100e9
    during = it[(it["end_s"] > 1.0) & (it["start_s"] < 1.5 + reload_s)]
    assert during.empty  # a step in flight at the failure is dropped, none starts before reload
    assert (it["start_s"] > 1.5 + reload_s).any()
    assert (EMITTED_COLUMN in it.columns) == (spec is not None)


def test_dp_attention_slow_gpu_with_speculative_decoding_is_a_clean_build_error(
    make_experiment: MakeExperiment,
) -> None:
    """The drafter's passes are priced once for the lock-step group: a slow rank's drafter
    is not modelled, so that combination is refused by key."""
    faults = """faults:
  events: [{kind: gpu_slowdown, target: n0.g3, compute_factor: 0.5}]
"""
    spec = DRAFT.replace("num_tokens: 3", "num_tokens: 2")
    text = DP_ATTENTION.replace("least_outstanding}", f"least_outstanding, speculative: {spec}}}")
    with pytest.raises(
        BuildError, match=r"^faults\.events\.0\.kind: gpu_slowdown .*dp_attention and serving"
    ):
        build(make_experiment(text + faults))
    implicit = text.replace(", dp_attention: true", "")  # ep = tp × dp: the same layout mode
    with pytest.raises(BuildError, match=r"gpu_slowdown with layout dp_attention and serving"):
        build(make_experiment(implicit + faults))
    build(make_experiment(DP_ATTENTION + faults))  # without speculative decoding it builds


# ---------------------------------------------------------------------- disaggregated pools

TWO_POOLS = """\
name: pool_faults
seed: 5
model: llama-3.1-8b
topology: h100x16_ib
disaggregation:
  prefill: {layout: {tp: 8}}
  decode: {layout: {tp: 8}}
workload:
  arrival: {process: closed, concurrency: 1}
  prompt_tokens: {dist: fixed, value: 6000}
  output_tokens: {dist: fixed, value: 16}
horizon: {requests: 3}
"""


def test_pools_take_link_faults_on_the_kv_transfer(make_experiment: MakeExperiment) -> None:
    """Prefill on n0, decode on n1: the KV crosses leaf0. Every link of leaf0 at 25 %: the
    transfer takes ~4× as long (path latency aside); a NIC uplink down with a detour: the KV
    goes round it and nothing stalls. Pools get a faults block, with no retries."""
    base = run_experiment(make_experiment(TWO_POOLS)).requests["kv_transfer_s"]
    slow_faults = (
        "faults:\n  events: [{kind: link_degrade, target: leaf0, bandwidth_factor: 0.25}]\n"
    )
    slow = run_experiment(make_experiment(TWO_POOLS + slow_faults))
    assert slow.faults is not None and slow.requests["retries"].sum() == 0
    ratio = (slow.requests["kv_transfer_s"] / base).to_numpy()
    assert ((ratio > 3.5) & (ratio < 4.01)).all()
    down = "faults:\n  events: [{kind: link_down, target: n0.nic0->leaf0}]\n"
    out = run_experiment(make_experiment(TWO_POOLS + down))
    assert np.isfinite(out.requests["finish_s"]).all()
    assert out.links.groupby("link")["bytes"].sum().get("n0.nic0->leaf0", 0.0) == 0.0


@pytest.mark.parametrize(
    ("event", "match"),
    [
        ("{kind: gpu_down, target: n1.g0}", r"^faults\.events\.0\.kind: gpu_down with disagg"),
        ("{kind: gpu_slowdown, target: n0.g0, compute_factor: 0.5}", r"gpu_slowdown with disagg"),
        ("{kind: link_down, target: n0.g0}", r"^faults\.events\.0\.target: .*cuts"),
    ],
)
def test_pools_refuse_faults_that_stop_or_slow_a_gpu(
    make_experiment: MakeExperiment, event: str, match: str
) -> None:
    with pytest.raises(BuildError, match=match):
        build(make_experiment(TWO_POOLS + f"faults:\n  events: [{event}]\n"))
