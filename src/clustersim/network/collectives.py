"""All-reduce algorithms as flows + latency, and the choice an engine makes between them.

An algorithm is a sequence of phases; a phase is a set of flows (bytes per byte of the
message, already divided by the algorithm's achieved share of link bandwidth) that move
together, plus a fixed latency per collective (docs/network.md §3):

- `oneshot` (custom, one NVLink domain): every GPU reads all n−1 peers' buffers, (n−1)·B
  per GPU; latency = kernel floor + 2 hops (flag barrier, peer read).
- `twoshot` (custom, one NVLink domain): reduce-scatter + all-gather through peer memory,
  2(n−1)/n·B per GPU; kernel floor + 3 hops.
- `ring` (NCCL): 2(n−1)/n·B per GPU on a ring; NCCL base + 2(n−1) per-hop latencies (LL).
- `nvls` (NCCL NVLink SHARP, one NVSwitch domain): B up and B down per GPU, reduced in the
  switch; NCCL's NVLS latency.
- `tree` (NCCL, ≥ 2 domains): local reduce to a leader, binary tree between leaders (2·B per
  tree edge), local broadcast; NCCL base + 2·depth network hops.
- `hierarchical` (NCCL, ≥ 2 equal domains): local reduce-scatter, k-rank rings per local
  rank over the NICs, local all-gather; NCCL base + 2(k−1) network hops + 3 local hops.

Engines (catalog/engines.py) use their custom one-shot / two-shot kernels for messages up to
their thresholds inside one NVLink domain of at most 8 GPUs, and NCCL otherwise; NCCL, like its
own tuner, takes whichever of its algorithms the idle-fabric model predicts fastest for the
message size (`AllReduceChoice`).

Sources: NCCL `src/graph/tuning.cc` (base latencies 6.6 µs ring LL, 6.8 µs tree LL, NVLS 25 µs;
per-hop LL latency 0.6 µs over NVLink, 2.7 µs over the network); nccl-tests on 8×H100
(issues 212, 290: ring bus bandwidth ≈ 370 of 450 GB/s, NVLS bus bandwidth ≈ 480 GB/s, i.e.
algorithm bandwidth ≈ 275 GB/s, NIC 46-48 of 50 GB/s); vLLM csrc/custom_all_reduce.cuh (one
flag barrier, then one-shot: each GPU reads every peer's buffer; two-shot: reduce-scatter +
all-gather through peer memory).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from clustersim.catalog.engines import EngineProfile
from clustersim.network.routing import Demand, coflow_time_s, demand_of, link_loads
from clustersim.topology.graph import Cluster

FlowSpec = tuple[str, str, float]  # (src GPU, dst GPU, bytes per message byte)

US = 1e-6
NCCL_RING_BASE_S = 6.6 * US  # ring, LL protocol
NCCL_TREE_BASE_S = 6.8 * US  # tree, LL protocol
NCCL_NVLS_BASE_S = 25.0 * US  # NVLS (simple protocol only)
NCCL_HOP_NVLINK_S = 0.6 * US  # per ring / tree step over NVLink, LL
NCCL_HOP_PCIE_S = 1.0 * US  # over PCIe, LL
NCCL_HOP_NET_S = 2.7 * US  # over the network, LL
# achieved / nominal link bandwidth of a collective's flows
NVLINK_COLLECTIVE_EFFICIENCY = 370.0 / 450.0  # NCCL ring bus bandwidth on 8×H100
NVLS_EFFICIENCY = 275.0 / 450.0  # NVLS algorithm bandwidth per GPU (each sends and gets B)
NETWORK_COLLECTIVE_EFFICIENCY = 0.92  # NCCL on CX-7 400G: 46 of 50 GB/s
PCIE_COLLECTIVE_EFFICIENCY = 0.80  # NCCL over PCIe P2P / host bridges
CUSTOM_KERNEL_FLOOR_S = 3.0 * US  # launch + prologue of the custom all-reduce kernel
CUSTOM_MAX_GPUS = 8  # vLLM / TensorRT-LLM custom all-reduce: world sizes 2, 4, 6, 8


@dataclass(frozen=True)
class Phase:
    """One synchronous step of a collective: flows (bytes per message byte) + fixed latency."""

    flows: tuple[FlowSpec, ...]
    latency_s: float  # per collective (multiplied by count)


def _ring(members: Sequence[str], factor: float) -> list[FlowSpec]:
    n = len(members)
    return [(members[i], members[(i + 1) % n], factor) for i in range(n)]


def _all_pairs(members: Sequence[str], factor: float) -> list[FlowSpec]:
    return [(a, b, factor) for a in members for b in members if a != b]


def _max_hop_s(cluster: Cluster, members: Sequence[str]) -> float:
    """The slowest one-way path latency between ring neighbours (s)."""
    n = len(members)
    return max(cluster.path_latency_s(members[i], members[(i + 1) % n]) for i in range(n))


def _local_efficiency(cluster: Cluster) -> float:
    if cluster.nvlink_domain_size:
        return NVLINK_COLLECTIVE_EFFICIENCY
    return PCIE_COLLECTIVE_EFFICIENCY


def _local_hop_s(cluster: Cluster) -> float:
    return NCCL_HOP_NVLINK_S if cluster.nvlink_domain_size else NCCL_HOP_PCIE_S


def _localities(cluster: Cluster, group: Sequence[str]) -> list[list[str]]:
    by_loc: dict[int, list[str]] = {}
    for gpu in group:
        by_loc.setdefault(cluster.locality_of(gpu), []).append(gpu)
    return list(by_loc.values())


def oneshot_plan(cluster: Cluster, group: Sequence[str]) -> tuple[Phase, ...]:
    """Custom one-shot: a flag barrier, then every GPU reads all peers' whole buffers."""
    eff = NVLINK_COLLECTIVE_EFFICIENCY
    lat = CUSTOM_KERNEL_FLOOR_S + 2 * _max_hop_s(cluster, group)
    return (Phase(tuple(_all_pairs(group, 1.0 / eff)), lat),)


def twoshot_plan(cluster: Cluster, group: Sequence[str]) -> tuple[Phase, ...]:
    """Custom two-shot: reduce-scatter then all-gather, each GPU ↔ every peer 1/n of B."""
    n = len(group)
    eff = NVLINK_COLLECTIVE_EFFICIENCY
    hop = _max_hop_s(cluster, group)
    flows = tuple(_all_pairs(group, 1.0 / n / eff))
    return (Phase(flows, CUSTOM_KERNEL_FLOOR_S + 2 * hop), Phase(flows, hop))


def ring_plan(cluster: Cluster, group: Sequence[str]) -> tuple[Phase, ...]:
    """NCCL ring over the group in the given order: 2(n−1) steps."""
    n = len(group)
    kinds = {k for i in range(n) for k in cluster.path_kinds(group[i], group[(i + 1) % n])}
    network = bool(kinds - {"nvlink", "pcie"})
    eff = NETWORK_COLLECTIVE_EFFICIENCY if network else _local_efficiency(cluster)
    hop = NCCL_HOP_NET_S if network else _local_hop_s(cluster)
    lat = NCCL_RING_BASE_S + 2 * (n - 1) * max(hop, _max_hop_s(cluster, group))
    return (Phase(tuple(_ring(group, 2 * (n - 1) / n / eff)), lat),)


def nvls_plan(cluster: Cluster, group: Sequence[str]) -> tuple[Phase, ...]:
    """NCCL NVLS: every GPU sends B into the NVSwitch and receives the reduced B back (the
    switch reduces); as flows, B from each GPU to the next (one up- and one down-link each)."""
    return (Phase(tuple(_ring(group, 1.0 / NVLS_EFFICIENCY)), NCCL_NVLS_BASE_S),)


def tree_plan(cluster: Cluster, locals_: list[list[str]]) -> tuple[Phase, ...]:
    """NCCL tree across k domains: local reduce to the domain's first GPU, a binary-tree
    reduce + broadcast between the leaders (2·B over each tree edge), local broadcast."""
    k = len(locals_)
    leaders = [loc[0] for loc in locals_]
    hop = max(NCCL_HOP_NET_S, _max_hop_s(cluster, leaders))
    tree: list[FlowSpec] = []
    for child in range(1, k):
        parent = (child - 1) // 2
        tree += [
            (leaders[child], leaders[parent], 1.0 / NETWORK_COLLECTIVE_EFFICIENCY),
            (leaders[parent], leaders[child], 1.0 / NETWORK_COLLECTIVE_EFFICIENCY),
        ]
    depth = math.ceil(math.log2(k + 1))
    inter = Phase(tuple(tree), NCCL_TREE_BASE_S + 2 * depth * hop)
    local_eff = _local_efficiency(cluster)
    gather = tuple((g, loc[0], 1.0 / local_eff) for loc in locals_ for g in loc[1:])
    if not gather:
        return (inter,)
    local_lat = _local_hop_s(cluster)
    scatter = tuple((d, s, f) for s, d, f in gather)
    return (Phase(gather, local_lat), inter, Phase(scatter, local_lat))


def hierarchical_plan(cluster: Cluster, locals_: list[list[str]]) -> tuple[Phase, ...]:
    """NCCL across k equal domains of m GPUs: local reduce-scatter ((m−1)/m), m parallel
    k-rank rings over the NICs (2(k−1)/k × B/m each), local all-gather ((m−1)/m)."""
    k, m = len(locals_), len(locals_[0])
    inter_flows: list[FlowSpec] = []
    inter_hop = 0.0
    for j in range(m):
        ring = [loc[j] for loc in locals_]
        inter_flows += _ring(ring, 2 * (k - 1) / k / m / NETWORK_COLLECTIVE_EFFICIENCY)
        inter_hop = max(inter_hop, _max_hop_s(cluster, ring))
    inter = Phase(
        tuple(inter_flows), NCCL_RING_BASE_S + 2 * (k - 1) * max(NCCL_HOP_NET_S, inter_hop)
    )
    if m == 1:
        return (inter,)
    local_eff = _local_efficiency(cluster)
    local_hop = max(_local_hop_s(cluster), max(_max_hop_s(cluster, loc) for loc in locals_))
    local_flows = tuple(f for loc in locals_ for f in _ring(loc, (m - 1) / m / local_eff))
    return (Phase(local_flows, 2 * local_hop), inter, Phase(local_flows, local_hop))


def allreduce_algorithms(
    cluster: Cluster, group: Sequence[str], nvls: bool
) -> dict[str, tuple[Phase, ...]]:
    """Every algorithm that can run an all-reduce over `group`, by name (module docstring).

    nvls: the GPUs' NVSwitch supports NVLink SHARP (HardwareSpec.nvls)."""
    n = len(group)
    if n <= 1:
        return {}
    locals_ = _localities(cluster, group)
    out: dict[str, tuple[Phase, ...]] = {}
    if len(locals_) == 1:
        if cluster.nvlink_domain_size and n <= CUSTOM_MAX_GPUS:
            out["oneshot"] = oneshot_plan(cluster, group)
            out["twoshot"] = twoshot_plan(cluster, group)
        out["ring"] = ring_plan(cluster, group)
        if nvls and cluster.nvlink_domain_size and n > 2:
            out["nvls"] = nvls_plan(cluster, group)
        return out
    out["ring"] = ring_plan(cluster, group)
    out["tree"] = tree_plan(cluster, locals_)
    if all(len(loc) == len(locals_[0]) for loc in locals_):
        out["hierarchical"] = hierarchical_plan(cluster, locals_)
    return out


CUSTOM = ("oneshot", "twoshot")


@dataclass(frozen=True)
class AllReduceChoice:
    """Which algorithm an engine runs for a message of B bytes (catalog/engines.py).

    custom: the engine uses its custom kernels; one-shot for B ≤ oneshot_max_bytes, two-shot
    for B ≤ twoshot_max_bytes, where they can run (one NVLink domain, ≤ 8 GPUs). Otherwise NCCL
    picks the fastest of its algorithms by the idle-fabric estimate (latency + bytes time)."""

    custom: bool = True
    oneshot_max_bytes: float = 256 * 1024
    twoshot_max_bytes: float = 8 * 1024 * 1024

    def pick(self, idle: dict[str, tuple[float, float]], nbytes: float) -> str:
        """idle: algorithm → (latency s, s per message byte) on an idle fabric."""
        if self.custom:
            if "oneshot" in idle and nbytes <= self.oneshot_max_bytes:
                return "oneshot"
            if "twoshot" in idle and nbytes <= self.twoshot_max_bytes:
                return "twoshot"
        best, best_t = "", math.inf
        for name, (lat, per_byte) in idle.items():
            if name in CUSTOM:
                continue
            t = lat + per_byte * nbytes
            if t < best_t:
                best, best_t = name, t
        return best


def allreduce_choice_of(engine: EngineProfile) -> AllReduceChoice:
    """The all-reduce choice of a serving engine profile."""
    return AllReduceChoice(
        engine.custom_allreduce, engine.oneshot_max_bytes, engine.twoshot_max_bytes
    )


# ------------------------------------------------------------------ costs on the fabric

AllReducePlans = dict[str, tuple[Phase, ...]]
IdleModel = dict[str, tuple[float, float]]  # algorithm → (latency s, s per message byte)
PhaseDemands = list[tuple[Demand | None, float]]  # per phase: unit demand, latency (s)


def idle_allreduce_model(cluster: Cluster, plans: AllReducePlans) -> IdleModel:
    """algorithm → (latency s, s per message byte) of one all-reduce on an idle fabric."""
    return {
        name: (
            sum(p.latency_s for p in phases),
            sum(coflow_time_s(cluster, list(p.flows)) for p in phases),
        )
        for name, phases in plans.items()
    }


def phase_demands(
    cluster: Cluster, group: tuple[str, ...], nvls: bool
) -> tuple[dict[str, PhaseDemands], IdleModel]:
    """Each algorithm's phases over `group` as (unit demand, latency per collective), and the
    idle-fabric model the choice between them reads."""
    algos = allreduce_algorithms(cluster, group, nvls)
    plans = {
        name: [(demand_of(link_loads(cluster, p.flows)), p.latency_s) for p in phases]
        for name, phases in algos.items()
    }
    return plans, idle_allreduce_model(cluster, algos)


def estimate_allreduce_s(
    cluster: Cluster,
    group: Sequence[str],
    nbytes: float,
    count: int = 1,
    choice: AllReduceChoice | None = None,
    nvls: bool = False,
) -> float:
    """Seconds for `count` back-to-back all-reduces of `nbytes` each on an idle fabric.

    Same algorithm choice and phases as `Fabric.allreduce`, so it equals what the fabric gives
    without other traffic: count × latency + count × nbytes × seconds per byte."""
    if nbytes <= 0 or count <= 0 or len(group) <= 1:
        return 0.0
    idle = idle_allreduce_model(cluster, allreduce_algorithms(cluster, group, nvls))
    lat, per_byte = idle[(choice or AllReduceChoice()).pick(idle, nbytes)]
    return count * (lat + per_byte * nbytes)
