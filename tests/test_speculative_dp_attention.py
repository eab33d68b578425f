"""Speculative decoding / MTP with DP attention + EP (docs/speculative.md): DeepSeek-V3 served
as SGLang does in production, each DP rank verifying k + 1 tokens per sequence in the lock-step
group (moe/ep_group.py). Theory measured from iterations.parquet, token conservation, and the
verify step's cost terms."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest

from clustersim.config.schema import Experiment
from clustersim.metrics.recorder import EMITTED_COLUMN
from clustersim.model.speculative_cost import lockstep_verify
from clustersim.serving.speculative import AcceptanceProfile
from clustersim.sim.engine import RunOutput, run_experiment

MakeExperiment = Callable[..., Experiment]

# DeepSeek-V3 on one 8 × H200 node: attention DP8 (TP1 per rank), experts EP8, fp8.
DP_ATTENTION = """\
name: spec_dpa
seed: 5
model: deepseek-v3
hardware: h200
topology:
  name: h200x8
  nodes: 1
  gpus_per_node: 8
  gpu: h200
  nvlink: {{domain: node, bandwidth_GBps: 450, latency_us: 2.0}}
  pcie: {{bandwidth_GBps: 64, latency_us: 1.0}}
layout: {{tp: 1, dp: 8, ep: 8, dp_attention: true}}
precision: {{weights: fp8, activations: fp8, kv_cache: fp8}}
serving: {{engine: sglang{serving}}}
experts: {{two_batch_overlap: {tbo}}}
workload:
  arrival: {{process: closed, concurrency: 32}}
  prompt_tokens: {{dist: fixed, value: 1000}}
  output_tokens: {{dist: {output}}}
horizon: {{requests: {requests}}}
"""

MTP3 = ", speculative: {method: mtp, num_tokens: 3, acceptance: [0.87, 0.75, 0.65]}"


def run(
    make_experiment: MakeExperiment,
    serving: str = MTP3,
    *,
    tbo: bool = False,
    output: str = "fixed, value: 300",
    requests: int = 160,
) -> RunOutput:
    text = DP_ATTENTION.format(
        serving=serving, tbo=str(tbo).lower(), output=output, requests=requests
    )
    return run_experiment(make_experiment(text))


def test_mean_tokens_per_verify_step_matches_theory(make_experiment: MakeExperiment) -> None:
    """Every DP rank's rows: Σ emitted / Σ sequence verify steps → 1 + p1 + p1 p2 + p1 p2 p3
    within 4 standard errors."""
    out = run(make_experiment)
    it = out.iterations
    assert it["replica"].nunique() == 8  # every DP rank decoded
    emitted, steps = int(it[EMITTED_COLUMN].sum()), int((it["decode_tokens"] // 4).sum())
    profile = AcceptanceProfile(np.asarray([0.87, 0.75, 0.65]))
    stderr = math.sqrt(profile.variance_tokens() / steps)
    assert steps > 10_000
    assert abs(emitted / steps - profile.mean_tokens_per_step) < 4 * stderr


@pytest.mark.parametrize("tbo", [False, True])
def test_every_request_emits_exactly_its_output_tokens(
    make_experiment: MakeExperiment, tbo: bool
) -> None:
    out = run(
        make_experiment,
        tbo=tbo,
        output="lognormal, median: 60, sigma: 0.8, max: 400",
        requests=120,
    )
    req = out.requests
    assert not req["finish_s"].isna().any()
    # each request's first token comes from its prefill, every other from a verify step
    assert int(out.iterations[EMITTED_COLUMN].sum()) + len(req) == int(req["output_tokens"].sum())


def test_mtp_lowers_tpot_and_a_useless_drafter_raises_it(make_experiment: MakeExperiment) -> None:
    plain = run(make_experiment, "", requests=64).requests["tpot_s"].mean()
    mtp = run(make_experiment, requests=64).requests["tpot_s"].mean()
    bad = ", speculative: {method: mtp, num_tokens: 3, acceptance: 0.01}"
    useless = run(make_experiment, bad, requests=64).requests["tpot_s"].mean()
    assert mtp < 0.7 * plain  # 2.95 tokens a step for a step well under 2× a plain one
    assert useless > plain


def test_verify_pricing_of_the_lockstep_group(make_experiment: MakeExperiment) -> None:
    """The drafter's MoE layer sees the group's draft rows; the slowest rank sets each pass;
    the drafter's routed rows count k passes (the first also over the prefill)."""
    exp = make_experiment(
        DP_ATTENTION.format(serving=MTP3, tbo="false", output="fixed, value: 8", requests=1)
    )
    v = lockstep_verify(exp)
    assert v.k == 3 and v.dp == 8 and v.drafter.num_moe_layers == 1
    busy, idle = (0, 0.0, 16, 16_000, 0), (0, 0.0, 0, 0, 0)
    assert v.drafter_s([busy, idle]) == pytest.approx(v.drafter_s([busy]))
    assert v.drafter_s([busy, busy]) > v.drafter_s([busy])  # the MoE layer's rows doubled
    assert v.draft_rows([busy, (100, 5050.0, 2, 2000, 1)]) == 3 * 16 + (102 + 2 * 3)
    # the verify attention reads each sequence's KV once for its k + 1 queries
    assert v.verify_ctx(16 * 4, 16_000) < 4 * 16_000
    assert v.verify_ctx(0, 0) == 0
