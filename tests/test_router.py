"""Request → replica routers."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from clustersim.serving.router import ROUTER_NAMES, LeastOutstandingRouter, make_router


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def test_round_robin_order() -> None:
    r = make_router("round_robin", 3, _rng())
    picks = [r.choose([9, 0, 5], [0.9, 0.0, 0.5]) for _ in range(7)]
    assert picks == [0, 1, 2, 0, 1, 2, 0]


def test_least_outstanding_picks_min_lowest_index_on_ties() -> None:
    r = make_router("least_outstanding", 5, _rng())
    assert r.choose([4, 2, 7, 2, 3], [0.0] * 5) == 1
    assert r.choose([0, 0, 0, 0, 0], [0.9, 0.1, 0.0, 0.0, 0.0]) == 0
    assert r.choose([5, 4, 3, 2, 1], [0.0] * 5) == 4


def test_least_kv() -> None:
    r = make_router("least_kv", 4, _rng())
    assert r.choose([0, 9, 0, 0], [0.5, 0.1, 0.3, 0.2]) == 1
    # tie on kv → fewest outstanding
    assert r.choose([3, 5, 2, 9], [0.2, 0.7, 0.2, 0.2]) == 2
    # tie on kv and outstanding → lowest index
    assert r.choose([3, 1, 1, 1], [0.4, 0.7, 0.4, 0.4]) == 2
    # every cache equally full → least outstanding, lowest index
    assert r.choose([3, 1, 4, 1], [0.0, 0.0, 0.0, 0.0]) == 1


def test_random_is_uniform_and_reproducible() -> None:
    picks = [make_router("random", 4, _rng(1)).choose([0] * 4, [0.0] * 4) for _ in range(3)]
    assert len(set(picks)) == 1  # same seed → same first pick
    r = make_router("random", 4, _rng(2))
    counts = Counter(r.choose([0] * 4, [0.0] * 4) for _ in range(20_000))
    assert set(counts) == {0, 1, 2, 3}
    assert all(abs(c / 20_000 - 0.25) < 0.02 for c in counts.values())


def test_power_of_two_never_picks_the_worse_of_its_pair() -> None:
    n, trials = 6, 30_000
    load = list(range(n))  # distinct loads: replica i is worse than every j < i
    r = make_router("power_of_two", n, _rng(3))
    counts = Counter(r.choose(load, [0.0] * n) for _ in range(trials))
    # the most loaded replica is the worse member of every pair it is in
    assert counts[n - 1] == 0
    # replica i wins iff it is sampled with a more loaded partner:
    # P(i) = 2 (n − 1 − i) / (n (n − 1))
    for i in range(n - 1):
        expected = 2 * (n - 1 - i) / (n * (n - 1))
        assert abs(counts[i] / trials - expected) < 0.015


def test_power_of_two_pairs_are_distinct() -> None:
    # with two replicas every pair is {0, 1}: the less loaded one is always chosen
    r = make_router("power_of_two", 2, _rng(4))
    assert all(r.choose([5, 1], [0.0, 0.0]) == 1 for _ in range(5_000))
    assert all(r.choose([0, 1], [0.0, 0.0]) == 0 for _ in range(5_000))


@pytest.mark.parametrize("name", ROUTER_NAMES)
def test_single_replica_and_range(name: str) -> None:
    one = make_router(name, 1, _rng())  # type: ignore[arg-type]
    assert all(one.choose([3], [0.5]) == 0 for _ in range(100))
    many = make_router(name, 7, _rng())  # type: ignore[arg-type]
    loads = _rng(9).integers(0, 5, size=(500, 7)).tolist()
    kv = _rng(10).random((500, 7)).round(1).tolist()
    assert all(0 <= many.choose(o, k) < 7 for o, k in zip(loads, kv, strict=True))
    assert many.name == name


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="unknown router"):
        make_router("nearest", 2, _rng())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="num_replicas"):
        make_router("round_robin", 0, _rng())


@pytest.mark.parametrize("replicas", [1, 3, 64])
def test_tracked_least_outstanding_answers_as_the_scan(replicas: int) -> None:
    """The heap kept under `track` gives the scan's answer (fewest, then lowest index) after
    any mix of routed arrivals and reported completions, across its rebuilds."""
    tracked = LeastOutstandingRouter(replicas)
    outstanding = [0] * replicas
    tracked.track(outstanding)
    rng = np.random.default_rng(replicas)
    for _ in range(5000):
        if rng.random() < 0.55 or not any(outstanding):
            r = tracked.choose(outstanding, [])
            assert r == outstanding.index(min(outstanding))
            outstanding[r] += 1
        else:
            busy = [i for i, c in enumerate(outstanding) if c]
            i = busy[int(rng.integers(len(busy)))]
            outstanding[i] -= 1
            tracked.decreased(i)
