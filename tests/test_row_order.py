"""metrics/recorder.py stable_row_order is np.lexsort((lane, stage, replica, start_s))."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from clustersim.metrics.recorder import stable_row_order


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(0, 300),
    distinct_starts=st.integers(1, 20),
    seed=st.integers(0, 2**32 - 1),
    with_nan=st.booleans(),
)
def test_equals_lexsort_with_many_ties(
    n: int, distinct_starts: int, seed: int, with_nan: bool
) -> None:
    rng = np.random.default_rng(seed)
    start = rng.integers(0, distinct_starts, n).astype(np.float64) * 0.125
    if with_nan and n:
        start[rng.integers(0, n)] = np.nan
    replica, stage, lane = (rng.integers(0, 3, n).astype(np.float64) for _ in range(3))
    got = stable_row_order(start, replica, stage, lane)
    assert np.array_equal(got, np.lexsort((lane, stage, replica, start)))


def test_ties_broken_by_replica_stage_lane_then_position() -> None:
    start = np.array([1.0, 0.5, 1.0, 1.0, 0.5])
    replica = np.array([1.0, 0.0, 0.0, 0.0, 0.0])
    stage = np.array([0.0, 1.0, 1.0, 1.0, 0.0])
    lane = np.zeros(5)
    assert stable_row_order(start, replica, stage, lane).tolist() == [4, 1, 2, 3, 0]
