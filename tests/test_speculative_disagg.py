"""Speculative decoding in disaggregated pools (docs/speculative.md): the decode pool verifies
k + 1 tokens per sequence, the prefill pool runs the drafter over every prompt; a pool's own
`serving.speculative` overrides the experiment's; CP in a pool is refused at its key."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from clustersim.config.errors import ConfigError
from clustersim.config.load import load_experiment
from clustersim.config.schema import Experiment
from clustersim.metrics.recorder import EMITTED_COLUMN
from clustersim.serving.speculative import AcceptanceProfile
from clustersim.sim.engine import run_experiment

MakeExperiment = Callable[..., Experiment]

# Llama-3.1-8B on one 8×H100 node: 2 TP1 prefill replicas, 3 TP2 decode replicas, EAGLE-3.
DISAGG = """\
name: spec_disagg
seed: 9
model: llama-3.1-8b
topology: dgx_h100_x1
serving: {{speculative: {spec}}}
disaggregation:
  prefill: {{layout: {prefill}}}
  decode: {{layout: {{tp: 2, dp: 3}}, serving: {{max_num_seqs: 64}}}}
workload:
  arrival: {{process: poisson, rate_rps: 20}}
  prompt_tokens: {{dist: lognormal, median: 1024, sigma: 0.5, max: 4096}}
  output_tokens: {{dist: fixed, value: 400}}
horizon: {{requests: 120}}
"""

EAGLE3 = "{method: eagle, num_tokens: 3, acceptance: [0.8, 0.7, 0.6]}"


def disagg(spec: str = EAGLE3, prefill: str = "{tp: 1, dp: 2}") -> str:
    return DISAGG.format(spec=spec, prefill=prefill)


def test_decode_pool_verifies_and_every_token_is_emitted(make_experiment: MakeExperiment) -> None:
    out = run_experiment(make_experiment(disagg()))
    req = out.requests
    assert not req["finish_s"].isna().any()
    it = out.iterations
    decode = it[it["decode_tokens"] > 0]
    steps = int((decode["decode_tokens"] // 4).sum())
    emitted = int(it[EMITTED_COLUMN].clip(lower=0).sum())
    # the prefill pool emits each request's first token, the decode pool's verify steps the rest
    assert emitted + len(req) == int(req["output_tokens"].sum())
    profile = AcceptanceProfile(np.asarray([0.8, 0.7, 0.6]))
    stderr = math.sqrt(profile.variance_tokens() / steps)
    assert abs(emitted / steps - profile.mean_tokens_per_step) < 4 * stderr + 0.01


def test_speculation_lowers_the_decode_pools_tpot(make_experiment: MakeExperiment) -> None:
    plain = run_experiment(make_experiment(disagg("null"))).requests["tpot_s"].mean()
    fast = run_experiment(make_experiment(disagg())).requests["tpot_s"].mean()
    assert fast < 0.75 * plain


def test_cp_in_a_pool_is_refused_at_its_key(tmp_path: Path) -> None:
    path = tmp_path / "exp.yaml"
    path.write_text(disagg(prefill="{tp: 1, cp: 2}"))
    with pytest.raises(ConfigError, match=r"disaggregation\.prefill\.layout\.cp: .*speculative"):
        load_experiment(path)


def test_a_pools_own_speculation_overrides(make_experiment: MakeExperiment) -> None:
    """Speculation in the decode pool only: the prefill pool's rows verify nothing."""
    own = (
        "serving: {max_num_seqs: 64, speculative: {method: eagle, num_tokens: 2, acceptance: 0.8}}"
    )
    text = disagg("null").replace("serving: {max_num_seqs: 64}", own)
    exp = make_experiment(text)
    assert exp.serving.speculative is None
    out = run_experiment(exp)
    it = out.iterations
    assert it[EMITTED_COLUMN].dtype == np.int64
    assert (it.loc[it["pool"] == "prefill", EMITTED_COLUMN] == 0).all()
    req = out.requests
    assert int(it[EMITTED_COLUMN].sum()) + len(req) == int(req["output_tokens"].sum())
