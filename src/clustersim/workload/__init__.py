"""Workload generation: arrival processes, length samplers, trace readers (numpy, no simpy)."""

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
from clustersim.workload.sessions import (
    SessionClass,
    SessionWorkload,
    TokenDist,
    generate_sessions,
)
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
