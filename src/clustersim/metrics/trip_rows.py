"""Pipeline trips' iteration rows kept compact until the table is built (metrics/recorder.py).

A trip (serving/pipeline_leap.py) writes p rows that share its head — replica, lane, whether
its stages all-reduce, its batch's token counts, its lane's KV blocks — and differ in four
values a stage: start, end, compute, bubble. `TripRows` keeps those (41 float64s for 8 stages,
not 8 rows of 14) and `TripTable` gives any rows of them in full when the iteration table is
gathered, with the values `on_iteration` of each row would have written (the stage as its
index in the trip, the comm column as end − (start + compute) when the stages all-reduce,
else 0). Rows are numbered trip after trip, stage after stage.
"""

from __future__ import annotations

import struct
from array import array
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]

# a trip's stage step as the values of its row that the batch does not fix (seconds): start,
# end, compute, bubble (serving/trip_stages.py appends them)
STEP_VALUES = 4
# a trip's head: replica, lane, whether its stages all-reduce (the comm column is then
# end − (start + compute), else 0), prefill tokens, decode tokens, sequences, batch tokens,
# the lane's KV blocks in use and its capacity
TripHead = tuple[int, int, bool, int, int, int, int, int, int]
ROW_WIDTH = 14  # the iteration table's columns (metrics/recorder.py ITERATION_COLUMNS)

_pack_head = struct.Struct("9d").pack  # a TripHead's values as float64s


class TripRows:
    """Trips' stage steps and heads as float64 buffers (struct-packed: `array.fromlist`
    parses each float through PyArg_Parse, ≈ twice the work)."""

    __slots__ = ("_heads", "_packers", "_stages", "_steps")

    def __init__(self) -> None:
        self._steps = array("d")  # each stage step's STEP_VALUES, trip after trip
        self._heads = array("d")  # each trip's head
        self._stages: list[int] = []  # each trip's stage count
        self._packers: dict[int, Callable[..., bytes]] = {}  # packers of n float64s, by n

    def __len__(self) -> int:
        """Rows held."""
        return len(self._steps) // STEP_VALUES

    def add(self, steps: Sequence[float], head: TripHead, stages: int) -> None:
        """A trip's `stages` stage steps, stage 0 first (STEP_VALUES each), and its head."""
        packers = self._packers
        n = len(steps)
        pack = packers.get(n) or packers.setdefault(n, struct.Struct(f"{n}d").pack)
        self._steps.frombytes(pack(*steps))
        self._heads.frombytes(_pack_head(*head))
        self._stages.append(stages)

    def table(self) -> TripTable:
        """The rows held, for the table (this holder is emptied)."""
        table = TripTable(self._steps, self._heads, self._stages)
        self._steps, self._heads, self._stages = array("d"), array("d"), []
        return table


class TripTable:
    """Trips' rows as numpy views, read a block at a time (see module docstring)."""

    __slots__ = ("_buffers", "first", "heads", "steps", "trip")

    def __init__(self, steps: array[float], heads: array[float], stages: list[int]) -> None:
        counts = np.array(stages, dtype=np.int64)
        self._buffers: tuple[Any, ...] = (steps, heads)  # (the views' memory)
        self.steps: F64 = np.frombuffer(steps, dtype=np.float64).reshape(-1, STEP_VALUES)
        self.heads: F64 = np.frombuffer(heads, dtype=np.float64).reshape(len(counts), -1)
        self.trip = np.repeat(np.arange(len(counts)), counts)  # each row's trip
        self.first = np.cumsum(counts) - counts  # each trip's first row

    def __len__(self) -> int:
        return len(self.steps)

    def sort_keys(self) -> F64:
        """(replica, stage, lane, start_s) of every row, as a (4, rows) array."""
        trip = self.trip
        keys = np.empty((4, len(trip)), dtype=np.float64)
        keys[0] = self.heads[trip, 0]
        keys[1] = np.arange(len(trip)) - self.first[trip]
        keys[2] = self.heads[trip, 1]
        keys[3] = self.steps[:, 0]
        return keys

    def rows(self, rows: npt.NDArray[np.int64]) -> F64:
        """Full rows `rows` (row numbers), as `on_iteration` would have written them."""
        trip = self.trip[rows]
        heads = self.heads[trip]
        steps = self.steps[rows]
        start, end, compute = steps[:, 0], steps[:, 1], steps[:, 2]
        block = np.empty((len(rows), ROW_WIDTH), dtype=np.float64)
        block[:, 0] = heads[:, 0]  # replica
        block[:, 1] = rows - self.first[trip]  # stage
        block[:, 2] = heads[:, 1]  # lane
        block[:, 3] = start
        block[:, 4] = end
        block[:, 5:9] = heads[:, 3:7]  # prefill, decode, sequences, batch tokens
        block[:, 9] = compute
        block[:, 10] = np.where(heads[:, 2] != 0, end - (start + compute), 0.0)  # comm
        block[:, 11] = steps[:, 3]  # bubble
        block[:, 12:14] = heads[:, 7:9]  # KV blocks in use, capacity
        return block
