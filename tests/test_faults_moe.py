"""Faults in MoE layouts (issue 11): a slow EP rank slows its own expert GEMMs, and EPLB
weighs ranks by the speed it sees them run at (docs/faults.md §2)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clustersim.model.moe_cost import MoECoefficients, MoELayerCost
from clustersim.moe.eplb import (
    greedy_placement,
    hierarchical_placement,
    imbalance,
    linear_placement,
    rank_loads,
    rebalance,
)
from clustersim.moe.experts import inclusion_probabilities, zipf_weights
from clustersim.sim.engine import run_experiment
from conftest import MakeExperiment

E, RANKS, SLOTS = 64, 8, 72
SLOW = np.array([0.5, 1, 1, 1, 1, 1, 1, 1], dtype=np.float64)


def zipf_loads(layers: int, skew: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = np.tile(zipf_weights(E, skew), (layers, 1))
    perm = rng.permuted(np.tile(np.arange(E), (layers, 1)), axis=1)
    loads: np.ndarray = inclusion_probabilities(np.take_along_axis(base, perm, axis=1), 4)
    return loads * 1000.0


# ---------------------------------------------------------------------- expert GEMMs


def test_slow_rank_scales_its_expert_gemms_by_inverse_factor() -> None:
    """Equal loads on every rank: a rank at 0.5× compute makes a compute-bound MoE layer
    (many pairs per expert) take 2×; at 0.5× HBM, a weight-read-bound one (few pairs) 2×;
    the full-speed / actual seconds of each rank show the factor."""
    cost = MoELayerCost(MoECoefficients(1e-6, 0.0, 1e-3, 0.0), slots_per_rank=4)
    heavy = np.full((3, 4), 4000.0)  # compute: 4e-3 s per rank-layer > weights 4e-3·(≤1)
    light = np.full((3, 4), 8.0)
    nominal_heavy, nominal_light = cost.step_s(heavy, 1000), cost.step_s(light, 1000)
    ones = np.ones(4)
    cost.set_rank_speed(np.array([0.5, 1, 1, 1]), ones)
    assert cost.slowed
    assert cost.step_s(heavy, 1000) == pytest.approx(2 * nominal_heavy, rel=1e-12)
    assert cost.step_s(light, 1000) == pytest.approx(nominal_light, rel=1e-12)
    full, actual = cost.rank_seconds(heavy, 1000)
    assert (actual / full).tolist() == pytest.approx([2.0, 1.0, 1.0, 1.0])
    cost.set_rank_speed(ones, np.array([1, 1, 0.5, 1]))
    assert cost.step_s(light, 1000) == pytest.approx(2 * nominal_light, rel=1e-12)
    cost.set_rank_speed(ones, ones)
    assert not cost.slowed and cost.step_s(heavy, 1000) == nominal_heavy


# ---------------------------------------------------------------------- placement


def test_speed_weighted_placement_moves_load_off_the_slow_rank() -> None:
    loads = zipf_loads(6, 1.0, seed=2)
    blind = greedy_placement(loads, RANKS, SLOTS)
    aware = greedy_placement(loads, RANKS, SLOTS, SLOW)
    per_rank = rank_loads(loads, aware)
    others = per_rank[:, 1:].mean(axis=1)
    # toward half (the rank runs at half speed), as far as its 9 slots of cold experts allow
    assert (per_rank[:, 0] < 0.65 * others).all()
    # speed-blind: the slow rank takes ~2× the ideal time; aware: ~1.2× (9 slots per rank
    # cannot hold less than its 9 coldest copies' load)
    assert imbalance(per_rank, SLOW) < 0.65 * imbalance(rank_loads(loads, blind), SLOW)
    # all-equal speeds: the uniform policy, and the speed imbalance is the plain one
    assert np.array_equal(
        greedy_placement(loads, RANKS, SLOTS, np.ones(RANKS)).logical, blind.logical
    )
    assert imbalance(rank_loads(loads, blind), np.ones(RANKS)) == pytest.approx(
        imbalance(rank_loads(loads, blind)), rel=1e-12
    )


def test_hierarchical_placement_weighs_nodes_and_ranks_by_speed() -> None:
    loads = zipf_loads(4, 1.0, seed=3)
    aware = hierarchical_placement(loads, RANKS, SLOTS, nodes=2, groups=8, speed=SLOW)
    per_rank = rank_loads(loads, aware)
    assert (per_rank[:, 0] < per_rank[:, 1:4].mean(axis=1)).all()  # its node-mates take more
    node = per_rank.reshape(4, 2, 4).sum(axis=2)
    assert (node[:, 0] < node[:, 1]).all()  # node 0 (3.5 ranks of speed) gets less than node 1


def test_rebalance_keeps_bins_on_ranks_of_their_speed() -> None:
    loads = zipf_loads(4, 1.2, seed=4)
    rank_node = np.repeat(np.arange(2), 4)
    current = linear_placement(4, E, RANKS, SLOTS)
    plan = rebalance(loads, current, "greedy", rank_node, speed=SLOW)
    assert plan.changed and plan.imbalance_after < plan.imbalance_before
    per_rank = rank_loads(loads, plan.placement)
    assert (per_rank[:, 0] < 0.65 * per_rank[:, 1:].mean(axis=1)).all()


# ---------------------------------------------------------------------- simulation

SLOW_EP_RANK = """\
name: slow_ep_rank
seed: 11
model: mixtral-8x7b
topology: dgx_h100_x1
layout: {tp: 4, dp: 2, ep: 4}
precision: {weights: fp8, activations: fp8, kv_cache: fp8}
serving: {max_num_seqs: 64, max_num_batched_tokens: 4096, router: round_robin}
experts:
  routing: {distribution: zipf, skew: 1.0}
  eplb: {redundant_experts: 4, rebalance_interval_s: 0.5}
workload:
  arrival: {process: poisson, rate_rps: 8}
  prompt_tokens: {dist: fixed, value: 4096}
  output_tokens: {dist: fixed, value: 2}
horizon: {duration_s: 4}
"""
SLOW_GPU = """faults:
  events: [{kind: gpu_slowdown, target: n0.g1, compute_factor: 0.5, hbm_factor: 0.5}]
"""


def prefill_step_s(make: MakeExperiment, text: str, overrides: list[str]) -> tuple[float, ...]:
    """Median compute seconds of replica 0's 4096-token prefill steps, and the share of the
    routed pairs each rank of its EP group took after t = 1 s."""
    out = run_experiment(make(text, overrides))
    it = out.iterations
    rows = it[(it["replica"] == 0) & (it["prefill_tokens"] >= 4096) & (it["start_s"] > 1.2)]
    assert len(rows) >= 5
    assert out.experts is not None
    e = out.experts
    tokens = e[(e["group"] == 0) & (e["bin_start_s"] >= 1.0)].groupby("rank")["tokens"].sum()
    return (float(rows["compute_s"].median()), *(tokens / tokens.sum()).tolist())


def test_eplb_moves_expert_load_off_a_slow_ep_rank(make_experiment: MakeExperiment) -> None:
    """Mixtral TP4 = EP4 with one GPU (rank 1 of replica 0) at 0.5×: its expert GEMMs run
    at half speed too. Rebalancing EPLB measures the rank's speed and gives it cold experts:
    the slow rank's share of the routed pairs falls well below the others', and the MoE step
    is shorter than with the same slots never rebalanced (rebalance_interval_s 0)."""
    static = ["experts.eplb.rebalance_interval_s=0"]
    healthy = prefill_step_s(make_experiment, SLOW_EP_RANK, static)[0]
    slow_off = prefill_step_s(make_experiment, SLOW_EP_RANK + SLOW_GPU, static)
    slow_on = prefill_step_s(make_experiment, SLOW_EP_RANK + SLOW_GPU, [])
    assert slow_off[0] > 1.3 * healthy  # experts and dense part both slowed
    assert slow_on[0] < 0.9 * slow_off[0]
    share = slow_on[1:]
    assert share[1] < 0.8 * min(share[r] for r in (0, 2, 3))


EVENTS = st.lists(
    st.tuples(
        st.sampled_from(["gpu_slowdown", "gpu_down"]),
        st.integers(0, 7),
        st.floats(0.0, 3.0),
        st.one_of(st.none(), st.floats(0.2, 2.0)),
    ),
    min_size=1,
    max_size=4,
)


@settings(
    max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(events=EVENTS)
def test_conservation_with_slow_and_lost_ep_ranks(
    make_experiment: MakeExperiment, events: list[tuple[str, int, float, float | None]]
) -> None:
    """Random slowdowns and losses of EP ranks under rebalancing EPLB: every request finishes
    once or fails (ReplicaHealth raises on a second finish), rebalances keep their contract."""
    lines = []
    for kind, g, at, duration in events:
        factor = ", compute_factor: 0.4, hbm_factor: 0.6" if kind == "gpu_slowdown" else ""
        dur = "" if duration is None else f", duration_s: {duration:.3f}"
        lines.append(f"    - {{kind: {kind}, target: n0.g{g}, at_s: {at:.3f}{dur}{factor}}}\n")
    faults = "faults:\n  detect_s: 0.1\n  reload: {bandwidth_GBps: 200}\n  events:\n" + "".join(
        lines
    )
    out = run_experiment(make_experiment(SLOW_EP_RANK + faults, ["horizon.duration_s=3"]))
    req = out.requests
    done = np.isfinite(req["finish_s"].to_numpy(dtype=float))
    failed = req["failed"].to_numpy(dtype=bool)
    dropped = req["dropped"].to_numpy(dtype=bool)
    assert not (done & failed).any() and int(done.sum() + failed.sum() + dropped.sum()) == len(req)
    if failed.any():  # only when some replica never comes back
        assert any(kind == "gpu_down" and duration is None for kind, _, _, duration in events)
    assert out.eplb is not None
    assert (out.eplb["imbalance_after"] <= out.eplb["imbalance_before"] + 1e-12).all()
