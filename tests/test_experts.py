"""Expert routing: popularity, top-k inclusion, per-step sampling, drift and the ledger."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest

from clustersim.config.schema import RoutingSpec
from clustersim.moe.eplb import ExpertPlacement, imbalance, linear_placement
from clustersim.moe.experts import (
    ExpertLedger,
    ExpertTraffic,
    PopularityTableError,
    inclusion_probabilities,
    load_popularity_table,
    phase_change_times,
    zipf_weights,
)
from clustersim.moe.routing_draws import EXACT_MEAN_PAIRS, sample_rank_loads

LAYERS, EXPERTS, TOP_K, RANKS = 58, 256, 8, 32  # DeepSeek-V3 on EP32


def rank_probabilities(share: np.ndarray, placement: ExpertPlacement) -> np.ndarray:
    """q[l, r]: probability a routed pair lands on rank r."""
    per_slot = placement.slot_loads(share)
    q: np.ndarray = per_slot.reshape(placement.layers, placement.ranks, -1).sum(axis=2)
    return q / q.sum(axis=1, keepdims=True)


def traffic(skew: float, seed: int = 0, **routing: object) -> ExpertTraffic:
    spec = RoutingSpec.model_validate({"distribution": "zipf", "skew": skew, **routing})
    return ExpertTraffic(spec, LAYERS, EXPERTS, TOP_K, np.random.default_rng(seed))


# ------------------------------------------------------------------ popularity


def test_zipf_weights_are_normalised_power_law() -> None:
    w = zipf_weights(8, 1.0)
    assert w.sum() == pytest.approx(1.0)
    assert w[0] / w[3] == pytest.approx(4.0)  # rank 1 vs rank 4 at skew 1
    assert np.allclose(zipf_weights(8, 0.0), 1 / 8)


def test_inclusion_probabilities_sum_to_k_and_are_capped_at_one() -> None:
    for skew in (0.0, 0.8, 1.2, 1.6, 3.0):
        pi = inclusion_probabilities(np.tile(zipf_weights(EXPERTS, skew), (3, 1)), TOP_K)
        assert np.allclose(pi.sum(axis=1), TOP_K)
        assert pi.max() <= 1.0 + 1e-12 and pi.min() >= 0.0
        assert (np.diff(pi[0]) <= 1e-12).all()  # order of the weights is kept
    # skew 3: the top experts are picked by every token
    pi = inclusion_probabilities(zipf_weights(EXPERTS, 3.0)[None, :], TOP_K)
    assert pi[0, 0] == pytest.approx(1.0)
    uniform = inclusion_probabilities(np.ones((1, EXPERTS)), TOP_K)
    assert np.allclose(uniform, TOP_K / EXPERTS)


def test_traffic_pair_shares_are_distributions_with_a_per_layer_hot_set() -> None:
    t = traffic(1.2)
    assert np.allclose(t.pair_share.sum(axis=1), 1.0)
    hot = t.pair_share.argmax(axis=1)
    assert len(set(hot.tolist())) > 10  # the hot expert differs between layers


def test_uniform_and_skew_zero_never_change() -> None:
    t = traffic(0.0, drift_interval_s=1.0)
    before = t.pair_share
    assert not t.advance(5.0)
    assert t.pair_share is before and t.epoch == 0


# ------------------------------------------------------------------ sampling


@pytest.mark.parametrize("tokens", [1, 7, 100, 2048, 8192])
def test_routed_pairs_are_conserved_per_layer(tokens: int) -> None:
    """Σ over ranks = tokens × top_k in every layer, in both the exact and Gaussian regimes."""
    q = rank_probabilities(
        traffic(1.2).pair_share, linear_placement(LAYERS, EXPERTS, RANKS, EXPERTS)
    )
    loads = sample_rank_loads(np.random.default_rng(1), tokens * TOP_K, q)
    assert loads.shape == (LAYERS, RANKS)
    assert (loads >= 0).all()
    assert np.allclose(loads.sum(axis=1), tokens * TOP_K, rtol=1e-12)
    if tokens * TOP_K / RANKS < EXACT_MEAN_PAIRS:  # exact multinomial: integer counts
        assert np.array_equal(loads, np.round(loads))


def test_uniform_routing_imbalance_is_near_one_within_the_derived_bound() -> None:
    """Uniform routing: a rank's load in a layer is Binomial(N, 1/R) ≈ N/R + σ·Z with
    σ = sqrt(N/R · (1 − 1/R)). The max of R such loads exceeds the mean by σ·sqrt(2 ln R) in
    expectation (Gaussian maxima), so per layer max/mean ≈ 1 + sqrt(2 ln R · R / N) =: 1 + b.
    Averaged over 58 layers the ratio concentrates; we allow [1, 1 + 2b]. N = 2048 tokens × 8:
    b = 0.116."""
    n = 2048 * TOP_K
    b = math.sqrt(2 * math.log(RANKS) * RANKS / n)
    q = np.full((LAYERS, RANKS), 1.0 / RANKS)
    for seed in range(5):
        loads = sample_rank_loads(np.random.default_rng(seed), n, q)
        ratio = imbalance(loads)
        assert 1.0 < ratio <= 1.0 + 2 * b
        assert ratio == pytest.approx(1.0 + b, rel=0.08)  # and close to the prediction


def test_zipf_imbalance_grows_monotonically_with_skew() -> None:
    placement = linear_placement(LAYERS, EXPERTS, RANKS, EXPERTS)
    n = 4096 * TOP_K
    seen = []
    for skew in (0.0, 0.4, 0.8, 1.2, 1.6):
        q = rank_probabilities(traffic(skew, seed=3).pair_share, placement)
        seen.append(imbalance(sample_rank_loads(np.random.default_rng(4), n, q)))
    assert seen[0] < 1.1
    assert all(b > a for a, b in itertools.pairwise(seen)), seen
    assert seen[-1] > 3.0


def test_gaussian_regime_matches_multinomial_moments() -> None:
    """Above the exact threshold, loads have the multinomial mean and variance."""
    rng = np.random.default_rng(5)
    q = np.tile(np.asarray([0.5, 0.3, 0.2]), (20000, 1))
    n = 200
    loads = sample_rank_loads(rng, n, q)
    assert np.allclose(loads.mean(axis=0), n * q[0], rtol=0.01)
    assert np.allclose(loads.var(axis=0), n * q[0] * (1 - q[0]), rtol=0.05)


# ------------------------------------------------------------------ drift


def test_hot_set_drifts_on_its_interval_and_on_phase_changes() -> None:
    t = traffic(1.2, drift_interval_s=10.0)
    first = t.pair_share
    assert not t.advance(9.99)
    assert t.advance(10.0) and t.epoch == 1
    assert not np.allclose(first, t.pair_share)
    assert not t.advance(19.0)
    assert t.advance(35.0) and t.epoch == 2  # one redraw for the missed boundaries
    spec = RoutingSpec(distribution="zipf", skew=1.2, drift_on_phase_change=True)
    changes = phase_change_times([0.0, 4.0, 6.0, 9.0], [0, 1, 1, 0])
    assert changes.tolist() == [4.0, 9.0]
    t2 = ExpertTraffic(spec, 4, 16, 2, np.random.default_rng(0), phase_changes_s=changes)
    assert not t2.advance(3.0)
    assert t2.advance(4.5) and t2.epoch == 1
    assert not t2.advance(8.0)
    assert t2.advance(9.0) and t2.epoch == 2


# ------------------------------------------------------------------ popularity tables


def test_popularity_table_csv_yaml_and_shape_errors(tmp_path: Path) -> None:
    csv = tmp_path / "pop.csv"
    csv.write_text("e0,e1,e2,e3\n4,3,2,1\n1,1,1,1\n")
    table = load_popularity_table(csv, 2, 4, 2)
    assert table.shape == (2, 4) and table[0, 0] == 4.0
    one_row = tmp_path / "one.yaml"
    one_row.write_text("popularity: [1, 2, 3, 4]\n")
    assert load_popularity_table(one_row, 3, 4, 2).shape == (3, 4)
    with pytest.raises(PopularityTableError, match=r"2×4 .* needs 5 MoE layers .* × 4 experts"):
        load_popularity_table(csv, 5, 4, 2)
    sparse = tmp_path / "sparse.yaml"
    sparse.write_text("- [1, 0, 0, 0]\n")
    with pytest.raises(PopularityTableError, match="row 0 has 1 positive weights; top-2"):
        load_popularity_table(sparse, 1, 4, 2)
    neg = tmp_path / "neg.csv"
    neg.write_text("1,-1,1,1\n")
    with pytest.raises(PopularityTableError, match="finite and >= 0"):
        load_popularity_table(neg, 1, 4, 2)


def test_trace_distribution_uses_the_table() -> None:
    table = np.asarray([[8.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]] * 3)
    spec = RoutingSpec(distribution="trace", path="x.csv")
    t = ExpertTraffic(spec, 3, 8, 2, np.random.default_rng(0), table)
    assert (t.pair_share.argmax(axis=1) == 0).all()  # no permutation before any drift


# ------------------------------------------------------------------ ledger


def test_ledger_rows_add_up_to_the_sampled_rank_loads() -> None:
    placement = linear_placement(2, 8, 4, 8)
    share_full = np.full((2, 8), 1.0 / 8)
    per_slot = placement.slot_loads(share_full)
    q = per_slot.reshape(2, 4, 2).sum(axis=2)
    ledger = ExpertLedger(group=0, ranks=4, num_experts=8, bin_s=1.0)
    slot_rank = placement.slot_rank()
    ledger.set_context(slot_rank, placement.logical, per_slot / q[:, slot_rank])
    loads_a = np.asarray([[10.0, 0.0, 5.0, 1.0], [4.0, 4.0, 4.0, 4.0]])
    loads_b = np.asarray([[1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 8.0, 0.0]])
    ledger.record(0.2, loads_a)
    ledger.record(1.5, loads_b)
    df = ledger.frame()
    per_rank = df.groupby(["bin_start_s", "rank"])["tokens"].sum()
    assert per_rank[(0.0, 0)] == pytest.approx(14.0)  # Σ over layers of rank 0's loads
    assert per_rank[(1.0, 2)] == pytest.approx(9.0)
    first = df[df["bin_start_s"] == 0.0].iloc[0]
    assert first["max_rank_tokens"] == pytest.approx(10.0 + 4.0)
    assert first["mean_rank_tokens"] == pytest.approx((16.0 + 16.0) / 4)
    assert set(df["expert"]) <= set(range(8))
