"""One capacity probe: the experiment at a given arrival rate, replicated and pooled, and the
test of whether that rate is sustained inside the SLO (docs/capacity.md)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from clustersim.capacity.search import Probe
from clustersim.config.schema import Experiment, SLOSpec
from clustersim.config.schema.workload import MAX_RATE_RPS
from clustersim.jobs import ExecutorName
from clustersim.runner import ProgressFactory, simulate_pooled, simulate_pooled_jobs

ATTAINMENT_TARGET = 0.99  # per-request bounds are p99 targets
RATE_PROCESSES = ("poisson", "gamma")  # arrival processes with one `rate_rps` to scale


class CapacityError(ValueError):
    """A bad input for `capacity` (one line: FILE: key.path: expected …)."""


def check_rate_workload(exp: Experiment, source: str) -> float:
    """The experiment's arrival rate (requests/s); CapacityError unless it has one."""
    arrival = exp.workload.arrival
    if arrival.process not in RATE_PROCESSES:
        raise CapacityError(
            f"{source}: workload.arrival.process: expected poisson or gamma for capacity "
            f"(a rate to search over) (got {arrival.process})"
        )
    return float(getattr(arrival, "rate_rps"))  # noqa: B009 - union of arrival specs


def rate_range(exp: Experiment) -> tuple[float, float]:
    """The arrival rates (requests/s) a probe of `exp` may run at: within the schema's range
    and the run-size limits (config/limits.py) — at most max_requests over a duration, at
    least requests / (max_time_bins · time_bin_s) for a requests horizon."""
    lim, horizon = exp.limits, exp.horizon
    top = MAX_RATE_RPS
    bottom = 1e-6
    if horizon.duration_s is not None:
        top = min(top, lim.max_requests / horizon.duration_s)
    if horizon.requests is not None:
        bottom = max(bottom, horizon.requests / (lim.max_time_bins * exp.output.time_bin_s))
    return bottom, max(top, bottom)


def at_rate(exp: Experiment, rate_rps: float) -> Experiment:
    """`exp` with its arrival rate set to `rate_rps` (requests/s)."""
    arrival = exp.workload.arrival.model_copy(update={"rate_rps": float(rate_rps)})
    workload = exp.workload.model_copy(update={"arrival": arrival})
    return exp.model_copy(update={"workload": workload})


def slo_failures(summary: Mapping[str, Any], slo: SLOSpec) -> tuple[str, ...]:
    """Why a (pooled) summary does not sustain the SLO; empty when it does:

    - unstable: the queue or KV use trends upward (stability.stable is false);
    - attainment below 99 % (per-request bounds; with none, the completed fraction);
    - mean TTFT above `slo.ttft_mean_s`; mean queue wait above `slo.queue_mean_s`."""
    reasons = []
    if (summary.get("stability") or {}).get("stable") is False:
        reasons.append("unstable")
    attainment = (summary.get("slo") or {}).get("attainment")
    if attainment is None or attainment < ATTAINMENT_TARGET:
        reasons.append("attainment")
    for bound, metric in ((slo.ttft_mean_s, "ttft_s"), (slo.queue_mean_s, "queue_s")):
        if bound is None:
            continue
        mean = (summary.get(metric) or {}).get("mean")
        if mean is None or mean > bound:
            reasons.append(f"{metric.removesuffix('_s')}_mean")
    return tuple(reasons)


def probe_rate(
    exp: Experiment,
    rate_rps: float,
    progress: ProgressFactory | None = None,
    fan_out: tuple[ExecutorName, int] | None = None,
) -> Probe:
    """Simulate every replicate of `exp` at `rate_rps`, pool them, test the SLO.

    `fan_out` (executor, workers): run the replicates as parallel jobs (same summary)."""
    probed = at_rate(exp, rate_rps)
    if fan_out is None:
        summary = simulate_pooled(probed, progress)
    else:
        summary = simulate_pooled_jobs(probed, *fan_out)
    reasons = slo_failures(summary, exp.slo)
    return Probe(float(rate_rps), not reasons, reasons, summary)
