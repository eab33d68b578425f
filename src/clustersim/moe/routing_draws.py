"""Per-step routing draws of an EP group (docs/moe.md): per-rank loads, one step or several.

Sampling. A step routes N = T · k pairs per layer (T tokens entering the EP group). What sets
step time is the load per EP rank, so the sampler draws per-rank loads directly, for all layers
at once: with q[l, r] = Σ over rank r's physical slots of p / (replicas of that expert),
loads[l] ~ Multinomial(N, q[l]). Exact multinomial draws are used when the mean load per rank
is below EXACT_MEAN_PAIRS; above it, a Gaussian with the multinomial's exact mean and
covariance N(diag q − q qᵀ): x = z − q Σz with z_r ~ N(0, N q_r) — rows sum to N exactly
(when a cell is negative, the step's cells are clipped at 0 and each row rescaled to N).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]

# Below this mean load per rank (pairs) the per-rank loads are drawn exactly (multinomial,
# ~100 µs for 58 layers × 32 ranks); at or above it with the moment-matched Gaussian (~35 µs;
# its skewness error ~ 1/sqrt(mean) ≤ 0.5, a cell goes negative with probability Φ(−2) ≈ 2 %).
EXACT_MEAN_PAIRS = 4.0


def sample_rank_loads(rng: np.random.Generator, pairs: int, q: F64) -> F64:
    """Routed (token, expert) pairs per (layer, rank) for one step (module docstring).

    `pairs` = N = tokens × top_k routed in every layer; `q` (layers, ranks) the probability a
    pair lands on each rank (rows sum to 1). Every returned row sums to N.
    """
    out: F64 = sample_rank_loads_steps(rng, pairs, q, 1)[0]
    return out


def sample_rank_loads_steps(rng: np.random.Generator, pairs: int, q: F64, steps: int) -> F64:
    """`steps` steps' loads in one call, (steps, layers, ranks): equal, bit for bit and in
    the stream's state after it, to `steps` draws of one step (numpy fills a draw of several
    steps as it fills one after another: the multinomial row by row, the normals element by
    element; the decode leap relies on it, tests/test_routed_leap.py checks it)."""
    layers, ranks = q.shape
    if pairs <= 0:
        return np.zeros((steps, layers, ranks))
    if ranks == 1:
        return np.full((steps, layers, 1), float(pairs))
    if pairs / ranks < EXACT_MEAN_PAIRS:
        out: F64 = rng.multinomial(pairs, q, size=(steps, layers)).astype(np.float64)
        return out
    n = float(pairs)
    z = rng.standard_normal((steps, layers, ranks)) * np.sqrt(n * q)
    load = n * q + (z - q * z.sum(axis=2, keepdims=True))
    negative = (load < 0).any(axis=(1, 2))  # the steps a single draw would clip and rescale
    if negative.any():
        clipped = np.maximum(load[negative], 0.0)
        clipped *= n / clipped.sum(axis=2, keepdims=True)
        load[negative] = clipped
    return load
