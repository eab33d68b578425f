"""Recorder.on_iteration packs a row into the float64 buffer with exactly the bytes
`array("d").extend(row)` gives (ints, floats, numpy scalars, huge and negative values)."""

from __future__ import annotations

from array import array

import numpy as np

from clustersim.metrics.recorder import Recorder

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
