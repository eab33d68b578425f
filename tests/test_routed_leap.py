"""Decode leaps of sampled-routing MoE stages (moe/routed_leap.py): the routing of k steps
drawn in one call is the routing of k steps drawn one by one, priced the same, bit for bit,
and a leap cut short leaves the stream and the expert ledger as stepping leaves them.
(tests/test_leap_equivalence.py runs whole MoE experiments both ways.)"""

from __future__ import annotations

import math
from typing import cast

import numpy as np
import pytest
import simpy

from clustersim.catalog.engines import ENGINES
from clustersim.catalog.hardware import get_hardware
from clustersim.catalog.models import get_model
from clustersim.config.schema import Precision, RoutingSpec
from clustersim.model.decode_run import DecodeStepCost
from clustersim.model.moe_cost import MoECoefficients, MoELayerCost
from clustersim.model.stage_cost import StageCostModel
from clustersim.moe.eplb import linear_placement
from clustersim.moe.experts import ExpertLedger, ExpertTraffic
from clustersim.moe.moe_group import MoEGroup
from clustersim.moe.routing_draws import sample_rank_loads, sample_rank_loads_steps
from clustersim.moe.sampled_stage import SampledStageCost
from clustersim.network.fabric import Fabric


@pytest.mark.parametrize("concentration", [0.05, 1.0, 20.0])
@pytest.mark.parametrize("pairs", [1, 5, 30, 400, 5000])
@pytest.mark.parametrize("ranks", [1, 2, 8, 32])
def test_steps_drawn_at_once_are_the_steps_drawn_one_by_one(
    concentration: float, pairs: int, ranks: int
) -> None:
    q = np.random.default_rng(ranks).dirichlet(np.full(ranks, concentration), size=20)
    one, many = np.random.default_rng(7), np.random.default_rng(7)
    stepped = np.stack([sample_rank_loads(one, pairs, q) for _ in range(13)])
    drawn = sample_rank_loads_steps(many, pairs, q, 13)
    assert np.array_equal(stepped, drawn)
    assert one.bit_generator.state == many.bit_generator.state


def test_the_gaussian_draws_clip_and_rescale_the_steps_one_draw_would() -> None:
    """Cells go negative in some steps only: only those are clipped and rescaled."""
    q = np.random.default_rng(0).dirichlet(np.full(8, 3.0), size=2)
    one, many = np.random.default_rng(1), np.random.default_rng(1)
    stepped = [sample_rank_loads(one, 64, q) for _ in range(40)]
    drawn = sample_rank_loads_steps(many, 64, q, 40)
    clipped = [bool((s == 0.0).any()) for s in stepped]
    assert any(clipped) and not all(clipped)  # some steps clipped and rescaled, some not
    assert np.array_equal(np.stack(stepped), drawn)


@pytest.mark.parametrize("slowed", [False, True])
def test_steps_priced_at_once_equal_step_s_bit_for_bit(slowed: bool) -> None:
    cost = MoELayerCost(MoECoefficients(2.1e-9, 3.0, 4.7e-6, 1.3e-9, 6e-6), 4)
    rng = np.random.default_rng(2)
    if slowed:
        cost.set_rank_speed(rng.uniform(0.3, 1.0, 8), rng.uniform(0.3, 1.0, 8))
    for tokens in (1, 3, 17, 250):
        loads = rng.gamma(0.7, tokens, size=(9, 58, 8))
        at_once = cost.steps_s(loads, tokens).tolist()
        assert at_once == [cost.step_s(x, tokens) for x in loads]


def _stage(seed: int, routing: RoutingSpec) -> tuple[SampledStageCost, simpy.Environment]:
    """A Mixtral-8x7B TP4 = EP4 stage with its own group and stream."""
    spec = get_model("mixtral-8x7b")
    base = StageCostModel(
        spec, get_hardware("h100-sxm"), Precision(), 4, spec.num_layers, True, True,
        engine=ENGINES["vllm"],
    )  # fmt: skip
    layers, experts, ranks = spec.num_moe_layers, spec.num_experts, 4
    rng = np.random.default_rng(seed)
    traffic = ExpertTraffic(routing, layers, experts, spec.experts_per_token, rng)
    group = MoEGroup(
        0, traffic, range(layers), MoELayerCost(base.moe, experts // ranks),
        [(f"g{r}",) for r in range(ranks)], np.zeros(ranks, dtype=np.int64),
        linear_placement(layers, experts, ranks, experts), None, rng,
        ExpertLedger(0, ranks, experts, 0.01), 1.0,
    )  # fmt: skip
    env = simpy.Environment()
    return SampledStageCost(base, group, env, cast(Fabric, None)), env


@pytest.mark.parametrize("n", [1, 6, 40])
def test_a_leap_prices_books_and_draws_as_stepping(n: int) -> None:
    """k steps priced by `run_s` (drawn 24 ahead) = k steps of SampledStageCost.compute_s;
    after `settle(k)` the stream and the ledger are where k stepped steps leave them."""
    routing = RoutingSpec(distribution="zipf", skew=1.1)
    stepping, env = _stage(3, routing)
    leaping, _ = _stage(3, routing)
    start, ctx, k = 1.0, 900 * n, 11
    t, ends, stepped = start, [], []
    for i in range(k):
        env._now = t  # (the step starts now)
        c = stepping.compute_s(0, 0.0, n, ctx + n * i, 0)
        stepped.append(c)
        t += c
        ends.append(t)
    leap = leaping.leap_routing()
    assert not leap.blocked(start)
    priced = leap.run_s(DecodeStepCost(leaping.base, n), ctx, n, 24)
    assert priced[:k] == stepped
    leap.settle(start, ends, k)
    assert leaping.group.rng.bit_generator.state == stepping.group.rng.bit_generator.state
    assert leaping.group.ledger.frame().equals(stepping.group.ledger.frame())
    floor = leap.floor_s(DecodeStepCost(leaping.base, n), ctx, n)
    assert 0 < floor <= min(priced)


def test_leaps_wait_for_routing_changes_and_a_shared_stream() -> None:
    """No leap step starts at or after a hot-set move or a rebalance, and none starts with
    a rebalance due; a stream two sampling groups draw from allows no leap; nor does a
    slowed rank."""
    stage, _ = _stage(4, RoutingSpec(distribution="zipf", skew=1.0, drift_interval_s=0.5))
    leap = stage.leap_routing()
    assert not leap.blocked(0.2) and leap.until_s() == 0.5
    # a leap starting when the move is due makes it first, as the first step's `route` would
    assert not leap.blocked(0.5) and stage.group.traffic.drifts == 1
    assert leap.until_s() == 1.0
    stage.group._next_rebalance = 0.8  # (as an EPLB interval would set it)
    assert leap.until_s() == 0.8 and leap.blocked(0.8)
    stage.group._next_rebalance = math.inf
    stage.group.traffic.samplers += 1  # another sampling group on the same stream
    assert leap.blocked(0.6)
    stage.group.traffic.samplers -= 1
    stage.group.set_rank_speed(np.array([1.0, 0.5, 1.0, 1.0]), np.ones(4))
    assert leap.blocked(0.6)


def test_dense_run_equals_dense_part_bit_for_bit() -> None:
    spec = get_model("mixtral-8x7b")
    cost = StageCostModel(
        spec, get_hardware("h100-sxm"), Precision(), 2, spec.num_layers, True, True,
        engine=ENGINES["sglang"],
    )  # fmt: skip
    for n in (1, 9, 300):
        run = DecodeStepCost(cost, n).dense_run_s(1234 * n, n, 30)
        assert run == [cost.dense_part_s(0, 0.0, n, 1234 * n + n * i, 0) for i in range(30)]


@pytest.mark.parametrize(("layers", "ranks"), [(1, 1), (3, 1), (32, 4), (58, 8), (61, 32)])
def test_ledger_books_steps_at_once_as_one_by_one(layers: int, ranks: int) -> None:
    """Steps crossing bins, Gaussian (fractional) loads: the same cells and statistics."""
    rng = np.random.default_rng(layers * ranks)
    one, many = ExpertLedger(0, ranks, 16, 0.05), ExpertLedger(0, ranks, 16, 0.05)
    slot_rank = np.repeat(np.arange(ranks), max(1, 16 // ranks))[:16]
    logical = np.tile(np.arange(16), (layers, 1))
    share = rng.random((layers, 16))
    for ledger in (one, many):
        ledger.set_context(slot_rank, logical, share)
    t = 0.0
    for _ in range(20):
        k = int(rng.integers(1, 30))
        loads = rng.gamma(0.8, 7.0, size=(k, layers, ranks))
        starts = (t + np.cumsum(rng.exponential(0.01, size=k))).tolist()
        for start, x in zip(starts, loads, strict=True):
            one.record(start, x)
        many.record_steps(starts, loads)
        t = starts[-1]
    assert one.frame().equals(many.frame())
