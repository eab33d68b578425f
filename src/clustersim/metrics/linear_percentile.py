"""numpy's `percentile(x, q, method="linear")`, bit for bit, without loading numpy.ma.

`np.percentile` imports numpy.ma on its first call (≈ 6 ms of a run's start-up). This is its
arithmetic for a 1-d float64 sample with no NaN (numpy 2.x, lib/_function_base_impl.py):
virtual index v = (n − 1) · q/100; neighbours ⌊v⌋ and ⌊v⌋ + 1, both the last value when
v ≥ n − 1 (index −1, so the weight is v + 1); weight γ = v − lower index; `_lerp`:
a + (b − a)·γ, or b − (b − a)·(1 − γ) where γ ≥ 0.5. Python floats are IEEE doubles and each
operation rounds once, as numpy's ufuncs do, so the results are the same bits
(tests/test_linear_percentile.py compares them). Each q is partitioned on its own, at the
positions numpy partitions it at, as `np.percentile(x, q)` called once a q does.
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
    out = []
    for q in qs:
        if not 0.0 <= q <= 100.0:
            raise ValueError(f"percentile {q} outside [0, 100]")
        v = (n - 1) * (q / 100)
        if v >= n - 1:
            lo = hi = -1
            gamma = v + 1
        else:
            lo = math.floor(v)
            hi, gamma = lo + 1, v - lo
        # partitioned as numpy partitions its copy, at the same positions: values that
        # compare equal (0.0 and −0.0) land where they land there
        ordered = np.partition(x, sorted({0, -1, lo, hi}))
        a, b = float(ordered[lo]), float(ordered[hi])
        diff = b - a
        value = a + diff * gamma
        if gamma >= 0.5:
            value = b - diff * (1 - gamma)
        out.append(value)
    return out
