"""A table of named columns: equal-length 1-D numpy arrays, in order (no pandas).

A run's tables (requests, iterations, links, timeline) are built, summarised and written as
Tables, so a plain `clustersim run` never imports pandas (its import alone is ≈ 0.25 CPU-s).
DataFrames are made where they are asked for: `Table.to_frame` (RunOutput.requests and its
siblings, report, compare). Functions that take a table take either (`as_table`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    import pandas as pd

Column = npt.NDArray[Any]


class Table:
    """Columns by name, in insertion order; every column has the same length (rows)."""

    __slots__ = ("_columns",)

    def __init__(self, columns: Mapping[str, npt.ArrayLike] | None = None) -> None:
        self._columns: dict[str, Column] = {}
        for name, values in (columns or {}).items():
            self[name] = values

    @property
    def columns(self) -> list[str]:
        return list(self._columns)

    def __len__(self) -> int:
        for values in self._columns.values():
            return len(values)
        return 0

    def __contains__(self, name: object) -> bool:
        return name in self._columns

    def __getitem__(self, name: str) -> Column:
        return self._columns[name]

    def __setitem__(self, name: str, values: npt.ArrayLike) -> None:
        array = np.asarray(values)
        if array.ndim != 1:
            raise ValueError(f"column {name!r} must be 1-D, got shape {array.shape}")
        if self._columns and name not in self._columns and len(array) != len(self):
            raise ValueError(f"column {name!r} has {len(array)} rows, the table {len(self)}")
        self._columns[name] = array

    def items(self) -> Iterator[tuple[str, Column]]:
        return iter(self._columns.items())

    def select(self, rows: npt.NDArray[np.bool_] | npt.NDArray[np.int64]) -> Table:
        """The rows where a bool mask is True, in order (as `df.loc[mask]`, index dropped), or
        the rows at integer positions, in that order. A mask of every row shares the
        columns (tables are not written in place)."""
        if rows.dtype == bool and len(rows) == len(self) and rows.all():
            return Table(self._columns)
        return Table({name: values[rows] for name, values in self._columns.items()})

    def to_frame(self) -> pd.DataFrame:
        """A DataFrame of the columns, as `pd.DataFrame(columns)` builds it (no copies)."""
        import pandas as pd

        return pd.DataFrame(dict(self._columns), copy=False)


def as_table(table: Table | pd.DataFrame) -> Table:
    """`table` itself, or a DataFrame's columns as numpy arrays (without importing pandas)."""
    if isinstance(table, Table):
        return table
    return Table({str(name): table[name].to_numpy() for name in table.columns})


def as_frame(table: Table | pd.DataFrame) -> pd.DataFrame:
    """A DataFrame of `table` (a DataFrame as it is)."""
    return table.to_frame() if isinstance(table, Table) else table


def floats(table: Table, name: str) -> npt.NDArray[np.float64]:
    """Column `name` as float64 (missing values of an object column as NaN)."""
    values = table[name]
    if values.dtype == object:
        return np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    return np.asarray(values, dtype=np.float64)


def flags(table: Table, name: str) -> npt.NDArray[np.bool_]:
    """Column `name` as bool, a missing value (None, NaN) read as False."""
    values = table[name]
    if values.dtype == object:
        return np.array([_flag(v) for v in values], dtype=bool)
    if values.dtype.kind == "f":
        return np.nan_to_num(values, nan=0.0) != 0
    return np.asarray(values, dtype=bool)


def _flag(value: Any) -> bool:
    try:
        return bool(value) and value == value
    except TypeError:  # pandas' NA
        return False
