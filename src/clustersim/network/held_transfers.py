"""Transfers of closed-form trips held back from the link ledger, then booked in bulk
(serving/pipeline_leap.py); the cells come out as `LinkLedger.record_many` of the same
entries in the same order leaves them, bit for bit.

A trip's transfers take a few *shapes* (links, weights, bytes) fixed by its token count, so a
trip is held as its shapes' ids and its transfers' (start, end) times, never as a tuple a
transfer. Booking: each transfer's (link, weight) parts are gathered from the shape table in
numpy, ordered stably by link (one link's additions keep their order: each cell receives
them as `record` would, one after another), and cut into runs — consecutive parts of a link
inside one bin. A run's additions (`bytes × weight`, the products `record` adds) are summed
onto its cell in order in C (`functools.reduce(operator.add, ...)`: the same sequential float
adds); a part spanning bins goes through `LinkLedger.record` for its link alone.
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
    spans = ((t1 / bin_s).astype(np.int64) > b0) & (t1 > t0)
    parts = table.parts[ids]
    entry = np.repeat(np.arange(len(ids)), parts)  # each part's transfer
    first = np.cumsum(parts) - parts  # each transfer's first part, in the gathered order
    part = np.arange(len(entry)) + np.repeat(table.offset[ids] - first, parts)  # in the table
    kept = np.flatnonzero(table.size[ids][entry] > 0.0)  # record skips nothing moved
    order = kept[np.argsort(table.link[part[kept]], kind="stable")]
    entry, part = entry[order], part[order]
    link, bins, spanning = table.link[part], b0[entry], spans[entry]
    if not len(link):
        return
    # a run starts at a new link, a new bin, or either side of a part spanning bins
    cut = np.ones(len(link), dtype=bool)
    cut[1:] = (link[1:] != link[:-1]) | (bins[1:] != bins[:-1]) | spanning[1:] | spanning[:-1]
    starts = np.flatnonzero(cut).tolist()
    amounts = table.amount[part].tolist()
    for lo, hi in zip(starts, [*starts[1:], len(link)], strict=True):
        lk, p, e = int(link[lo]), int(part[lo]), int(entry[lo])
        if spanning[lo]:
            size = float(table.size[ids[e]])
            ledger.record((lk,), (float(table.weight[p]),), float(t0[e]), float(t1[e]), size)
            continue
        cells = ledger.cells_of(lk)
        b = int(bins[lo])
        cells[b] = reduce(add, amounts[lo:hi], cells.get(b, 0.0))
