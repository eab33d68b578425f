"""A slow GPU in a DP-attention EP group (issue 11, docs/faults.md §2): its DP rank's dense
part runs at that GPU's pace and its EP rank's experts too, so the lock-step step — the max
over ranks — waits for it; the other ranks keep their own price."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import simpy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clustersim.deployment.degraded import DegradedCosts, degraded_hardware
from clustersim.deployment.units import make_units, stage_costs
from clustersim.metrics.recorder import Recorder
from clustersim.moe.ep_group import DPRank, EPGroup
from clustersim.network.fabric import Fabric
from clustersim.serving.batch import Batch
from clustersim.serving.request_state import RequestState
from clustersim.sim.engine import build, run_experiment
from clustersim.sim.fault_injector import pace_dp_ranks
from conftest import MakeExperiment

DP_ATTENTION = """\
name: dpa_slow
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


def ep_group(make: MakeExperiment, text: str) -> tuple[EPGroup, DegradedCosts]:
    exp = make(text)
    built = build(exp)
    env = simpy.Environment()
    fabric = Fabric(env, built.cluster, exp.output.time_bin_s)
    units, _ = make_units(
        exp,
        built,
        env,
        fabric,
        RequestState([128], [4]),
        Recorder(1),
        lambda rid, now: None,
        np.random.default_rng(0),
        None,
    )
    assert isinstance(units[0], DPRank)
    return units[0].group, DegradedCosts(exp, built)


def prefill(tokens: int) -> Batch:
    b = Batch()
    b.prefill = [(0, tokens)]
    b.prefill_tokens = tokens
    b.prefill_attn_pairs = tokens * (tokens + 1) / 2.0
    b.prefill_ctx_tokens = tokens
    b.num_seqs = 1
    return b


@pytest.mark.parametrize("f", [0.5, 0.7])
def test_slow_rank_is_the_bottleneck_of_a_compute_bound_step(
    make_experiment: MakeExperiment, f: float
) -> None:
    """8,192-token prefills on every DP rank: n0.g3 at compute and HBM × f makes rank 3's
    dense part take 1/f as long (kernel floors aside: within 1 %) — exactly its price on the
    degraded GPU — every other rank keeps its full-speed price, and the group's dense time
    is rank 3's. Its experts (EP rank 3) run at f too: with equal loads the MoE time is 1/f."""
    group, degraded = ep_group(make_experiment, DP_ATTENTION)
    batch = prefill(8192)
    nominal = [group.dense.rank_s(d, batch) for d in range(8)]
    two_mb = group.dense.two_microbatches_s(3, batch)  # two-batch overlap's dense part
    pairs = np.full((32, 8), 8 * 8192.0 * 2 / 8)  # 32 MoE layers, top-2 over 8 ranks
    moe_nominal = group.moe.cost.step_s(pairs, 8 * 8192)
    pace_dp_ranks(group, group.cost, degraded, {"n0.g3": f}, {"n0.g3": f})
    slowed = [group.dense.rank_s(d, batch) for d in range(8)]
    assert slowed[3] == pytest.approx(nominal[3] / f, rel=0.01)
    exp = degraded.exp
    on_slow_gpu = stage_costs(exp, degraded.built, degraded_hardware(exp.hardware, f, f))[0]
    assert slowed[3] == on_slow_gpu.dense_part_s(8192, batch.prefill_attn_pairs, 0, 0, 1)
    assert [slowed[d] for d in range(8) if d != 3] == [nominal[d] for d in range(8) if d != 3]
    assert max(slowed) == slowed[3]
    assert group.dense.two_microbatches_s(3, batch) == pytest.approx(two_mb / f, rel=0.01)
    assert group.moe.cost.step_s(pairs, 8 * 8192) == pytest.approx(moe_nominal / f, rel=0.01)
    pace_dp_ranks(group, group.cost, degraded, {}, {})  # the fault ends: full speed again
    assert [group.dense.rank_s(d, batch) for d in range(8)] == nominal
    assert group.moe.cost.step_s(pairs, 8 * 8192) == moe_nominal


def test_hbm_slowdown_slows_a_memory_bound_decode_step(make_experiment: MakeExperiment) -> None:
    """Small decode batches read the weights (memory-bound): HBM × 0.5 on n0.g5 makes rank
    5's dense part longer by up to 2× (kernel floors do not slow); compute × 0.5 alone
    barely moves it."""
    group, degraded = ep_group(make_experiment, DP_ATTENTION)
    b = Batch()
    b.decode_tokens, b.decode_ctx_tokens, b.num_seqs = 8, 8 * 512, 8
    base = group.dense.rank_s(5, b)
    pace_dp_ranks(group, group.cost, degraded, {}, {"n0.g5": 0.5})
    assert 1.3 * base < group.dense.rank_s(5, b) <= 2 * base
    pace_dp_ranks(group, group.cost, degraded, {"n0.g5": 0.5}, {})
    assert group.dense.rank_s(5, b) < 1.1 * base


WINDOW = """faults:
  events:
    - {kind: gpu_slowdown, target: n0.g3, at_s: 1.0, duration_s: 1.0, compute_factor: 0.5,
       hbm_factor: 0.5}
"""


def test_slow_gpu_slows_the_lock_step_group_inside_its_window(
    make_experiment: MakeExperiment,
) -> None:
    """One GPU of the EP8 group at 0.5× from 1 s to 2 s, against the same run without it:
    steps before the window are the same, steps inside it are slower (the whole lock-step
    group waits for the slow rank: every rank's row has the group's step time), every request
    finishes once, and faults.parquet counts every rank of the group as affected."""
    out = run_experiment(make_experiment(DP_ATTENTION + WINDOW))
    req = out.requests
    done = np.isfinite(req["finish_s"].to_numpy(dtype=float))
    assert done.all() and not req["failed"].any() and req["retries"].sum() == 0
    assert out.faults is not None and out.faults["replicas_affected"].iloc[0] == "0,1,2,3,4,5,6,7"
    healthy = run_experiment(make_experiment(DP_ATTENTION)).iterations
    slow = out.iterations

    def steps(it: pd.DataFrame, lo: float, hi: float) -> pd.Series:
        return it[(it["start_s"] >= lo) & (it["end_s"] < hi)].groupby("start_s")["compute_s"].max()

    assert steps(slow, 0.0, 1.0).equals(steps(healthy, 0.0, 1.0))
    inside, base = steps(slow, 1.0, 2.0), steps(healthy, 1.0, 2.0)
    assert len(inside) > 20
    assert inside.median() > 1.2 * base.median()
    ranks = slow[(slow["start_s"] >= 1.0) & (slow["end_s"] < 2.0)].groupby("start_s")
    assert (ranks["compute_s"].nunique() == 1).all()  # one step time for every rank


EPLB = """experts:
  routing: {distribution: zipf, skew: 1.0}
  eplb: {redundant_experts: 8, rebalance_interval_s: 0.5}
"""


def slow_rank_share(make: MakeExperiment, overrides: list[str]) -> float:
    """Rank 3's share of the routed pairs after 1 s over the mean of the other ranks'."""
    text = DP_ATTENTION + EPLB + WINDOW.replace("duration_s: 1.0, ", "")
    out = run_experiment(make(text, overrides))
    assert out.experts is not None and out.eplb is not None
    e = out.experts
    tokens = e[e["bin_start_s"] >= 1.5].groupby("rank")["tokens"].sum()
    return float(tokens[3] / tokens.drop(3).mean())


def test_eplb_moves_expert_load_off_the_slow_dp_attention_rank(
    make_experiment: MakeExperiment,
) -> None:
    """With the slowdown from 1 s on, rebalancing EPLB measures EP rank 3 at half speed and
    gives it cold experts: its share of the routed pairs falls well below the others'."""
    static = slow_rank_share(make_experiment, ["experts.eplb.rebalance_interval_s=0"])
    weighted = slow_rank_share(make_experiment, [])
    assert weighted < 0.8 * static


EVENTS = st.lists(
    st.tuples(
        st.sampled_from(["gpu_slowdown", "gpu_down"]),
        st.integers(0, 7),
        st.floats(0.0, 2.5),
        st.one_of(st.none(), st.floats(0.2, 1.5)),
    ),
    min_size=1,
    max_size=4,
)


@settings(
    max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(events=EVENTS)
def test_conservation_with_slow_and_lost_gpus_in_the_lock_step_group(
    make_experiment: MakeExperiment, events: list[tuple[str, int, float, float | None]]
) -> None:
    """Random slowdowns and losses in the DP-attention group: every request finishes once,
    or fails (only when a GPU never comes back)."""
    lines = []
    for kind, g, at, duration in events:
        factor = ", compute_factor: 0.4, hbm_factor: 0.6" if kind == "gpu_slowdown" else ""
        dur = "" if duration is None else f", duration_s: {duration:.3f}"
        lines.append(f"    - {{kind: {kind}, target: n0.g{g}, at_s: {at:.3f}{dur}{factor}}}\n")
    faults = "faults:\n  detect_s: 0.1\n  reload: {bandwidth_GBps: 200}\n  events:\n"
    out = run_experiment(make_experiment(DP_ATTENTION + faults + "".join(lines)))
    req = out.requests
    done = np.isfinite(req["finish_s"].to_numpy(dtype=float))
    failed = req["failed"].to_numpy(dtype=bool)
    dropped = req["dropped"].to_numpy(dtype=bool)
    assert not (done & failed).any() and int(done.sum() + failed.sum() + dropped.sum()) == len(req)
    if failed.any():
        assert any(kind == "gpu_down" and duration is None for kind, _, _, duration in events)
