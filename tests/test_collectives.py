"""All-reduce algorithms: bandwidth arithmetic of each, latency terms, and the engine's choice."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest
import simpy

from clustersim.catalog.engines import ENGINES
from clustersim.catalog.topologies import get_topology
from clustersim.config.schema import HardwareSpec
from clustersim.network.collectives import (
    CUSTOM_KERNEL_FLOOR_S,
    NCCL_NVLS_BASE_S,
    NCCL_RING_BASE_S,
    NETWORK_COLLECTIVE_EFFICIENCY,
    NVLINK_COLLECTIVE_EFFICIENCY,
    NVLS_EFFICIENCY,
    PCIE_COLLECTIVE_EFFICIENCY,
    AllReduceChoice,
    allreduce_algorithms,
    allreduce_choice_of,
    estimate_allreduce_s,
    idle_allreduce_model,
)
from clustersim.network.fabric import Fabric
from clustersim.topology.graph import Cluster, build_cluster

NVL = 450e9  # H100 NVLink, bytes/s per direction
NIC = 50e9  # NDR NIC, bytes/s per direction
ALPHA = 2e-6  # NVLink GPU→GPU latency of the built-ins (s)
MIB = 2**20

HW = HardwareSpec(
    name="h100-sxm",
    memory_GiB=80,
    hbm_bandwidth_GBps=3350,
    peak_tflops={"bf16": 989},
    nvlink_bandwidth_GBps=450,
    pcie_bandwidth_GBps=64,
)


def cluster(name: str, hw: HardwareSpec = HW) -> Cluster:
    return build_cluster(get_topology(name), hw)


def fabric_time(name: str, group: list[str], nbytes: float, nvls: bool, count: int = 1) -> float:
    env = simpy.Environment()
    fab = Fabric(env, cluster(name), 1e-3, AllReduceChoice(), nvls)
    out: list[float] = []

    def proc() -> Generator[simpy.Event, Any, None]:
        yield fab.allreduce(group, nbytes, count)
        out.append(env.now)

    env.process(proc())
    env.run()
    return out[0]


def test_oneshot_small_message_in_a_node() -> None:
    c = cluster("dgx_h100_x1")
    b = 16 * 1024  # one decode token's hidden state ×1 (bf16, h = 8192)
    # every GPU reads 7 peers' buffers over its NVLink down-link
    expect = 7 * b / (NVL * NVLINK_COLLECTIVE_EFFICIENCY) + CUSTOM_KERNEL_FLOOR_S + 2 * ALPHA
    assert estimate_allreduce_s(c, c.gpus, b) == pytest.approx(expect, rel=1e-9)
    assert 5e-6 <= expect <= 10e-6  # custom one-shot all-reduce on 8×H100: 5–10 µs
    assert fabric_time("dgx_h100_x1", list(c.gpus), b, False) == pytest.approx(expect, rel=1e-9)


def test_twoshot_mid_message_moves_the_ring_bytes() -> None:
    c = cluster("dgx_h100_x1")
    b = 4 * MIB  # above one-shot's 256 KiB, below two-shot's 8 MiB
    data = 2 * 7 / 8 * b / (NVL * NVLINK_COLLECTIVE_EFFICIENCY)
    expect = data + CUSTOM_KERNEL_FLOOR_S + 3 * ALPHA
    assert estimate_allreduce_s(c, c.gpus, b) == pytest.approx(expect, rel=1e-9)
    assert fabric_time("dgx_h100_x1", list(c.gpus), b, False) == pytest.approx(expect, rel=1e-9)


def test_nccl_large_message_picks_nvls_where_the_switch_reduces() -> None:
    c = cluster("dgx_h100_x1")
    b = 64 * MIB
    ring = 2 * 7 / 8 * b / (NVL * NVLINK_COLLECTIVE_EFFICIENCY) + NCCL_RING_BASE_S + 14 * ALPHA
    nvls = b / (NVL * NVLS_EFFICIENCY) + NCCL_NVLS_BASE_S
    assert estimate_allreduce_s(c, c.gpus, b, nvls=False) == pytest.approx(ring, rel=1e-9)
    assert estimate_allreduce_s(c, c.gpus, b, nvls=True) == pytest.approx(nvls, rel=1e-9)
    assert nvls < ring
    # NVLS bus bandwidth = algorithm bandwidth × 2(n−1)/n ≈ 480 GB/s (nccl-tests on 8×H100)
    assert pytest.approx(481e9, rel=0.01) == NVL * NVLS_EFFICIENCY * 2 * 7 / 8
    assert fabric_time("dgx_h100_x1", list(c.gpus), b, True) == pytest.approx(nvls, rel=1e-9)


def test_count_scales_bytes_and_latency() -> None:
    c = cluster("h100x16_ib")
    one = estimate_allreduce_s(c, c.gpus, 1e6)
    assert estimate_allreduce_s(c, c.gpus, 1e6, count=5) == pytest.approx(5 * one, rel=1e-9)
    t = fabric_time("h100x16_ib", list(c.gpus), 1e6, False, count=5)
    assert t == pytest.approx(estimate_allreduce_s(c, c.gpus, 1e6, count=5), rel=1e-9)


def test_tp2_across_nodes_is_slower_by_the_achieved_bandwidth_ratio() -> None:
    c = cluster("h100x16_ib")
    b = 1e9  # large: latency terms are < 0.1 % of the time
    inside = estimate_allreduce_s(c, ["n0.g0", "n0.g1"], b)
    across = estimate_allreduce_s(c, ["n0.g0", "n1.g0"], b)
    ratio = (NVL * NVLINK_COLLECTIVE_EFFICIENCY) / (NIC * NETWORK_COLLECTIVE_EFFICIENCY)
    assert across / inside == pytest.approx(ratio, rel=0.01)


def test_tp16_hierarchical_moves_b_over_8_per_nic() -> None:
    c = cluster("h100x16_ib")
    b = 1e9
    algos = allreduce_algorithms(c, c.gpus, nvls=False)
    assert set(algos) == {"ring", "tree", "hierarchical"}
    idle = idle_allreduce_model(c, algos)
    local = 2 * 7 / 8 / (NVL * NVLINK_COLLECTIVE_EFFICIENCY)  # RS + AG inside each node
    inter = 2 * 1 / 2 / 8 / (NIC * NETWORK_COLLECTIVE_EFFICIENCY)  # k = 2 rings of B/8
    assert idle["hierarchical"][1] == pytest.approx(local + inter, rel=1e-9)
    assert estimate_allreduce_s(c, c.gpus, b) == pytest.approx(
        min(lat + b * per for lat, per in idle.values()), rel=1e-9
    )


def test_pcie_box_has_no_custom_allreduce() -> None:
    pcie = HW.model_copy(update={"name": "l40s", "nvlink_bandwidth_GBps": 0.0})
    c = cluster("l40s_x8_pcie", pcie)
    algos = allreduce_algorithms(c, c.gpus, nvls=False)
    assert set(algos) == {"ring"}
    (phase,) = algos["ring"]
    assert phase.flows[0][2] == pytest.approx(2 * 7 / 8 / PCIE_COLLECTIVE_EFFICIENCY)


def test_engine_choice_follows_its_thresholds() -> None:
    idle = {"oneshot": (7e-6, 1e-12), "twoshot": (9e-6, 1e-12), "ring": (30e-6, 1e-12)}
    vllm = allreduce_choice_of(ENGINES["vllm"])
    assert vllm.pick(idle, 128 * 1024) == "oneshot"
    assert vllm.pick(idle, 1 * MIB) == "twoshot"
    assert vllm.pick(idle, 64 * MIB) == "ring"
    no_custom = AllReduceChoice(custom=False)
    assert no_custom.pick(idle, 1024) == "ring"
