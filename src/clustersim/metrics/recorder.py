"""Collects what the simulation does, in memory, for the results writer. No file I/O.

Per-request times live in the scheduler's RequestState (plain lists, written in place on the
hot path); this recorder adds routing and drop decisions and one tuple per engine step.
"""

from __future__ import annotations

import struct
from array import array
from collections.abc import Sequence
from math import nan
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

from clustersim.metrics.decode_runs import DecodeRun, DecodeRuns
from clustersim.metrics.lane_rows import LANE_WIDTH, lane_sort_keys, widened
from clustersim.metrics.table import Table
from clustersim.metrics.trip_rows import TripHead, TripRows, TripTable

ITERATION_COLUMNS = (
    "replica",
    "stage",
    "lane",
    "start_s",
    "end_s",
    "prefill_tokens",
    "decode_tokens",
    "num_seqs",
    "batch_tokens",
    "compute_s",
    "comm_s",
    "bubble_s",
    "kv_used_blocks",
    "kv_capacity_blocks",
)

# speculative decoding only (serving.speculative): tokens the step's decoding sequences emit
EMITTED_COLUMN = "emitted_tokens"

IterationRow = tuple[int, int, int, float, float, int, int, int, int, float, float, float, int, int]
# one row as native float64s, the bytes `array("d").extend(row)` appends (each value through
# float conversion), in a third of its time
_pack_row = struct.Struct(f"{len(ITERATION_COLUMNS)}d").pack
# a hot loop may append pack_row(*row) to `Recorder.iterations` itself (and count the row in
# `steps`): the bytes on_iteration appends, without its call (serving/tp1_lane.py)
pack_row = _pack_row
_INTEGER_COLUMNS = frozenset(ITERATION_COLUMNS) - {
    "start_s",
    "end_s",
    "compute_s",
    "comm_s",
    "bubble_s",
}


# rows gathered at once when the table is built: 448 KiB of rows, a block that stays in the
# core's L2 cache while its 14 columns are read out of it one stride at a time (2^15 rows,
# 3.5 MiB, spilled: 48 → 35 ms for the 211k rows of the issue 15 floor)
_GATHER_BLOCK_ROWS = 1 << 12
# values of a full row chunk (2^16 rows, 7 MiB): the rows are kept in chunks, not one growing
# array, so that building the table can free each chunk once its rows are gathered and the
# columns reuse its memory (on a VM a page first touched costs ≈ 10 µs: 0.8 CPU-s for 300 MB)
CHUNK_VALUES = len(ITERATION_COLUMNS) << 16


class Recorder:
    """frontend_s: seconds between a request's arrival and the engine receiving it (the
    engine's front end: HTTP, tokenisation); `on_arrival` is called when the engine receives
    it and records the arrival that long before."""

    def __init__(
        self, num_requests: int, record_iterations: bool = True, frontend_s: float = 0.0
    ) -> None:
        self.frontend_s = frontend_s
        self.arrival_s = [nan] * num_requests
        self.replica = [-1] * num_requests
        self.dropped = [False] * num_requests
        self.record_iterations = record_iterations
        # Rows flattened into float64 buffers: 112 bytes a step, not ~600 for tuples. The
        # newest rows go to `iterations` (hot loops append to it directly); the Recorder's own
        # appends (`_append_rows`) move it to `full_chunks` once it holds `chunk_values`
        # values or more.
        self.iterations = array("d")
        self.full_chunks: list[array[float]] = []
        self.chunk_values = CHUNK_VALUES
        self.steps = 0
        self.decode_runs = DecodeRuns()  # leaped steps' rows, built with the table
        # one-stage lanes' packed rows (metrics/lane_rows.py): hot loops append to it
        # directly; not with `emitted` counts, which follow the rows' order in `iterations`
        self.lane_rows = array("d")
        # pipeline trips' rows, compact until the table is built (metrics/trip_rows.py)
        self._trips = TripRows()
        # speculative decoding: tokens emitted by each recorded row's step (one per row)
        self.emitted = array("q")

    def on_arrival(self, rid: int, now: float, replica: int) -> None:
        self.arrival_s[rid] = now - self.frontend_s
        self.replica[rid] = replica

    def on_drop(self, rid: int) -> None:
        self.dropped[rid] = True

    def on_iteration(self, row: IterationRow) -> None:
        self.steps += 1
        if self.record_iterations:
            self._append_rows(_pack_row(*row))

    def on_decode_run(self, run: DecodeRun) -> None:
        """A run of leaped decode steps (serving/decode_leap.py; metrics/decode_runs.py)."""
        self.steps += run[5]
        if self.record_iterations and self.decode_runs.add(run):
            self._append_rows(self.decode_runs.take_rows())

    def on_trip(self, steps: list[float], head: TripHead, stages: int) -> None:
        """A pipeline trip's `stages` stage steps, stage 0 first, each as (start, end,
        compute, bubble) in `steps` (read now, not kept), and its head: rows kept compact
        (metrics/trip_rows.py), given in full when the table is built."""
        self.steps += stages
        if self.record_iterations:
            self._trips.add(steps, head, stages)

    def _append_rows(self, rows: bytes | memoryview) -> None:
        """Append rows (native float64s) to the newest chunk; a chunk holding
        `chunk_values` values or more becomes full."""
        chunk = self.iterations
        chunk.frombytes(rows)
        if len(chunk) >= self.chunk_values:
            self.full_chunks.append(chunk)
            self.iterations = array("d")

    def on_emitted(self, tokens: int) -> None:
        """The tokens the step of the row just recorded emitted (speculative decoding)."""
        if self.record_iterations:
            self.emitted.append(tokens)

    def iterations_frame(self) -> pd.DataFrame:
        """`iterations_table` as a DataFrame."""
        return self.iterations_table().to_frame()

    def iterations_table(self) -> Table:
        """The rows sorted by (start_s, replica, stage, lane), stably; frees the buffers.

        The sort keys are read out of the row-major chunks, then the rows are gathered in
        that order a block at a time and each block is spread into the columns (the integer
        ones cast to int64 on assignment, as `astype` casts). A chunk is freed as soon as the
        blocks gathered so far hold all its rows (rows come nearly in order: a chunk is done
        shortly after its last row's place), so the columns reuse the chunks' memory."""
        width = len(ITERATION_COLUMNS)
        if self.decode_runs.count:
            self.iterations.frombytes(self.decode_runs.take_rows())
        if (len(self.lane_rows) or len(self._trips)) and len(self.emitted):
            raise ValueError("emitted token counts follow full rows only")
        full = [c for c in (*self.full_chunks, self.iterations) if len(c)]
        chunks: list[array[float] | TripTable] = list(full)
        if len(self._trips):  # trips' rows, compact (metrics/trip_rows.py)
            chunks.append(self._trips.table())
        if len(self.lane_rows):
            chunks.append(self.lane_rows)
        packed = [False] * len(full) + [True] * (len(chunks) - len(full))
        views: list[Chunk | None] = [
            c
            if isinstance(c, TripTable)
            else np.frombuffer(c, dtype=np.float64).reshape(-1, LANE_WIDTH if lane else width)
            for c, lane in zip(chunks, packed, strict=True)
        ]
        self.full_chunks, self.iterations = [], array("d")  # `chunks` holds them now
        self.lane_rows = array("d")
        sizes = np.array([len(v) for v in views if v is not None], dtype=np.int64)
        first_row = np.concatenate(([0], np.cumsum(sizes)))  # each chunk's first row
        rows = int(first_row[-1])
        keys = _sort_keys(views, packed)
        order = stable_row_order(keys[3], keys[0], keys[1], keys[2])
        del keys
        columns = {
            name: np.empty(rows, np.int64 if name in _INTEGER_COLUMNS else np.float64)
            for name in ITERATION_COLUMNS
        }
        targets = list(columns.values())
        frees = _chunk_free_points(order, first_row)  # (gathered rows that free it, chunk)
        for first in range(0, rows, _GATHER_BLOCK_ROWS):
            last = first + _GATHER_BLOCK_ROWS
            block = _gather_rows(views, packed, first_row, order[first:last], width)
            for i, target in enumerate(targets):
                target[first:last] = block[:, i]
            while frees and frees[-1][0] <= last:
                k = frees.pop()[1]
                views[k] = None
                chunk = chunks[k]
                if isinstance(chunk, array):
                    del chunk[:]  # its memory, even where a lane still holds the array
                else:
                    chunks[k] = array("d")  # (the trips' table: its last reference)
        del views, chunks
        if len(self.emitted):
            # speculative decoding only: every row has its step's emitted tokens
            columns[EMITTED_COLUMN] = np.frombuffer(self.emitted, dtype=np.int64)[order]
            self.emitted = array("q")
        return Table(columns)


Chunk = np.ndarray | TripTable  # rows as (rows, width) float64s, or trips' (trip_rows.py)
_KEY_COLUMNS = ("replica", "stage", "lane", "start_s")  # the first four, in this order
assert ITERATION_COLUMNS[:4] == _KEY_COLUMNS


def _sort_keys(views: Sequence[Chunk | None], packed: Sequence[bool]) -> np.ndarray:
    """The first four columns (replica, stage, lane, start_s) of every chunk's rows, one
    after another, as the rows of a (4, rows) array: each chunk's leading values read in one
    pass (the row-major buffer read once, not once a key) and transposed in cache; lanes'
    packed rows give theirs (metrics/lane_rows.py)."""
    present = [(v, p) for v, p in zip(views, packed, strict=True) if v is not None]
    keys = np.empty((4, sum(len(v) for v, _ in present)), dtype=np.float64)
    first = 0
    for view, lane in present:
        at = slice(first, first + len(view))
        if isinstance(view, TripTable):
            keys[:, at] = view.sort_keys()
        elif lane:
            keys[:, at] = lane_sort_keys(view)
        else:
            keys[:, at] = view[:, :4].T.copy()  # (a cache-sized copy)
        first += len(view)
    return keys


def _chunk_free_points(order: np.ndarray, first_row: np.ndarray) -> list[tuple[int, int]]:
    """For each chunk (first rows `first_row`, the row count last), the number of rows
    gathered in `order` once its last row is gathered, with the chunk's index; latest first
    (pop from the end for the earliest)."""
    if not len(order):
        return []
    place = np.empty(len(order), dtype=np.int64)
    place[order] = np.arange(len(order), dtype=np.int64)
    done = np.maximum.reduceat(place, first_row[:-1]) + 1
    return sorted(zip(done.tolist(), range(len(done)), strict=True), reverse=True)


def _gather_rows(
    views: Sequence[Chunk | None],
    packed: Sequence[bool],
    first_row: np.ndarray,
    rows: np.ndarray,
    width: int,
) -> np.ndarray:
    """The full rows at buffer positions `rows` (across the chunks), in that order."""
    chunk = np.searchsorted(first_row, rows, side="right") - 1
    lo, hi = int(chunk.min()), int(chunk.max())
    if lo == hi:
        return _chunk_rows(views[lo], packed[lo], rows - first_row[lo])
    block = np.empty((len(rows), width), dtype=np.float64)
    present = np.flatnonzero(np.bincount(chunk - lo)) + lo  # (np.unique loads numpy.ma)
    for k in present.tolist():
        at = chunk == k
        block[at] = _chunk_rows(views[k], packed[k], rows[at] - first_row[k])
    return block


def _chunk_rows(view: Chunk | None, packed: bool, rows: np.ndarray) -> np.ndarray:
    """Full rows `rows` of one chunk (lanes' packed rows widened, trips' rows built)."""
    assert view is not None
    if isinstance(view, TripTable):
        return view.rows(rows)
    return widened(view[rows]) if packed else view[rows]


def stable_row_order(
    start_s: np.ndarray, replica: np.ndarray, stage: np.ndarray, lane: np.ndarray
) -> np.ndarray:
    """`np.lexsort((lane, stage, replica, start_s))`, computed as a stable argsort of start_s
    with only the rows whose start ties another's ordered by the other keys (a subset in
    (start, position) order, so a stable lexsort of it keeps positions for full ties)."""
    if np.isnan(start_s).any():
        return np.lexsort((lane, stage, replica, start_s))
    order = np.argsort(start_s, kind="stable")
    ordered = start_s[order]
    tie = ordered[1:] == ordered[:-1]
    if tie.any():
        tied = np.zeros(len(order), dtype=bool)
        tied[1:] |= tie
        tied[:-1] |= tie
        at = np.flatnonzero(tied)
        rows = order[at]
        order[at] = rows[np.lexsort((lane[rows], stage[rows], replica[rows], start_s[rows]))]
    return order


def requests_table(
    arrival_s: list[float],
    first_scheduled_s: list[float],
    first_token_s: list[float],
    finish_s: list[float],
    prompt_tokens: np.ndarray,
    output_tokens: np.ndarray,
    replica: list[int],
    preemptions: list[int],
    dropped: list[bool],
    decode_replica: list[int] | None = None,
    kv_transfer_s: list[float] | None = None,
    kv_transfer_bytes: list[float] | None = None,
) -> Table:
    """One row per request with the derived latencies (seconds).

    TTFT = first token − arrival; TPOT = (finish − first token) / (output tokens − 1), NaN for
    one-token outputs; queue = first scheduled − arrival. Dropped requests keep NaN times.
    Disaggregated runs (disagg/runtime.py) give the decode replica and the KV transfer's seconds
    and bytes; co-located runs leave them None: decode_replica = replica, the KV columns NaN.
    Every column is a new array of its own (np.array copies even an array given).
    """
    arrival = _column(arrival_s, np.float64)
    first = _column(first_token_s, np.float64)
    finish = _column(finish_s, np.float64)
    scheduled = _column(first_scheduled_s, np.float64)
    out = np.array(output_tokens, dtype=np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        tpot = np.where(out > 1, (finish - first) / (out - 1), np.nan)
    n = len(arrival)
    return Table(
        {
            "id": np.arange(len(arrival), dtype=np.int64),
            "arrival_s": arrival,
            "first_token_s": first,
            "finish_s": finish,
            "prompt_tokens": np.array(prompt_tokens, dtype=np.int64),
            "output_tokens": out,
            "replica": _column(replica, np.int64),
            "ttft_s": first - arrival,
            "tpot_s": tpot,
            "e2e_s": finish - arrival,
            "queue_s": scheduled - arrival,
            "preemptions": _column(preemptions, np.int64),
            "dropped": _column(dropped, np.bool_),
            "decode_replica": _column(
                replica if decode_replica is None else decode_replica, np.int64
            ),
            "kv_transfer_s": _floats(kv_transfer_s, n),
            "kv_transfer_bytes": _floats(kv_transfer_bytes, n),
        }
    )


def _floats(values: list[float] | None, n: int) -> np.ndarray:
    """`values` as a new float64 array, or n NaNs when there are none."""
    return np.full(n, np.nan) if values is None else _column(values, np.float64)


def _column(values: Sequence[Any] | np.ndarray, dtype: type[np.generic]) -> np.ndarray:
    """`np.array(values, dtype=dtype)`, a new array; a list is read by `np.fromiter` (the same
    values, without np.array's pass that discovers the list's shape and type)."""
    if isinstance(values, list):
        return np.fromiter(values, dtype=dtype, count=len(values))
    return np.array(values, dtype=dtype)
