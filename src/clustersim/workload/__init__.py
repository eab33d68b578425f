"""Workload generation: arrival processes, length samplers, trace readers (numpy, no simpy).

The session generator's names (workload/sessions.py) load with their first use: a run
without sessions does not load it."""

from typing import Any

from clustersim.workload.arrivals import (
    StateTimeline,
    burst_arrivals,
    closed_arrivals,
    gamma_arrivals,
    mmpp_arrivals,
    poisson_arrivals,
    trace_arrivals,
)
from clustersim.workload.lengths import (
    empirical_lengths,
    fixed_lengths,
    lognormal_lengths,
    sample_lengths,
    uniform_lengths,
)
from clustersim.workload.prefix_blocks import PrefixBlocks
from clustersim.workload.requests import RequestStream, generate_requests
from clustersim.workload.traces import (
    Trace,
    load_trace,
    read_azure_trace,
    read_mooncake_trace,
    read_trace,
)

__all__ = [
    "PrefixBlocks",
    "RequestStream",
    "SessionClass",
    "SessionWorkload",
    "StateTimeline",
    "TokenDist",
    "Trace",
    "burst_arrivals",
    "closed_arrivals",
    "empirical_lengths",
    "fixed_lengths",
    "gamma_arrivals",
    "generate_requests",
    "generate_sessions",
    "load_trace",
    "lognormal_lengths",
    "mmpp_arrivals",
    "poisson_arrivals",
    "read_azure_trace",
    "read_mooncake_trace",
    "read_trace",
    "sample_lengths",
    "trace_arrivals",
    "uniform_lengths",
]

_SESSION_NAMES = ("SessionClass", "SessionWorkload", "TokenDist", "generate_sessions")


def __getattr__(name: str) -> Any:
    if name in _SESSION_NAMES:
        from clustersim.workload import sessions

        return getattr(sessions, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
