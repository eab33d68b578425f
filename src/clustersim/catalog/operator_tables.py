"""Measured operator tables: built in (catalog/operator_tables/<name>.csv, looked up by name)
or a user's CSV file (an absolute path, as the config loader makes a relative one); a
hardware profile points to one with `operator_table` (docs/cost_model.md §5b). Written by
benchmarks/gpu/export_operator_table.py from a measure_operators.py profile.

A table maps (family, dtype, k, n, batch) to a measured time curve over the GEMM's rows m:
ascending m and seconds per call (one GPU, replayed in a CUDA graph, weights streamed from
HBM), made non-decreasing in m. File format: `#` comment lines, then a CSV header
`family,dtype,k,n,batch,m,us` and one row per measured point (family gemm | lm_head, dtype
bf16 | fp8, k / n / batch / m positive integers, us > 0: µs per call).
"""

from __future__ import annotations

import csv
import functools
import math
from pathlib import Path

FOLDER = Path(__file__).parent / "operator_tables"
COLUMNS = ("family", "dtype", "k", "n", "batch", "m", "us")
FAMILIES = ("gemm", "lm_head")
DTYPES = ("bf16", "fp8")

GemmKey = tuple[str, str, int, int, int]  # family (gemm | lm_head), dtype, k, n, batch
Curve = tuple[tuple[float, ...], tuple[float, ...]]  # rows m (ascending), seconds per call


class OperatorTableError(ValueError):
    """A malformed table file: `where` is 'line N' or 'header'."""

    def __init__(self, path: Path, where: str, problem: str) -> None:
        self.path, self.where, self.problem = path, where, problem
        super().__init__(f"{path}: {where}: {problem}")


def table_names() -> list[str]:
    return sorted(p.stem for p in FOLDER.glob("*.csv"))


def is_table_path(ref: str) -> bool:
    """Whether `operator_table` names a file rather than a built-in table."""
    return "/" in ref or "\\" in ref or ref.lower().endswith(".csv")


@functools.cache
def load_operator_table(ref: str) -> dict[GemmKey, Curve]:
    """The curves of built-in table `ref`, or of the CSV file at absolute path `ref`
    (KeyError: no such built-in table; OperatorTableError: a malformed file)."""
    if is_table_path(ref):
        return read_table(Path(ref))
    if ref not in table_names():
        raise KeyError(f"no built-in operator table {ref!r} (known: {', '.join(table_names())})")
    return read_table(FOLDER / f"{ref}.csv")


def read_table(path: Path) -> dict[GemmKey, Curve]:
    points: dict[GemmKey, list[tuple[int, float]]] = {}
    with path.open(newline="") as f:
        numbered = ((i, line) for i, line in enumerate(f, 1) if not line.startswith("#"))
        first = next(numbered, None)
        if first is None or tuple(next(csv.reader([first[1]]), [])) != COLUMNS:
            raise OperatorTableError(path, "header", f"expected the columns {','.join(COLUMNS)}")
        for number, line in numbered:
            if not line.strip():
                continue
            key, m, seconds = _row(next(csv.reader([line])), path, number)
            points.setdefault(key, []).append((m, seconds))
    if not points:
        raise OperatorTableError(path, "header", "expected at least one measured row")
    return {key: monotone_curve(pts) for key, pts in points.items()}


def _row(cells: list[str], path: Path, number: int) -> tuple[GemmKey, int, float]:
    where = f"line {number}"
    if len(cells) != len(COLUMNS):
        raise OperatorTableError(path, where, f"expected {len(COLUMNS)} values")
    family, dtype, *numbers = cells
    if family not in FAMILIES:
        raise OperatorTableError(path, where, f"family: expected {' or '.join(FAMILIES)}")
    if dtype not in DTYPES:
        raise OperatorTableError(path, where, f"dtype: expected {' or '.join(DTYPES)}")
    try:
        k, n, batch, m = (int(v) for v in numbers[:4])
        us = float(numbers[4])
    except ValueError:
        raise OperatorTableError(path, where, "expected integers k, n, batch, m and µs") from None
    if min(k, n, batch, m) <= 0 or not (math.isfinite(us) and us > 0):
        raise OperatorTableError(path, where, "expected positive k, n, batch, m and µs")
    return (family, dtype, k, n, batch), m, us * 1e-6


def monotone_curve(points: list[tuple[int, float]]) -> Curve:
    """The curve through `points` (rows, seconds) with each time at least the time at fewer
    rows: more rows of the same GEMM never take less time (measured dips of a few % at small
    rows are timing noise or a kernel switch, and would make a bigger batch cheaper). A row
    count measured twice keeps its first time."""
    points = sorted(dict(reversed(points)).items()) if points else []
    seconds: list[float] = []
    for _, s in points:
        seconds.append(max(s, seconds[-1]) if seconds else s)
    return tuple(float(m) for m, _ in points), tuple(seconds)
