"""Built-in workloads: YAML files in catalog/workloads/ (package data), loaded by name.

Trace replays are not built in: they need the user's copy of the trace file (see workloads/).
"""

from __future__ import annotations

from pathlib import Path

from clustersim.catalog.builtin_files import BuiltinFiles

_FILES = BuiltinFiles(Path(__file__).resolve().parent / "workloads")


def workload_names() -> list[str]:
    """Names of the built-in workloads, sorted."""
    return _FILES.names()


def builtin_workload_path(name: str) -> Path | None:
    """Path of the built-in workload `name`, or None if there is none."""
    return _FILES.path(name)
