"""numpy's `percentile(x, q, method="linear")`, bit for bit, without loading numpy.ma.

`np.percentile` imports numpy.ma on its first call (≈ 6 ms of a run's start-up). This is its
arithmetic for a 1-d float64 sample with no NaN (numpy 2.x, lib/_function_base_impl.py):
virtual index v = (n − 1) · q/100; neighbours ⌊v⌋ and ⌊v⌋ + 1, both the last value when
v ≥ n − 1 (index −1, so the weight is v + 1); weight γ = v − lower index; `_lerp`:
a + (b − a)·γ, or b − (b − a)·(1 − γ) where γ ≥ 0.5. Python floats are IEEE doubles and each
operation rounds once, as numpy's ufuncs do, so the results are the same bits
(tests/test_linear_percentile.py compares them). The neighbours are order statistics, the
same values whichever positions a partition also places, except where 0.0 and −0.0 (equal,
different bits) both occur: then each q is partitioned on its own, at the positions numpy
partitions it at, as `np.percentile(x, q)` called once a q does; otherwise one partition
places every q's neighbours.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt


def linear_percentiles(x: npt.NDArray[np.float64], qs: Sequence[float]) -> list[float]:
    """`float(np.percentile(x, q, method="linear"))` for each q of `qs` (0 ≤ q ≤ 100);
    `x`: a non-empty 1-d float64 array without NaN (it is not modified)."""
    n = len(x)
    if n == 0:
        raise ValueError("percentiles of an empty sample")
    spots = [_neighbours(n, q) for q in qs]
    if len(spots) > 1 and not _has_signed_zeros(x):
        ordered = np.partition(x, sorted({0, -1, *(i for lo, hi, _ in spots for i in (lo, hi))}))
        return [_lerp(float(ordered[lo]), float(ordered[hi]), gamma) for lo, hi, gamma in spots]
    out = []
    for lo, hi, gamma in spots:
        # partitioned as numpy partitions its copy, at the same positions: values that
        # compare equal (0.0 and −0.0) land where they land there
        ordered = np.partition(x, sorted({0, -1, lo, hi}))
        out.append(_lerp(float(ordered[lo]), float(ordered[hi]), gamma))
    return out


def _neighbours(n: int, q: float) -> tuple[int, int, float]:
    """(lower index, upper index, weight γ) of percentile q of n sorted values."""
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile {q} outside [0, 100]")
    v = (n - 1) * (q / 100)
    if v >= n - 1:
        return -1, -1, v + 1
    lo = math.floor(v)
    return lo, lo + 1, v - lo


def _lerp(a: float, b: float, gamma: float) -> float:
    """numpy's `_lerp(a, b, γ)`: a + (b − a)·γ, or b − (b − a)·(1 − γ) where γ ≥ 0.5."""
    diff = b - a
    if gamma >= 0.5:
        return b - diff * (1 - gamma)
    return a + diff * gamma


def _has_signed_zeros(x: npt.NDArray[np.float64]) -> bool:
    """Whether x holds both 0.0 and −0.0 (values equal in comparisons, not in bits)."""
    zeros = x[x == 0.0]
    if not len(zeros):
        return False
    negative = np.signbit(zeros)
    return bool(negative.any() and not negative.all())
