"""EPLB placement algorithms (pure functions)."""

from __future__ import annotations

import numpy as np
import pytest

from clustersim.moe.eplb import (
    ExpertPlacement,
    align_ranks,
    balanced_packing,
    greedy_placement,
    hierarchical_placement,
    imbalance,
    linear_placement,
    moved_experts,
    rank_loads,
    rebalance,
    replicate,
)
from clustersim.moe.experts import inclusion_probabilities, zipf_weights

E, RANKS, SLOTS, NODES = 64, 8, 72, 2  # 9 slots per rank, 4 ranks per node
RANK_NODE = np.repeat(np.arange(NODES), RANKS // NODES)


def zipf_loads(layers: int, skew: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = np.tile(zipf_weights(E, skew), (layers, 1))
    perm = rng.permuted(np.tile(np.arange(E), (layers, 1)), axis=1)
    w = np.take_along_axis(base, perm, axis=1)
    loads: np.ndarray = inclusion_probabilities(w, 4) * 1000.0
    return loads


def test_balanced_packing_fills_bins_equally_and_evens_loads() -> None:
    w = np.asarray([[9.0, 7.0, 6.0, 5.0, 4.0, 1.0]])
    bins = balanced_packing(w, 3)
    assert np.bincount(bins[0], minlength=3).tolist() == [2, 2, 2]
    loads = np.bincount(bins[0], weights=w[0], minlength=3)
    assert loads.max() - loads.min() <= 3.0
    with pytest.raises(ValueError, match="cannot be packed evenly"):
        balanced_packing(w, 4)


def test_replicate_gives_spare_slots_to_the_hottest_experts() -> None:
    loads = np.asarray([[100.0, 10.0, 10.0, 1.0]])
    counts = replicate(loads, 8)
    assert counts.sum() == 8 and counts.min() >= 1
    assert counts[0, 0] == 5  # 100/5 = 20 > 10 would be next for the others
    with pytest.raises(ValueError):
        replicate(loads, 3)


def test_placement_validation() -> None:
    with pytest.raises(ValueError, match="split evenly"):
        ExpertPlacement(np.zeros((1, 10), dtype=np.int64), 3, 4)
    with pytest.raises(ValueError, match="at least one slot"):
        ExpertPlacement(np.zeros((1, 4), dtype=np.int64), 2, 4)


@pytest.mark.parametrize("seed", range(12))
def test_greedy_never_increases_imbalance_on_the_fitted_loads(seed: int) -> None:
    rng = np.random.default_rng(seed)
    loads = rng.gamma(rng.uniform(0.2, 5.0), size=(6, E))
    linear = linear_placement(6, E, RANKS, SLOTS)
    out = rebalance(loads, linear, "greedy", RANK_NODE)
    assert out.imbalance_after <= out.imbalance_before + 1e-12
    assert imbalance(rank_loads(loads, out.placement)) == pytest.approx(out.imbalance_after)
    assert (out.placement.replicas().sum(axis=1) == SLOTS).all()


@pytest.mark.parametrize("algorithm", ["greedy", "hierarchical"])
def test_eplb_strictly_lowers_imbalance_under_skew(algorithm: str) -> None:
    loads = zipf_loads(10, 1.2, seed=1)
    linear = linear_placement(10, E, RANKS, SLOTS)
    out = rebalance(loads, linear, algorithm, RANK_NODE, groups=8)
    assert out.imbalance_before > 1.5
    assert out.imbalance_after < 0.8 * out.imbalance_before
    assert out.imbalance_after < 1.2
    assert out.changed


def test_hierarchical_keeps_expert_groups_on_one_node() -> None:
    loads = zipf_loads(5, 1.0, seed=2)
    groups, gsize = 8, E // 8
    p = hierarchical_placement(loads, RANKS, SLOTS, NODES, groups)
    per_node = SLOTS // NODES
    for layer in range(5):
        for node in range(NODES):
            experts = set(p.logical[layer, node * per_node : (node + 1) * per_node].tolist())
            node_groups = {e // gsize for e in experts}
            assert len(node_groups) == groups // NODES  # whole groups, 4 per node
    # not divisible: falls back to the global (greedy) policy
    q = hierarchical_placement(loads, RANKS, SLOTS, 3, groups)
    assert np.array_equal(q.logical, greedy_placement(loads, RANKS, SLOTS).logical)


def test_rebalance_keeps_a_placement_that_is_already_balanced() -> None:
    flat = np.ones((4, E))
    first = rebalance(flat, linear_placement(4, E, RANKS, SLOTS), "greedy", RANK_NODE)
    again = rebalance(flat, first.placement, "greedy", RANK_NODE)
    assert again.placement is first.placement
    assert not again.changed and again.moves.sum() == 0
    assert again.imbalance_after == again.imbalance_before == pytest.approx(1.0)


def test_moves_count_new_rank_memberships_and_prefer_local_sources() -> None:
    old = ExpertPlacement(np.asarray([[0, 1, 2, 3, 0, 1, 2, 3]]), 4, 4)  # 2 slots per rank
    new = ExpertPlacement(np.asarray([[0, 3, 2, 3, 0, 1, 2, 1]]), 4, 4)
    moves = moved_experts(old, new, np.asarray([0, 0, 1, 1]))
    # rank 0 gains expert 3 (held by ranks 1 and 3: rank 1 is on its node)
    # rank 3 gains expert 1 (held by ranks 0 and 2: rank 2 is on its node)
    assert moves.sum() == 2
    assert moves[1, 0] == 1 and moves[2, 3] == 1


def test_align_ranks_renumbers_to_avoid_moves() -> None:
    old = linear_placement(3, E, RANKS, SLOTS)
    perm = np.roll(np.arange(RANKS), 3)
    blocks = old.logical.reshape(3, RANKS, -1)[:, perm, :].reshape(3, SLOTS)
    shuffled = ExpertPlacement(blocks, RANKS, E)  # same rank contents, other rank numbers
    assert moved_experts(old, shuffled, RANK_NODE).sum() > 0
    aligned = align_ranks(old, shuffled, RANK_NODE, within_node=False)
    assert moved_experts(old, aligned, RANK_NODE).sum() == 0
    assert np.array_equal(rank_loads(np.ones((3, E)), aligned), rank_loads(np.ones((3, E)), old))
