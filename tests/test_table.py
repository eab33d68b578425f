"""metrics/table.py: the pandas-free run table, and its parquet bytes equal a DataFrame's."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from clustersim.metrics.table import Table, as_frame, as_table, flags, floats
from clustersim.results.arrow_columns import arrow_table


def mixed() -> Table:
    return Table(
        {
            "id": np.arange(4, dtype=np.int64),
            "t_s": np.array([0.5, np.nan, 2.0, np.inf]),
            "ok": np.array([True, False, True, True]),
            "link": np.array(["nvlink:0", "ib:1", "nvlink:0", "é"], dtype=object),
            "count": np.array([1, 2, 3, 4], dtype=np.int32),
        }
    )


def parquet_bytes(table: Table | pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    pq.write_table(arrow_table(table), buf, compression="snappy")
    return buf.getvalue()


def test_columns_rows_and_selection() -> None:
    t = mixed()
    assert t.columns == ["id", "t_s", "ok", "link", "count"] and len(t) == 4
    assert "ok" in t and "missing" not in t
    picked = t.select(t["ok"])
    assert picked["id"].tolist() == [0, 2, 3]
    assert t.select(np.array([3, 0]))["link"].tolist() == ["é", "nvlink:0"]
    with pytest.raises(ValueError, match="rows"):
        t["short"] = np.zeros(2)
    with pytest.raises(ValueError, match="1-D"):
        t["wide"] = np.zeros((4, 2))
    assert len(Table()) == 0


def test_frame_round_trip() -> None:
    t = mixed()
    frame = t.to_frame()
    assert frame["t_s"].dtype == np.float64 and frame["ok"].dtype == bool
    back = as_table(frame)
    for name in ("id", "t_s", "ok", "count"):
        assert np.array_equal(back[name], t[name], equal_nan=True)
        assert back[name].dtype == t[name].dtype
    assert back["link"].tolist() == t["link"].tolist()
    assert as_table(t) is t and as_frame(frame) is frame


@pytest.mark.parametrize("rows", [slice(None), slice(0, 0)])
def test_parquet_bytes_equal_the_frames(rows: slice) -> None:
    """A Table writes what its DataFrame writes: NaN as null, strings as pandas' `str`
    (large_string), an empty object column as null."""
    t = mixed().select(np.arange(4)[rows])
    assert parquet_bytes(t) == parquet_bytes(t.to_frame())
    assert arrow_table(t).equals(arrow_table(t.to_frame()))


def test_missing_values_read_as_nan_and_false() -> None:
    t = Table(
        {
            "f": np.array([1, None, 3.5], dtype=object),
            "b": np.array([True, None, np.nan], dtype=object),
            "g": np.array([1.0, np.nan, 0.0]),
        }
    )
    assert np.array_equal(floats(t, "f"), [1.0, np.nan, 3.5], equal_nan=True)
    assert flags(t, "b").tolist() == [True, False, False]
    assert flags(t, "g").tolist() == [True, False, False]
