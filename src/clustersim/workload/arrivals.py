"""Arrival-time generators (numpy only, no simpy).

Every generator returns a sorted float64 array of arrival times in seconds from t = 0 and takes
one of two horizons (exactly one must be given):

* ``n``: exactly ``n`` arrivals;
* ``duration_s``: every arrival with ``t < duration_s`` (generation runs until ``t >= duration_s``).

Random draws come from the numpy Generator passed in. Inter-arrival gaps are drawn in blocks
sized from the expected count, cumulated with ``cumsum`` and concatenated until enough, so
there is no per-request Python loop. Formulas are in docs/workloads.md.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

_MIN_BLOCK = 64  # smallest block of gaps / dwell periods drawn at once
_MAX_BLOCK = 1 << 22  # largest block (4 Mi draws, 32 MiB of float64)


@dataclass(frozen=True, eq=False)
class StateTimeline:
    """Piecewise-constant MMPP state over time, for shading bursts in plots.

    Segment i covers [start_s[i], start_s[i + 1]) (the last one ends at `end_s`) and is spent
    in state `state[i]`, whose Poisson rate is `rates_rps[state[i]]` (requests/s).
    """

    start_s: F64  # float64[m], start of each segment (s); start_s[0] == 0
    state: I64  # int64[m], state index of each segment
    end_s: float  # end of the last segment (s)
    rates_rps: tuple[float, ...]  # Poisson rate of each state (requests/s)

    @property
    def segment_rate_rps(self) -> F64:
        """Rate of each segment (requests/s), float64[m]."""
        return np.asarray(self.rates_rps, dtype=np.float64)[self.state]

    def state_at(self, t_s: npt.ArrayLike) -> I64:
        """State index in force at time(s) `t_s` (s); times past `end_s` get the last state."""
        idx = np.searchsorted(self.start_s, np.asarray(t_s, dtype=np.float64), side="right") - 1
        return self.state[np.clip(idx, 0, len(self.state) - 1)]


def check_horizon(n: int | None, duration_s: float | None) -> None:
    """Raise ValueError unless exactly one of `n` (>= 0) and `duration_s` (> 0) is given."""
    if (n is None) == (duration_s is None):
        raise ValueError("give exactly one of n or duration_s")
    if n is not None and n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if duration_s is not None and not duration_s > 0:
        raise ValueError(f"duration_s must be > 0, got {duration_s}")


def _block_size(expected: float, cv: float) -> int:
    """Draws per block: expected count + 6 standard deviations (count sd ≈ cv·√expected)."""
    size = expected + 6.0 * cv * math.sqrt(max(expected, 1.0)) + _MIN_BLOCK
    return int(min(max(size, _MIN_BLOCK), _MAX_BLOCK))


def _renewal(
    draw_gaps: Callable[[int], F64],
    mean_gap_s: float,
    gap_cv: float,
    n: int | None,
    duration_s: float | None,
) -> F64:
    """Arrival times of a renewal process whose gaps (s) come from `draw_gaps(size)`."""
    check_horizon(n, duration_s)
    if n is not None:
        return np.cumsum(draw_gaps(n), dtype=np.float64)
    assert duration_s is not None
    block = _block_size(duration_s / mean_gap_s, gap_cv)
    chunks: list[F64] = []
    t0 = 0.0  # time of the last arrival drawn so far (s)
    while True:
        times = t0 + np.cumsum(draw_gaps(block), dtype=np.float64)
        if times[-1] >= duration_s:
            chunks.append(times[: np.searchsorted(times, duration_s, side="left")])
            break
        chunks.append(times)
        t0 = float(times[-1])
    return np.concatenate(chunks)


def poisson_arrivals(
    rate_rps: float,
    rng: np.random.Generator,
    *,
    n: int | None = None,
    duration_s: float | None = None,
) -> F64:
    """Poisson process: exponential gaps with mean 1 / rate_rps (s)."""
    if not rate_rps > 0:
        raise ValueError(f"rate_rps must be > 0, got {rate_rps}")
    mean_gap = 1.0 / rate_rps

    def draw(size: int) -> F64:
        return rng.exponential(mean_gap, size)

    return _renewal(draw, mean_gap, 1.0, n, duration_s)


def gamma_arrivals(
    rate_rps: float,
    cv: float,
    rng: np.random.Generator,
    *,
    n: int | None = None,
    duration_s: float | None = None,
) -> F64:
    """Gamma renewal process: gaps ~ Gamma(shape 1/cv², scale cv²/rate), mean 1/rate, CV cv.

    cv = 1 is Poisson; cv > 1 is burstier, cv < 1 more regular.
    """
    if not rate_rps > 0:
        raise ValueError(f"rate_rps must be > 0, got {rate_rps}")
    if not cv > 0:
        raise ValueError(f"cv must be > 0, got {cv}")
    shape = 1.0 / (cv * cv)
    mean_gap = 1.0 / rate_rps
    scale = mean_gap / shape  # s; shape·scale = mean gap

    def draw(size: int) -> F64:
        return rng.gamma(shape, scale, size)

    return _renewal(draw, mean_gap, cv, n, duration_s)


def mmpp_arrivals(
    rates_rps: list[float] | tuple[float, ...],
    mean_dwell_s: list[float] | tuple[float, ...],
    rng: np.random.Generator,
    *,
    n: int | None = None,
    duration_s: float | None = None,
) -> tuple[F64, StateTimeline]:
    """Markov-modulated Poisson process cycling through states 0, 1, …, K−1, 0, ….

    The process starts in state 0 at t = 0. Each visit to state k lasts an exponential time with
    mean mean_dwell_s[k] (s), during which requests arrive as a Poisson process of rate
    rates_rps[k]. Long-run rate = Σ rate_k·dwell_k / Σ dwell_k.

    Vectorised by dwell periods: a block of periods gets exponential lengths d, Poisson counts
    with mean rate·d, and that many uniform points inside each period (a Poisson process
    conditioned on its count is uniform). Returns (arrival times, state timeline).
    """
    check_horizon(n, duration_s)
    rates = np.asarray(rates_rps, dtype=np.float64)
    dwell = np.asarray(mean_dwell_s, dtype=np.float64)
    if rates.ndim != 1 or rates.shape != dwell.shape or len(rates) < 1:
        raise ValueError("rates_rps and mean_dwell_s must be equal-length non-empty lists")
    if (rates < 0).any() or not rates.max() > 0:
        raise ValueError(f"rates_rps must be >= 0 with at least one > 0, got {list(rates)}")
    if not (dwell > 0).all():
        raise ValueError(f"mean_dwell_s must all be > 0, got {list(dwell)}")
    n_states = len(rates)
    cycle_s = float(dwell.sum())  # mean duration of one pass through all states (s)
    per_cycle = float((rates * dwell).sum())  # mean arrivals per pass
    cycles = n / per_cycle if n is not None else (duration_s or 0.0) / cycle_s
    periods_per_block = n_states * (int(min(cycles * 1.25, _MAX_BLOCK / n_states)) + 4)

    times_chunks: list[F64] = []
    start_chunks: list[F64] = []
    state_chunks: list[I64] = []
    t0 = 0.0  # start of the next period (s)
    first_state = 0
    count = 0
    while True:
        state = (first_state + np.arange(periods_per_block, dtype=np.int64)) % n_states
        length = rng.exponential(dwell[state])  # period lengths (s)
        ends = t0 + np.cumsum(length)
        starts = np.concatenate(([t0], ends[:-1]))
        counts = rng.poisson(rates[state] * length)
        offsets = rng.random(int(counts.sum())) * np.repeat(length, counts)
        # periods are disjoint and in order, so one sort orders the whole block
        times_chunks.append(np.sort(np.repeat(starts, counts) + offsets))
        start_chunks.append(starts)
        state_chunks.append(state)
        count += int(counts.sum())
        t0 = float(ends[-1])
        first_state = int((state[-1] + 1) % n_states)
        if (n is not None and count >= n) or (duration_s is not None and t0 >= duration_s):
            break

    times = np.concatenate(times_chunks)
    starts_all = np.concatenate(start_chunks)
    states_all = np.concatenate(state_chunks)
    ends_all = np.concatenate((starts_all[1:], [t0]))
    if n is not None:
        times = times[:n]
        last_t = float(times[-1]) if n > 0 else 0.0
        keep = int(np.searchsorted(starts_all, last_t, side="right"))
    else:
        assert duration_s is not None
        times = times[: np.searchsorted(times, duration_s, side="left")]
        keep = int(np.searchsorted(starts_all, duration_s, side="left"))
    keep = max(keep, 1)
    timeline = StateTimeline(
        start_s=starts_all[:keep],
        state=states_all[:keep],
        end_s=float(ends_all[keep - 1]),
        rates_rps=tuple(float(r) for r in rates),
    )
    return times, timeline


def burst_arrivals(n: int) -> F64:
    """All `n` requests at t = 0 (a max-throughput benchmark)."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    return np.zeros(n, dtype=np.float64)


def closed_arrivals(n: int) -> F64:
    """Closed loop: arrival times are decided by the simulator, so all NaN."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    return np.full(n, np.nan, dtype=np.float64)


def trace_arrivals(
    timestamps_s: npt.ArrayLike,
    time_scale: float = 1.0,
    *,
    n: int | None = None,
    duration_s: float | None = None,
) -> F64:
    """Replay trace timestamps (s): shifted to start at 0, gaps multiplied by `time_scale`.

    * ``n`` <= rows: the first n rows.
    * ``n`` > rows: the trace is cycled; each repetition is offset by one period
      P = span · rows / (rows − 1) (the span plus one mean gap), so repetition k of row i
      arrives at k·P + t_i. Row index of request j is j mod rows.
    * ``duration_s``: rows with scaled time < duration_s; stops at the trace end (no cycling).
    """
    check_horizon(n, duration_s)
    if not time_scale > 0:
        raise ValueError(f"time_scale must be > 0, got {time_scale}")
    ts = np.asarray(timestamps_s, dtype=np.float64)
    if ts.ndim != 1 or len(ts) == 0:
        raise ValueError("trace has no rows")
    if (np.diff(ts) < 0).any():
        raise ValueError("trace timestamps must be sorted")
    base = (ts - ts[0]) * time_scale  # s from the first row
    rows = len(base)
    if duration_s is not None:
        return base[: np.searchsorted(base, duration_s, side="left")]
    assert n is not None
    if n <= rows:
        return base[:n].copy()
    if rows < 2:
        raise ValueError(f"a trace of {rows} row cannot be cycled to {n} requests")
    period_s = float(base[-1]) * rows / (rows - 1)
    j = np.arange(n, dtype=np.int64)
    return (j // rows) * period_s + base[j % rows]
