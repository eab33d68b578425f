"""Fault events, targets, random failures and the schedule (clustersim.faults)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from clustersim.catalog.hardware import get_hardware
from clustersim.catalog.topologies import get_topology
from clustersim.faults import (
    ComponentFailures,
    FaultEvent,
    FaultSchedule,
    FaultTargetError,
    draw_failures,
    resolve_target,
)
from clustersim.faults.random_failures import component_names
from clustersim.topology.graph import Cluster, build_cluster


@pytest.fixture(scope="module")
def cluster() -> Cluster:
    spec = get_topology("h100x16_ib")
    return build_cluster(spec, get_hardware(spec.gpu))


def test_gpu_and_node_targets(cluster: Cluster) -> None:
    slow = resolve_target(cluster, FaultEvent("gpu_slowdown", "n1.g3", 0.0, compute_factor=0.7))
    assert slow.gpus == ("n1.g3",) and slow.links == ()
    node = resolve_target(cluster, FaultEvent("node_down", "n1", 5.0, 9.0))
    assert node.gpus == cluster.node_gpus(1)


def test_link_targets_by_name_cable_and_vertex(cluster: Cluster) -> None:
    link = (
        cluster.links[cluster.link_id("n0.nic0", "leaf0")]
        if cluster.graph.has_edge("n0.nic0", "leaf0")
        else next(lk for lk in cluster.links if lk.src == "n0.nic0")
    )
    one = resolve_target(cluster, FaultEvent("link_down", link.name, 0.0))
    assert one.links == (link.id,)
    cable = resolve_target(cluster, FaultEvent("link_down", f"{link.src}<->{link.dst}", 0.0))
    assert sorted(cable.links) == sorted([link.id, cluster.link_id(link.dst, link.src)])
    vertex = resolve_target(
        cluster, FaultEvent("link_degrade", "n0.nic0", 0.0, bandwidth_factor=0.25)
    )
    touching = {lk.id for lk in cluster.links if "n0.nic0" in (lk.src, lk.dst)}
    assert set(vertex.links) == touching and len(touching) >= 4


@pytest.mark.parametrize(
    ("kind", "target", "expected"),
    [
        ("gpu_slowdown", "n9.g0", "n0.g0 … n1.g7"),
        ("node_down", "n2", "n0 … n1"),
        ("node_down", "node1", "n0 … n1"),
        ("link_down", "leaf0->n5.nic0", "no link"),
        ("link_degrade", "nowhere", "no link"),
    ],
)
def test_unknown_target_is_a_clean_error(
    cluster: Cluster, kind: str, target: str, expected: str
) -> None:
    event = FaultEvent(kind, target, 1.0, key="faults.events[2]")  # type: ignore[arg-type]
    with pytest.raises(FaultTargetError, match=r"^faults\.events\[2\]\.target: ") as err:
        resolve_target(cluster, event)
    assert expected in str(err.value)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"start_s": -1.0},
        {"start_s": 5.0, "end_s": 5.0},
        {"start_s": 0.0, "compute_factor": 0.0},
        {"start_s": 0.0, "bandwidth_factor": 1.5},
        {"start_s": 0.0, "extra_latency_s": -1e-6},
    ],
)
def test_bad_event_values_name_the_key(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=r"^faults\.events\[0\]: "):
        FaultEvent("gpu_slowdown", "n0.g0", key="faults.events[0]", **kwargs)  # type: ignore[arg-type]


def test_schedule_composes_overlapping_faults(cluster: Cluster) -> None:
    events = [
        FaultEvent("gpu_slowdown", "n0.g1", 10.0, 30.0, compute_factor=0.5),
        FaultEvent("gpu_slowdown", "n0.g1", 20.0, 40.0, compute_factor=0.5, hbm_factor=0.8),
        FaultEvent(
            "link_degrade", "n0.nic0", 15.0, 25.0, bandwidth_factor=0.25, extra_latency_s=5e-6
        ),
        FaultEvent("node_down", "n1", 50.0),
    ]
    schedule = FaultSchedule.build(cluster, events)
    assert schedule.change_points() == [10.0, 15.0, 20.0, 25.0, 30.0, 40.0, 50.0]
    compute, hbm = schedule.gpu_factors(22.0)
    assert compute == {"n0.g1": 0.25} and hbm == {"n0.g1": 0.8}
    assert schedule.gpu_factors(35.0)[0] == {"n0.g1": 0.5}
    assert schedule.gpu_factors(45.0) == ({}, {})
    factor, latency, down = schedule.link_state(20.0)
    assert set(factor.values()) == {0.25} and set(latency.values()) == {5e-6} and not down
    assert schedule.down_gpus(49.9) == frozenset()
    assert schedule.down_gpus(1e9) == frozenset(cluster.node_gpus(1))
    assert schedule.windows() == [(10.0, 40.0), (50.0, math.inf)]


def test_random_failures_are_seeded_and_follow_the_renewal_rate(cluster: Cluster) -> None:
    law = ComponentFailures("gpu", mtbf_s=400.0, repair_mean_s=100.0)
    horizon = 20_000.0
    a = draw_failures(cluster, [law], horizon, np.random.default_rng(7))
    b = draw_failures(cluster, [law], horizon, np.random.default_rng(7))
    assert a == b and all(e.kind == "gpu_down" and e.source == "random" for e in a)
    # alternating renewal: failures per instance ≈ horizon / (mtbf + mean repair) = 40
    per_gpu = len(a) / cluster.num_gpus
    assert per_gpu == pytest.approx(horizon / 500.0, rel=0.1)
    for gpu in cluster.gpus:
        mine = [e for e in a if e.target == gpu]
        assert all(x.end_s <= y.start_s for x, y in itertools.pairwise(mine))
    down = np.mean([e.duration_s for e in a])
    assert down == pytest.approx(100.0, rel=0.1)


def test_component_classes_name_graph_vertices(cluster: Cluster) -> None:
    assert component_names(cluster, "node") == ["n0", "n1"]
    nics = component_names(cluster, "nic")
    assert nics and all(cluster.graph.nodes[n]["kind"] == "nic" for n in nics)
    law = ComponentFailures("nic", mtbf_s=50.0, repair_mean_s=5.0, repair_dist="fixed")
    events = draw_failures(cluster, [law], 200.0, np.random.default_rng(1))
    assert events and {e.kind for e in events} == {"link_down"}
    assert all(e.duration_s == pytest.approx(5.0) for e in events)
    FaultSchedule.build(cluster, events)  # every drawn target resolves
