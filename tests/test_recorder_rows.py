"""Recorder.on_iteration packs a row into the float64 buffer with exactly the bytes
`array("d").extend(row)` gives (ints, floats, numpy scalars, huge and negative values); rows
kept in chunks build the table one buffer would."""

from __future__ import annotations

from array import array

import numpy as np
import pandas as pd
import pytest

import clustersim.metrics.recorder as recorder_module
from clustersim.metrics.recorder import Recorder, _chunk_free_points

ROWS = [
    (0, 0, 0, 0.0, 0.012, 512, 0, 1, 512, 0.012, 0.0, 0.0, 32, 50_000),
    (7, 3, 1, 1e-300, 1.5e300, 2**53 + 1, -1, 2**63, 3, float("inf"), -0.0, 5e-324, 0, 1),
    (np.int64(2), np.int32(1), 0, np.float64(0.1), 0.30000000000000004, True, False, 9, 9,
     np.float32(0.1), 1 / 3, 2 / 3, 2**40, 2**62),
]  # fmt: skip


def test_packed_rows_are_the_bytes_extend_writes() -> None:
    rec = Recorder(1)
    expected = array("d")
    for row in ROWS:
        rec.on_iteration(row)  # type: ignore[arg-type]
        expected.extend(row)  # type: ignore[arg-type]
    assert rec.iterations.tobytes() == expected.tobytes()
    assert rec.steps == len(ROWS)


def test_rows_are_counted_but_not_kept_without_iterations() -> None:
    rec = Recorder(1, record_iterations=False)
    rec.on_iteration(ROWS[0])
    assert rec.steps == 1 and len(rec.iterations) == 0


def _random_rows(rng: np.random.Generator, n: int) -> list[tuple[float, ...]]:
    """Rows with many ties in the sort keys (start_s, replica, stage, lane)."""
    return [
        (int(rng.integers(0, 3)), int(rng.integers(0, 3)), int(rng.integers(0, 2)),
         float(rng.integers(0, 400)) / 8, float(rng.random()), 1, 2, 3, 4, float(rng.random()),
         0.5, 0.25, int(rng.integers(0, 99)), 100)
        for _ in range(n)
    ]  # fmt: skip


def test_rows_kept_in_chunks_build_the_same_table(monkeypatch: pytest.MonkeyPatch) -> None:
    """Small chunks and gather blocks: rows out of order (a block gathers from many chunks)
    and nearly in order (chunks freed along the way) give the one-chunk table exactly."""
    monkeypatch.setattr(recorder_module, "_GATHER_BLOCK_ROWS", 64)
    rng = np.random.default_rng(5)
    shuffled = _random_rows(rng, 3000)
    nearly = sorted(_random_rows(rng, 3000), key=lambda r: r[3] + rng.random() / 4)
    for rows in (shuffled, nearly):
        whole, chunked = Recorder(0), Recorder(0)
        chunked.chunk_values = 14 * 50
        for row in rows:
            whole.on_iteration(row)  # type: ignore[arg-type]
            chunked.on_iteration(row)  # type: ignore[arg-type]
        assert len(chunked.full_chunks) > 40 and not whole.full_chunks
        pd.testing.assert_frame_equal(
            chunked.iterations_frame(), whole.iterations_frame(), check_exact=True
        )
        assert not chunked.full_chunks and len(chunked.iterations) == 0  # buffers freed


def test_a_chunk_is_freed_once_its_last_row_is_gathered() -> None:
    # chunks of rows [0, 3), [3, 5), [5, 8); order gathers row 4 last, row 2 third
    order = np.array([0, 1, 2, 5, 3, 6, 7, 4])
    first_row = np.array([0, 3, 5, 8])
    frees = _chunk_free_points(order, first_row)
    assert frees == [(8, 1), (7, 2), (3, 0)]
    assert _chunk_free_points(np.array([], dtype=np.int64), np.array([0])) == []


def test_lane_rows_widen_to_the_full_rows() -> None:
    """A one-stage lane's packed rows (metrics/lane_rows.py) build the table its full rows
    would, mixed with other rows in any buffer order (no two steps share their sort key)."""
    from clustersim.metrics.lane_rows import pack_lane_row

    rng = np.random.default_rng(7)
    full, mixed = Recorder(1), Recorder(1)
    lanes = (0, 2)
    start = {0: 0.0, 1: 0.0, 2: 0.0}
    for _ in range(500):
        r = int(rng.integers(0, 3))
        now = start[r]
        end = now + float(rng.integers(1, 40)) / 1000
        start[r] = end
        pt, n, seqs = int(rng.integers(0, 2000)), int(rng.integers(0, 256)), 7
        compute, comm = float(rng.random()) / 50, float(rng.choice([0.0, -0.0, 1e-6]))
        used, cap = int(rng.integers(0, 2**40)), 2**41 + r
        row = (r, 0, 0, now, end, pt, n, seqs, pt + n, compute, comm, 0.0, used, cap)
        full.on_iteration(row)
        if r in lanes:
            mixed.lane_rows.frombytes(
                pack_lane_row(r, now, end, pt, n, seqs, compute, comm, used, cap)
            )
        else:
            mixed.on_iteration(row)
    expected, got = full.iterations_table(), mixed.iterations_table()
    for name in expected.columns:
        assert expected[name].tobytes() == got[name].tobytes(), name
        assert expected[name].dtype == got[name].dtype
    assert not len(mixed.lane_rows)  # buffer released


def test_lane_rows_do_not_mix_with_emitted_counts() -> None:
    rec = Recorder(1)
    rec.lane_rows.extend([0.0] * 10)
    rec.on_emitted(2)
    with pytest.raises(ValueError, match="emitted"):
        rec.iterations_table()
