"""The decode leap's bulk paths give the floats the step-by-step paths give: a leap's
all-reduce bookings (PrivateAllReduce.book_steps: runs of steps inside one time bin added as
a per-link cycle), its rows (metrics/decode_runs.py, built in numpy), its step costs
(DecodeStepCost.run_s) and a stepped step priced as one timer (LeapPricing.closed_step)."""

from __future__ import annotations

import numpy as np
import simpy

from clustersim.catalog.hardware import get_hardware
from clustersim.catalog.models import get_model
from clustersim.catalog.topologies import get_topology
from clustersim.config.schema import Precision
from clustersim.metrics.recorder import Recorder
from clustersim.model.decode_run import DecodeStepCost
from clustersim.model.stage_cost import StageCostModel
from clustersim.network.fabric import Fabric
from clustersim.network.ledger import cycle_of
from clustersim.network.private_allreduce import Phase, PrivateAllReduce, clock_adds, moving
from clustersim.serving.leap_pricing import LeapPricing
from clustersim.topology.graph import build_cluster

BIN_S = 0.05  # narrow bins: many steps cross a boundary


def _group(gpus: int) -> tuple[Fabric, PrivateAllReduce]:
    cluster = build_cluster(get_topology("dgx_h100_x1"), get_hardware("h100-sxm"))
    fabric = Fabric(simpy.Environment(), cluster, BIN_S)
    fabric.only_tp_allreduces = True
    group = tuple(cluster.gpus[:gpus])
    return fabric, PrivateAllReduce(fabric, group, 1, 64e6, 160)


def _one_by_one(fabric: Fabric, t: float, phases: list[Phase]) -> float:
    """PrivateAllReduce.run's clock and bookings, one entity at a time."""
    for ph in phases:
        if ph.links is not None:
            t0, t = t, t + ph.move_s
            fabric.ledger.record(ph.links, ph.weights, t0, t, ph.size)
        if ph.delay_s > 0:
            t = t + ph.delay_s
    return t


def test_book_steps_adds_what_booking_each_entity_adds() -> None:
    rng = np.random.default_rng(5)
    for gpus in (2, 4):
        one, ar_one = _group(gpus)
        bulk, ar_bulk = _group(gpus)
        ar_bulk.book_twins()  # the bulk side books its twin links as one, copied on read
        for nbytes in (16384.0, 8e6, 3e6):  # one phase, two phases (ring)
            phases_one = ar_one.phases(nbytes, 160)
            phases_bulk = ar_bulk.phases(nbytes, 160)
            assert phases_one and phases_bulk
            adds = clock_adds(phases_bulk)
            start = 2.0 + float(rng.random())
            for _ in range(40):  # leaps of 1–30 steps
                compute = rng.uniform(0.001, 0.03, size=int(rng.integers(1, 30))).tolist()
                ends, t = [], start
                for c in compute:
                    t_one = _one_by_one(one, t + c, phases_one)
                    end = t + c
                    for x in adds:
                        end = end + x
                    assert end == t_one
                    ends.append(end)
                    t = end
                cycle = cycle_of(moving(phases_bulk))
                ar_bulk.book_steps(start, ends, compute, phases_bulk, cycle)
                start = t
        assert len(one.link_table()) > 100
        assert one.link_table().equals(bulk.link_table())


def test_decode_runs_rows_are_the_rows_stepping_writes() -> None:
    rng = np.random.default_rng(2)
    stepped, leaped = Recorder(1), Recorder(1)
    t = 0.5
    for run in range(2500):  # more than HELD_RUNS: rows built during the run and at the end
        k = int(rng.integers(1, 12))
        n, cap, comm = int(rng.integers(1, 256)), 9000, run % 3 != 0
        compute = rng.uniform(0.01, 0.08, size=k + 3).tolist()  # planned past the end
        used = rng.integers(0, cap, size=k).tolist()
        start, ends = t, []
        for i in range(k):
            c = compute[i]
            end = t + c + (0.001 if comm else 0.0)
            ends.append(end)
            last = i == k - 1
            stepped.on_iteration(
                (3, 0, 0, t, end, 0, n, n, n, c, end - (t + c) if comm else 0.0, 0.0,
                 4321 if last else used[i], cap)
            )  # fmt: skip
            t = end
        leaped.on_decode_run((3, n, start, ends, compute, k, comm, used, 4321, cap))
    assert leaped.steps == stepped.steps
    assert leaped.iterations_frame().equals(stepped.iterations_frame())


def test_run_s_is_step_s_step_after_step() -> None:
    for model, tp in (("llama-3.1-8b", 1), ("mixtral-8x7b", 2)):
        spec = get_model(model)
        cost = StageCostModel(
            spec, get_hardware("h100-sxm"), Precision(), tp, spec.num_layers, True, True
        )
        for n in (1, 9, 300):
            step = DecodeStepCost(cost, n)
            ctx = 517 * n
            assert step.run_s(ctx, n, 40) == [step.step_s(ctx + i * n) for i in range(40)]


def test_closed_step_lands_where_the_stepped_clock_does() -> None:
    fabric, ar = _group(2)
    cost = StageCostModel(
        get_model("llama-3.1-70b"), get_hardware("h100-sxm"), Precision(), 2, 80, True, True
    )
    pricing = LeapPricing(cost, ar)
    ref, ar_ref = _group(2)
    rng = np.random.default_rng(8)
    for tokens in rng.integers(1, 4096, size=200).tolist():
        start, compute = 10.0 + float(rng.random()), float(rng.uniform(0.005, 0.2))
        end = pricing.closed_step(start, compute, tokens)
        phases = ar_ref.phases(cost.allreduce_bytes(tokens), cost.allreduces_per_step)
        assert end is not None and phases is not None
        assert end == _one_by_one(ref, start + compute, phases)
    assert pricing.closed_step(1e-3, 0.2, 64) is None  # one timer would not land exactly
    assert fabric.link_table().equals(ref.link_table())
