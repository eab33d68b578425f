"""TopologySpec → Cluster: a directed graph of GPUs, switches and links (docs/network.md).

Vertices (networkx node ids, `kind` attribute in brackets):
  `n{node}.g{local}` [gpu], `nvsw{d}` [nvswitch] (one per NVLink domain: a node or a rack),
  `n{node}.pcie` [pcie_switch] (one host PCIe switch per node), `n{node}.nic{k}` [nic],
  `leaf{l}` [leaf], `spine{s}` [spine].
Every physical cable is two directed edges (one per direction), each a `Link` with its own
bandwidth (bytes/s, per direction) and latency (s). Edge attribute `id` indexes `Cluster.links`.

Latency convention: a spec's `latency_us` is the one-way device-to-device latency through
that medium's switch, so each of the two links of a GPU→switch→GPU hop carries half of it.
An extra leaf↔spine crossing adds SWITCH_HOP_LATENCY_S per link.

Routing is static and built by construction (never by searching the graph), so it is
deterministic: NVLink inside a domain; otherwise GPU → host PCIe switch → (same node: GPU)
→ NIC (rail) → leaf → [spine chosen by the source rail] → leaf → NIC → PCIe switch → GPU.
The networkx graph (`Cluster.graph`) is therefore built only when something searches it
(detours around down links); fault targets are looked up in `vertices` and the link table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING

from clustersim.config.schema import HardwareSpec, TopologySpec

if TYPE_CHECKING:
    import networkx as nx

GBPS = 1e9  # bytes/s per GB/s
US = 1e-6  # seconds per microsecond
SWITCH_HOP_LATENCY_S = 0.25e-6  # one leaf↔spine link (IB NDR switch port-to-port ≈ 0.2 µs)

LINK_KINDS = ("nvlink", "pcie", "network")


@dataclass(frozen=True)
class Link:
    """One direction of one cable. `id` is its index in `Cluster.links`."""

    id: int
    name: str  # "src->dst"
    src: str
    dst: str
    kind: str  # nvlink | pcie | network
    bandwidth_Bps: float  # bytes/s in this direction, > 0
    latency_s: float  # one-way propagation + switching, >= 0


@dataclass
class Cluster:
    """The built topology: vertices, link table, GPU locality and cached routes."""

    name: str
    spec: TopologySpec
    hw: HardwareSpec
    vertices: dict[str, dict[str, object]]  # name → attributes (`kind`, ...), in build order
    gpus: list[str]  # "n{node}.g{local}", node-major order
    links: list[Link]
    nvlink_domains: list[tuple[str, ...]]  # GPUs per NVLink domain, domain id = index; [] if none
    nvlink_domain_size: int  # GPUs in the largest NVLink domain; 0 = PCIe-only hosts
    gpus_per_node: int
    num_nodes: int
    _edge: dict[tuple[str, str], int] = field(default_factory=dict, repr=False)
    _node: dict[str, int] = field(default_factory=dict, repr=False)
    _domain: dict[str, int] = field(default_factory=dict, repr=False)
    _nic: dict[str, str] = field(default_factory=dict, repr=False)
    _leaf: dict[str, int] = field(default_factory=dict, repr=False)  # NIC → leaf index
    _rail: dict[str, int] = field(default_factory=dict, repr=False)  # NIC → rail (local index)
    _num_spines: int = 0
    _paths: dict[tuple[str, str], tuple[int, ...]] = field(default_factory=dict, repr=False)
    _latency: dict[tuple[str, str], float] = field(default_factory=dict, repr=False)
    _rdma_paths: dict[tuple[str, str], tuple[int, ...]] = field(default_factory=dict, repr=False)

    @cached_property
    def graph(self) -> nx.DiGraph:
        """The topology as a networkx graph: the vertices with their attributes, one edge per
        link (attributes id, kind, bandwidth_Bps, latency_s), both in build order. Built on
        first use."""
        import networkx as nx

        graph = nx.DiGraph()
        for name, attrs in self.vertices.items():
            graph.add_node(name, **attrs)
        for link in self.links:
            graph.add_edge(
                link.src,
                link.dst,
                id=link.id,
                kind=link.kind,
                bandwidth_Bps=link.bandwidth_Bps,
                latency_s=link.latency_s,
            )
        return graph

    # ------------------------------------------------------------------ locality
    @property
    def num_gpus(self) -> int:
        return len(self.gpus)

    def node_of(self, gpu: str) -> int:
        return self._node[gpu]

    def nvlink_domain_of(self, gpu: str) -> int | None:
        """Index into `nvlink_domains`, or None on PCIe-only hosts."""
        return self._domain.get(gpu)

    def nic_of(self, gpu: str) -> str | None:
        """The NIC this GPU's inter-node traffic uses (None without a network)."""
        return self._nic.get(gpu)

    def node_gpus(self, node: int) -> tuple[str, ...]:
        g = self.gpus_per_node
        return tuple(self.gpus[node * g : (node + 1) * g])

    def locality_groups(self) -> list[tuple[str, ...]]:
        """NVLink domains, or nodes on PCIe-only hosts: the cheapest-communication groups."""
        if self.nvlink_domains:
            return list(self.nvlink_domains)
        return [self.node_gpus(n) for n in range(self.num_nodes)]

    def locality_of(self, gpu: str) -> int:
        """Index into `locality_groups()` for this GPU."""
        d = self._domain.get(gpu)
        return self._node[gpu] if d is None else d

    # ------------------------------------------------------------------ vertices
    def kind_of(self, vertex: str) -> str | None:
        """The vertex's kind (gpu, nvswitch, pcie_switch, nic, leaf, spine); None if there is
        no such vertex."""
        attrs = self.vertices.get(vertex)
        return None if attrs is None else str(attrs["kind"])

    def vertex_links(self, vertex: str) -> tuple[int, ...]:
        """Ids of the links into and out of the vertex, ascending."""
        return tuple(lk.id for lk in self.links if vertex in (lk.src, lk.dst))

    # ------------------------------------------------------------------ routes
    def link_id(self, src: str, dst: str) -> int:
        return self._edge[(src, dst)]

    def has_link(self, src: str, dst: str) -> bool:
        return (src, dst) in self._edge

    def path(self, src_gpu: str, dst_gpu: str) -> tuple[int, ...]:
        """Link ids from src to dst (empty for src == dst). Cached; KeyError for unknown GPUs."""
        key = (src_gpu, dst_gpu)
        p = self._paths.get(key)
        if p is None:
            p = tuple(self._edge[hop] for hop in self._hops(src_gpu, dst_gpu))
            self._paths[key] = p
        return p

    def path_latency_s(self, src_gpu: str, dst_gpu: str) -> float:
        """Sum of link latencies along `path` (s). Cached."""
        key = (src_gpu, dst_gpu)
        lat = self._latency.get(key)
        if lat is None:
            lat = sum(self.links[i].latency_s for i in self.path(src_gpu, dst_gpu))
            self._latency[key] = lat
        return lat

    def rdma_path(self, src_gpu: str, dst_gpu: str) -> tuple[int, ...]:
        """Link ids from src to dst through the NICs even on one node (what DeepEP's
        low-latency kernels do); `path` where the cluster has no network. Cached."""
        if src_gpu == dst_gpu or src_gpu not in self._nic or dst_gpu not in self._nic:
            return self.path(src_gpu, dst_gpu)
        key = (src_gpu, dst_gpu)
        p = self._rdma_paths.get(key)
        if p is None:
            p = tuple(self._edge[hop] for hop in self._network_hops(src_gpu, dst_gpu))
            self._rdma_paths[key] = p
        return p

    def path_kinds(self, src_gpu: str, dst_gpu: str) -> tuple[str, ...]:
        return tuple(self.links[i].kind for i in self.path(src_gpu, dst_gpu))

    def _hops(self, src: str, dst: str) -> list[tuple[str, str]]:
        if src == dst:
            if src not in self._node:
                raise KeyError(f"unknown GPU {src!r} in topology {self.name}")
            return []
        d_src, d_dst = self._domain.get(src), self._domain.get(dst)
        if d_src is not None and d_src == d_dst:
            sw = f"nvsw{d_src}"
            return [(src, sw), (sw, dst)]
        n_src, n_dst = self._node[src], self._node[dst]
        if n_src == n_dst:
            host = f"n{n_src}.pcie"
            return [(src, host), (host, dst)]
        return self._network_hops(src, dst)

    def _network_hops(self, src: str, dst: str) -> list[tuple[str, str]]:
        """GPU → PCIe → NIC → leaf (→ spine → leaf) → NIC → PCIe → GPU, also inside one node
        (through the leaf switch: RDMA loopback between two NICs, or a hairpin on one)."""
        host_src, host_dst = f"n{self._node[src]}.pcie", f"n{self._node[dst]}.pcie"
        nic_src, nic_dst = self._nic[src], self._nic[dst]
        leaf_src, leaf_dst = f"leaf{self._leaf[nic_src]}", f"leaf{self._leaf[nic_dst]}"
        hops = [(src, host_src), (host_src, nic_src), (nic_src, leaf_src)]
        if leaf_src != leaf_dst:
            spine = f"spine{self._rail[nic_src] % self._num_spines}"
            hops += [(leaf_src, spine), (spine, leaf_dst)]
        hops += [(leaf_dst, nic_dst), (nic_dst, host_dst), (host_dst, dst)]
        return hops


# ---------------------------------------------------------------------- construction


class _Builder:
    """Accumulates vertices and bidirectional links in a deterministic order."""

    def __init__(self) -> None:
        self.vertices: dict[str, dict[str, object]] = {}
        self.links: list[Link] = []
        self.edge: dict[tuple[str, str], int] = {}

    def vertex(self, name: str, kind: str, **attrs: object) -> None:
        self.vertices[name] = {"kind": kind, **attrs}

    def cable(self, a: str, b: str, kind: str, bandwidth_Bps: float, latency_s: float) -> None:
        """Two directed links a→b and b→a with the same bandwidth and latency."""
        if bandwidth_Bps <= 0:
            raise ValueError(f"link {a}<->{b}: bandwidth must be > 0, got {bandwidth_Bps}")
        for s, d in ((a, b), (b, a)):
            link = Link(len(self.links), f"{s}->{d}", s, d, kind, bandwidth_Bps, latency_s)
            self.links.append(link)
            self.edge[(s, d)] = link.id


def _nvlink_Bps(spec: TopologySpec, hw: HardwareSpec) -> float:
    """Per-GPU NVLink bandwidth: the topology's figure, capped by the GPU's own ports."""
    assert spec.nvlink is not None
    bw = spec.nvlink.bandwidth_GBps
    if hw.nvlink_bandwidth_GBps > 0:
        bw = min(bw, hw.nvlink_bandwidth_GBps)
    return bw * GBPS


def _domain_sizes(spec: TopologySpec) -> int:
    """GPUs per NVLink domain (0 = none)."""
    if spec.nvlink is None:
        return 0
    rack = spec.nvlink.rack_size
    return spec.gpus_per_node if rack is None else rack


def build_cluster(spec: TopologySpec, hw: HardwareSpec) -> Cluster:
    """Build the graph of a topology for GPUs of profile `hw` (see module docstring).

    Raises ValueError when the topology declares NVLink but the GPU profile has none.
    """
    if spec.nvlink is not None and hw.nvlink_bandwidth_GBps == 0:
        raise ValueError(
            f"topology {spec.name} has NVLink but GPU profile {hw.name} has none "
            "(nvlink_bandwidth_GBps = 0)"
        )
    b = _Builder()
    gpn, nodes = spec.gpus_per_node, spec.nodes
    gpus = [f"n{n}.g{g}" for n in range(nodes) for g in range(gpn)]
    node_of = {gpu: i // gpn for i, gpu in enumerate(gpus)}
    for gpu in gpus:
        b.vertex(gpu, "gpu", node=node_of[gpu])

    # NVLink: one NVSwitch vertex per domain (domain = node, or rack of `rack` GPUs).
    dsize = _domain_sizes(spec)
    domains: list[tuple[str, ...]] = []
    domain_of: dict[str, int] = {}
    if spec.nvlink is not None:
        bw, lat = _nvlink_Bps(spec, hw), spec.nvlink.latency_us * US / 2
        domains = [tuple(gpus[i : i + dsize]) for i in range(0, len(gpus), dsize)]
        for d, members in enumerate(domains):
            b.vertex(f"nvsw{d}", "nvswitch", domain=d)
            for gpu in members:
                domain_of[gpu] = d
                b.cable(gpu, f"nvsw{d}", "nvlink", bw, lat)

    # PCIe: a host switch per node; every GPU and NIC hangs off it.
    pcie_Bps = min(spec.pcie.bandwidth_GBps, hw.pcie_bandwidth_GBps) * GBPS
    pcie_lat = spec.pcie.latency_us * US / 2
    for n in range(nodes):
        b.vertex(f"n{n}.pcie", "pcie_switch", node=n)
        for g in range(gpn):
            b.cable(f"n{n}.g{g}", f"n{n}.pcie", "pcie", pcie_Bps, pcie_lat)

    nic_of: dict[str, str] = {}
    leaf_of: dict[str, int] = {}
    rail_of: dict[str, int] = {}
    num_spines = 0
    if spec.network is not None:
        num_spines = _build_network(b, spec, pcie_Bps, pcie_lat, nic_of, leaf_of, rail_of)

    return Cluster(
        name=spec.name,
        spec=spec,
        hw=hw,
        vertices=b.vertices,
        gpus=gpus,
        links=b.links,
        nvlink_domains=domains,
        nvlink_domain_size=dsize,
        gpus_per_node=gpn,
        num_nodes=nodes,
        _edge=b.edge,
        _node=node_of,
        _domain=domain_of,
        _nic=nic_of,
        _leaf=leaf_of,
        _rail=rail_of,
        _num_spines=num_spines,
    )


def _build_network(
    b: _Builder,
    spec: TopologySpec,
    pcie_Bps: float,
    pcie_lat: float,
    nic_of: dict[str, str],
    leaf_of: dict[str, int],
    rail_of: dict[str, int],
) -> int:
    """NICs, leaves and spines of a two-tier fat tree. Returns the number of spines.

    NIC vertices per node = min(nics_per_node, gpus_per_node); when there are more NICs than
    GPUs they are merged so the node's aggregate bandwidth is kept. GPU g of a node uses
    NIC g × nic_vertices // gpus_per_node (contiguous GPUs share a NIC).
    Leaf l serves nodes [l × nodes_per_leaf, (l+1) × nodes_per_leaf). With more than one leaf,
    there is one spine per rail and each leaf has one uplink per spine; a leaf's uplinks carry
    (its downlink capacity / oversubscription) split evenly over the spines.
    """
    net = spec.network
    assert net is not None
    gpn, nodes = spec.gpus_per_node, spec.nodes
    nics = min(net.nics_per_node, gpn)
    merge = net.nics_per_node / nics  # physical NICs per NIC vertex (>= 1)
    nic_Bps = net.bandwidth_GBps * GBPS * merge
    nic_lat = net.latency_us * US / 2
    num_leaves = -(-nodes // net.nodes_per_leaf)
    num_spines = nics if num_leaves > 1 else 0
    for leaf in range(num_leaves):
        b.vertex(f"leaf{leaf}", "leaf", leaf=leaf)
    for s in range(num_spines):
        b.vertex(f"spine{s}", "spine", spine=s)
    for n in range(nodes):
        leaf = n // net.nodes_per_leaf
        for k in range(nics):
            nic = f"n{n}.nic{k}"
            b.vertex(nic, "nic", node=n, rail=k)
            leaf_of[nic], rail_of[nic] = leaf, k
            b.cable(f"n{n}.pcie", nic, "pcie", pcie_Bps * merge, pcie_lat)
            b.cable(nic, f"leaf{leaf}", "network", nic_Bps, nic_lat)
        for g in range(gpn):
            nic_of[f"n{n}.g{g}"] = f"n{n}.nic{g * nics // gpn}"
    for leaf in range(num_leaves):
        nodes_here = min(net.nodes_per_leaf, nodes - leaf * net.nodes_per_leaf)
        down_Bps = nodes_here * nics * nic_Bps
        up_Bps = down_Bps / net.oversubscription / max(num_spines, 1)
        for s in range(num_spines):
            b.cable(f"leaf{leaf}", f"spine{s}", "network", up_Bps, SWITCH_HOP_LATENCY_S)
    return num_spines
