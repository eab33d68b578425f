"""Per-group reductions in numpy with pandas' group-by arithmetic, bit for bit (no pandas).

Groups are integer codes 0..n-1, one per value; values are finite float64s. Each function
gives what `pd.Series(values).groupby(codes)` gives for its reduction, in code order, with NaN
for an empty group:

- sums and means: codes in non-decreasing order are summed as pandas 3.1 sums them, with
  `np.add.reduceat` over each run of equal codes; other orders as its Cython group kernels
  sum them, a group's values in row order with Kahan compensation (`y = v − c; t = s + y;
  c = (t − s) − y; s = t`); the mean is that sum / count;
- quantiles: a group's values sorted, `i = q·(m − 1)`, the value at ⌊i⌋ plus (next − value)
  × frac(i) (`interpolation="linear"`), not numpy's percentile arithmetic.

tests/test_group_reduce.py checks each against pandas on random groups.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

# a group with more values than this many times the number of values per group step is
# summed value by value in Python (the vectorised walk costs one numpy pass per value of the
# largest group)
_PYTHON_WALK_RATIO = 64
# values already grouped by code are sorted group by group (one numpy call each) when the
# groups average at least this many values; else two stable argsorts over all of them (the
# padded Kahan walk lays out its groups the same way: a slice each, else index arrays)
_SEGMENT_SORT_RATIO = 32
# the Kahan walk lays the values out as (j-th value, group) when that array holds at most
# this many times as many cells as there are values (groups of similar sizes)
_PADDING_RATIO = 4
# string keys are coded a run of equal keys at a time when the runs are at most this many
# times fewer than the keys
_RUN_CODES_RATIO = 4


def _sizes(codes: I64, n: int) -> tuple[I64, I64]:
    """(rows per code, each code's first position once the rows are grouped by code)."""
    counts = np.bincount(codes, minlength=n)[:n].astype(np.int64)
    first = np.zeros(n, dtype=np.int64)
    np.cumsum(counts[:-1], out=first[1:])
    return counts, first


def first_appearance_codes(keys: np.ndarray) -> tuple[I64, I64]:
    """(code of each key, numbered in order of first appearance; each code's first row), as
    pandas' `groupby(sort=False)` numbers its groups."""
    if keys.dtype == object and len(keys):
        codes = _string_codes(keys)
        if codes is not None:
            return codes
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    rank = np.empty(len(first), dtype=np.int64)
    by_appearance = np.argsort(first, kind="stable")
    rank[by_appearance] = np.arange(len(first), dtype=np.int64)
    return rank[inverse.reshape(-1)], first[by_appearance]


def string_codes(keys: np.ndarray) -> tuple[I64, list[str]] | None:
    """(code of each key, numbered in order of first appearance; the distinct keys in that
    order) when every key is a str, else None — without sorting strings: a column of a few
    names in long runs (a links table's, ordered by link) is coded run by run, any other by
    hashing each key."""
    n = len(keys)
    try:
        changes = np.ones(n, dtype=bool)
        changes[1:] = keys[1:] != keys[:-1]  # (object comparison: identical names at once)
    except (TypeError, ValueError):
        return None
    starts = np.flatnonzero(changes)
    values = keys[starts].tolist() if len(starts) <= n // _RUN_CODES_RATIO else keys.tolist()
    try:
        distinct = list(dict.fromkeys(values))
    except TypeError:  # unhashable
        return None
    if not all(isinstance(v, str) for v in distinct):
        return None
    index = {v: i for i, v in enumerate(distinct)}
    codes = np.fromiter(map(index.__getitem__, values), np.int64, len(values))
    if len(values) < n:  # a code a run
        codes = np.repeat(codes, np.diff(np.append(starts, n)))
    return codes, distinct


def _string_codes(keys: np.ndarray) -> tuple[I64, I64] | None:
    """`first_appearance_codes` of str keys (`string_codes`), else None."""
    coded = string_codes(keys)
    if coded is None:
        return None
    codes = coded[0]
    # codes count up by first appearance: the running maximum rises at each first row
    rises = np.diff(np.maximum.accumulate(codes), prepend=-1) > 0
    return codes, np.flatnonzero(rises).astype(np.int64)


def group_sums(codes: I64, values: F64, n: int, had_nan: bool = False) -> tuple[F64, I64]:
    """(sum of each group's values, values per group); sums of empty groups are 0.

    `had_nan`: the values are what is left of a column with NaNs (pandas then takes its
    Kahan path whatever the order)."""
    counts, first = _sizes(codes, n)
    if len(codes) and not had_nan and not (codes[1:] < codes[:-1]).any():  # pandas' reduceat
        starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
        sums = np.zeros(n, dtype=np.float64)
        sums[codes[starts]] = np.add.reduceat(values, starts)
        return sums, counts
    x = values[np.argsort(codes, kind="stable")]  # grouped by code, rows in order
    sums = np.zeros(n, dtype=np.float64)
    if not len(x):
        return sums, counts
    longest = int(counts.max())
    if longest * _PYTHON_WALK_RATIO > len(x) and longest > 1024:
        for g in np.flatnonzero(counts).tolist():  # few long groups: one Python walk each
            sums[g] = _kahan(x[first[g] : first[g] + counts[g]].tolist())
        return sums, counts
    return _kahan_walk(x, counts, first), counts


def _kahan_walk(x: F64, counts: I64, first: I64) -> F64:
    """Each group's Kahan sum of its values `x` (grouped by code, rows in order), vectorised
    over the groups (and over the columns of 2-d values): the j-th value of every group that
    has one, at once; laid out as (j, group) first when that padding stays small."""
    if int(counts.max(initial=0)) * len(counts) <= _PADDING_RATIO * len(x):
        return kahan_walk_padded(x, counts, first)
    return kahan_walk_gathered(x, counts, first)


def _walk_order(counts: I64) -> tuple[I64, list[int]]:
    """(groups largest first, how many groups have a j-th value for each j): the groups
    with a j-th value are a leading slice of that order."""
    by_size = np.argsort(-counts, kind="stable")
    sizes = counts[by_size]
    longest = int(sizes[0]) if len(sizes) else 0
    return by_size, np.searchsorted(-sizes, -np.arange(longest), side="left").tolist()


def kahan_walk_gathered(x: F64, counts: I64, first: I64) -> F64:
    """`_kahan_walk` gathering the j-th values of the groups that have one, step by step."""
    by_size, active = _walk_order(counts)
    sums = np.zeros((len(counts), *x.shape[1:]), dtype=np.float64)
    comp = np.zeros_like(sums)
    for j, m in enumerate(active):
        g = by_size[:m]
        y = x[first[g] + j] - comp[g]
        s = sums[g]
        t = s + y
        c = (t - s) - y
        c[np.isnan(c)] = 0.0
        comp[g] = c
        sums[g] = t
    return sums


def kahan_walk_padded(x: F64, counts: I64, first: I64) -> F64:
    """`_kahan_walk` over the values laid out as (j, group), groups largest first: the same
    operations on leading slices, without gathers (longest group × groups cells)."""
    k = len(counts)
    by_size, active = _walk_order(counts)
    padded = np.zeros((len(active), k, *x.shape[1:]), dtype=np.float64)
    if k * _SEGMENT_SORT_RATIO <= len(x):  # few long groups: a slice each, no index arrays
        for column, g in enumerate(by_size.tolist()):
            start, size = int(first[g]), int(counts[g])
            padded[:size, column] = x[start : start + size]
    else:
        rank = np.empty(k, dtype=np.int64)
        rank[by_size] = np.arange(k, dtype=np.int64)
        code = np.repeat(np.arange(k, dtype=np.int64), counts)  # each value's group
        padded[np.arange(len(x)) - first[code], rank[code]] = x
        del code, rank  # (the walk's peak memory: the padded values and the sums)
    sums = np.zeros((k, *x.shape[1:]), dtype=np.float64)  # in size order
    comp, y, t = np.zeros_like(sums), np.empty_like(sums), np.empty_like(sums)
    for j, m in enumerate(active):
        s, c, yj, tj = sums[:m], comp[:m], y[:m], t[:m]
        np.subtract(padded[j, :m], c, out=yj)
        np.add(s, yj, out=tj)
        np.subtract(tj, s, out=c)
        np.subtract(c, yj, out=c)  # (a NaN here, from infinities, is zeroed: below)
        s[...] = tj
    if not (np.isfinite(sums).all() and np.isfinite(comp).all()):
        # a NaN compensation carries into every later sum of its group: none was zeroed
        # above unless one shows here, and then the walk that zeroes each one decides
        return kahan_walk_gathered(x, counts, first)
    out = np.empty_like(sums)
    out[by_size] = sums
    return out


def _kahan(values: list[float]) -> float:
    s = c = 0.0
    for v in values:
        y = v - c
        t = s + y
        c = (t - s) - y
        if c != c:
            c = 0.0
        s = t
    return s


def group_means(codes: I64, values: F64, n: int, had_nan: bool = False) -> F64:
    """Mean of each group (its sum / count); NaN for an empty group."""
    sums, counts = group_sums(codes, values, n, had_nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def group_means_of_columns(codes: I64, columns: list[F64], n: int) -> list[F64]:
    """`group_means(codes, column, n)` of each column, the same bits; rows out of code order
    walk pandas' Kahan sums once for all columns (its vectorised walk is a numpy pass per
    value of the largest group, whatever the width)."""
    if len(columns) < 2 or not len(codes) or not (codes[1:] < codes[:-1]).any():
        return [group_means(codes, column, n) for column in columns]
    counts, first = _sizes(codes, n)
    if int(counts.max()) * _PYTHON_WALK_RATIO > len(codes) and int(counts.max()) > 1024:
        return [group_means(codes, column, n) for column in columns]  # the Python walk
    order = np.argsort(codes, kind="stable")
    x = np.empty((len(codes), len(columns)), dtype=np.float64)  # grouped by code, rows in order
    for j, column in enumerate(columns):
        x[:, j] = column[order]
    del order
    sums = _kahan_walk(x, counts, first)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1)[:, None], np.nan)
    return [np.ascontiguousarray(means[:, k]) for k in range(len(columns))]


def group_max(codes: I64, values: F64, n: int) -> F64:
    """Largest value of each group; NaN for an empty group."""
    out = np.full(n, -np.inf)
    np.maximum.at(out, codes, values)
    counts = np.bincount(codes, minlength=n)[:n]
    return np.where(counts > 0, out, np.nan)


def _sorted_by_group(codes: I64, values: F64, counts: I64, first: I64, has: I64) -> F64:
    """The values grouped by code, each group's in ascending order (equal values in row
    order, as stable sorts leave them)."""
    grouped = len(codes) == 0 or not (codes[1:] < codes[:-1]).any()
    if grouped and len(has) * _SEGMENT_SORT_RATIO <= len(values):  # (rows by time window)
        x = values.copy()
        for g in has.tolist():  # a few long runs: sort each in place
            x[first[g] : first[g] + counts[g]].sort(kind="stable")
        return x
    order = np.argsort(values, kind="stable")
    order = order[np.argsort(codes[order], kind="stable")]  # by group, then by value
    return values[order]


def group_quantiles(codes: I64, values: F64, n: int, qs: tuple[float, ...]) -> list[F64]:
    """For each q of `qs` (0 <= q <= 1, linear), the q-quantile of each group; NaN for an
    empty group. The groups are sorted once for all of them."""
    counts, first = _sizes(codes, n)
    has = np.flatnonzero(counts)
    x = _sorted_by_group(codes, values, counts, first, has)
    result = []
    for q in qs:
        out = np.full(n, np.nan)
        if len(has):
            at = q * (counts[has] - 1).astype(np.float64)
            low = first[has] + at.astype(np.int64)  # truncated, as pandas casts
            frac = at % 1
            value = x[low]
            interpolate = frac != 0.0
            nxt = x[np.where(interpolate, low + 1, low)]
            out[has] = np.where(interpolate, value + (nxt - value) * frac, value)
        result.append(out)
    return result
