"""Placement: layout groups → GPUs, locality rules and rejections with their numbers."""

from __future__ import annotations

import pytest

from clustersim.catalog.topologies import get_topology
from clustersim.config.schema import HardwareSpec, Layout, ModelSpec
from clustersim.topology.graph import Cluster, build_cluster
from clustersim.topology.placement import Placement, PlacementError, place

HW = HardwareSpec(
    name="h100-sxm",
    memory_GiB=80,
    hbm_bandwidth_GBps=3350,
    peak_tflops={"bf16": 989},
    nvlink_bandwidth_GBps=900,
)
PCIE_HW = HW.model_copy(update={"name": "l40s", "nvlink_bandwidth_GBps": 0.0})


def model(layers: int = 80, heads: int = 64, kv: int = 8) -> ModelSpec:
    return ModelSpec(
        name="m",
        num_layers=layers,
        hidden_size=heads * 128,
        num_attention_heads=heads,
        num_kv_heads=kv,
        head_dim=128,
        intermediate_size=4 * heads * 128,
        vocab_size=32000,
    )


def cluster(name: str) -> Cluster:
    return build_cluster(get_topology(name), PCIE_HW if name.startswith("l40s") else HW)


def run(name: str, m: ModelSpec | None = None, **layout: int) -> Placement:
    return place(Layout(**layout), cluster(name), m or model())


def test_tp8_pp2_puts_stages_on_consecutive_nodes() -> None:
    p = run("h100x16_ib", tp=8, pp=2)
    c = cluster("h100x16_ib")
    (rep,) = p.replicas
    assert rep.stages[0] == tuple(f"n0.g{i}" for i in range(8))
    assert rep.stages[1] == tuple(f"n1.g{i}" for i in range(8))
    assert {c.node_of(g) for g in rep.stages[0]} == {0}
    assert rep.handoff_pairs(0)[3] == ("n0.g3", "n1.g3")
    assert p.warnings == ()


def test_tp_groups_stay_inside_a_node() -> None:
    c = cluster("h100x16_ib")
    p = run("h100x16_ib", tp=4, dp=4)
    for rep in p.replicas:
        assert len({c.node_of(g) for g in rep.stages[0]}) == 1
    p = run("h100x16_ib", tp=2, pp=2, dp=4)  # a replica of 4 fits a node: stays in it
    for rep in p.replicas:
        assert len({c.node_of(g) for g in rep.gpus}) == 1


def test_dp_replicas_use_disjoint_gpus() -> None:
    p = run("h800x32_ib", tp=4, pp=2, dp=4)
    seen: list[str] = [g for rep in p.replicas for g in rep.gpus]
    assert len(seen) == len(set(seen)) == p.gpus_used == 32
    assert [r.index for r in p.replicas] == [0, 1, 2, 3]
    assert p.replica_of("n3.g7") == 3


def test_too_many_gpus_names_the_numbers() -> None:
    with pytest.raises(PlacementError) as err:
        run("h100x16_ib", tp=8, pp=2, dp=2)
    msg = str(err.value)
    assert "32 GPUs" in msg and "has 16" in msg and "h100x16_ib" in msg
    assert "\n" not in msg


def test_tp_must_divide_heads() -> None:
    with pytest.raises(PlacementError, match=r"tp = 3 .*num_attention_heads = 64"):
        run("dgx_h100_x1", tp=3)


def test_kv_heads_split_or_replicated() -> None:
    with pytest.raises(PlacementError, match=r"tp = 12 .*num_kv_heads = 16"):
        run("h100x16_ib", model(heads=48, kv=16), tp=12)
    p = run("h100x16_ib", model(heads=64, kv=4), tp=8)  # KV heads replicated: allowed
    assert len(p.replicas[0].stages[0]) == 8


def test_pp_above_layers_rejected() -> None:
    with pytest.raises(PlacementError, match=r"pp = 8 exceeds num_layers = 4"):
        run("dgx_h100_x1", model(layers=4), pp=8)


def test_tp_across_nodes_is_flagged_not_rejected() -> None:
    p = run("h100x16_ib", tp=16)
    assert len(p.replicas[0].stages[0]) == 16
    assert len(p.warnings) == 1 and "span" in p.warnings[0] and "8 GPUs" in p.warnings[0]


def test_nvl72_tp_group_spans_trays_without_warning() -> None:
    p = run("gb200_nvl72", tp=8, dp=9)
    c = cluster("gb200_nvl72")
    assert len({c.node_of(g) for g in p.replicas[0].stages[0]}) == 2
    assert p.warnings == ()


def test_pcie_only_tp_is_flagged() -> None:
    p = run("l40s_x8_pcie", tp=4, dp=2)
    assert any("no NVLink" in w for w in p.warnings)


def test_tp_not_dividing_the_domain_packs_or_falls_back() -> None:
    m = model(heads=24, kv=3)
    p = run("h100x16_ib", m, tp=3, dp=4)  # 2 slots per node: aligned, 2 GPUs idle per node
    assert p.replicas[2].stages[0] == ("n1.g0", "n1.g1", "n1.g2")
    assert p.warnings == ()
    p = run("h100x16_ib", m, tp=3, dp=5)  # 4 aligned slots < 5: contiguous, flagged
    assert p.replicas[2].stages[0] == ("n0.g6", "n0.g7", "n1.g0")
    assert p.warnings


def test_context_parallel_groups() -> None:
    p = run("h100x16_ib", tp=4, cp=2, dp=2)
    rep = p.replicas[1]
    assert rep.stages[0] == rep.cp_groups[0][0] == ("n1.g0", "n1.g1", "n1.g2", "n1.g3")
    assert rep.cp_groups[0][1] == ("n1.g4", "n1.g5", "n1.g6", "n1.g7")
    assert rep.cp_ring(0, 1) == ("n1.g1", "n1.g5")
    assert len(rep.stage_gpus(0)) == 8


def test_ep_groups() -> None:
    m = model()
    p = run("h100x16_ib", m, tp=1, dp=16, ep=16)
    assert p.ep_groups() == [tuple(cluster("h100x16_ib").gpus)]
    assert p.ep_group(5) == p.ep_group(0)
    p = run("h100x16_ib", m, tp=2, dp=8, ep=8)
    assert p.ep_group(0) == tuple(f"n0.g{i}" for i in range(8))
    assert p.ep_group(5)[0] == "n1.g0"
    p = run("h100x16_ib", m, tp=1, dp=16, ep=5)
    with pytest.raises(PlacementError, match="ep = 5"):
        p.ep_groups()


def test_placement_is_deterministic() -> None:
    assert run("h800x32_ib", tp=2, pp=4, dp=4) == run("h800x32_ib", tp=2, pp=4, dp=4)
