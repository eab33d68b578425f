"""metrics/group_reduce.py against pandas' group-by, bit for bit, on random groups (property).

The arithmetic reproduced is pandas 3.1's (its reduceat path for sorted codes is new in 3.x);
the run's results no longer depend on the installed pandas, and the golden hashes pin them,
so the comparisons that need that version's fast path run only under it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clustersim.metrics.group_reduce import (
    _sizes,
    first_appearance_codes,
    group_max,
    group_means,
    group_means_of_columns,
    group_quantiles,
    group_sums,
    kahan_walk_gathered,
    kahan_walk_padded,
)

PANDAS_31 = pytest.mark.skipif(
    not pd.__version__.startswith("3.1."), reason="the arithmetic is pandas 3.1's"
)
VALUES = st.sampled_from(["uniform", "spread", "ratios", "signed"])


def random_groups(seed: int, kind: str, sort: bool) -> tuple[np.ndarray, np.ndarray, int]:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 40))
    m = int(rng.integers(1, 2500))
    codes = rng.integers(0, n, m)
    if sort:
        codes = np.sort(codes)
    if kind == "uniform":
        x = rng.random(m)
    elif kind == "spread":
        x = rng.exponential(1.0, m) * 10.0 ** rng.integers(-6, 6, m)
    elif kind == "ratios":
        x = rng.integers(0, 100, m) / rng.integers(1, 300, m)
    else:
        x = rng.normal(0.0, 1e6, m)
    return codes.astype(np.int64), x, n


@PANDAS_31
@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), VALUES, st.booleans())
def test_sums_means_and_max_are_pandas(seed: int, kind: str, sort: bool) -> None:
    codes, x, n = random_groups(seed, kind, sort)
    grouped = pd.Series(x).groupby(codes)
    present = grouped.sum().index.to_numpy()
    sums, counts = group_sums(codes, x, n)
    assert np.array_equal(sums[present], grouped.sum().to_numpy())
    assert np.array_equal(counts[present], grouped.size().to_numpy())
    assert np.array_equal(group_means(codes, x, n)[present], grouped.mean().to_numpy())
    assert np.array_equal(group_max(codes, x, n)[present], grouped.max().to_numpy())
    absent = np.setdiff1d(np.arange(n), present)
    assert np.isnan(group_means(codes, x, n)[absent]).all()
    assert (sums[absent] == 0).all()


@settings(max_examples=60, deadline=None)
@given(
    st.integers(0, 2**32 - 1), VALUES, st.booleans(), st.sampled_from([0.0, 0.5, 0.9, 0.99, 1.0])
)
def test_quantiles_are_pandas(seed: int, kind: str, sort: bool, q: float) -> None:
    codes, x, n = random_groups(seed, kind, sort)
    expected = pd.Series(x).groupby(codes).quantile(q, interpolation="linear")
    (got,) = group_quantiles(codes, x, n, (q,))
    assert np.array_equal(got[expected.index.to_numpy()], expected.to_numpy())


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 30), st.sampled_from([0.0, 0.3, 0.5, 1.0]))
def test_grouped_rows_sorted_group_by_group_match_the_two_argsorts(
    seed: int, n: int, q: float
) -> None:
    """Rows already in code order (a time window per row) are sorted one group at a time:
    the same values, bit for bit (signed zeros and ties included), as the general path."""
    import clustersim.metrics.group_reduce as group_reduce

    rng = np.random.default_rng(seed)
    m = int(rng.integers(n * 32, n * 80))
    codes = np.sort(rng.integers(0, n, m)).astype(np.int64)
    x = rng.choice(np.array([0.0, -0.0, 1.5, 2.0, 1e-300, 7.25]), m) * rng.integers(1, 4, m)
    fast = group_quantiles(codes, x, n, (q,))[0]
    ratio = group_reduce._SEGMENT_SORT_RATIO
    try:
        group_reduce._SEGMENT_SORT_RATIO = 10**9  # the two stable argsorts
        general = group_quantiles(codes, x, n, (q,))[0]
    finally:
        group_reduce._SEGMENT_SORT_RATIO = ratio
    assert np.array_equal(fast.view(np.int64), general.view(np.int64))


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), VALUES, st.booleans(), st.integers(1, 4))
def test_means_of_columns_are_each_columns_means(
    seed: int, kind: str, sort: bool, width: int
) -> None:
    """Several columns walked at once give each column's own means, bit for bit."""
    codes, x, n = random_groups(seed, kind, sort)
    rng = np.random.default_rng(seed + 1)
    columns = [x] + [x * rng.exponential(1.0, len(x)) for _ in range(width - 1)]
    got = group_means_of_columns(codes, columns, n)
    for column, means in zip(columns, got, strict=True):
        assert means.tobytes() == group_means(codes, column, n).tobytes()


def test_unsorted_sums_are_kahan_not_pairwise() -> None:
    """Codes out of order take pandas' Kahan path: [1e16, 1, 1] sums to 1e16 + 2 (a plain
    left-to-right sum gives 1e16), and the few long groups walked in Python agree."""
    codes = np.array([1, 0, 0, 0], dtype=np.int64)
    sums, _ = group_sums(codes, np.array([5.0, 1e16, 1.0, 1.0]), 2)
    assert sums[0] == 1e16 + 2
    rng = np.random.default_rng(3)
    x = rng.normal(0.0, 1e3, 200_000)
    codes = np.zeros(len(x), dtype=np.int64)
    codes[:10] = 1
    expected = pd.Series(x).groupby(codes).sum().to_numpy()
    assert np.array_equal(group_sums(codes, x, 2)[0], expected)


@PANDAS_31
def test_nan_leftovers_take_the_kahan_path() -> None:
    x = np.array([1e16, 1.0, 1.0])
    codes = np.zeros(3, dtype=np.int64)
    assert group_sums(codes, x, 1)[0][0] == pd.Series(x).groupby(codes).sum().iloc[0]
    with_nan = pd.Series([1e16, 1.0, np.nan, 1.0]).groupby(np.zeros(4, dtype=np.int64)).sum()
    assert group_sums(codes, x, 1, had_nan=True)[0][0] == with_nan.iloc[0]


@pytest.mark.parametrize("reduce", [group_sums, group_means, group_max])
def test_no_values_gives_empty_groups(reduce: object) -> None:
    empty = np.empty(0, dtype=np.int64)
    result = reduce(empty, np.empty(0), 3)  # type: ignore[operator]
    values = result[0] if isinstance(result, tuple) else result
    assert len(values) == 3


def test_window_means_of_columns_with_different_gaps() -> None:
    """Columns missing values on different rows are reduced one by one; the same result."""
    from clustersim.metrics.time_bins import per_window_means, per_window_reduce

    rng = np.random.default_rng(5)
    idx = rng.integers(-1, 12, 3000).astype(np.int64)
    a, b = rng.random(3000), rng.random(3000)
    b[::7] = np.nan
    for columns in ([a, a * 3], [a, b]):
        got = per_window_means(idx, columns, 10)
        for column, means in zip(columns, got, strict=True):
            assert means.tobytes() == per_window_reduce(idx, column, 10, "mean").tobytes()


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), VALUES, st.booleans(), st.integers(1, 3))
def test_padded_and_gathered_kahan_walks_agree(
    seed: int, kind: str, skewed: bool, width: int
) -> None:
    """The walk over a (j, group) padded layout and the one gathering the j-th values of
    the groups that have one give the same bits, on even and on skewed group sizes."""
    codes, x, n = random_groups(seed, kind, sort=False)
    if skewed:  # one group holds most values
        codes[: len(codes) * 3 // 4] = 0
    rng = np.random.default_rng(seed + 2)
    values = np.column_stack([x * rng.exponential(1.0, len(x)) for _ in range(width)])
    counts, first = _sizes(codes, n)
    grouped = values[np.argsort(codes, kind="stable")]
    for walked in (grouped, grouped[:, 0]):  # 2-d and 1-d values
        padded = kahan_walk_padded(walked, counts, first)
        assert padded.tobytes() == kahan_walk_gathered(walked, counts, first).tobytes()


@pytest.mark.parametrize("groups, per_group", [(10, 500), (2000, 3)])
def test_padded_walk_lays_out_few_long_and_many_short_groups_alike(
    groups: int, per_group: int
) -> None:
    """Few long groups are copied into the padding a slice each, many short ones through
    index arrays (group_reduce._SEGMENT_SORT_RATIO): the same bits as the gathering walk."""
    rng = np.random.default_rng(groups)
    codes = np.sort(rng.integers(0, groups, groups * per_group))
    x = rng.lognormal(0.0, 2.0, len(codes))
    counts, first = _sizes(codes, groups)
    for values in (x, np.column_stack([x, 3.0 * x])):
        padded = kahan_walk_padded(values, counts, first)
        assert padded.tobytes() == kahan_walk_gathered(values, counts, first).tobytes()


def test_padded_walk_overflowing_to_infinity_zeroes_nan_compensations() -> None:
    """Sums that overflow make NaN compensations, which the walk zeroes: the padded walk
    hands such groups to the gathering walk, so both give the same bits."""
    x = np.array([1.7e308, 1.7e308, -1.0, 2.0, 1.0, 3.0, 1.7e308, -1.7e308, 5.0])
    codes = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2], dtype=np.int64)
    counts = np.bincount(codes).astype(np.int64)
    first = np.array([0, 3, 6], dtype=np.int64)
    with np.errstate(over="ignore", invalid="ignore"):
        padded = kahan_walk_padded(x, counts, first)
        assert padded.tobytes() == kahan_walk_gathered(x, counts, first).tobytes()
    assert not np.isfinite(padded[0]) and padded[1] == 6.0 and padded[2] == 5.0


@pytest.mark.parametrize("seed", range(4))
def test_string_codes_are_pandas_first_appearance_codes(seed: int) -> None:
    """Names repeated as the same objects, as equal strings in distinct objects (read back
    from a file), in long runs (a links table's), one, none: codes and first rows are
    pandas' `factorize` order."""
    rng = np.random.default_rng(seed)
    base = [f"n{int(i)}.g{int(i) % 8}->nvsw0" for i in rng.integers(0, 10**6, 40)]
    pick = rng.integers(0, len(base), 5000)
    same = np.empty(len(pick), dtype=object)
    same[:] = [base[i] for i in pick]
    copies = np.empty(len(pick), dtype=object)
    copies[:] = ["".join(base[i]) for i in pick]  # equal values, distinct objects
    runs = same[np.argsort(pick, kind="stable")]  # long runs of a name (a links table)
    for keys in (same, copies, runs, runs[:1], runs[:0]):
        codes, first = first_appearance_codes(keys)
        expected, uniques = pd.factorize(pd.Series(keys), sort=False)
        assert np.array_equal(codes, expected)
        assert [keys[i] for i in first] == list(uniques)
