"""Resource estimate of a run, checked at load before anything is built or simulated.

A mistyped number (a rate of 1e8, a 1e10 s horizon, a 1e-9 s time bin, a million-GPU
topology, a million-point sweep) would otherwise run for minutes and then exhaust memory. Each
quantity below is estimated from the resolved experiment and compared with a stated limit; a
run beyond one is refused with the numbers (exit 2). Every limit can be raised in the
experiment's `limits:` block or on the command line, e.g. ``--set limits.max_requests=50000000``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from math import prod

from clustersim.config.schema import Experiment, MMPPArrival


@dataclass(frozen=True)
class Excess:
    """One estimate over its limit: the key to change, the limit's key and the numbers."""

    key: str  # key path of the experiment that drives the estimate
    limit_key: str  # the `limits.` key that raises the limit
    what: str  # e.g. "requests"
    estimate: float
    limit: int

    def message(self) -> str:
        return (
            f"about {_count(self.estimate)} {self.what}, above the limit of {self.limit:,} "
            f"(lower it, or raise the limit with --set limits.{self.limit_key}=N)"
        )


def _count(value: float) -> str:
    """A count for a message: digits with separators, or an exponent when astronomical."""
    return f"{value:,.0f}" if value < 1e15 else f"{value:.3g}"


def expected_requests(exp: Experiment) -> tuple[float, str] | None:
    """(requests the horizon generates on average, the key that sets it); None when only a
    trace or a closed loop bounds it."""
    if exp.horizon.requests is not None:
        return float(exp.horizon.requests), "horizon.requests"
    duration = exp.horizon.duration_s
    arrival = exp.workload.arrival
    rate = getattr(arrival, "rate_rps", None)
    if rate is None and arrival.process == "mmpp":
        rate = max(getattr(arrival, "rates_rps", [0.0]))  # an upper bound on the mean
    if duration is None or rate is None:
        return None
    return float(rate) * duration, "horizon.duration_s"


def mean_rate(exp: Experiment) -> float | None:
    """Long-run arrival rate (requests/s) of an open arrival process; None for burst, closed
    and trace arrivals."""
    arrival = exp.workload.arrival
    rate = getattr(arrival, "rate_rps", None)
    if rate is not None:
        return float(rate)
    if isinstance(arrival, MMPPArrival):
        pairs = zip(arrival.rates_rps, arrival.mean_dwell_s, strict=True)
        return sum(r * d for r, d in pairs) / sum(arrival.mean_dwell_s)
    return None


# what sets a run's span → how the time-bin excess explains it
_SPAN_SOURCES = {
    "horizon.duration_s": "time bins (horizon.duration_s / output.time_bin_s)",
    "workload.arrival": "time bins (horizon.requests / the mean arrival rate / output.time_bin_s)",
    "workload.trace.time_scale": "time bins (the replayed trace's span / output.time_bin_s)",
}


def expected_duration(
    exp: Experiment, replay_span_s: float | None = None
) -> tuple[float, str] | None:
    """(simulated seconds the horizon spans, the key that sets it): the duration; for a
    requests horizon, a replayed trace's span (`replay_span_s`, read by the loader) or the
    requests over the mean arrival rate; None when nothing bounds it (burst, closed)."""
    if exp.horizon.duration_s is not None:
        return exp.horizon.duration_s, "horizon.duration_s"
    if replay_span_s is not None:
        return replay_span_s, "workload.trace.time_scale"
    rate = mean_rate(exp)
    if exp.horizon.requests is None or rate is None:
        return None
    return exp.horizon.requests / rate, "workload.arrival"


def _mmpp_periods(exp: Experiment, duration_s: float) -> float:
    """Dwell periods an MMPP arrival process draws over `duration_s` (0 for other processes)."""
    arrival = exp.workload.arrival
    if not isinstance(arrival, MMPPArrival):
        return 0.0
    dwell = arrival.mean_dwell_s
    return duration_s / sum(dwell) * len(dwell)


def excesses(exp: Experiment, replay_span_s: float | None = None) -> list[Excess]:
    """Every estimate of `exp` above its limit (empty: the run fits); `replay_span_s`: the
    span of a trace replayed for `horizon.requests` (s)."""
    lim = exp.limits
    found: list[Excess] = []
    req = expected_requests(exp)
    if req is not None and req[0] > lim.max_requests:
        found.append(Excess(req[1], "max_requests", "requests", req[0], lim.max_requests))
    gpus = exp.topology.num_gpus
    if gpus > lim.max_gpus:
        found.append(Excess("topology.nodes", "max_gpus", "GPUs", gpus, lim.max_gpus))
    span = expected_duration(exp, replay_span_s)
    if span is None:
        return found
    bins = span[0] / exp.output.time_bin_s
    if bins > lim.max_time_bins:
        key = "output.time_bin_s" if span[1] == "horizon.duration_s" else span[1]
        what = _SPAN_SOURCES[span[1]]
        found.append(Excess(key, "max_time_bins", what, bins, lim.max_time_bins))
    periods = _mmpp_periods(exp, span[0])
    if periods > lim.max_requests:
        what = "MMPP dwell periods (the horizon / the mean cycle of mean_dwell_s)"
        found.append(
            Excess("workload.arrival.mean_dwell_s", "max_requests", what, periods, lim.max_requests)
        )
    return found


def sweep_excess(sizes: Sequence[int], limit: int) -> Excess | None:
    """The excess of a cartesian sweep with these value counts per key, if above `limit`."""
    n = prod(sizes)
    return Excess("sweep", "max_sweep_points", "sweep points", n, limit) if n > limit else None
