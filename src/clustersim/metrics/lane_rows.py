"""Rows of one lane's stepped engine steps in the nine values that vary (serving/tp1_lane.py).

A one-stage lane (stage 0, lane 0) steps once an engine step; of its row's 14 values
(metrics/recorder.py: ITERATION_COLUMNS) the replica is the lane's, stage, lane and bubble
are 0 and batch tokens are prefill + decode tokens. It packs the other nine, 72 bytes a step
instead of 112 and two thirds of the packing, and the recorder widens them to full rows
when the table is built: the same float64 values the full row would hold (integers are
exact in float64, the sum is of two such integers). Rows are sorted by (start, replica,
stage, lane) afterwards, which no two steps share, so which buffer they sit in does not
matter.
"""

from __future__ import annotations

import struct
from array import array

import numpy as np
import numpy.typing as npt

# the packed values, in this order
LANE_ROW_VALUES = (
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
# pack_lane_row(start, end, prefill, decode, seqs, compute, comm, kv used, kv capacity)
pack_lane_row = struct.Struct(f"{len(LANE_ROW_VALUES)}d").pack
LANE_WIDTH = len(LANE_ROW_VALUES)
ROW_WIDTH = 14  # ITERATION_COLUMNS


class LaneRows:
    """One lane's packed rows: `values.frombytes(pack_lane_row(...))` a step."""

    __slots__ = ("replica", "values")

    def __init__(self, replica: int) -> None:
        self.replica = replica
        self.values: array[float] = array("d")

    def view(self) -> npt.NDArray[np.float64]:
        """The rows as a (rows, LANE_WIDTH) array over the buffer."""
        return np.frombuffer(self.values, dtype=np.float64).reshape(-1, LANE_WIDTH)


def widened(replica: int, packed: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Full iteration rows (ITERATION_COLUMNS) of packed rows of `replica`'s lane."""
    rows = np.zeros((len(packed), ROW_WIDTH), dtype=np.float64)
    rows[:, 0] = replica
    rows[:, 3:8] = packed[:, 0:5]  # start, end, prefill, decode, sequences
    rows[:, 8] = packed[:, 2] + packed[:, 3]  # batch tokens
    rows[:, 9:11] = packed[:, 5:7]  # compute, comm
    rows[:, 12:14] = packed[:, 7:9]  # KV blocks in use, capacity
    return rows


def lane_sort_keys(replica: int, packed: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """(replica, stage, lane, start_s) of packed rows, as a (4, rows) array."""
    keys = np.zeros((4, len(packed)), dtype=np.float64)
    keys[0] = replica
    keys[3] = packed[:, 0]
    return keys
