"""Result tables as arrow tables for parquet (results/writer.py): each column converted as
`pa.Table.from_pandas` converts a DataFrame's, from its numpy buffers; which columns parquet
dictionary-encodes."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from clustersim.metrics.group_reduce import string_codes
from clustersim.metrics.table import Table

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa


def dictionary_columns(table: pa.Table) -> list[str]:
    """The columns worth parquet's dictionary encoding: all but the floating-point ones.

    Times and durations are (nearly) all distinct, so a dictionary of them overflows its page
    and parquet falls back to plain encoding after building it: 80 % of the encoder's CPU on
    a 100k-request run (0.29 → 0.07 CPU-s), for files no smaller (requests.parquet 6.7 →
    5.6 MB). Integer, boolean and string columns (replica, stage, token counts, link names)
    repeat, and keep it."""
    import pyarrow as pa

    return [field.name for field in table.schema if not pa.types.is_floating(field.type)]


def arrow_table(df: Table | pd.DataFrame) -> pa.Table:
    """The table's columns as an arrow table, each converted as `pa.Table.from_pandas` converts
    a DataFrame's (NaN → null), with no index and no schema metadata: the same table, without
    from_pandas's pass over the frame's blocks and its pandas metadata.

    A Table's columns convert to the types its DataFrame's would (`Table.to_frame`): numpy
    columns as they are, a non-empty column of strings as pandas' `str` dtype converts
    (large_string), so both give the same bytes."""
    import pyarrow as pa

    if isinstance(df, Table):
        arrays = [_arrow_column(column) for _, column in df.items()]
    else:
        arrays = [pa.array(column, from_pandas=True) for _, column in df.items()]
    return pa.Table.from_arrays(arrays, names=[str(name) for name in df.columns])


def _arrow_column(values: np.ndarray) -> pa.Array:
    """One Table column as arrow, from its buffers: `pa.array` on a numpy array imports pandas
    (≈ 0.25 CPU-s) to ask whether it is a Series. The same array as `pa.array(values,
    from_pandas=True)` (NaN → null) for bool, integer and float columns and for strings;
    other object columns go through `pa.array`."""
    import pyarrow as pa

    n = len(values)
    kind = values.dtype.kind
    if kind == "b":
        bits = pa.py_buffer(np.packbits(values.astype(bool), bitorder="little"))
        return pa.Array.from_buffers(pa.bool_(), n, [None, bits], null_count=0)
    if kind in "iuf":
        data = pa.py_buffer(np.ascontiguousarray(values))
        valid, nulls = None, 0
        if kind == "f":
            present = ~np.isnan(values)
            nulls = n - int(present.sum())
            if nulls:
                valid = pa.py_buffer(np.packbits(present, bitorder="little"))
        dtype = pa.from_numpy_dtype(values.dtype)
        return pa.Array.from_buffers(dtype, n, [valid, data], null_count=nulls)
    if kind == "O" and n == 0:
        return pa.nulls(0)
    if kind == "O" and (utf8 := _utf8_of_strings(values)) is not None:  # pandas' `str`
        offsets, data = utf8
        buffers = [None, pa.py_buffer(offsets), pa.py_buffer(data)]
        return pa.Array.from_buffers(pa.large_string(), n, buffers, null_count=0)
    return pa.array(values, from_pandas=True)


def _utf8_of_strings(values: np.ndarray) -> tuple[np.ndarray, bytes] | None:
    """(offsets, data) of the values' UTF-8 bytes one after another when every value is a
    str, else None; each distinct string is encoded once (a links table's few names)."""
    coded = string_codes(values)
    if coded is None:
        return None
    codes, distinct = coded
    encoded = np.empty(len(distinct), dtype=object)
    encoded[:] = [v.encode("utf-8") for v in distinct]
    lengths = np.fromiter(map(len, encoded), np.int64, len(distinct))
    offsets = np.zeros(len(values) + 1, dtype=np.int64)
    np.cumsum(lengths[codes], out=offsets[1:])
    return offsets, b"".join(encoded[codes].tolist())
