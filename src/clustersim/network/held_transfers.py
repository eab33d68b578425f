"""Transfers of closed-form trips held back from the link ledger, then booked in bulk
(serving/pipeline_leap.py); the cells come out as `LinkLedger.record_many` of the same
entries in the same order leaves them, bit for bit.

A trip's transfers take a few *shapes* (links, weights, bytes) fixed by its token count, so a
trip is held as its shapes' ids and its transfers' (start, end) times, never as a tuple a
transfer. Booking: each transfer's (link, weight) parts are gathered from the shape table in
numpy, ordered stably by link (one link's additions keep their order: each cell receives
them as `record` would, one after another), and turned into the additions `record` makes:
a part inside one bin adds bytes × weight to it; a part spanning bins adds to each bin it
overlaps its share, with `record`'s operations element by element. Consecutive additions to
one cell form a run. When every run has a cell of its own (a channel's transfers come back
to back, the usual case), the runs are summed at once: the columns of a grid — the cell's
value, then the run's additions, then zeros — accumulated down its rows (`np.add.accumulate`
adds one row after another: the same sequential float adds); else run after run, in order
(`functools.reduce(operator.add, ...)`).
"""

from __future__ import annotations

import struct
from array import array
from collections.abc import Sequence
from functools import reduce
from itertools import chain
from operator import add
from typing import Any

import numpy as np

from clustersim.network.ledger import LinkLedger

MAX_GRID_VALUES = 1 << 22  # a grid of more (32 MiB) books run by run instead
Shape = tuple[tuple[int, ...], tuple[float, ...], float]  # links, weight of each, bytes


class _ShapeTable:
    """The shapes' parts as numpy columns: shape k's parts are [offset[k], offset[k] +
    parts[k]) of link / weight / amount (bytes × weight)."""

    def __init__(self, shapes: Sequence[Shape]) -> None:
        self.parts = np.array([len(links) for links, _w, _b in shapes], dtype=np.int64)
        self.offset = np.cumsum(self.parts) - self.parts
        self.link = np.fromiter(chain.from_iterable(s[0] for s in shapes), np.int64)
        self.weight = np.fromiter(chain.from_iterable(s[1] for s in shapes), np.float64)
        self.size = np.array([size for _l, _w, size in shapes], dtype=np.float64)
        self.amount = np.repeat(self.size, self.parts) * self.weight


class HeldTransfers:
    """One replica's held transfers (see module docstring)."""

    def __init__(self, ledger: LinkLedger) -> None:
        self.ledger = ledger
        self._shapes: list[Shape] = []
        self._ids: dict[Shape, int] = {}
        self._table: _ShapeTable | None = None  # rebuilt when a shape is added
        self._held_ids: list[tuple[int, ...]] = []  # each held trip's transfers' shapes
        self._id_arrays: dict[tuple[int, ...], np.ndarray] = {}  # those ids as an array
        # their (start, end), one transfer after another (converted while the trip's floats
        # are in cache, not when booked)
        self._times = array("d")
        self.count = 0  # transfers held
        self._packers: dict[int, Any] = {}  # struct packers of n float64s, by n

    def shape_ids(self, shapes: Sequence[Shape]) -> tuple[int, ...]:
        """Ids of `shapes` (registered on first use)."""
        ids = []
        for shape in shapes:
            k = self._ids.get(shape)
            if k is None:
                k = self._ids[shape] = len(self._shapes)
                self._shapes.append(shape)
                self._table = None
            ids.append(k)
        return tuple(ids)

    def hold(self, ids: tuple[int, ...], times: list[float]) -> None:
        """Hold a trip's transfers: shapes `ids`, times (start, end) after (start, end)."""
        self._held_ids.append(ids)
        packers = self._packers  # (struct, not fromlist: that parses each float)
        n = len(times)
        pack = packers.get(n) or packers.setdefault(n, struct.Struct(f"{n}d").pack)
        self._times.frombytes(pack(*times))
        self.count += len(ids)

    def _id_array(self, ids: tuple[int, ...]) -> np.ndarray:
        """`ids` as an int64 array (cached: a trip's ids repeat with its token count)."""
        array = self._id_arrays.get(ids)
        if array is None:
            array = self._id_arrays[ids] = np.array(ids, dtype=np.int64)
        return array

    def book(self) -> None:
        """Book every held transfer in the ledger, in the order held; hold none."""
        if not self.count:
            return
        table = self._table
        if table is None:
            table = self._table = _ShapeTable(self._shapes)
        ids = np.concatenate([self._id_array(held) for held in self._held_ids])
        times = np.frombuffer(self._times, dtype=np.float64)
        self._held_ids, self._times, self.count = [], array("d"), 0
        _book_parts(self.ledger, table, ids, times[0::2], times[1::2])


def _book_parts(
    ledger: LinkLedger, table: _ShapeTable, ids: np.ndarray, t0: np.ndarray, t1: np.ndarray
) -> None:
    """`record_many` of transfers of shapes `ids` over [t0, t1] (see module docstring)."""
    bin_s = ledger.bin_s
    b0 = (t0 / bin_s).astype(np.int64)  # int(t0 / bin_s): both truncate, t0 ≥ 0
    b1 = (t1 / bin_s).astype(np.int64)
    spans = (b1 > b0) & (t1 > t0)
    parts = table.parts[ids]
    entry = np.repeat(np.arange(len(ids)), parts)  # each part's transfer
    first = np.cumsum(parts) - parts  # each transfer's first part, in the gathered order
    part = np.arange(len(entry)) + np.repeat(table.offset[ids] - first, parts)  # in the table
    kept = np.flatnonzero(table.size[ids][entry] > 0.0)  # record skips nothing moved
    links = table.link[part[kept]]
    if len(links) and links.max() < 1 << 16:  # (a radix sort: the same stable order)
        links = links.astype(np.uint16)
    order = kept[np.argsort(links, kind="stable")]
    entry, part = entry[order], part[order]
    if not len(entry):
        return
    link, cell, amount = _pieces(table, ids, entry, part, b0, b1, spans, t0, t1, bin_s)
    # a run: consecutive pieces of one link inside one bin (one cell)
    cut = np.ones(len(link), dtype=bool)
    cut[1:] = (link[1:] != link[:-1]) | (cell[1:] != cell[:-1])
    starts = np.flatnonzero(cut)
    run_links, run_cells = link[starts].tolist(), cell[starts].tolist()
    lengths = np.diff(np.append(starts, len(link)))
    shared = len(set(zip(run_links, run_cells, strict=True))) < len(starts)  # a cell met twice
    if shared or (int(lengths.max()) + 1) * len(starts) > MAX_GRID_VALUES:
        _add_in_order(ledger, link, cell, amount, starts)
        return
    # each run's sum in order from its cell's value: the columns of a grid accumulated
    # down its rows (np.add.accumulate adds one row after another), zeros below a run's end
    grid = np.zeros((int(lengths.max()) + 1, len(starts)))
    cells_by_link = [ledger.cells_of(lk) for lk in run_links]
    grid[0] = [c.get(b, 0.0) for c, b in zip(cells_by_link, run_cells, strict=True)]
    run = np.repeat(np.arange(len(starts)), lengths)
    grid[np.arange(len(link)) - np.repeat(starts, lengths) + 1, run] = amount
    sums = np.add.accumulate(grid, axis=0)[-1].tolist()
    for cells, b, total in zip(cells_by_link, run_cells, sums, strict=True):
        cells[b] = total


def _pieces(
    table: _ShapeTable,
    ids: np.ndarray,
    entry: np.ndarray,
    part: np.ndarray,
    b0: np.ndarray,
    b1: np.ndarray,
    spans: np.ndarray,
    t0: np.ndarray,
    t1: np.ndarray,
    bin_s: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The additions `record` makes for the parts (in order): per part inside one bin its
    amount (bytes × weight) to that bin; per part spanning bins, to each bin it overlaps,
    bytes × (overlap) / (duration) × weight — `record`'s operations, element by element."""
    spanning = spans[entry]
    pieces = np.where(spanning, b1[entry] - b0[entry] + 1, 1)
    link = np.repeat(table.link[part], pieces)
    cell = np.repeat(b0[entry], pieces)
    amount = np.repeat(table.amount[part], pieces)
    if not spanning.any():
        return link, cell, amount
    first = np.cumsum(pieces) - pieces
    cell += np.arange(len(cell)) - np.repeat(first, pieces)  # b0, b0 + 1, …, b1
    wide = np.repeat(spanning, pieces)
    e = np.repeat(entry, pieces)[wide]
    b = cell[wide]
    lo = np.maximum(t0[e], b * bin_s)
    hi = np.minimum(t1[e], (b + 1) * bin_s)
    moved = table.size[ids[e]] * (hi - lo) / (t1[e] - t0[e])
    amount[wide] = moved * np.repeat(table.weight[part], pieces)[wide]
    keep = np.ones(len(cell), dtype=bool)
    keep[wide] = hi > lo
    return link[keep], cell[keep], amount[keep]


def _add_in_order(
    ledger: LinkLedger, link: np.ndarray, cell: np.ndarray, amount: np.ndarray, starts: np.ndarray
) -> None:
    """Each run's additions onto its cell in order (`reduce(operator.add, …)` in C)."""
    amounts = amount.tolist()
    bounds = starts.tolist()
    for lo, hi in zip(bounds, [*bounds[1:], len(link)], strict=True):
        cells = ledger.cells_of(int(link[lo]))
        b = int(cell[lo])
        cells[b] = reduce(add, amounts[lo:hi], cells.get(b, 0.0))
