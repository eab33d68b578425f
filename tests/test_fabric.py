"""Fabric: max-min fair sharing theory, collectives, latency model, ledger invariants."""

from __future__ import annotations

from collections.abc import Generator, Sequence
from typing import Any

import numpy as np
import pytest
import simpy

from clustersim.catalog.topologies import get_topology
from clustersim.config.schema import HardwareSpec
from clustersim.network.collectives import NVLINK_COLLECTIVE_EFFICIENCY
from clustersim.network.fabric import Fabric
from clustersim.network.fair_share import max_min_rates
from clustersim.network.routing import FlowSpec
from clustersim.topology.graph import Cluster, build_cluster

NVL = 450e9  # H100 NVLink, bytes/s per direction
NIC = 50e9  # NDR NIC, bytes/s per direction
ALPHA = 2e-6  # NVLink GPU→GPU latency of the built-ins (s)

HW = HardwareSpec(
    name="h100-sxm",
    memory_GiB=80,
    hbm_bandwidth_GBps=3350,
    peak_tflops={"bf16": 989},
    nvlink_bandwidth_GBps=450,
    pcie_bandwidth_GBps=64,
)
PCIE_HW = HW.model_copy(update={"name": "l40s", "nvlink_bandwidth_GBps": 0.0})

_CLUSTERS: dict[str, Cluster] = {}


def cluster(name: str) -> Cluster:
    if name not in _CLUSTERS:
        spec = get_topology(name)
        _CLUSTERS[name] = build_cluster(spec, PCIE_HW if spec.nvlink is None else HW)
    return _CLUSTERS[name]


def finish_times(
    name: str, jobs: Sequence[tuple[float, Any]], bin_s: float = 1.0
) -> tuple[list[float], Fabric]:
    """Run `jobs` = (start time, fabric → event); return each job's completion time."""
    env = simpy.Environment()
    fab = Fabric(env, cluster(name), bin_s)
    out = [float("nan")] * len(jobs)

    def proc(i: int, t: float, make: Any) -> Generator[simpy.Event, Any, None]:
        yield env.timeout(t)
        yield make(fab)
        out[i] = env.now

    for i, (t, make) in enumerate(jobs):
        env.process(proc(i, t, make))
    env.run()
    return out, fab


# ------------------------------------------------------------------ max-min theory


def test_max_min_textbook_example() -> None:
    # f0 on L0; f1 on L0+L1; f2 on L1.  L0 = 1, L1 = 2  →  0.5, 0.5, 1.5
    assert max_min_rates([(0,), (0, 1), (1,)], [1.0, 2.0]) == pytest.approx([0.5, 0.5, 1.5])
    # weighted: entity 0 needs only half its rate on link 0
    rates = max_min_rates([(0,), (0,)], [3.0], [(0.5,), (1.0,)])
    assert rates == pytest.approx([2.0, 2.0])
    assert max_min_rates([(0, 1), (2,)], [5.0, 3.0, 4.0]) == [3.0, 4.0]  # no sharing


def test_idle_flow_takes_bytes_over_bandwidth_plus_latency() -> None:
    b = 450e6
    (t,), _ = finish_times("dgx_h100_x1", [(0.0, lambda f: f.send("n0.g0", "n0.g1", b))])
    assert t == pytest.approx(b / NVL + ALPHA, rel=1e-12)


def test_two_flows_on_one_link_take_twice_as_long() -> None:
    b = 450e6  # both leave n0.g0: they share its NVLink uplink
    two, _ = finish_times(
        "dgx_h100_x1",
        [
            (0.0, lambda f: f.send("n0.g0", "n0.g1", b)),
            (0.0, lambda f: f.send("n0.g0", "n0.g2", b)),
        ],
    )
    assert two == pytest.approx([2 * b / NVL + ALPHA] * 2, rel=1e-12)
    # the same two flows as one transfer
    (one,), _ = finish_times(
        "dgx_h100_x1",
        [(0.0, lambda f: f.transfer([("n0.g0", "n0.g1", b), ("n0.g0", "n0.g2", b)]))],
    )
    assert one == pytest.approx(2 * b / NVL + ALPHA, rel=1e-12)


def test_flows_on_disjoint_links_do_not_interfere() -> None:
    b = 450e6
    times, _ = finish_times(
        "dgx_h100_x1",
        [
            (0.0, lambda f: f.send("n0.g0", "n0.g1", b)),
            (0.0, lambda f: f.send("n0.g2", "n0.g3", b)),
        ],
    )
    assert times == pytest.approx([b / NVL + ALPHA] * 2, rel=1e-12)


def test_bandwidth_is_reshared_when_flows_start_and_finish() -> None:
    b = 450e6
    t1 = 0.5 * b / NVL  # flow A is half done when B starts on the same uplink
    (ta, tb), _ = finish_times(
        "dgx_h100_x1",
        [
            (0.0, lambda f: f.send("n0.g0", "n0.g1", b)),
            (t1, lambda f: f.send("n0.g0", "n0.g2", b)),
        ],
    )
    assert ta == pytest.approx(1.5 * b / NVL + ALPHA, rel=1e-9)  # b/2 left at half rate
    assert tb == pytest.approx(2.0 * b / NVL + ALPHA, rel=1e-9)  # then alone at full rate


def test_independent_flows_vs_coflow() -> None:
    b = 450e6  # short (b) and long (3b) flow on one uplink
    flows = [("n0.g0", "n0.g1", b), ("n0.g0", "n0.g2", 3 * b)]
    (t_ind,), _ = finish_times(
        "dgx_h100_x1", [(0.0, lambda f: f.transfer(flows, independent_flows=True))]
    )
    (t_co,), _ = finish_times("dgx_h100_x1", [(0.0, lambda f: f.transfer(flows))])
    # either way the uplink carries 4b, and it never idles
    assert t_ind == pytest.approx(4 * b / NVL + ALPHA, rel=1e-9)
    assert t_co == pytest.approx(4 * b / NVL + ALPHA, rel=1e-9)


def test_empty_and_same_gpu_transfers_fire_at_once() -> None:
    times, _ = finish_times(
        "dgx_h100_x1",
        [
            (0.0, lambda f: f.transfer([("n0.g0", "n0.g0", 1e9), ("n0.g0", "n0.g1", 0.0)])),
            (0.0, lambda f: f.send("n0.g3", "n0.g3", 1e9, latency_s=1e-3)),
            (0.0, lambda f: f.allreduce(["n0.g0"], 1e9)),
        ],
    )
    assert times == [0.0, 1e-3, 0.0]


# ------------------------------------------------------------------ collectives


def test_all_to_all_is_bound_by_the_busiest_link() -> None:
    c = cluster("h100x16_ib")
    n = 16
    m = np.full((n, n), 1e6)
    m[:, 5] = 4e6  # everyone sends 4x more to GPU 5 (a hot expert)
    (t,), fab = finish_times("h100x16_ib", [(0.0, lambda f: f.all_to_all(c.gpus, m))])
    # GPU 5 (n0.g5) receives 8 × 4 MB over its NIC from node 1: the busiest link
    nic_in = 8 * 4e6 / NIC
    assert t == pytest.approx(nic_in + c.path_latency_s("n0.g0", "n1.g0"), rel=1e-9)
    total = fab.link_totals()["bytes"].sum()
    sent = sum(
        m[i, j] * len(c.path(c.gpus[i], c.gpus[j])) for i in range(n) for j in range(n) if i != j
    )
    assert total == pytest.approx(sent, rel=1e-12)


# ------------------------------------------------------------------ ledger


def test_ledger_spreads_bytes_over_bins_exactly() -> None:
    b = 450e6  # 1 ms on one NVLink; 0.25 ms bins → 4 full bins
    (_t,), fab = finish_times(
        "dgx_h100_x1", [(0.0, lambda f: f.send("n0.g0", "n0.g1", b))], bin_s=0.25e-3
    )
    table = fab.link_table()
    assert list(table.columns) == ["link", "kind", "bin_start_s", "bytes", "utilisation"]
    assert set(table["link"]) == {"n0.g0->nvsw0", "nvsw0->n0.g1"}
    assert set(table["kind"]) == {"nvlink"}
    up = table[table["link"] == "n0.g0->nvsw0"]
    assert up["bin_start_s"].tolist() == pytest.approx([0.0, 0.25e-3, 0.5e-3, 0.75e-3])
    assert up["utilisation"].tolist() == pytest.approx([1.0] * 4, rel=1e-9)
    assert up["bytes"].sum() == pytest.approx(b, rel=1e-12)
    assert len(fab.link_table(until_s=0.5e-3)) == 4  # two bins per link before 0.5 ms


def _random_traffic(seed: int) -> tuple[Fabric, float]:
    c = cluster("h100x16_ib")
    rng = np.random.default_rng(seed)
    env = simpy.Environment()
    fab = Fabric(env, c, bin_s=1e-4)
    sent = 0.0
    jobs: list[tuple[float, list[FlowSpec]]] = []
    for _ in range(150):
        k = int(rng.integers(1, 4))
        flows = [
            (c.gpus[int(rng.integers(16))], c.gpus[int(rng.integers(16))], float(rng.gamma(2, 2e6)))
            for _ in range(k)
        ]
        jobs.append((float(rng.uniform(0, 2e-3)), flows))
        sent += sum(b * len(c.path(s, d)) for s, d, b in flows)

    def proc(t: float, flows: list[FlowSpec], indep: bool) -> Generator[simpy.Event, Any, None]:
        yield env.timeout(t)
        yield fab.transfer(flows, independent_flows=indep)

    for i, (t, flows) in enumerate(jobs):
        env.process(proc(t, flows, i % 2 == 0))
    for i in range(8):  # and 8 TP8 all-reduces at t = 0, alternating between the two nodes
        group = c.gpus[8 * (i % 2) : 8 * (i % 2) + 8]
        fab.allreduce(group, 4e6)
        # two-shot: each of 8 GPUs sends 2·7/8 × 4 MB over 2-link NVLink paths, carried as
        # payload / achieved share of the link (network/collectives.py)
        sent += 8 * (7 / 4 * 4e6 / NVLINK_COLLECTIVE_EFFICIENCY) * 2
    env.run()
    return fab, sent


def test_ledger_conserves_bytes_and_never_exceeds_capacity() -> None:
    fab, sent = _random_traffic(seed=3)
    table = fab.link_table()
    assert table["bytes"].sum() == pytest.approx(sent, rel=1e-9)
    assert 0.99 < table["utilisation"].max() <= 1.0 + 1e-9  # some links saturate, none exceed
    assert (table["bytes"] > 0).all()


def test_same_inputs_same_ledger() -> None:
    a, _ = _random_traffic(seed=11)
    b, _ = _random_traffic(seed=11)
    assert a.link_table().equals(b.link_table())
