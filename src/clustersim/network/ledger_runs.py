"""Many ledger bookings at once, in numpy: `record_in_runs(ledger, entries)` leaves every
cell as `LinkLedger.record_many(entries)` does, bit for bit.

Each cell receives its additions (`moved × weight`) in entry order, one Python float `+`
after another. So the entries are split into their (link, weight) parts, ordered stably by
link (the additions to one link keep their order), and cut into runs: consecutive parts of a
link inside one bin. A run's additions are summed in order onto its cell in C
(`functools.reduce(operator.add, ...)`: the same sequential adds), and a part spanning bins
goes through `LinkLedger.record` for its link alone. Private channels' bookings (serving/
pipeline_leap.py: thousands held, one link each, runs of hundreds a one-second bin) thus
cost a few numpy passes and one Python step a run instead of one a booking.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import reduce
from itertools import chain
from operator import add

import numpy as np

from clustersim.network.ledger import LinkLedger

Entry = tuple[
    tuple[int, ...], tuple[float, ...], float, float, float
]  # links, weights, t0, t1, moved


def record_in_runs(ledger: LinkLedger, entries: Sequence[Entry]) -> None:
    """`ledger.record_many(entries)`, the same floats in every cell (see module docstring)."""
    n = len(entries)
    if n == 0:
        return
    links, weights, t0s, t1s, moveds = zip(*entries, strict=True)
    parts = np.fromiter(map(len, links), np.int64, n)
    entry = np.repeat(np.arange(n), parts)  # the entry of each (link, weight) part
    link = np.fromiter(chain.from_iterable(links), np.int64, len(entry))
    weight = np.fromiter(chain.from_iterable(weights), np.float64, len(entry))
    t0, t1, moved = np.array(t0s), np.array(t1s), np.array(moveds)
    bin_s = ledger.bin_s
    b0 = (t0 / bin_s).astype(np.int64)  # int(t0 / bin_s): both truncate, t0 ≥ 0
    spans = ((t1 / bin_s).astype(np.int64) > b0) & (t1 > t0)
    kept = (moved > 0.0)[entry]
    order = np.flatnonzero(kept)[np.argsort(link[kept], kind="stable")]
    entry, link, weight = entry[order], link[order], weight[order]
    amount = moved[entry] * weight  # the products `record` adds
    bins, spanning = b0[entry], spans[entry]
    # a run starts at a new link, a new bin, or either side of a part spanning bins
    cut = np.ones(len(entry), dtype=bool)
    cut[1:] = (link[1:] != link[:-1]) | (bins[1:] != bins[:-1]) | spanning[1:] | spanning[:-1]
    starts = np.flatnonzero(cut).tolist()
    stops = [*starts[1:], len(entry)]
    amounts = amount.tolist()
    for lo, hi in zip(starts, stops, strict=True):
        lk = int(link[lo])
        if spanning[lo]:
            e = int(entry[lo])
            ledger.record((lk,), (float(weight[lo]),), t0s[e], t1s[e], moveds[e])
            continue
        cells = ledger.cells_of(lk)
        b = int(bins[lo])
        cells[b] = reduce(add, amounts[lo:hi], cells.get(b, 0.0))
