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
from clustersim.workload.requests import RequestStream, generate_requests
from clustersim.workload.traces import Trace, load_trace, read_azure_trace

__all__ = [
    "RequestStream",
    "StateTimeline",
    "Trace",
    "burst_arrivals",
    "closed_arrivals",
    "empirical_lengths",
    "fixed_lengths",
    "gamma_arrivals",
    "generate_requests",
    "load_trace",
    "lognormal_lengths",
    "mmpp_arrivals",
    "poisson_arrivals",
    "read_azure_trace",
    "sample_lengths",
    "trace_arrivals",
    "uniform_lengths",
]
