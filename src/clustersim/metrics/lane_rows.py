"""Rows of one-stage lanes' stepped engine steps in the ten values that vary
(serving/tp1_lane.py).

A one-stage lane (stage 0, lane 0) steps once an engine step; of its row's 14 values
(metrics/recorder.py: ITERATION_COLUMNS) stage, lane and bubble are 0 and batch tokens are
prefill + decode tokens. It packs the other ten, 80 bytes a step instead of 112 and less
packing, into the recorder's one buffer of such rows (one buffer: it grows in place, where
a buffer a lane would fragment the heap): times as float64, counts as int64 (packing an
int as a double converts it through a float object first). The recorder widens them to
full rows when the table is built: the same float64 values the full row would hold
(integers below 2**53 are exact in float64, the sum is of two such integers). Rows are
sorted by (start, replica, stage, lane) afterwards, which no two steps share, so which
buffer they sit in does not matter.
"""

from __future__ import annotations

import struct

import numpy as np
import numpy.typing as npt

# the packed values, in this order
LANE_ROW_VALUES = (
    "replica",
    "start_s",
    "end_s",
    "prefill_tokens",
    "decode_tokens",
    "num_seqs",
    "compute_s",
    "comm_s",
    "kv_used_blocks",
    "kv_capacity_blocks",
)
# the values held as int64 (the others float64), by position in LANE_ROW_VALUES
_INTEGER_VALUES = (0, 3, 4, 5, 8, 9)
# pack_lane_row(replica, start, end, prefill, decode, seqs, compute, comm, kv used, capacity):
# native byte order, no padding (every value 8 bytes)
pack_lane_row = struct.Struct(
    "=" + "".join("q" if i in _INTEGER_VALUES else "d" for i in range(len(LANE_ROW_VALUES)))
).pack
LANE_WIDTH = len(LANE_ROW_VALUES)
ROW_WIDTH = 14  # ITERATION_COLUMNS


def widened(packed: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Full iteration rows (ITERATION_COLUMNS) of packed rows (LANE_ROW_VALUES), given as
    float64 rows of LANE_WIDTH (the int64 values read through an int64 view)."""
    counts = packed.view(np.int64)
    rows = np.zeros((len(packed), ROW_WIDTH), dtype=np.float64)
    rows[:, 0] = counts[:, 0]  # replica
    rows[:, 3:5] = packed[:, 1:3]  # start, end
    rows[:, 5:8] = counts[:, 3:6]  # prefill, decode, sequences
    rows[:, 8] = counts[:, 3] + counts[:, 4]  # batch tokens
    rows[:, 9:11] = packed[:, 6:8]  # compute, comm
    rows[:, 12:14] = counts[:, 8:10]  # KV blocks in use, capacity
    return rows


def lane_sort_keys(packed: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """(replica, stage, lane, start_s) of packed rows, as a (4, rows) array."""
    keys = np.zeros((4, len(packed)), dtype=np.float64)
    keys[0] = packed.view(np.int64)[:, 0]
    keys[3] = packed[:, 1]
    return keys
