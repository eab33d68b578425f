"""Built-in topologies: YAML files in catalog/topologies/ (package data), loaded by name.

Each file is in the DESIGN.md topology format and validates as `schema.TopologySpec`.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from clustersim.catalog.builtin_files import BuiltinFiles
from clustersim.config.schema import TopologySpec

_FILES = BuiltinFiles(Path(__file__).resolve().parent / "topologies")


def topology_names() -> list[str]:
    """Names of the built-in topologies, sorted."""
    return _FILES.names()


def builtin_topology_path(name: str) -> Path | None:
    """Path of the built-in topology file `name` (no extension), or None if there is none."""
    return _FILES.path(name)


def get_topology(name: str) -> TopologySpec:
    """Load and validate a built-in topology. Unknown names raise KeyError listing the known."""
    path = builtin_topology_path(name)
    if path is None:
        raise KeyError(f"unknown topology {name!r}; built-in: {', '.join(topology_names())}")
    with path.open(encoding="utf-8") as fh:
        raw = yaml.safe_load(fh)
    return TopologySpec.model_validate(raw)
