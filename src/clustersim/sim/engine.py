"""Build → check → run → collect one experiment.

The run ends when every generated request has finished or been dropped: open-loop arrivals
are finite (the horizon bounds them), so the system always drains."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import simpy

from clustersim.catalog.engines import serving_engine
from clustersim.collector import frozen_heap, kept_frozen, simulation_ended
from clustersim.config.schema import Experiment
from clustersim.deployment.build import Build, BuildError
from clustersim.deployment.prefix_caches import (
    PoolPrefix,
    pool_prefix_caching,
    pool_router,
    prefix_cache_table,
)
from clustersim.deployment.units import Unit, make_units, speculative_rng
from clustersim.metrics.recorder import Recorder, requests_table
from clustersim.metrics.table import Table
from clustersim.network.collectives import allreduce_choice_of
from clustersim.network.fabric import Fabric
from clustersim.serving.replica import Process, Replica
from clustersim.serving.request_state import RequestState
from clustersim.serving.router import LeastOutstandingRouter, Router
from clustersim.sim.arrival_process import ArrivalTimer, announced_arrivals
from clustersim.sim.event_loop import run_until
from clustersim.sim.experiment_build import build, experiment_requests
from clustersim.sim.plain_arrivals import plain_admit
from clustersim.sim.run_output import RunOutput
from clustersim.sim.run_size import horizon_estimate_s
from clustersim.sim.streams import Streams
from clustersim.workload.requests import RequestStream

if TYPE_CHECKING:
    import pandas as pd

    from clustersim.disagg.runtime import DisaggRuntime
    from clustersim.moe.moe_runtime import MoERuntime
    from clustersim.sim.fault_runtime import FaultRuntime

# Disaggregation (disagg/), faults (faults/, sim/fault_*.py) and MoE (moe/) load in the runs
# that have them: a plain run imports none of their modules (sim/experiment_build.py too).

ProgressCallback = Callable[[float], None]

# least_outstanding's heap from this many replicas on; below, its C scan is cheaper (same picks)
TRACKED_ROUTER_REPLICAS = 64


class _Simulation:
    """The running system: replicas, router, arrivals and the completion count."""

    def __init__(self, exp: Experiment, built: Build, stream: RequestStream) -> None:
        self.exp = exp
        self.env = simpy.Environment()
        self.stream = stream
        n = len(stream.prompt_tokens)
        self.n = n
        self.state = RequestState(stream.prompt_tokens.tolist(), stream.output_tokens.tolist())
        engine = serving_engine(exp.serving)
        # the engine's front end holds each request this long before the engine receives it
        self.frontend_s = engine.frontend_ms * 1e-3
        self.recorder = Recorder(n, exp.output.iterations, self.frontend_s)
        self.fabric = Fabric(
            self.env,
            built.cluster,
            exp.output.time_bin_s,
            allreduce_choice_of(engine),
            exp.hardware.nvls,
        )
        streams = Streams(exp.seed)
        self.ended = 0
        self.done = self.env.event()
        self.moe: MoERuntime | None = None
        self.replicas: Sequence[Unit] = ()
        self.disagg: DisaggRuntime | None = None
        self._lo_router: LeastOutstandingRouter | None = None
        self.prefix: PoolPrefix | None = None  # prefix caching: its record and caches
        if built.pools is not None:  # prefill / decode pools: disagg/runtime.py routes requests
            from clustersim.disagg.runtime import DisaggRuntime

            self.disagg = DisaggRuntime(
                built.pools,
                self.env,
                self.fabric,
                streams.get,
                stream,
                self.recorder,
                self._request_done,
            )
        else:
            layout = exp.layout
            # only the replicas' TP all-reduces and PP hand-offs use the fabric: leaps may
            # price them (serving/decode_leap.py, serving/pipeline_leap.py); MoE adds
            # all-to-alls (DP-attention) or EPLB weight moves, else nothing
            ep = built.ep
            self.fabric.only_tp_allreduces = layout.cp == 1 and (
                ep is None or (not ep.dp_attention and ep.experts.eplb is None)
            )
            self.outstanding = [0] * layout.dp
            self.kv_fraction = [0.0] * layout.dp
            self.max_model_len = exp.serving.max_model_len or exp.model.max_context
            self.replicas, self.moe = make_units(
                exp,
                built,
                self.env,
                self.fabric,
                self.state,
                self.recorder,
                self._on_finish,
                streams.get("experts"),
                stream.phases,
                speculative_rng(exp.serving, streams.get),
            )
            self.prefix = pool_prefix_caching(exp.serving, built, self.replicas, stream, self.state)
            self.router: Router = pool_router(
                exp.serving, self.replicas, self.prefix, stream, streams.get("router")
            )
        self.faults: FaultRuntime | None = None
        if built.faults is not None and self.disagg is not None:  # no pool unit stops
            from clustersim.sim.fault_runtime import pool_faults

            self.faults = pool_faults(exp, built, self.env, self.disagg, self.fabric, self._end_one)
        elif built.faults is not None:
            from clustersim.sim.fault_runtime import fault_runtime

            self.faults = fault_runtime(
                exp,
                built,
                self.env,
                self.replicas,
                self.router,
                self.outstanding,
                self.recorder,
                self.state,
                self.fabric,
                self._end_one,
            )
        if self.faults is None and self.moe is not None and self.moe.dp_attention:
            self.moe.allow_group_leaps()  # co-located: its exchanges alone on the fabric
        if self.faults is not None:  # replicas stop and slow down mid-run: no decode leaps
            self.fabric.only_tp_allreduces = False
            for unit in self.replicas:
                if isinstance(unit, Replica):
                    unit.forbid_leaps()
        elif (
            self.disagg is None
            and isinstance(self.router, LeastOutstandingRouter)
            and len(self.outstanding) >= TRACKED_ROUTER_REPLICAS
        ):
            # least_outstanding in O(log replicas): it tracks this list, told of decreases
            # (with faults, replica health changes the list too: the router scans it)
            self._lo_router = self.router
            self.router.track(self.outstanding)
        self.max_queue = exp.serving.max_queue
        self.next_closed = 0  # next request index for closed-loop issue
        self.closed_until = exp.horizon.duration_s if stream.concurrency else None

    # ------------------------------------------------------------------ lifecycle

    def _end_one(self) -> None:
        self.ended += 1
        if self.ended == self.n:
            self.done.succeed()

    def _on_finish(self, rid: int, now: float) -> None:
        r = self.recorder.replica[rid]
        self.outstanding[r] -= 1
        if self._lo_router is not None:
            self._lo_router.decreased(r)
        if self.faults is not None:
            self.faults.health.on_finish(rid)
        if self.stream.concurrency:
            self._request_done(rid, now)
        else:  # (_request_done of an open-loop run, a call fewer a finish)
            self._end_one()

    def _request_done(self, rid: int, now: float) -> None:
        """A request produced its last token (co-located, or the decode pool's); a closed
        loop's next request reaches the engine after the front end's delay."""
        self._end_one()
        if self.stream.concurrency:
            if self.frontend_s > 0:
                delay = self.env.timeout(self.frontend_s)
                delay.callbacks.append(lambda _ev: self._issue_closed(self.env.now))
            else:
                self._issue_closed(now)

    def _admit(self, rid: int, now: float) -> bool:
        """Route one arriving request to a replica (True), or drop it with a reason (False)."""
        if self.disagg is not None:
            if self.disagg.admit(rid, now):
                return True
            self._end_one()
            return False
        rec = self.recorder
        if self.router.uses_kv:  # only least_kv reads the KV fractions: O(replicas) a request
            for r, rep in enumerate(self.replicas):
                self.kv_fraction[r] = rep.kv_used_blocks / rep.kv_capacity_blocks
        faults = self.faults
        if faults is None:
            if self.router.uses_prefix:
                r = self.router.choose_request(rid, self.outstanding, self.kv_fraction)
            else:
                r = self.router.choose(self.outstanding, self.kv_fraction)
        else:  # the router avoids replicas known to be down
            r = faults.health.choose(self.kv_fraction)
            if r < 0:
                rec.on_arrival(rid, now, 0)
                faults.health.hold(rid)
                return True
        rec.on_arrival(rid, now, r)
        replica = self.replicas[r]
        max_queue = self.max_queue
        too_long = self.state.prompt[rid] + self.state.output[rid] > self.max_model_len
        queue_full = max_queue is not None and self.outstanding[r] >= max_queue
        if too_long or queue_full or not replica.fits_ever(rid):
            rec.on_drop(rid)
            self._end_one()
            return False
        if faults is not None and faults.health.absorbs(r, rid):
            return True
        self.outstanding[r] += 1
        replica.submit(rid)
        return True

    def _issue_closed(self, now: float) -> None:
        """Issue the next closed-loop request; a dropped one is replaced at once (a loop, not
        recursion: a long run of drops must not exhaust the stack)."""
        while self.next_closed < self.n:
            if self.closed_until is not None and now >= self.closed_until:
                # The horizon has passed: requests never issued are not part of the run.
                self._retire_unissued()
                return
            rid = self.next_closed
            self.next_closed += 1
            if self._admit(rid, now):
                return

    def _retire_unissued(self) -> None:
        unissued = self.n - self.next_closed
        self.n = self.next_closed
        self.next_closed = self.n
        if unissued and self.ended >= self.n and not self.done.triggered:
            self.done.succeed()

    def open_loop_arrivals(self) -> ArrivalTimer:
        arrivals = (self.stream.arrival_s + self.frontend_s).tolist()  # at the engine
        admit = plain_admit(self) or self._admit  # sim/plain_arrivals.py: the common case
        pooled = self.disagg is not None or self.faults is not None
        announce = announced_arrivals(self.replicas, arrivals, pooled)
        return ArrivalTimer(self.env, arrivals, admit, announce)

    def progress_ticks(self, callback: ProgressCallback, every_s: float) -> Process:
        while True:
            yield self.env.timeout(every_s)
            callback(self.env.now)

    def run(self, progress: ProgressCallback | None) -> None:
        env = self.env
        if self.n == 0:
            return
        if self.stream.concurrency:
            start = env.timeout(self.frontend_s)
            for _ in range(min(self.stream.concurrency, self.n)):
                start.callbacks.append(lambda _ev: self._issue_closed(self.env.now))
        else:
            self.open_loop_arrivals().start()  # where the arrival process would start
        if self.faults is not None:
            env.process(self.faults.injector.process())
        if progress is not None:
            horizon = horizon_estimate_s(self.exp) or 60.0
            env.process(self.progress_ticks(progress, max(horizon / 200.0, 1e-3)))
        run_until(env, self.done)  # env.run(until=self.done), Environment.step inlined
        if progress is not None:
            progress(env.now)


def run_experiment(
    exp: Experiment, progress: ProgressCallback | None = None, built: Build | None = None
) -> RunOutput:
    """Simulate one experiment and return its tables as DataFrames (no file I/O).

    `built` is `build(exp)` when the caller already checked the experiment."""
    return run_tables(exp, progress, built).with_frames()


def run_tables(
    exp: Experiment, progress: ProgressCallback | None = None, built: Build | None = None
) -> RunOutput:
    """`run_experiment` with requests, iterations and links as Tables (metrics/table.py): what
    `run`, the runner and the planner summarise and write."""
    wall_start = time.perf_counter()
    if built is None:
        built = build(exp)
    with kept_frozen():  # (set-up's objects are all kept: no pass walks them)
        stream = experiment_requests(exp)
        sim = _Simulation(exp, built, stream)
    with frozen_heap():  # set-up's objects stay out of the collector's full passes
        sim.run(progress)
    simulation_ended(sim.n)  # (its object graph is garbage once this returns)
    n = sim.n  # closed-loop runs may issue fewer requests than were generated
    st, rec = sim.state, sim.recorder
    end_s = float(sim.env.now)
    links = Table(sim.fabric.link_columns(end_s))
    disagg = sim.disagg
    prefix_table: pd.DataFrame | None = None
    iterations: Table | pd.DataFrame
    if disagg is not None:
        cols = disagg.request_columns(n)
        requests = requests_table(
            rec.arrival_s[:n],
            cols.first_scheduled_s,
            cols.first_token_s,
            cols.finish_s,
            stream.prompt_tokens[:n],
            stream.output_tokens[:n],
            rec.replica[:n],
            cols.preemptions,
            rec.dropped[:n],
            decode_replica=cols.decode_replica,
            kv_transfer_s=cols.kv_transfer_s,
            kv_transfer_bytes=cols.kv_transfer_bytes,
        )
        iterations = disagg.iterations_frame()
        experts, eplb, steps = disagg.experts_frame(), disagg.eplb_frame(), disagg.steps
        from clustersim.disagg.pools import pool_infos

        pools = pool_infos(built.pools or ())
    else:
        requests = requests_table(
            rec.arrival_s[:n],
            st.first_scheduled_s[:n],
            st.first_token_s[:n],
            st.finish_s[:n],
            stream.prompt_tokens[:n],
            stream.output_tokens[:n],
            rec.replica[:n],
            st.preemptions[:n],
            rec.dropped[:n],
        )
        moe = sim.moe
        iterations = rec.iterations_table()
        experts = moe.experts_frame() if moe is not None else None
        eplb = moe.eplb_frame() if moe is not None else None
        steps, pools = rec.steps, None
    if sim.faults is not None:  # retry counts and failed status (docs/faults.md)
        requests["retries"] = sim.faults.health.retries[:n]
        requests["failed"] = sim.faults.health.failed[:n]
    prefix = sim.disagg.prefix if sim.disagg is not None else sim.prefix
    if prefix is not None:  # prefix caching: cached tokens per request, counters per lane
        cached = np.maximum(np.asarray(prefix.record.cached_tokens[:n]), 0)
        requests["cached_tokens"] = cached.astype(np.int64)
        prefix_table = prefix_cache_table(prefix.lanes)
    return RunOutput(
        requests=requests,
        iterations=iterations,
        links=links,
        experts=experts,
        gpus=built.gpus,
        sim={
            "events": float(steps + n),
            "wall_s": time.perf_counter() - wall_start,
            "simulated_s": end_s,
        },
        memory=built.memory,
        phases=stream.phases,
        eplb=eplb,
        pools=pools,
        faults=sim.faults.injector.table() if sim.faults is not None else None,
        prefix_cache=prefix_table,
    )


__all__ = [
    "Build",
    "BuildError",
    "RunOutput",
    "build",
    "experiment_requests",
    "horizon_estimate_s",
    "run_experiment",
    "run_tables",
]
