"""Build → check → run → collect one experiment.

The run ends when every generated request has finished or been dropped: open-loop arrivals
are finite (the horizon bounds them), so the system always drains.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import pandas as pd
import simpy

from clustersim.config.schema import Experiment
from clustersim.metrics.recorder import Recorder, requests_frame
from clustersim.model.cost import StageCostModel
from clustersim.model.memory import MemoryPlan, plan_memory, stage_layer_ranges
from clustersim.sim.ep_group import DPRank
from clustersim.sim.ep_layout import EPLayout, EPLayoutError, resolve_ep_layout
from clustersim.sim.fabric import Fabric
from clustersim.sim.moe_runtime import MoERuntime
from clustersim.sim.replica import Process, Replica
from clustersim.sim.router import make_router
from clustersim.sim.scheduler import RequestState
from clustersim.sim.streams import Streams
from clustersim.topology.graph import Cluster, build_cluster
from clustersim.topology.placement import Placement, PlacementError, place
from clustersim.workload.arrivals import StateTimeline
from clustersim.workload.requests import RequestStream, generate_requests

ProgressCallback = Callable[[float], None]


class BuildError(ValueError):
    """The experiment is well-formed but cannot be built (placement, memory, support)."""


@dataclass
class RunOutput:
    requests: pd.DataFrame
    iterations: pd.DataFrame
    links: pd.DataFrame
    experts: pd.DataFrame | None
    gpus: int
    sim: dict[str, float] = field(default_factory=dict)
    memory: MemoryPlan | None = None
    phases: StateTimeline | None = None  # MMPP state timeline of the arrivals, else None
    eplb: pd.DataFrame | None = None  # MoE with experts.eplb: one row per rebalance


@dataclass(frozen=True)
class Build:
    """Everything static about an experiment, checked: the cluster and where work runs."""

    cluster: Cluster
    placement: Placement
    memory: MemoryPlan
    stage_layers: tuple[range, ...]  # the same split the memory plan uses
    ep: EPLayout | None = None  # MoE models: EP groups and ranks (sim/ep_layout.py)


def build(exp: Experiment) -> Build:
    """Check an experiment and lay it out on its topology; BuildError with the numbers."""
    layout = exp.layout
    if layout.cp > 1:
        raise BuildError(
            f"layout.cp = {layout.cp}: context parallelism is not simulated yet (use cp: 1)"
        )
    cluster = build_cluster(exp.topology, exp.hardware)
    try:
        placement = place(layout, cluster, exp.model)
        ep = resolve_ep_layout(exp, placement)
    except (PlacementError, EPLayoutError) as err:
        raise BuildError(str(err)) from err
    redundant = ep.redundant if ep is not None else 0
    memory = plan_memory(exp.model, exp.hardware, exp.precision, layout, exp.serving, redundant)
    if not memory.fits:
        raise BuildError(memory.reason)
    if memory.kv_blocks_per_replica < layout.pp:
        raise BuildError(
            f"KV cache holds {memory.kv_blocks_per_replica} blocks per replica; "
            f"pp = {layout.pp} lanes need at least one each"
        )
    return Build(
        cluster, placement, memory, tuple(stage_layer_ranges(exp.model.num_layers, layout.pp)), ep
    )


def horizon_estimate_s(exp: Experiment) -> float | None:
    """Simulated seconds the arrivals span, when known up front (for progress bars)."""
    return exp.horizon.duration_s


class _Simulation:
    """The running system: replicas, router, arrivals and the completion count."""

    def __init__(self, exp: Experiment, built: Build, stream: RequestStream) -> None:
        self.exp = exp
        self.env = simpy.Environment()
        self.stream = stream
        n = len(stream.prompt_tokens)
        self.n = n
        self.state = RequestState(
            stream.prompt_tokens.tolist(), stream.output_tokens.tolist()
        )
        self.recorder = Recorder(n, exp.output.iterations)
        self.fabric = Fabric(self.env, built.cluster, exp.output.time_bin_s)
        streams = Streams(exp.seed)
        layout = exp.layout
        self.router = make_router(exp.serving.router, layout.dp, streams.get("router"))
        self.outstanding = [0] * layout.dp
        self.kv_fraction = [0.0] * layout.dp
        self.ended = 0
        self.done = self.env.event()
        self.max_model_len = exp.serving.max_model_len or exp.model.max_context
        costs = [
            StageCostModel(
                exp.model,
                exp.hardware,
                exp.precision,
                layout.tp,
                len(layers),
                first_stage=s == 0,
                last_stage=s == layout.pp - 1,
                ep=layout.ep,
                moe_tp=layout.moe_tp,
                first_layer=layers.start,
            )
            for s, layers in enumerate(built.stage_layers)
        ]
        blocks_per_lane = built.memory.kv_blocks_per_replica // layout.pp
        self.moe: MoERuntime | None = None
        if built.ep is not None:
            self.moe = MoERuntime(
                exp, built.ep, built.cluster, self.env, self.fabric, streams.get("experts"),
                stream.phases,
            )
        self.replicas: Sequence[Replica | DPRank]
        if self.moe is not None and self.moe.dp_attention:
            self.replicas = self.moe.dp_group(
                costs[0],
                [rp.stages[0] for rp in built.placement.replicas],
                blocks_per_lane,
                self.state,
                self.recorder,
                self._on_finish,
            )
        else:
            self.replicas = [
                Replica(
                    self.env,
                    r,
                    rp.stages,
                    costs if self.moe is None
                    else self.moe.stage_costs(r, costs, built.stage_layers),
                    self.fabric,
                    exp.serving,
                    blocks_per_lane,
                    self.state,
                    self.recorder,
                    self._on_finish,
                )
                for r, rp in enumerate(built.placement.replicas)
            ]
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
        self._end_one()
        if self.stream.concurrency:
            self._issue_closed(now)

    def _admit(self, rid: int, now: float) -> bool:
        """Route one arriving request to a replica (True), or drop it with a reason (False)."""
        rec = self.recorder
        for r, rep in enumerate(self.replicas):
            self.kv_fraction[r] = rep.kv_used_blocks / rep.kv_capacity_blocks
        r = self.router.choose(self.outstanding, self.kv_fraction)
        rec.on_arrival(rid, now, r)
        replica = self.replicas[r]
        max_queue = self.exp.serving.max_queue
        too_long = self.state.prompt[rid] + self.state.output[rid] > self.max_model_len
        queue_full = max_queue is not None and self.outstanding[r] >= max_queue
        if too_long or queue_full or not replica.fits_ever(rid):
            rec.on_drop(rid)
            self._end_one()
            return False
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

    def open_loop_arrivals(self) -> Process:
        env = self.env
        arrivals = self.stream.arrival_s.tolist()
        for rid, t in enumerate(arrivals):
            if t > env.now:
                yield env.timeout(t - env.now)
            self._admit(rid, env.now)

    def progress_ticks(self, callback: ProgressCallback, every_s: float) -> Process:
        while True:
            yield self.env.timeout(every_s)
            callback(self.env.now)

    # ------------------------------------------------------------------ run

    def run(self, progress: ProgressCallback | None) -> None:
        env = self.env
        if self.n == 0:
            return
        if self.stream.concurrency:
            for _ in range(min(self.stream.concurrency, self.n)):
                self._issue_closed(0.0)
        else:
            env.process(self.open_loop_arrivals())
        if progress is not None:
            horizon = horizon_estimate_s(self.exp) or 60.0
            env.process(self.progress_ticks(progress, max(horizon / 200.0, 1e-3)))
        env.run(until=self.done)
        if progress is not None:
            progress(env.now)


def run_experiment(
    exp: Experiment, progress: ProgressCallback | None = None, built: Build | None = None
) -> RunOutput:
    """Simulate one experiment and return its tables (no file I/O).

    `built` is `build(exp)` when the caller already checked the experiment."""
    wall_start = time.perf_counter()
    if built is None:
        built = build(exp)
    streams = Streams(exp.seed)
    stream = generate_requests(
        exp.workload,
        exp.horizon,
        streams.get("arrivals"),
        streams.get("lengths"),
        exp.base_dir,
    )
    sim = _Simulation(exp, built, stream)
    sim.run(progress)
    n = sim.n  # closed-loop runs may issue fewer requests than were generated
    st, rec = sim.state, sim.recorder
    requests = requests_frame(
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
    end_s = float(sim.env.now)
    links = sim.fabric.link_table(end_s)
    events = rec.steps + n
    moe = sim.moe
    return RunOutput(
        requests=requests,
        iterations=rec.iterations_frame(),
        links=links,
        experts=moe.experts_frame() if moe is not None else None,
        gpus=exp.layout.gpus,
        sim={
            "events": float(events),
            "wall_s": time.perf_counter() - wall_start,
            "simulated_s": end_s,
        },
        memory=built.memory,
        phases=stream.phases,
        eplb=moe.eplb_frame() if moe is not None else None,
    )


__all__ = [
    "Build",
    "BuildError",
    "RunOutput",
    "build",
    "horizon_estimate_s",
    "run_experiment",
]
