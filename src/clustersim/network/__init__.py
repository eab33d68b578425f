"""The network: links as shared resources of one simulation.

Owns routes and their link loads (routing.py), max-min fair rates (fair_share.py), the fluid
engine that moves bytes (flows.py), the per-link utilisation ledger (ledger.py), all-reduce
algorithms (collectives.py), MoE all-to-all traffic patterns (all_to_all.py), and the
`Fabric` the simulation calls (fabric.py). Imports nothing from the serving side.
"""

from clustersim.network.collectives import (
    AllReduceChoice,
    allreduce_choice_of,
    estimate_allreduce_s,
)
from clustersim.network.fabric import Fabric
from clustersim.network.routing import FlowSpec, PairSet

__all__ = [
    "AllReduceChoice",
    "Fabric",
    "FlowSpec",
    "PairSet",
    "allreduce_choice_of",
    "estimate_allreduce_s",
]
