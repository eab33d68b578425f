"""An experiment's request stream, from its workload: synthetic sessions
(workload/session_requests.py, loaded for them only) or every other source
(workload/requests.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from clustersim.config.schema import HorizonSpec, WorkloadSpec
from clustersim.workload.requests import RequestStream, generate_requests


def workload_requests(
    spec: WorkloadSpec,
    horizon: HorizonSpec,
    rng_arrivals: np.random.Generator,
    rng_lengths: np.random.Generator,
    base_dir: str | Path = ".",
) -> RequestStream:
    """The request stream of a run (see the module docstring)."""
    if spec.sessions is not None:
        from clustersim.workload.session_requests import session_requests

        return session_requests(spec.sessions, horizon, rng_arrivals)
    return generate_requests(spec, horizon, rng_arrivals, rng_lengths, base_dir)
