"""Prefix caching together with speculative decoding (docs/prefix_caching.md,
docs/speculative.md), as SGLang (RadixAttention + EAGLE / MTP) and vLLM (automatic prefix
caching + spec decode) run them: both accepted at load; a multi-turn sessions run with an
EAGLE head behind the cache-aware router conserves requests and tokens, reuses its context,
verifies as the acceptance theory says, and publishes answer blocks of accepted KV only."""

from __future__ import annotations

import math
from unittest.mock import patch

import numpy as np
import pytest

from clustersim.config.load import load_experiment
from clustersim.config.schema import Experiment
from clustersim.metrics.recorder import EMITTED_COLUMN
from clustersim.serving.prefix_lane import LanePrefix
from clustersim.serving.speculative import AcceptanceProfile
from clustersim.sim.engine import RunOutput, run_experiment
from conftest import MakeExperiment, write_yaml
from test_prefix_caching import run_capturing_lanes

K, RATE = 3, 0.8  # draft tokens per step, acceptance rate of each

SESSIONS = f"""
name: prefix_speculative
seed: 7
model: llama-3.1-8b
topology: dgx_h100_x1
layout: {{tp: 1, dp: 2}}
serving:
  router: cache_aware
  prefix_caching: {{enabled: true}}
  speculative: {{method: eagle, num_tokens: {K}, acceptance: {RATE}}}
workload:
  arrival: {{process: sessions}}
  sessions:
    session_rate_rps: 1
    system_prompts: {{count: 4, tokens: {{median: 2048, sigma: 0.3}}, skew: 1.0}}
    classes:
      - chat
      - {{name: tools, first_user_tokens: {{median: 4000}}, user_tokens: {{median: 200}},
         output_tokens: {{median: 600}}, turns_mean: 8, think_time_s: 1}}
horizon: {{duration_s: 60}}
"""


def run_recording_answers(exp: Experiment) -> tuple[RunOutput, list[tuple[LanePrefix, int, int]]]:
    """Run, recording every answer publication: (lane, request id, KV tokens published)."""
    calls: list[tuple[LanePrefix, int, int]] = []
    original = LanePrefix.publish_answer

    def record(lane: LanePrefix, rid: int, written: int) -> None:
        calls.append((lane, rid, written))
        original(lane, rid, written)
        lane.cache.check()

    with patch.object(LanePrefix, "publish_answer", record):
        out = run_experiment(exp)
    return out, calls


@pytest.fixture(scope="module")
def sessions_run(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[RunOutput, list[tuple[LanePrefix, int, int]]]:
    """The sessions run, once for the module's checks."""
    path = write_yaml(tmp_path_factory.mktemp("prefix_speculative"), SESSIONS)
    return run_recording_answers(load_experiment(path, []))


def test_both_are_accepted_at_load(make_experiment: MakeExperiment) -> None:
    exp = make_experiment(SESSIONS)
    assert exp.serving.prefix_caching_on and exp.serving.speculative is not None
    assert exp.serving.speculative.num_tokens == K


def test_sessions_with_eagle_conserve_requests_and_reuse_context(
    sessions_run: tuple[RunOutput, list[tuple[LanePrefix, int, int]]],
) -> None:
    out, _ = sessions_run
    req = out.requests
    assert len(req) > 60 and req["finish_s"].notna().all()
    # each request's first token comes from its prefill, every other from a verify step
    assert int(out.iterations[EMITTED_COLUMN].sum()) + len(req) == int(req["output_tokens"].sum())
    # prefill computes only the uncached suffix (the drafter's first pass too)
    prefill = int(out.iterations["prefill_tokens"].sum())
    recomputed = req["preemptions"].sum()
    if recomputed == 0:
        assert prefill == int((req["prompt_tokens"] - req["cached_tokens"]).sum())
    assert out.prefix_cache is not None
    assert req["cached_tokens"].sum() > 0.3 * req["prompt_tokens"].sum()
    it = out.iterations
    assert (it["kv_used_blocks"] <= it["kv_capacity_blocks"]).all()


def test_tokens_per_verify_step_follow_the_acceptance_theory(
    sessions_run: tuple[RunOutput, list[tuple[LanePrefix, int, int]]],
) -> None:
    """Mean tokens per verify step = (1 − a^(k+1)) / (1 − a) within 4 standard errors; a
    request's last step emits only what it has left (at most k tokens fewer than drawn), so
    the measured mean may fall below the theory by at most k · requests / steps."""
    out, _ = sessions_run
    it = out.iterations
    emitted = int(it[EMITTED_COLUMN].sum())
    steps = int((it["decode_tokens"] // (K + 1)).sum())
    profile = AcceptanceProfile(np.full(K, RATE))
    theory = profile.mean_tokens_per_step
    assert theory == pytest.approx((1 - RATE ** (K + 1)) / (1 - RATE))
    stderr = math.sqrt(profile.variance_tokens() / steps)
    capped = K * len(out.requests) / steps
    assert steps > 5000
    assert theory - 4 * stderr - capped < emitted / steps < theory + 4 * stderr


def test_answer_blocks_hold_accepted_kv_only(
    sessions_run: tuple[RunOutput, list[tuple[LanePrefix, int, int]]],
) -> None:
    """A request finishing decode holds the KV of P + O − 1 accepted tokens; its last verify
    step also wrote k + 1 slots of which the rejected drafts' are garbage, so answer blocks
    are published from the accepted count, never from the slots written."""
    out, calls = sessions_run
    req = out.requests
    by_id = req.set_index("id")
    total = (by_id["prompt_tokens"] + by_id["output_tokens"] - 1).to_dict()
    assert len(calls) > 60
    for _, rid, written in calls:
        assert written == total[rid]
    answered = sum(
        lane.cache.stats.inserted_blocks for lane in {id(c[0]): c[0] for c in calls}.values()
    )
    assert answered > 0


DEEPSEEK_MTP_DP_ATTENTION = """
name: prefix_mtp_dp_attention
seed: 5
model: deepseek-v3
hardware: h200
topology:
  name: h200x8
  nodes: 1
  gpus_per_node: 8
  gpu: h200
  nvlink: {domain: node, bandwidth_GBps: 450, latency_us: 2.0}
  pcie: {bandwidth_GBps: 64, latency_us: 1.0}
layout: {tp: 1, dp: 8, ep: 8, dp_attention: true}
precision: {weights: fp8, activations: fp8, kv_cache: fp8}
serving:
  engine: sglang
  router: cache_aware
  prefix_caching: {enabled: true}
  speculative: {method: mtp, num_tokens: 3, acceptance: [0.87, 0.75, 0.65]}
workload:
  arrival: {process: sessions}
  sessions:
    session_rate_rps: 2
    system_prompts: {count: 4, tokens: {median: 2048, sigma: 0.3}, skew: 1.0}
    classes: [chat]
horizon: {duration_s: 30}
"""

DISAGGREGATED = (
    SESSIONS
    + """
disaggregation:
  prefill: {layout: {tp: 1, dp: 2}}
  decode: {layout: {tp: 1, dp: 2}}
"""
)


@pytest.mark.parametrize(
    ("text", "rates"),
    [(DEEPSEEK_MTP_DP_ATTENTION, (0.87, 0.75, 0.65)), (DISAGGREGATED, (RATE,) * K)],
    ids=["deepseek_mtp_dp_attention", "disaggregated_eagle"],
)
def test_dp_attention_and_disaggregated_pools(
    make_experiment: MakeExperiment, text: str, rates: tuple[float, ...]
) -> None:
    """DeepSeek-V3 with MTP on DP-attention 8 × EP8 (a cache per DP rank) and disaggregated
    pools (a cache per prefill replica, verify steps in the decode pool): every request
    finishes, tokens are conserved, the caches are hit, verify steps follow the theory, and
    every cache ends with no private block and no pin."""
    out, lanes = run_capturing_lanes(make_experiment(text))
    req, it = out.requests, out.iterations
    assert req["finish_s"].notna().all() and len(req) > 30
    assert int(it[EMITTED_COLUMN].sum()) + len(req) == int(req["output_tokens"].sum())
    assert req["cached_tokens"].sum() > 0.3 * req["prompt_tokens"].sum()
    k = len(rates)
    profile = AcceptanceProfile(np.asarray(rates))
    steps = int((it["decode_tokens"] // (k + 1)).sum())
    measured = int(it[EMITTED_COLUMN].sum()) / steps
    stderr = math.sqrt(profile.variance_tokens() / steps)
    capped = k * len(req) / steps
    theory = profile.mean_tokens_per_step
    assert theory - 4 * stderr - capped < measured < theory + 4 * stderr
    for unit in lanes:
        for lane in unit:
            lane.cache.check()
            assert lane.cache.used == 0 and not lane.shared
