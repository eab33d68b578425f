"""Prompt / output length samplers: int64 token counts, all >= 1.

Each sampler draws all `n` values in one vectorised call on the Generator passed in.
`sample_lengths(spec, n, rng)` dispatches on a `LengthSpec` from the config schema.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from clustersim.config.schema import (
    EmpiricalLength,
    FixedLength,
    LengthSpec,
    LognormalLength,
    UniformLength,
)

I64 = npt.NDArray[np.int64]


def _check_n(n: int) -> None:
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")


def fixed_lengths(value: int, n: int) -> I64:
    """`n` copies of `value` tokens."""
    _check_n(n)
    if value < 1:
        raise ValueError(f"value must be >= 1, got {value}")
    return np.full(n, value, dtype=np.int64)


def uniform_lengths(low: int, high: int, n: int, rng: np.random.Generator) -> I64:
    """Integers uniform on [low, high], both ends inclusive (tokens)."""
    _check_n(n)
    if not 1 <= low <= high:
        raise ValueError(f"need 1 <= min <= max, got min={low}, max={high}")
    return rng.integers(low, high, size=n, endpoint=True, dtype=np.int64)


def lognormal_lengths(
    median: float,
    sigma: float,
    n: int,
    rng: np.random.Generator,
    low: int = 1,
    high: int | None = None,
) -> I64:
    """round(median · exp(sigma · Z)), Z ~ N(0, 1), clipped to [max(low, 1), high] (tokens).

    `median` is the median of the unclipped distribution (tokens); `sigma` is the standard
    deviation of log(length). Clipping piles the tails onto the bounds; it does not resample.
    """
    _check_n(n)
    if not median > 0:
        raise ValueError(f"median must be > 0, got {median}")
    if sigma < 0:
        raise ValueError(f"sigma must be >= 0, got {sigma}")
    low = max(int(low), 1)
    if high is not None and high < low:
        raise ValueError(f"max ({high}) must be >= min ({low})")
    draws = rng.lognormal(mean=np.log(median), sigma=sigma, size=n)
    # clip in float first so huge draws never overflow the int cast
    upper = float(high) if high is not None else float(np.iinfo(np.int64).max // 2)
    return np.rint(np.clip(draws, low, upper)).astype(np.int64)


def empirical_lengths(
    values: Sequence[int],
    weights: Sequence[float] | None,
    n: int,
    rng: np.random.Generator,
) -> I64:
    """Values drawn with probability weight / Σ weights (uniform when weights is None)."""
    _check_n(n)
    vals = np.asarray(values, dtype=np.int64)
    if vals.ndim != 1 or len(vals) == 0:
        raise ValueError("values must be a non-empty list")
    if (vals < 1).any():
        raise ValueError("values must all be >= 1")
    p = None
    if weights is not None:
        w = np.asarray(weights, dtype=np.float64)
        if w.shape != vals.shape:
            raise ValueError("weights must have as many entries as values")
        if (w < 0).any() or not w.sum() > 0:
            raise ValueError("weights must be >= 0 and not all zero")
        p = w / w.sum()
    idx = rng.choice(len(vals), size=n, p=p)
    return vals[idx]


def sample_lengths(spec: LengthSpec, n: int, rng: np.random.Generator) -> I64:
    """Draw `n` lengths (tokens) from a schema `LengthSpec`."""
    if isinstance(spec, FixedLength):
        return fixed_lengths(spec.value, n)
    if isinstance(spec, UniformLength):
        return uniform_lengths(spec.min, spec.max, n, rng)
    if isinstance(spec, LognormalLength):
        return lognormal_lengths(spec.median, spec.sigma, n, rng, spec.min, spec.max)
    if isinstance(spec, EmpiricalLength):
        return empirical_lengths(spec.values, spec.weights, n, rng)
    raise TypeError(f"unknown length spec {type(spec).__name__}")


def mean_length(spec: LengthSpec) -> float:
    """Mean of the (unclipped, for lognormal) distribution in tokens, for sizing estimates."""
    if isinstance(spec, FixedLength):
        return float(spec.value)
    if isinstance(spec, UniformLength):
        return (spec.min + spec.max) / 2.0
    if isinstance(spec, LognormalLength):
        mean = spec.median * float(np.exp(spec.sigma**2 / 2.0))
        return min(max(mean, spec.min), spec.max) if spec.max is not None else max(mean, spec.min)
    if isinstance(spec, EmpiricalLength):
        vals = np.asarray(spec.values, dtype=np.float64)
        w = np.ones_like(vals) if spec.weights is None else np.asarray(spec.weights, np.float64)
        return float((vals * w).sum() / w.sum())
    raise TypeError(f"unknown length spec {type(spec).__name__}")
