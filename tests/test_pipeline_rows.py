"""The pipeline leap's bulk paths (serving/pipeline_leap.py) equal the one-at-a-time ones:
rows packed a trip at once, transfers booked in bulk, completion ties flagged instead of
returned, alike stages sharing one decode step time; a trip's alarm lands exactly, moved or
not. (Whole runs: the PP cases of tests/test_leap_equivalence.py.)"""

from __future__ import annotations

import math

import numpy as np
import simpy

from clustersim.catalog.hardware import get_hardware
from clustersim.catalog.models import get_model
from clustersim.catalog.topologies import get_topology
from clustersim.config.schema import Precision
from clustersim.metrics.recorder import Recorder
from clustersim.model.decode_run import DecodeStepCost
from clustersim.model.stage_cost import StageCostModel
from clustersim.network.completion_ties import Completions
from clustersim.network.held_transfers import HeldTransfers, Shape
from clustersim.network.ledger import LinkLedger
from clustersim.serving.pipeline_leap import alike_decode_steps
from clustersim.serving.pipeline_trip import Alarm
from clustersim.topology.graph import build_cluster

ROWS = [
    (0, 0, 0, 0.0, 0.012, 512, 0, 1, 512, 0.012, 0.0, 0.0, 32, 50_000),
    (7, 3, 1, 1e-300, 1.5e300, 2**53 + 1, -1, 2**63, 3, float("inf"), -0.0, 5e-324, 0, 1),
    (2, 1, 0, 0.1, 0.30000000000000004, True, False, 9, 9, 0.1, 1 / 3, 2 / 3, 2**40, 2**62),
]  # fmt: skip


def test_rows_at_once_are_the_bytes_of_rows_one_by_one() -> None:
    one, bulk = Recorder(1), Recorder(1)
    for row in ROWS:
        one.on_iteration(row)  # type: ignore[arg-type]
    bulk.on_iterations([x for row in ROWS for x in row], len(ROWS))
    bulk.on_iterations(list(ROWS[0]), 1)
    one.on_iteration(ROWS[0])  # type: ignore[arg-type]
    assert bulk.iterations.tobytes() == one.iterations.tobytes()
    assert bulk.steps == one.steps == len(ROWS) + 1
    quiet = Recorder(1, record_iterations=False)
    quiet.on_iterations(list(ROWS[0]), 1)
    assert quiet.steps == 1 and len(quiet.iterations) == 0


def test_completion_flags_the_ties_complete_returns() -> None:
    """Random near-tied transfers (finishes an ulp to 1e-11 s apart): `completion` + `tied`
    give what `complete` gives, entity by entity, and `complete` leaves `tied` alone."""
    rng = np.random.default_rng(3)
    flagged, returned = Completions(), Completions()
    ties = 0
    for owner in range(3000):
        base = 0.5 + (owner // 6) * 1e-3
        finish = base + float(rng.choice([0.0, 1e-13, 5e-13, 1e-11])) * float(rng.integers(-2, 3))
        if rng.random() < 0.3:
            finish = math.nextafter(finish, 1.0 if rng.random() < 0.5 else 0.0)
        start = finish - float(rng.uniform(1e-4, 2e-3))
        done = flagged.completion(start, finish, owner)
        tie, flagged.tied = flagged.tied, False
        returned.tied = True  # must survive `complete`
        assert returned.complete(start, finish, owner) == (done, tie)
        assert returned.tied
        ties += tie
        if owner % 50 == 49:
            flagged.prune(base - 1e-3)
            returned.prune(base - 1e-3)
    assert ties > 0  # not vacuous


def test_alike_stages_share_a_decode_step_bit_for_bit() -> None:
    """llama-3.1-70b in eight stages: the first (embedding) and last (LM head) stage have
    their own step, the six middle ones share one; every stage's time is its own cost's."""
    spec = get_model("llama-3.1-70b")
    costs = [
        StageCostModel(spec, get_hardware("h100-sxm"), Precision(), 8, 10, s == 0, s == 7)
        for s in range(8)
    ]
    for n in (1, 13, 256):
        funcs, index = alike_decode_steps(costs, n)
        assert len(funcs) == 3 and index == [0, 1, 1, 1, 1, 1, 1, 2]
        for ctx in (n, 5000 * n, 123_457):
            for cost, i in zip(costs, index, strict=True):
                assert funcs[i](ctx) == DecodeStepCost(cost, n).step_s(ctx)
                assert funcs[i](ctx) == cost.compute_s(0, 0.0, n, ctx, 0)


def test_held_transfers_book_what_record_many_books() -> None:
    """Trips of random shapes (one link, several with a link twice, a wide coflow, nothing
    moved), transfers inside a bin and spanning bins, booked in bulk several times and
    after `record` calls: every cell holds record_many's floats."""
    cluster = build_cluster(get_topology("h100x16_ib"), get_hardware("h100-sxm"))
    rng = np.random.default_rng(5)
    n_links = len(cluster.links)
    assert n_links >= 70
    shapes: list[Shape] = [((3,), (1.0,), 1e6), ((4, 5, 4), (1.0, 0.5, 0.25), 3e5)]
    shapes.append((tuple(range(70)), tuple(rng.random(70).tolist()), 7e4))
    shapes.append(((6,), (1.0,), 0.0))
    shapes += [
        (tuple(rng.choice(n_links, 2, replace=False).tolist()), (1.0, 0.3), 2e5) for _ in range(4)
    ]
    bulk, many = LinkLedger(cluster, 0.05), LinkLedger(cluster, 0.05)
    held = HeldTransfers(bulk)
    t = 0.0
    for trip in range(1500):
        kinds = rng.choice(len(shapes), size=int(rng.integers(1, 6))).tolist()
        times: list[float] = []
        for k in kinds:
            t0 = t + float(rng.exponential(0.002))
            t1 = t0 + float(rng.exponential(0.003))
            times += (t0, t1)
            links, weights, size = shapes[k]
            many.record_many([(links, weights, t0, t1, size)])
            t = t0
        held.hold(held.shape_ids([shapes[k] for k in kinds]), times)
        if trip % 400 == 399:
            held.book()
            for ledger in (bulk, many):  # a stepped transfer between bulk bookings
                ledger.record((3, 7), (1.0, 0.5), t, t + 0.01, 5e5)
    held.book()
    held.book()  # nothing held: books nothing
    assert held.count == 0
    assert bulk.table().equals(many.table())


def test_alarm_wakes_its_waiter_exactly_at_its_last_time() -> None:
    """Alarms set from a clock far below their time (simpy's now + (at − now) misses at:
    an intermediate hop) and close to it (the timeout itself), moved earlier, later and
    twice: each waiter wakes once, with the clock reading exactly the alarm's last time."""
    env = simpy.Environment()
    woke: dict[str, list[float]] = {}
    alarms: dict[str, Alarm] = {}
    far_set, far_at = 0.4182316567018517, 1.6133804742970745
    assert far_set + (far_at - far_set) != far_at  # the hop is needed

    def waiter(name: str, set_at: float, at: float) -> simpy.events.ProcessGenerator:
        yield env.timeout(set_at)
        alarms[name] = Alarm(env, at)
        yield alarms[name].event
        woke.setdefault(name, []).append(env.now)

    def mover() -> simpy.events.ProcessGenerator:
        yield env.timeout(0.95)
        alarms["near_earlier"].arm(math.nextafter(1.0 + 1e-9, 0.0))
        alarms["near_later"].arm(1.3 + 1e-12)
        alarms["far_twice"].arm(1.7)
        yield env.timeout(0.2)
        alarms["far_twice"].arm(math.nextafter(1.6, 2.0))

    env.process(waiter("near", 0.6, 1.0 + 1e-9))
    env.process(waiter("near_earlier", 0.7, 1.1))
    env.process(waiter("near_later", 0.8, 1.2))
    env.process(waiter("far", far_set, far_at))
    env.process(waiter("far_twice", far_set, far_at + 0.5))
    env.process(mover())
    env.run()
    assert woke == {
        "near": [1.0 + 1e-9],
        "near_earlier": [math.nextafter(1.0 + 1e-9, 0.0)],
        "near_later": [1.3 + 1e-12],
        "far": [far_at],
        "far_twice": [math.nextafter(1.6, 2.0)],
    }
