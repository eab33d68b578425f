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

from clustersim.config.schema import Experiment


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
            f"about {self.estimate:,.0f} {self.what}, above the limit of {self.limit:,} "
            f"(lower it, or raise the limit with --set limits.{self.limit_key}=N)"
        )


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


def _time_bins(exp: Experiment) -> float | None:
    duration = exp.horizon.duration_s
    return None if duration is None else duration / exp.output.time_bin_s


def excesses(exp: Experiment) -> list[Excess]:
    """Every estimate of `exp` above its limit (empty: the run fits)."""
    lim = exp.limits
    found: list[Excess] = []
    req = expected_requests(exp)
    if req is not None and req[0] > lim.max_requests:
        found.append(Excess(req[1], "max_requests", "requests", req[0], lim.max_requests))
    gpus = exp.topology.num_gpus
    if gpus > lim.max_gpus:
        found.append(Excess("topology.nodes", "max_gpus", "GPUs", gpus, lim.max_gpus))
    bins = _time_bins(exp)
    if bins is not None and bins > lim.max_time_bins:
        found.append(
            Excess(
                "output.time_bin_s",
                "max_time_bins",
                "time bins (horizon.duration_s / output.time_bin_s)",
                bins,
                lim.max_time_bins,
            )
        )
    return found


def sweep_excess(sizes: Sequence[int], limit: int) -> Excess | None:
    """The excess of a cartesian sweep with these value counts per key, if above `limit`."""
    n = prod(sizes)
    return Excess("sweep", "max_sweep_points", "sweep points", n, limit) if n > limit else None
