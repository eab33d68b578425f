"""Deployment: one layout on a cluster, checked and turned into the units that serve it.

Owns the build-time checks and their result (build.py: Build, BuildError, PoolBuild) and the
construction of replicas / DP-attention ranks with their stage cost models (units.py). Used
by the engine (sim/) for a co-located experiment and by disagg/ once per pool.
"""

from clustersim.deployment.build import Build, BuildError, PoolBuild, build_layout
from clustersim.deployment.units import Unit, make_units, stage_costs

__all__ = [
    "Build",
    "BuildError",
    "PoolBuild",
    "Unit",
    "build_layout",
    "make_units",
    "stage_costs",
]
