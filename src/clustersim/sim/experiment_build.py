"""An experiment checked and laid out (`build`), and its request stream
(`experiment_requests`): what a run starts from. Disaggregated pools and faults load their
modules only for the experiments that have them."""

from __future__ import annotations

from clustersim.config.schema import Experiment
from clustersim.deployment.build import Build, build_layout
from clustersim.sim.run_size import check_request_count
from clustersim.sim.streams import Streams
from clustersim.topology.graph import build_cluster
from clustersim.workload.requests import RequestStream
from clustersim.workload.stream import workload_requests


def build(exp: Experiment) -> Build:
    """Check an experiment and lay it out on its topology; BuildError with the numbers.

    With `disaggregation`, both pools are built (disagg/pools.py) and `layout` is not used."""
    check_request_count(exp)
    if exp.disaggregation is not None:
        from clustersim.disagg.pools import build_pools

        built = build_pools(exp)
    else:
        built = build_layout(exp, build_cluster(exp.topology, exp.hardware))
    if exp.faults is None:
        return built
    from clustersim.sim.fault_build import with_faults

    return with_faults(exp, built)


def experiment_requests(exp: Experiment) -> RequestStream:
    """The experiment's requests, drawn from its named random streams as every run does."""
    streams = Streams(exp.seed)
    return workload_requests(
        exp.workload, exp.horizon, streams.get("arrivals"), streams.get("lengths"), exp.base_dir
    )
