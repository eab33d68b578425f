"""Speculative decoding / MTP end to end (docs/speculative.md): theory measured from the
iterations of simulated runs, TPOT, token conservation under KV pressure, determinism."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest

from clustersim.config.schema import Experiment, ServingSpec, SpeculativeSpec
from clustersim.metrics.recorder import EMITTED_COLUMN
from clustersim.serving.kv_cache import KVPool
from clustersim.serving.request_state import RequestState
from clustersim.serving.scheduler import Scheduler
from clustersim.serving.speculative import AcceptanceProfile, mean_tokens_closed_form
from clustersim.serving.speculative_decode import SpeculativeDecoding
from clustersim.sim.engine import RunOutput, run_experiment

MakeExperiment = Callable[..., Experiment]

# Llama-3.1-8B on one H100, long fixed outputs: the cap at a request's last step touches one
# verify step in hundreds, far inside the statistical tolerance.
LONG_OUTPUTS = """\
name: spec_theory
seed: 21
model: llama-3.1-8b
topology: dgx_h100_x1
layout: {{tp: 1}}
serving:
  max_num_seqs: 32
  speculative: {spec}
workload:
  arrival: {{process: poisson, rate_rps: 50}}
  prompt_tokens: {{dist: fixed, value: 256}}
  output_tokens: {{dist: fixed, value: 1500}}
horizon: {{requests: 16}}
"""

# DeepSeek-V3 with its MTP module on one 8 × H200 node, TP8 × EP8, fp8.
DEEPSEEK = """\
name: spec_deepseek
seed: 3
model: deepseek-v3
hardware: h200
topology:
  name: h200x8
  nodes: 1
  gpus_per_node: 8
  gpu: h200
  nvlink: {{domain: node, bandwidth_GBps: 450, latency_us: 2.0}}
  pcie: {{bandwidth_GBps: 64, latency_us: 1.0}}
layout: {{tp: 8, ep: 8}}
precision: {{weights: fp8, activations: fp8, kv_cache: fp8}}
serving: {{engine: sglang{serving}}}
workload:
  arrival: {{process: closed, concurrency: 1}}
  prompt_tokens: {{dist: fixed, value: 1000}}
  output_tokens: {{dist: fixed, value: 200}}
horizon: {{requests: 3}}
"""


def verify_steps(out: RunOutput, k: int) -> tuple[int, int]:
    """(tokens emitted by decoding sequences, sequence verify steps) over a PP = 1 run."""
    it = out.iterations
    return int(it[EMITTED_COLUMN].sum()), int((it["decode_tokens"] // (k + 1)).sum())


@pytest.mark.parametrize(
    ("spec", "rates"),
    [
        ("{method: eagle, num_tokens: 3, acceptance: 0.7}", (0.7, 0.7, 0.7)),
        ("{method: eagle, num_tokens: 1, acceptance: 0.9}", (0.9,)),
        ("{method: eagle, num_tokens: 4, acceptance: [0.9, 0.8, 0.7, 0.5]}", (0.9, 0.8, 0.7, 0.5)),
    ],
)
def test_mean_tokens_per_verify_step_matches_theory(
    make_experiment: MakeExperiment, spec: str, rates: tuple[float, ...]
) -> None:
    """E[tokens per verify step] = 1 + Σ_j Π_{i≤j} p_i, which for one rate a is
    (1 − a^(k+1)) / (1 − a); measured from iterations.parquet within 4 standard errors."""
    out = run_experiment(make_experiment(LONG_OUTPUTS.format(spec=spec)))
    k = len(rates)
    emitted, steps = verify_steps(out, k)
    profile = AcceptanceProfile(np.asarray(rates))
    theory = profile.mean_tokens_per_step
    if len(set(rates)) == 1:
        assert theory == pytest.approx(mean_tokens_closed_form(rates[0], k))
    stderr = math.sqrt(profile.variance_tokens() / steps)
    assert steps > 5000
    assert abs(emitted / steps - theory) < 4 * stderr + 1e-9, (emitted / steps, theory)


def test_every_request_emits_exactly_its_output_tokens(make_experiment: MakeExperiment) -> None:
    spec = "{method: eagle, num_tokens: 3, acceptance: [0.9, 0.7, 0.5]}"
    text = LONG_OUTPUTS.format(spec=spec).replace(
        "{dist: fixed, value: 1500}", "{dist: lognormal, median: 60, sigma: 0.8, max: 400}"
    )
    out = run_experiment(make_experiment(text.replace("requests: 16", "requests: 120")))
    req = out.requests
    assert not req["finish_s"].isna().any()
    # each request's first token comes from its prefill, every other from a verify step
    assert int(out.iterations[EMITTED_COLUMN].sum()) + len(req) == int(req["output_tokens"].sum())


def test_mtp_lowers_tpot_at_batch_one(make_experiment: MakeExperiment) -> None:
    plain = run_experiment(make_experiment(DEEPSEEK.format(serving="")))
    mtp = ", speculative: {method: mtp, num_tokens: 1, acceptance: 0.9}"
    fast = run_experiment(make_experiment(DEEPSEEK.format(serving=mtp)))
    tpot, tpot_mtp = plain.requests["tpot_s"].mean(), fast.requests["tpot_s"].mean()
    # 1.9 tokens per step for a step that costs less than 1.9 plain steps
    assert tpot_mtp < 0.8 * tpot
    # a useless drafter (acceptance near 0) costs time: one token per longer step
    bad = ", speculative: {method: mtp, num_tokens: 3, acceptance: 0.01}"
    slow = run_experiment(make_experiment(DEEPSEEK.format(serving=bad)))
    assert slow.requests["tpot_s"].mean() > tpot


def test_without_speculative_no_emitted_column(make_experiment: MakeExperiment) -> None:
    text = LONG_OUTPUTS.format(spec="null").replace("requests: 16", "requests: 2")
    out = run_experiment(make_experiment(text))
    assert EMITTED_COLUMN not in out.iterations.columns


def test_same_seed_same_run_other_seed_other_draws(make_experiment: MakeExperiment) -> None:
    text = LONG_OUTPUTS.format(spec="{method: eagle, num_tokens: 2, acceptance: 0.6}")
    text = text.replace("value: 1500", "value: 200")
    a = run_experiment(make_experiment(text))
    b = run_experiment(make_experiment(text))
    pd.testing.assert_frame_equal(a.iterations, b.iterations)
    pd.testing.assert_frame_equal(a.requests, b.requests)
    c = run_experiment(make_experiment(text.replace("seed: 21", "seed: 22")))
    assert not a.iterations[EMITTED_COLUMN].equals(c.iterations[EMITTED_COLUMN])


# ------------------------------------------------------------------ one lane, KV pressure


def drive(scheduler: Scheduler, state: RequestState) -> tuple[int, int, int]:
    """Run a lane to completion on a unit clock: (decode tokens emitted, prefills ended,
    peak KV blocks)."""
    ended = [0]
    inner = scheduler._end_prefill

    def end_prefill(rid: int, now: float) -> None:
        ended[0] += 1
        inner(rid, now)

    scheduler._end_prefill = end_prefill  # type: ignore[method-assign]
    emitted, t = 0, 0.0
    while (batch := scheduler.next_batch(t)) is not None:
        emitted += max(batch.emitted_tokens, 0)
        t += 1.0
        scheduler.complete(batch, t)
    return emitted, ended[0], scheduler.kv.peak


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_conservation_and_kv_under_preemption(seed: int) -> None:
    """With a KV pool too small for the batch, sequences are preempted and recomputed; every
    request still emits exactly its output tokens, the pool never overflows (KVPool raises)
    and every block comes back."""
    rng = np.random.default_rng(seed)
    n = 40
    prompts = rng.integers(20, 200, n).tolist()
    outputs = rng.integers(2, 300, n).tolist()
    spec = SpeculativeSpec(method="eagle", num_tokens=3, acceptance=[0.9, 0.6, 0.4])
    serving = ServingSpec(block_size=16, max_num_seqs=32, speculative=spec)
    state = RequestState(prompts, outputs)
    finished: list[int] = []
    lane = Scheduler(
        serving,
        KVPool(120),
        state,
        lambda rid, _now: finished.append(rid),
        SpeculativeDecoding.from_spec(spec, np.random.default_rng(seed + 100)),
    )
    for rid in range(n):
        assert lane.fits_ever(rid)
        lane.add(rid)
    emitted, prefills_ended, peak = drive(lane, state)
    assert sorted(finished) == list(range(n))
    assert sum(state.preemptions) > 0
    assert emitted + prefills_ended == sum(outputs)
    assert lane.kv.used == 0 and peak <= 120
