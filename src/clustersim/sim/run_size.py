"""How big a run is before it starts: requests a horizon will generate, simulated seconds."""

from __future__ import annotations

from clustersim.config.schema import Experiment
from clustersim.deployment.build import BuildError

MAX_EXPECTED_REQUESTS = 50_000_000  # beyond this a run would not fit this machine's memory


def expected_requests(exp: Experiment) -> float | None:
    """Requests an open-loop duration horizon will generate on average (None: bounded
    otherwise — a request count, a trace, or a closed loop with its own cap)."""
    duration = exp.horizon.duration_s
    arrival = exp.workload.arrival
    if duration is None:
        return None
    rate = getattr(arrival, "rate_rps", None)
    if rate is None and arrival.process == "mmpp":
        rate = max(getattr(arrival, "rates_rps", [0.0]))  # an upper bound on the mean
    return None if rate is None else float(rate) * duration


def check_request_count(exp: Experiment) -> None:
    """Refuse workloads too large to simulate (e.g. a mistyped rate), with the numbers."""
    n = expected_requests(exp)
    if n is not None and n > MAX_EXPECTED_REQUESTS:
        raise BuildError(
            f"workload.arrival rate × horizon.duration_s = {n:.3g} requests expected; "
            f"at most {MAX_EXPECTED_REQUESTS:,} can be simulated (lower the rate or the duration)"
        )


def horizon_estimate_s(exp: Experiment) -> float | None:
    """Simulated seconds the arrivals span, when known up front (for progress bars)."""
    return exp.horizon.duration_s
