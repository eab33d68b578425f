"""Measured operator tables shipped as package data (catalog/operator_tables/<name>.csv),
looked up by name; a hardware profile points to one with `operator_table` (docs/cost_model.md
§5b). Written by benchmarks/gpu/export_operator_table.py from a measure_operators.py profile.

A table maps (family, dtype, k, n, batch) to a measured time curve over the GEMM's rows m:
ascending m and seconds per call (one GPU, replayed in a CUDA graph, weights streamed from
HBM), made non-decreasing in m.
"""

from __future__ import annotations

import csv
import functools
from pathlib import Path

FOLDER = Path(__file__).parent / "operator_tables"

GemmKey = tuple[str, str, int, int, int]  # family (gemm | lm_head), dtype, k, n, batch
Curve = tuple[tuple[float, ...], tuple[float, ...]]  # rows m (ascending), seconds per call


def table_names() -> list[str]:
    return sorted(p.stem for p in FOLDER.glob("*.csv"))


@functools.cache
def load_operator_table(name: str) -> dict[GemmKey, Curve]:
    """The curves of built-in table `name` (KeyError: no such table)."""
    path = FOLDER / f"{name}.csv"
    if "/" in name or not path.is_file():
        raise KeyError(f"no built-in operator table {name!r} (known: {', '.join(table_names())})")
    points: dict[GemmKey, list[tuple[int, float]]] = {}
    with path.open(newline="") as f:
        lines = (line for line in f if not line.startswith("#"))
        for row in csv.DictReader(lines):
            key = (row["family"], row["dtype"], int(row["k"]), int(row["n"]), int(row["batch"]))
            points.setdefault(key, []).append((int(row["m"]), float(row["us"]) * 1e-6))
    return {key: monotone_curve(pts) for key, pts in points.items()}


def monotone_curve(points: list[tuple[int, float]]) -> Curve:
    """The curve through `points` (rows, seconds) with each time at least the time at fewer
    rows: more rows of the same GEMM never take less time (measured dips of a few % at small
    rows are timing noise or a kernel switch, and would make a bigger batch cheaper)."""
    points = sorted(points)
    seconds: list[float] = []
    for _, s in points:
        seconds.append(max(s, seconds[-1]) if seconds else s)
    return tuple(float(m) for m, _ in points), tuple(seconds)
