"""Built-in topologies and the cluster graph: shape, link attributes, routes."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import yaml

from clustersim.catalog.topologies import builtin_topology_path, get_topology, topology_names
from clustersim.config.schema import HardwareSpec, NetworkSpec, NVLinkSpec, TopologySpec
from clustersim.topology.graph import LINK_KINDS, Cluster, build_cluster

REPO = Path(__file__).resolve().parents[1]

# GPU profiles as the topology files name them (only the fields the graph reads matter).
_NVLINK = {"h100-sxm": 450.0, "h800": 200.0, "gb200": 900.0, "a100-80gb": 300.0, "l40s": 0.0}
_PCIE = {"h100-sxm": 64.0, "h800": 64.0, "gb200": 64.0, "a100-80gb": 32.0, "l40s": 32.0}


def hw(name: str) -> HardwareSpec:
    return HardwareSpec(
        name=name,
        memory_GiB=80,
        hbm_bandwidth_GBps=3350,
        peak_tflops={"bf16": 989},
        nvlink_bandwidth_GBps=_NVLINK.get(name, 450.0),
        pcie_bandwidth_GBps=_PCIE.get(name, 64.0),
    )


def cluster(name: str) -> Cluster:
    spec = get_topology(name)
    return build_cluster(spec, hw(spec.gpu))


def count(c: Cluster, kind: str) -> int:
    return sum(1 for _v, k in c.graph.nodes(data="kind") if k == kind)


# name: (gpus, nvswitches, pcie switches, nics, leaves, spines, domain size, domains)
SHAPES = {
    "dgx_h100_x1": (8, 1, 1, 0, 0, 0, 8, 1),
    "dgx_a100_x1": (8, 1, 1, 0, 0, 0, 8, 1),
    "h100x16_ib": (16, 2, 2, 16, 1, 0, 8, 2),
    "h800x32_ib": (32, 4, 4, 32, 1, 0, 8, 4),
    "gb200_nvl72": (72, 1, 18, 72, 2, 4, 72, 1),
    "l40s_x8_pcie": (8, 0, 1, 0, 0, 0, 0, 0),
}


def test_builtin_names_and_paths() -> None:
    assert set(SHAPES) <= set(topology_names())
    assert topology_names() == sorted(topology_names())
    path = builtin_topology_path("h100x16_ib")
    assert path is not None and path.is_file()
    assert builtin_topology_path("no_such_topology") is None
    assert builtin_topology_path("../models") is None
    with pytest.raises(KeyError, match="h100x16_ib"):
        get_topology("no_such_topology")


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_builtin_graph_shape(name: str) -> None:
    c = cluster(name)
    gpus, nvsw, pcie, nics, leaves, spines, dsize, ndom = SHAPES[name]
    assert c.num_gpus == len(c.gpus) == gpus
    got = tuple(count(c, k) for k in ("nvswitch", "pcie_switch", "nic", "leaf", "spine"))
    assert got == (nvsw, pcie, nics, leaves, spines)
    assert c.nvlink_domain_size == dsize
    assert len(c.nvlink_domains) == ndom
    assert all(len(d) == dsize for d in c.nvlink_domains)


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_links_are_consistent(name: str) -> None:
    c = cluster(name)
    assert [link.id for link in c.links] == list(range(len(c.links)))
    assert len({link.name for link in c.links}) == len(c.links)
    assert c.graph.number_of_edges() == len(c.links)
    for link in c.links:
        assert link.kind in LINK_KINDS
        assert link.bandwidth_Bps > 0 and link.latency_s >= 0
        assert c.graph.edges[link.src, link.dst]["id"] == link.id
        back = c.links[c.link_id(link.dst, link.src)]  # every cable has both directions
        assert back.bandwidth_Bps == link.bandwidth_Bps


def test_nvl72_is_one_domain_across_trays() -> None:
    c = cluster("gb200_nvl72")
    assert c.nvlink_domains[0] == tuple(c.gpus)
    assert c.node_of("n17.g3") == 17
    assert c.nvlink_domain_of("n0.g0") == c.nvlink_domain_of("n17.g3") == 0
    assert c.path_kinds("n0.g0", "n17.g3") == ("nvlink", "nvlink")
    assert c.links[c.path("n0.g0", "n17.g3")[0]].bandwidth_Bps == 900e9


def test_paths_intra_and_inter_node() -> None:
    c = cluster("h100x16_ib")
    assert c.path("n0.g0", "n0.g0") == ()
    assert c.path_kinds("n0.g0", "n0.g5") == ("nvlink", "nvlink")
    assert c.path_latency_s("n0.g0", "n0.g5") == pytest.approx(2e-6)
    kinds = c.path_kinds("n0.g3", "n1.g3")
    assert kinds == ("pcie", "pcie", "network", "network", "pcie", "pcie")
    assert "nvlink" not in kinds
    # the route is a real walk in the graph from src to dst, through this GPU's NIC (rail)
    links = [c.links[i] for i in c.path("n0.g3", "n1.g3")]
    assert links[0].src == "n0.g3" and links[-1].dst == "n1.g3"
    assert all(a.dst == b.src for a, b in itertools.pairwise(links))
    assert links[1].dst == c.nic_of("n0.g3") == "n0.nic3"
    assert c.path_latency_s("n0.g3", "n1.g3") == pytest.approx(1e-6 + 5e-6 + 1e-6)
    assert c.path("n0.g3", "n1.g3") is c.path("n0.g3", "n1.g3")  # cached


def test_pcie_only_box() -> None:
    c = cluster("l40s_x8_pcie")
    assert c.nvlink_domain_of("n0.g0") is None
    assert c.path_kinds("n0.g0", "n0.g7") == ("pcie", "pcie")
    assert c.links[c.path("n0.g0", "n0.g7")[0]].bandwidth_Bps == 32e9
    assert c.locality_groups() == [tuple(c.gpus)]


def test_nvlink_capped_by_gpu_and_rejected_without_it() -> None:
    spec = get_topology("dgx_h100_x1")
    c = build_cluster(spec, hw("h800"))  # an H800 in an H100 box: its own NVLink limit
    assert c.links[c.path("n0.g0", "n0.g1")[0]].bandwidth_Bps == 200e9
    with pytest.raises(ValueError, match="l40s"):
        build_cluster(spec, hw("l40s"))


def _fat_tree(nodes: int, nics: int, oversub: float, per_leaf: int) -> Cluster:
    spec = TopologySpec(
        name="t",
        nodes=nodes,
        gpus_per_node=8,
        gpu="h100-sxm",
        nvlink=NVLinkSpec(),
        network=NetworkSpec(nics_per_node=nics, oversubscription=oversub, nodes_per_leaf=per_leaf),
    )
    return build_cluster(spec, hw("h100-sxm"))


def test_oversubscribed_fat_tree() -> None:
    c = _fat_tree(nodes=8, nics=8, oversub=2.0, per_leaf=2)
    assert (count(c, "leaf"), count(c, "spine")) == (4, 8)
    down = sum(lk.bandwidth_Bps for lk in c.links if lk.dst == "leaf0" and lk.src.startswith("n"))
    up = sum(lk.bandwidth_Bps for lk in c.links if lk.src == "leaf0" and "spine" in lk.dst)
    assert down == pytest.approx(2 * 8 * 50e9)
    assert up == pytest.approx(down / 2.0)
    kinds = c.path_kinds("n0.g5", "n2.g5")  # different leaves: through spine 5 (rail 5)
    assert kinds.count("network") == 4
    names = [c.links[i].name for i in c.path("n0.g5", "n2.g5")]
    assert "leaf0->spine5" in names and "spine5->leaf1" in names
    assert c.path_kinds("n0.g5", "n1.g5").count("network") == 2  # same leaf


def test_shared_and_merged_nics() -> None:
    shared = _fat_tree(nodes=2, nics=2, oversub=1.0, per_leaf=4)
    assert [shared.nic_of(f"n0.g{g}") for g in range(8)] == ["n0.nic0"] * 4 + ["n0.nic1"] * 4
    merged = _fat_tree(nodes=2, nics=16, oversub=1.0, per_leaf=4)
    assert count(merged, "nic") == 16  # 8 per node, each standing for two physical NICs
    assert merged.links[merged.link_id("n0.nic0", "leaf0")].bandwidth_Bps == 100e9


def test_build_is_deterministic() -> None:
    a, b = cluster("gb200_nvl72"), cluster("gb200_nvl72")
    assert a.links == b.links
    assert list(a.graph.nodes) == list(b.graph.nodes)


def test_repo_example_topologies_validate() -> None:
    files = sorted((REPO / "topologies").glob("*.yaml"))
    assert files, "topologies/ should hold example files"
    builtin = set(topology_names())
    for path in files:
        spec = TopologySpec.model_validate(yaml.safe_load(path.read_text()))
        assert spec.name not in builtin, f"{path.name} should not copy a built-in"
        c = build_cluster(spec, hw(spec.gpu))
        assert c.num_gpus == spec.num_gpus
