"""The pipeline leap's bulk paths (serving/pipeline_leap.py) equal the one-at-a-time ones:
rows built from trips' compact stage steps in numpy, transfers booked in bulk, completion ties
flagged instead of returned, alike stages sharing one decode step time; the trips' timer
lands exactly, moved or not, in its trips' event order. (Whole runs: the PP cases of
tests/test_leap_equivalence.py.)"""

from __future__ import annotations

import bisect
import math
from typing import Any

import numpy as np
import pytest
import simpy

from clustersim.catalog.hardware import get_hardware
from clustersim.catalog.models import get_model
from clustersim.catalog.topologies import get_topology
from clustersim.config.schema import Precision
from clustersim.metrics.recorder import Recorder
from clustersim.model.decode_run import DecodeStepCost
from clustersim.model.stage_cost import StageCostModel
from clustersim.network import held_transfers
from clustersim.network.completion_ties import Completions, due_s
from clustersim.network.held_transfers import HeldTransfers, Shape
from clustersim.network.ledger import LinkLedger
from clustersim.serving.pipeline_trip import Trip, TripTimer
from clustersim.serving.trip_prices import alike_decode_steps
from clustersim.serving.trip_stages import one_phase_steps
from clustersim.topology.graph import build_cluster


def test_trips_rows_are_the_bytes_of_their_rows_one_by_one() -> None:
    """`on_trip` (stage steps and a head, kept compact until the table is built) gives the
    table `on_iteration` of each stage step's row gives: stage numbers, the comm column
    end − (start + compute) with all-reduces and 0 without, awkward floats, rows of other
    replicas recorded one by one in between."""
    rng = np.random.default_rng(11)
    one, trips = Recorder(1), Recorder(1)
    for trip in range(700):
        stages = int(rng.integers(2, 9))
        comm = bool(rng.random() < 0.7)
        head = (int(rng.integers(0, 64)), int(rng.integers(0, 8)), comm,
                int(rng.integers(0, 4096)), int(rng.integers(0, 256)), int(rng.integers(1, 256)),
                int(rng.integers(1, 4096)), int(rng.integers(0, 10**6)), 10**6)  # fmt: skip
        steps: list[float] = []
        at = float(trip) * 0.37
        for stage in range(stages):
            start = at + float(rng.choice([0.0, 1e-13, 0.1 / 3]))
            compute = float(rng.uniform(1e-4, 0.03))
            end = start + compute + float(rng.choice([0.0, 5e-324, 1e-6, 1 / 7]))
            bubble = float(rng.choice([0.0, start - at]))
            steps += (start, end, compute, bubble)
            replica, lane, _comm, pre, n, seqs, tokens, used, capacity = head
            one.on_iteration((replica, stage, lane, start, end, pre, n, seqs, tokens, compute,
                              end - (start + compute) if comm else 0.0, bubble, used,
                              capacity))  # fmt: skip
            at = end
        trips.on_trip(steps, head, stages)
        if trip % 5 == 0:  # a stepped replica's row between trips
            row = (99, 0, 0, at / 2, at, 0, 4, 4, 4, at / 4, 0.0, 0.0, 7, 100)
            one.on_iteration(row)
            trips.on_iteration(row)
    assert trips.steps == one.steps
    expected, got = one.iterations_table(), trips.iterations_table()
    assert got.columns == expected.columns
    for name, column in expected.items():
        assert got[name].dtype == column.dtype and got[name].tobytes() == column.tobytes(), name
    quiet = Recorder(1, record_iterations=False)
    quiet.on_trip([0.0, 1.0, 0.5, 0.0] * 2, (0, 0, True, 0, 8, 8, 8, 1, 10), 2)
    assert quiet.steps == 2 and len(quiet.iterations_table()) == 0


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


class ListedCompletions:
    """`Completions` as first built: every entity a (finish, start, completion, owner)
    tuple in one sorted list, scanned near a new finish (the reference)."""

    def __init__(self) -> None:
        self.entries: list[tuple[float, float, float, int]] = []
        self.tied = False

    def completion(self, start: float, finish: float, owner: int) -> float:
        last = due_s(finish)
        reach = finish - 2.0 * (last - finish)
        i = bisect.bisect_left([e[0] for e in self.entries], reach)
        k, done, tie = i, finish, False
        for t, s, c, _owner in self.entries[i:]:
            if t > last:
                break
            if t < finish:
                k += 1
                if done == finish and c == t and t >= start and finish <= due_s(t):
                    done = t
            elif t > finish and s <= finish < c:
                tie = True
        self.entries.insert(k, (finish, start, done, owner))
        self.tied |= tie and done == finish
        return done

    def drop(self, owner: int) -> None:
        self.entries = [e for e in self.entries if e[3] != owner]

    def prune(self, before_s: float) -> None:
        self.entries = [e for e in self.entries if e[0] >= before_s]


def _trip_times(rng: np.random.Generator, owner: int) -> list[float]:
    """(start, finish, …) ascending, on a grid shared by the trips near in `owner`, some an
    ulp to 1e-11 s off it or from the one before."""
    jitter = [0.0, 1e-13, -1e-13, 1e-12, -2e-12, 1e-11]
    grid = np.sort(rng.choice(np.arange(owner, owner + 60), int(rng.integers(1, 6)), False))
    times: list[float] = []
    for m in grid:
        finish = 0.5 + int(m) * 1e-5 + float(rng.choice(jitter)) * float(rng.random() < 0.2)
        if rng.random() < 0.1:
            finish = math.nextafter(finish, 1.0)
        if times and rng.random() < 0.05:
            finish = times[-1] + 1e-12
        times += (finish - float(rng.uniform(1e-6, 5e-6)), finish)
    return times


def test_hold_clear_holds_what_completion_holds_or_nothing() -> None:
    """Random near-tied trips: `hold_clear` either holds each transfer at its finish, as
    `completion` one by one does (flagging no tie), or holds nothing (the trip then goes
    one by one); `completion`, `drop` and `prune` keep what the listed reference keeps."""
    rng = np.random.default_rng(5)
    bulk, one, ref = Completions(), Completions(), ListedCompletions()
    outcomes = {True: 0, False: 0}
    ties = 0

    def hold(times: list[float], owner: int) -> None:
        clear = bulk.hold_clear(times, owner)
        outcomes[clear] += 1
        done = [one.completion(times[j], times[j + 1], owner) for j in range(0, len(times), 2)]
        assert done == [
            ref.completion(times[j], times[j + 1], owner) for j in range(0, len(times), 2)
        ]
        if clear:
            assert done == times[1::2] and not one.tied
        else:
            assert bulk.held() == [e for e in one.held() if e[3] != owner]
            for j in range(0, len(times), 2):
                bulk.completion(times[j], times[j + 1], owner)
        assert bulk.held() == one.held() == sorted(ref.entries)
        assert bulk.tied == one.tied == ref.tied

    for owner in range(1500):
        times = _trip_times(rng, owner)
        hold(times, owner)
        if owner % 7 == 3:  # computed again
            for c in (bulk, one, ref):
                c.drop(owner)
            hold(times, owner)
        ties += one.tied
        bulk.tied = one.tied = ref.tied = False
        if owner % 40 == 39:
            for c in (bulk, one, ref):
                c.prune(times[-1] - 1e-3)
    assert min(outcomes.values()) > 100 and ties > 0  # both ways taken, ties among them


def test_one_phase_steps_find_near_finishes_as_hold_clear_does() -> None:
    """Random one-phase trips among held finishes, some placed just inside or outside the
    window around the trip's own: the stages' inline test says clear exactly when
    `hold_clear` would hold the trip, and it computes the same steps and times."""
    rng = np.random.default_rng(11)
    outcomes = {True: 0, False: 0}
    for _ in range(400):
        p = int(rng.integers(2, 9))
        plan = tuple(
            (
                float(rng.uniform(1e-5, 1e-4)),
                float(rng.choice([0.0, 2e-6])),
                None if s == p - 1 else float(rng.uniform(1e-6, 1e-5)),
                float(rng.choice([0.0, 1e-6])),
            )
            for s in range(p)
        )
        computes = [float(rng.uniform(1e-3, 3e-3)) for _ in range(p)]
        formed = float(rng.uniform(0.0, 200.0))
        free = [formed + float(rng.uniform(-1e-3, 1e-3)) for _ in range(p)]
        steps: list[float] = []
        times: list[float] = []
        one_phase_steps(plan, computes, list(free), [0.0] * p, formed, steps, times, [], 2e-12)
        ends = times[1::2]
        held = [float(rng.uniform(formed, ends[-1] + 1e-3)) for _ in range(rng.integers(0, 30))]
        for f in rng.choice(ends, int(rng.integers(0, 3))):
            offset = rng.choice([-3.5e-12, -2.9e-12, 0.0, 1.9e-12, 2.1e-12, 1e-11])
            held.append(float(f) + float(offset))
        for j in rng.choice(len(ends) - 1, int(rng.integers(0, 3))):  # between two finishes
            held.append(float(ends[j] + (ends[j + 1] - ends[j]) * rng.uniform(0.01, 0.99)))
        ties, ref = Completions(), Completions()
        ties.finishes[:] = ref.finishes[:] = sorted(held)
        again: list[float] = []
        again_times: list[float] = []
        wide = ties.wide_s(formed)
        clear = one_phase_steps(
            plan, computes, list(free), [0.0] * p, formed, again, again_times, ties.finishes, wide
        )
        assert (again, again_times) == (steps, times)
        assert clear == ref.hold_clear(times, 1)
        outcomes[clear] += 1
    assert min(outcomes.values()) > 50  # both ways taken


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


@pytest.mark.parametrize("back_to_back", [False, True])
def test_held_transfers_book_what_record_many_books(back_to_back: bool) -> None:
    """Trips of random shapes (one link, several, a wide coflow, nothing moved), transfers
    inside a bin and spanning bins, booked in bulk several times and after `record` calls:
    every cell holds record_many's floats. Overlapping transfers and a shape naming a link
    twice add to a cell from two runs (booked run by run); transfers back to back on links
    named once give each cell one run (booked as one grid)."""
    cluster = build_cluster(get_topology("h100x16_ib"), get_hardware("h100-sxm"))
    rng = np.random.default_rng(5)
    n_links = len(cluster.links)
    assert n_links >= 70
    shapes: list[Shape] = [((3,), (1.0,), 1e6)]
    if not back_to_back:
        shapes.append(((4, 5, 4), (1.0, 0.5, 0.25), 3e5))
    shapes.append((tuple(range(70)), tuple(rng.random(70).tolist()), 7e4))
    shapes.append(((6,), (1.0,), 0.0))
    shapes += [
        (tuple(rng.choice(n_links, 2, replace=False).tolist()), (1.0, 0.3), 2e5) for _ in range(4)
    ]
    bulk, many = LinkLedger(cluster, 0.05), LinkLedger(cluster, 0.05)
    held = HeldTransfers(bulk)
    grids = 0
    real_add_in_order = held_transfers._add_in_order

    def add_in_order(*args: Any) -> None:
        nonlocal grids
        grids -= 1
        real_add_in_order(*args)

    t = 0.0
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(held_transfers, "_add_in_order", add_in_order)
        for trip in range(1500):
            kinds = rng.choice(len(shapes), size=int(rng.integers(1, 6))).tolist()
            times: list[float] = []
            for k in kinds:
                t0 = t + float(rng.exponential(0.002))
                t1 = t0 + float(rng.exponential(0.003))
                times += (t0, t1)
                links, weights, size = shapes[k]
                many.record_many([(links, weights, t0, t1, size)])
                t = t1 if back_to_back else t0
            held.hold(held.shape_ids([shapes[k] for k in kinds]), times)
            if trip % 400 == 399:
                grids += 1
                held.book()
                for ledger in (bulk, many):  # a stepped transfer between bulk bookings
                    ledger.record((3, 7), (1.0, 0.5), t, t + 0.01, 5e5)
                t += 0.01 if back_to_back else 0.0
        grids += 1
        held.book()
    held.book()  # nothing held: books nothing
    assert held.count == 0
    assert bulk.table().equals(many.table())
    assert grids == (4 if back_to_back else 0)  # each book took the way it should


def _trip_ending(env: simpy.Environment, end_s: float) -> Trip:
    """A trip whose last stage ends at end_s, its event id drawn now."""
    trip = Trip(0, 0, None, None, [], [])  # type: ignore[arg-type]
    trip.rows[:] = [end_s / 2, end_s, end_s / 4, 0.0]
    trip.eid = next(env._eid)
    return trip


def test_trip_timer_rings_exactly_at_the_trip_end_it_was_last_armed_for() -> None:
    """Armed from a clock far below the end (where simpy's now + (at − now) misses it), moved
    earlier, later and to another trip: the timer rings once for each time it was left
    armed, with the clock reading exactly that end; stale queue entries ring no one."""
    env = simpy.Environment()
    rung: list[float] = []
    timer = TripTimer(env, lambda: rung.append(env.now))
    far_set, far_at = 0.4182316567018517, 1.6133804742970745
    assert far_set + (far_at - far_set) != far_at  # a timeout would miss it

    def driver() -> simpy.events.ProcessGenerator:
        yield env.timeout(far_set)
        timer.arm(_trip_ending(env, far_at))
        yield env.timeout(1.2 - far_set)
        assert rung == []
        near = _trip_ending(env, math.nextafter(1.3 + 1e-9, 2.0))
        timer.arm(near)  # another trip, earlier: the far entry goes stale
        timer.arm(near)  # the same: nothing queued again
        near.rows[1] = 1.25  # moved earlier
        timer.arm(near)
        yield env.timeout(0.1)
        later = _trip_ending(env, 2.5)
        timer.arm(later)
        later.rows[1] = 2.75  # moved later
        timer.arm(later)

    env.process(driver())
    env.run()
    assert rung == [1.25, 2.75]


def test_trip_timer_keeps_the_order_of_its_trips_event_ids() -> None:
    """At one time, the timer rings before events queued after its trip drew its id and
    after those queued before, as the trip's own timeout would."""
    env = simpy.Environment()
    order: list[str] = []
    timer = TripTimer(env, lambda: order.append("trip"))
    env.timeout(1.0).callbacks.append(lambda _e: order.append("before"))
    trip = _trip_ending(env, 1.0)
    env.timeout(1.0).callbacks.append(lambda _e: order.append("after"))
    timer.arm(trip)
    env.run()
    assert order == ["before", "trip", "after"]
