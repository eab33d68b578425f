"""Speculative decoding / MTP: acceptance maths, draws against theory, step shapes."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats

from clustersim.serving.speculative import (
    AcceptanceProfile,
    SpeculativeParams,
    VerifyShape,
    mean_tokens_closed_form,
)


@pytest.mark.parametrize(
    ("rate", "k"), [(0.0, 3), (0.3, 1), (0.6, 2), (0.8, 3), (0.9, 5), (0.95, 8), (1.0, 4)]
)
def test_simulated_mean_matches_closed_form(rate: float, k: int) -> None:
    """Mean tokens per verify step = (1 − a^(k+1)) / (1 − a), within 5 standard errors."""
    prof = AcceptanceProfile.single_rate(rate, k)
    n = 200_000
    draws = prof.draw_tokens(n, np.random.default_rng(1234 + k))
    expected = mean_tokens_closed_form(rate, k)
    assert prof.mean_tokens_per_step == pytest.approx(expected, rel=1e-12)
    se = math.sqrt(prof.variance_tokens() / n)
    assert abs(draws.mean() - expected) <= 5 * se + 1e-12
    assert draws.min() >= 1 and draws.max() <= k + 1


def test_closed_form_values() -> None:
    assert mean_tokens_closed_form(0.5, 1) == pytest.approx(1.5)
    assert mean_tokens_closed_form(0.5, 2) == pytest.approx(1.75)
    assert mean_tokens_closed_form(1.0, 3) == 4.0
    assert mean_tokens_closed_form(0.0, 3) == 1.0
    with pytest.raises(ValueError):
        mean_tokens_closed_form(1.5, 2)


def test_per_position_profile_distribution_by_chi_square() -> None:
    prof = AcceptanceProfile(np.array([0.9, 0.7, 0.5]))
    pmf = prof.distribution()
    assert pmf == pytest.approx([0.1, 0.9 * 0.3, 0.9 * 0.7 * 0.5, 0.9 * 0.7 * 0.5])
    assert prof.mean_tokens_per_step == pytest.approx(1 + 0.9 + 0.63 + 0.315)
    draws = prof.draw_accepted(100_000, np.random.default_rng(7))
    observed = np.bincount(draws, minlength=4)
    assert stats.chisquare(observed, pmf * len(draws)).pvalue > 1e-4


def test_draws_are_deterministic_per_stream_and_shaped() -> None:
    prof = AcceptanceProfile.single_rate(0.7, 3)
    a = prof.draw_tokens((4, 5), np.random.default_rng(3))
    b = prof.draw_tokens((4, 5), np.random.default_rng(3))
    assert a.shape == (4, 5) and a.dtype == np.int64 and (a == b).all()


def test_a_rejected_position_ends_the_run() -> None:
    prof = AcceptanceProfile(np.array([1.0, 0.0, 1.0]))
    assert (prof.draw_accepted(1000, np.random.default_rng(0)) == 1).all()
    assert prof.distribution() == pytest.approx([0, 1, 0, 0])


@given(st.lists(st.floats(0, 1), min_size=1, max_size=8))
def test_distribution_is_a_pmf_with_the_survival_mean(ps: list[float]) -> None:
    prof = AcceptanceProfile(np.array(ps))
    pmf = prof.distribution()
    assert (pmf >= -1e-12).all() and pmf.sum() == pytest.approx(1.0)
    assert (np.arange(len(pmf)) * pmf).sum() == pytest.approx(prof.mean_accepted)
    assert 0.0 <= prof.acceptance_rate <= 1.0


def test_verify_shape_and_drafter_costs() -> None:
    shape = VerifyShape(num_seqs=32, k=3)
    assert (shape.query_tokens_per_seq, shape.query_tokens, shape.lookahead_slots) == (4, 128, 3)
    mtp = SpeculativeParams("mtp", 2, 0.8).drafter()
    assert (mtp.runs_per_step, mtp.extra_layers, mtp.shares_target_head) == (2, 1, True)
    assert mtp.query_tokens_per_step(10) == 20
    eagle = SpeculativeParams("eagle", 4, (0.8, 0.7, 0.6, 0.5)).drafter()
    assert eagle.extra_layers == 1 and eagle.runs_per_step == 4
    draft = SpeculativeParams("draft_model", 5, 0.7, draft_model="llama-3.2-1b").drafter()
    assert (draft.extra_layers, draft.draft_model, draft.shares_target_head) == (
        None,
        "llama-3.2-1b",
        False,
    )
    assert SpeculativeParams("mtp", 3, 0.8).verify_shape(8).query_tokens == 32


def test_params_profile_and_validation() -> None:
    p = SpeculativeParams("mtp", 3, 0.8).profile()
    assert p.mean_tokens_per_step == pytest.approx(mean_tokens_closed_form(0.8, 3))
    q = SpeculativeParams("eagle", 2, (0.9, 0.6)).profile()
    assert q.k == 2 and q.survival == pytest.approx([0.9, 0.54])
    with pytest.raises(ValueError, match="num_tokens=3"):
        SpeculativeParams("mtp", 3, (0.9, 0.8))
    with pytest.raises(ValueError, match="num_tokens"):
        SpeculativeParams("mtp", 0, 0.8)
    with pytest.raises(ValueError, match="draft_model"):
        SpeculativeParams("draft_model", 2, 0.8)
    with pytest.raises(ValueError, match="draft_model"):
        SpeculativeParams("mtp", 2, 0.8, draft_model="x")
    with pytest.raises(ValueError, match=r"acceptance\[1\]"):
        SpeculativeParams("eagle", 2, (0.9, 1.2))
    with pytest.raises(ValueError, match="method"):
        SpeculativeParams("medusa", 2, 0.8)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        AcceptanceProfile(np.array([]))
