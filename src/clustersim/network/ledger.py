"""Per-link utilisation ledger: bytes each link carried in each time bin of width `bin_s`.

Each constant-rate segment of an entity adds its bytes to each of its links, spread over the
bins it overlaps in proportion to the overlap.

Wide coflows (an EP all-to-all: ~10²–10³ links) inside one bin are added in numpy into a
dense per-link accumulator of that bin (`_Wide`), written back to the per-link cells when the
bin changes, before any other record touches one of its links, and before a read. Every cell
still receives the same additions in the same order (elementwise float64 `+` and `*` are the
Python float operations), so the bytes are identical.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from clustersim.topology.graph import Cluster

if TYPE_CHECKING:
    import pandas as pd

WIDE_LINKS = 64  # records on at least this many links take the numpy path

Entity = tuple[tuple[int, ...], tuple[float, ...], float]  # links, weight of each, bytes
Cycle = list[tuple[int, tuple[float, ...]]]  # link → its additions (bytes) from some entities


def cycle_of(entities: list[Entity]) -> Cycle:
    """What `record` adds to each link's cell for `entities` in order, each inside one bin:
    moved × weight for each of its links (none when it moves nothing)."""
    adds: dict[int, list[float]] = {}
    for links, weights, moved in entities:
        if moved > 0.0:
            for link, w in zip(links, weights, strict=True):
                adds.setdefault(link, []).append(moved * w)
    return [(link, tuple(xs)) for link, xs in adds.items()]


class _Wide:
    """Cells of one bin held densely while wide coflows add to them (see module docstring)."""

    __slots__ = ("bin", "held", "pending", "values")

    def __init__(self, num_links: int) -> None:
        self.bin = -1
        self.values = np.zeros(num_links)  # bytes per link id; meaningful where `held`
        self.held = np.zeros(num_links, dtype=bool)  # links whose cell in `bin` is in `values`
        self.pending = False  # any `held`


class LinkLedger:
    """Bytes per (link, bin) of one simulation; pandas only in `table` / `totals`."""

    def __init__(self, cluster: Cluster, bin_s: float) -> None:
        if not bin_s > 0:
            raise ValueError(f"bin_s must be > 0, got {bin_s}")
        self.cluster = cluster
        self.bin_s = float(bin_s)
        self._cells: list[dict[int, float]] = [{} for _ in cluster.links]  # bin → bytes
        self._wide = _Wide(len(cluster.links))

    def _settle(self) -> None:
        """Write the wide accumulator's cells back into the per-link cells."""
        wide = self._wide
        if wide.pending:
            b = wide.bin
            ids = np.flatnonzero(wide.held)
            ledger = self._cells
            for link, v in zip(ids.tolist(), wide.values[ids].tolist(), strict=True):
                ledger[link][b] = v
            wide.held[ids] = False
            wide.pending = False

    def _record_wide(
        self, links: tuple[int, ...], weights: tuple[float, ...], b: int, moved: float
    ) -> None:
        """`record` of one bin for a wide coflow with distinct links, in numpy."""
        wide = self._wide
        if wide.bin != b:
            self._settle()
            wide.bin = b
        idx = np.asarray(links, dtype=np.int64)
        fresh = idx[~wide.held[idx]]
        if len(fresh):  # first wide record of this bin on these links: start from their cells
            ledger = self._cells
            wide.values[fresh] = [ledger[link].get(b, 0.0) for link in fresh.tolist()]
            wide.held[fresh] = True
            wide.pending = True
        wide.values[idx] = wide.values[idx] + moved * np.asarray(weights, dtype=np.float64)

    def record(
        self,
        links: tuple[int, ...],
        weights: tuple[float, ...],
        t0: float,
        t1: float,
        moved: float,
    ) -> None:
        """Add `moved` × weight bytes to each of `links`, uniformly over [t0, t1] (s)."""
        if moved <= 0.0:
            return
        bin_s = self.bin_s
        b0 = int(t0 / bin_s)
        b1 = int(t1 / bin_s)
        one_bin = b1 <= b0 or t1 <= t0
        if one_bin and len(links) >= WIDE_LINKS and len(set(links)) == len(links):
            self._record_wide(links, weights, b0, moved)
            return
        if self._wide.pending and self._wide.held[list(links)].any():
            self._settle()
        ledger = self._cells
        if one_bin:
            # one bin (the usual case); map() keeps the per-link walk in C for ~10³-link coflows
            for cells, w in zip(map(ledger.__getitem__, links), weights, strict=True):
                cells[b0] = cells.get(b0, 0.0) + moved * w
            return
        span = t1 - t0
        parts: list[tuple[int, float]] = []
        for b in range(b0, b1 + 1):
            lo = max(t0, b * bin_s)
            hi = min(t1, (b + 1) * bin_s)
            if hi > lo:
                parts.append((b, moved * (hi - lo) / span))
        for cells, w in zip(map(ledger.__getitem__, links), weights, strict=True):
            for b, x in parts:
                cells[b] = cells.get(b, 0.0) + x * w

    def record_many(
        self,
        entries: list[tuple[tuple[int, ...], tuple[float, ...], float, float, float]],
    ) -> None:
        """`record(*e)` for each entry in order, the same floats: an entry inside one bin
        adds to its links' cells directly (the additions `record` makes, in its order)."""
        self._settle()  # nothing stays in the wide accumulator: entries add to the cells
        bin_s = self.bin_s
        ledger = self._cells
        for links, weights, t0, t1, moved in entries:
            if moved <= 0.0:
                continue
            b0 = int(t0 / bin_s)
            if int(t1 / bin_s) > b0 and t1 > t0:  # spans bins: the general case
                self.record(links, weights, t0, t1, moved)
                continue
            for link, w in zip(links, weights, strict=True):
                cells = ledger[link]
                cells[b0] = cells.get(b0, 0.0) + moved * w

    def record_few(
        self,
        links: tuple[int, ...],
        weights: tuple[float, ...],
        t0: float,
        t1: float,
        moved: float,
    ) -> None:
        """`record`, for an entity on few links (an all-reduce phase): inside one bin (the
        usual case) its cells are added to here, the same additions with less work a call
        (on many links `record` adds the same floats in numpy)."""
        bin_s = self.bin_s
        b = int(t0 / bin_s)
        if int(t1 / bin_s) != b or moved <= 0.0 or self._wide.pending:
            self.record(links, weights, t0, t1, moved)
            return
        ledger = self._cells
        for link, w in zip(links, weights, strict=True):
            cells = ledger[link]
            cells[b] = cells.get(b, 0.0) + moved * w

    def add_cycles(self, cycle: Cycle, b: int, count: int) -> None:
        """`count` times in a row, add each link's additions of `cycle` to its cell of bin
        `b`: what `record` adds for `count` repetitions of the entities `cycle` was made of,
        each inside bin b (the same floats, in the same order)."""
        self._settle()  # nothing stays in the wide accumulator: the cells are added to
        ledger = self._cells
        for link, adds in cycle:
            cells = ledger[link]
            total = cells.get(b, 0.0)
            if len(adds) == 1:
                x = adds[0]
                for _ in range(count):
                    total += x
            else:
                for _ in range(count):
                    for x in adds:
                        total += x
            cells[b] = total

    def cells_of(self, link: int) -> dict[int, float]:
        """Link `link`'s bytes per bin (settled), for additions in place in the order
        `record` makes them (network/held_transfers.py)."""
        self._settle()
        return self._cells[link]

    def copy_cells(self, src: int, dst: tuple[int, ...]) -> None:
        """Give each link of `dst` the bytes per bin of link `src` (twin links, booked only
        as `src`: network/twin_links.py)."""
        self._settle()
        cells = self._cells[src]
        for link in dst:
            self._cells[link] = dict(cells)

    def table(self, until_s: float | None = None) -> pd.DataFrame:
        """`columns` as a DataFrame."""
        import pandas as pd

        return pd.DataFrame(self.columns(until_s), copy=False)

    def columns(self, until_s: float | None = None) -> dict[str, np.ndarray]:
        """Bytes per link per time bin: columns link, kind, bin_start_s, bytes, utilisation.

        Only (link, bin) cells that carried bytes, ordered by link id then bin; bins starting
        at or after `until_s` are dropped. utilisation = bytes / (bandwidth × bin_s).
        """
        self._settle()
        limit = math.inf if until_s is None else until_s
        id_parts: list[np.ndarray] = []
        bin_parts: list[np.ndarray] = []
        byte_parts: list[np.ndarray] = []
        for lid, cells in enumerate(self._cells):
            if not cells:
                continue
            bins = np.fromiter(cells.keys(), np.int64, len(cells))
            nbytes = np.fromiter(cells.values(), np.float64, len(cells))
            order = np.argsort(bins, kind="stable")  # bins are distinct: ascending bins
            bins, nbytes = bins[order], nbytes[order]
            kept = bins * self.bin_s < limit  # (as b * bin_s: the int converted, then ×)
            id_parts.append(np.full(int(kept.sum()), lid, dtype=np.int64))
            bin_parts.append(bins[kept])
            byte_parts.append(nbytes[kept])
        links = self.cluster.links
        id_arr = _joined(id_parts, np.int64)
        names = np.asarray([link.name for link in links], dtype=object)
        kinds = np.asarray([link.kind for link in links], dtype=object)
        bw = np.asarray([link.bandwidth_Bps for link in links], dtype=np.float64)
        nbytes = _joined(byte_parts, np.float64)
        return {
            "link": names[id_arr],
            "kind": kinds[id_arr],
            "bin_start_s": _joined(bin_parts, np.int64).astype(np.float64) * self.bin_s,
            "bytes": nbytes,
            "utilisation": nbytes / (bw[id_arr] * self.bin_s),
        }

    def totals(self) -> pd.DataFrame:
        """Bytes per link since the start: columns link, kind, bandwidth_Bps, bytes."""
        import pandas as pd

        self._settle()
        rows = [
            (link.name, link.kind, link.bandwidth_Bps, math.fsum(cells.values()))
            for link, cells in zip(self.cluster.links, self._cells, strict=True)
            if cells
        ]
        return pd.DataFrame(rows, columns=["link", "kind", "bandwidth_Bps", "bytes"])


def _joined(parts: list[np.ndarray], dtype: type) -> np.ndarray:
    """The parts one after another (an empty array of `dtype` when there are none)."""
    return np.concatenate(parts) if parts else np.empty(0, dtype=dtype)
