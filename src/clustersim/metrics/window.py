"""The measurement window of a run (pure; docs/results.md "Measured window").

A run is measured over the window [warmup_s, end of arrivals]:

- `start_s` = `horizon.warmup_s`;
- `end_s` = the end of arrivals: `horizon.duration_s` for a duration horizon, else the last
  arrival time (a request-count horizon, a trace, a closed loop's last issue).

The requests *measured* are those arriving inside the window (every arrival is at or before the
end of arrivals, so: `arrival_s >= warmup_s`). The drain after the last arrival is simulated —
those requests' latencies count — but its time is not: throughput and goodput are per second of
the window, and throughput counts the tokens produced inside it (by any request, warm-up
arrivals included), read off each request's timestamps:

- output tokens: the first at `first_token_s`, the other `output_tokens − 1` spread evenly over
  (`first_token_s`, `finish_s`] — the share of that interval inside the window is counted;
- input tokens: spread evenly over the prefill [`arrival_s + queue_s`, `first_token_s`] (a
  point at `first_token_s` when that interval is empty).

A window of zero width (every arrival at one instant: a `burst` max-throughput benchmark, or a
warm-up past the last arrival) cannot give a rate; it falls back to basis `makespan`: the window
is first measured arrival → last completion, and throughput counts the measured requests'
tokens — the trtllm-bench figure, reported for every run as `throughput.harness_*`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from clustersim.metrics.table import Table, as_table, floats

if TYPE_CHECKING:
    import pandas as pd

BASIS_ARRIVALS = "arrivals"  # [warmup, end of arrivals]
BASIS_MAKESPAN = "makespan"  # first measured arrival → last measured completion


@dataclass(frozen=True)
class Window:
    """Seconds of simulated time; `basis` says which definition gave them."""

    start_s: float
    end_s: float
    basis: str

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s

    def as_dict(self) -> dict[str, float | str]:
        return {
            "start_s": self.start_s,
            "end_s": self.end_s,
            "duration_s": self.duration_s,
            "basis": self.basis,
        }


def arrivals_end_s(requests: Table | pd.DataFrame, duration_s: float | None) -> float | None:
    """End of arrivals (s): the duration horizon, else the last finite arrival; None: none."""
    if duration_s is not None:
        return float(duration_s)
    arrival = floats(as_table(requests), "arrival_s")
    arrival = arrival[np.isfinite(arrival)]
    return float(arrival.max()) if len(arrival) else None


def makespan_s(req: Table | pd.DataFrame, done: np.ndarray) -> tuple[float, float] | None:
    """(first measured arrival, last completion) in seconds; None without a completion."""
    table = as_table(req)
    finish = floats(table, "finish_s")[done]
    if len(finish) == 0:
        return None
    return float(floats(table, "arrival_s").min()), float(finish.max())


def measurement_window(
    req: Table | pd.DataFrame, done: np.ndarray, warmup_s: float, end_s: float | None
) -> Window | None:
    """The window of measured requests `req` (completed mask `done`); None when undefined.

    `end_s`: the end of arrivals (arrivals_end_s); a window of zero width falls back to the
    makespan basis."""
    if end_s is not None and end_s > warmup_s:
        return Window(float(warmup_s), float(end_s), BASIS_ARRIVALS)
    span = makespan_s(req, done)
    if span is None:
        return None
    return Window(span[0], span[1], BASIS_MAKESPAN)


def overlap_share(t0: np.ndarray, t1: np.ndarray, window: Window) -> np.ndarray:
    """Share of each interval [t0, t1] inside the window (a zero-length interval: 1 when its
    point lies in [start, end), else 0); NaN times give 0."""
    length = t1 - t0
    lo = np.maximum(t0, window.start_s)
    hi = np.minimum(t1, window.end_s)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.clip(hi - lo, 0.0, None) / np.where(length > 0, length, 1.0)
    point = (t0 >= window.start_s) & (t0 < window.end_s)
    share = np.where(length > 0, share, point.astype(float))
    return np.nan_to_num(share, nan=0.0)


def tokens_in_window(requests: Table | pd.DataFrame, window: Window) -> tuple[float, float]:
    """(input, output) tokens produced inside the window by every request (tokens)."""
    table = as_table(requests)
    first = floats(table, "first_token_s")
    finish = floats(table, "finish_s")
    out = floats(table, "output_tokens")
    prompt = floats(table, "prompt_tokens")
    scheduled = floats(table, "arrival_s") + floats(table, "queue_s")
    scheduled = np.where(np.isfinite(scheduled), scheduled, first)
    started = np.isfinite(first)
    first_in = started & (first >= window.start_s) & (first < window.end_s)
    decode_share = overlap_share(first, np.where(np.isfinite(finish), finish, first), window)
    # a 1-token output has no decode interval: its only token is the first
    output = first_in.astype(float) + np.where(out > 1, (out - 1.0) * decode_share, 0.0)
    output = np.where(started & np.isfinite(finish), output, 0.0)
    prefill_share = overlap_share(np.minimum(scheduled, first), first, window)
    inputs = np.where(started, prompt * prefill_share, 0.0)
    return float(inputs.sum()), float(output.sum())
