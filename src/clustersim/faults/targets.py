"""Fault targets named as in the topology graph (topology/graph.py) → GPUs or link ids.

GPU targets: `n{node}.g{local}`. Node targets: `n{node}`. Link targets, one of
  `src->dst`   one direction of one cable (a `Link.name`),
  `a<->b`      both directions of the cable between vertices a and b,
  `vertex`     every link touching a NIC, PCIe switch, NVSwitch, leaf or spine
               (`n0.nic0`, `leaf0`, `spine1`), or a GPU's own NVLink/PCIe links.
"""

from __future__ import annotations

from dataclasses import dataclass

from clustersim.faults.events import FaultEvent, FaultTargetError
from clustersim.topology.graph import Cluster

GPU_EXAMPLE = "a GPU such as 'n0.g3'"
LINK_EXAMPLE = "a link such as 'n0.nic0->leaf0', a cable 'leaf0<->spine1' or a vertex 'n0.nic0'"


@dataclass(frozen=True)
class Target:
    """What a fault touches: GPUs (slowdown / down) or directed link ids (degrade / down)."""

    gpus: tuple[str, ...] = ()
    links: tuple[int, ...] = ()


def resolve_target(cluster: Cluster, event: FaultEvent) -> Target:
    """GPUs or link ids the event's target names; FaultTargetError naming the key if none."""
    key = f"{event.key}.target"
    if event.kind in ("gpu_slowdown", "gpu_down"):
        return Target(gpus=(_gpu(cluster, event.target, key),))
    if event.kind == "node_down":
        return Target(gpus=_node_gpus(cluster, event.target, key))
    return Target(links=_links(cluster, event.target, key))


def _gpu(cluster: Cluster, name: str, key: str) -> str:
    if cluster.kind_of(name) != "gpu":
        raise FaultTargetError(
            key,
            f"no GPU {name!r} in topology {cluster.name!r}; expected "
            f"{GPU_EXAMPLE} (n0.g0 … {cluster.gpus[-1]})",
        )
    return name


def _node_gpus(cluster: Cluster, name: str, key: str) -> tuple[str, ...]:
    digits = name[1:]
    if not (name.startswith("n") and digits.isdigit() and int(digits) < cluster.num_nodes):
        raise FaultTargetError(
            key,
            f"no node {name!r} in topology {cluster.name!r}; expected "
            f"n0 … n{cluster.num_nodes - 1}",
        )
    return cluster.node_gpus(int(digits))


def _links(cluster: Cluster, name: str, key: str) -> tuple[int, ...]:
    if "<->" in name:
        a, _, b = name.partition("<->")
        ids = [i for i in (_edge(cluster, a, b), _edge(cluster, b, a)) if i is not None]
    elif "->" in name:
        a, _, b = name.partition("->")
        ids = [i for i in (_edge(cluster, a, b),) if i is not None]
    elif cluster.kind_of(name) is not None:
        ids = list(cluster.vertex_links(name))
    else:
        ids = []
    if not ids:
        raise FaultTargetError(
            key, f"no link {name!r} in topology {cluster.name!r}; expected {LINK_EXAMPLE}"
        )
    return tuple(ids)


def _edge(cluster: Cluster, a: str, b: str) -> int | None:
    return cluster.link_id(a, b) if cluster.has_link(a, b) else None
