"""The sweep points of an experiment file, and blaming a point's build errors on it."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clustersim.cli.errors import BadInput, one_line
from clustersim.config.load import load_sweep
from clustersim.config.schema import Experiment
from clustersim.sim.engine import BuildError
from clustersim.topology.placement import PlacementError


@dataclass(frozen=True)
class Point:
    """One experiment to run: its sweep label ('' when the file has no sweep)."""

    label: str
    overrides: Mapping[str, Any]
    exp: Experiment


def load_points(path: Path, overrides: Sequence[str]) -> list[Point]:
    """Every sweep point of an experiment file (one unlabelled point without a sweep)."""
    return [
        Point(point.label, dict(point.overrides), exp)
        for point, exp in load_sweep(path, list(overrides))
    ]


@contextmanager
def blame(path: Path, label: str) -> Iterator[None]:
    """Re-raise build / placement errors as BadInput naming the file and sweep point."""
    try:
        yield
    except (BuildError, PlacementError) as err:
        raise BadInput(point_error(path, label, err)) from err


def point_error(path: Path, label: str, err: Exception) -> str:
    """`FILE [point]: message` on one line."""
    where = f"{path} [{label}]" if label else str(path)
    return one_line(f"{where}: {err}")
