"""Cluster topology: the link graph (graph.py) and layout placement (placement.py)."""

from clustersim.topology.graph import Cluster, Link, build_cluster
from clustersim.topology.placement import Placement, PlacementError, ReplicaPlacement, place

__all__ = [
    "Cluster",
    "Link",
    "Placement",
    "PlacementError",
    "ReplicaPlacement",
    "build_cluster",
    "place",
]
