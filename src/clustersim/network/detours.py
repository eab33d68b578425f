"""Detours around links that are down: each down link → the links of a path around it.

A flow whose route crosses a down link a→b is carried from a to b over the shortest path
(in hops, then latency) of the graph without the down links; no path may pass through a GPU
other than a or b (GPUs do not forward traffic). This keeps every cached route, PairSet and
collective plan valid: the fluid engine substitutes the detour wherever the link appears.
"""

from __future__ import annotations

from collections.abc import Collection
from itertools import pairwise

from clustersim.topology.graph import Cluster


def detours(
    cluster: Cluster, down: Collection[int]
) -> tuple[dict[int, tuple[int, ...]], frozenset[int]]:
    """(down link id → detour link ids, down links with no detour)."""
    if not down:
        return {}, frozenset()
    import networkx as nx

    graph = cluster.graph
    gone = {(cluster.links[i].src, cluster.links[i].dst) for i in down}

    def usable(a: str, b: str) -> bool:
        return (a, b) not in gone

    view = nx.subgraph_view(graph, filter_edge=usable)
    found: dict[int, tuple[int, ...]] = {}
    stranded: set[int] = set()
    for i in sorted(down):
        link = cluster.links[i]
        ends = {link.src, link.dst}

        def relay(v: str, ends: set[str] = ends) -> bool:
            return v in ends or graph.nodes[v].get("kind") != "gpu"

        routable = nx.subgraph_view(view, filter_node=relay)
        try:
            hops = nx.shortest_path(routable, link.src, link.dst)
        except nx.NetworkXNoPath:
            stranded.add(i)
            continue
        found[i] = tuple(cluster.link_id(a, b) for a, b in pairwise(hops))
    return found, frozenset(stranded)


def stranded_gpus(cluster: Cluster, links: Collection[int]) -> frozenset[str]:
    """GPUs cut off by down links without a detour: a GPU at either end, or every GPU of the
    node a node-local end (`n3.nic0`, `n3.pcie`) belongs to."""
    gpus: set[str] = set()
    for i in links:
        for v in (cluster.links[i].src, cluster.links[i].dst):
            kind = cluster.graph.nodes[v].get("kind")
            if kind == "gpu":
                gpus.add(v)
            elif v.startswith("n") and "." in v and v.split(".", 1)[0][1:].isdigit():
                gpus.update(cluster.node_gpus(int(v.split(".", 1)[0][1:])))
    return frozenset(gpus)
