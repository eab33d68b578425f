"""The link ledger's numpy path for wide coflows books the same floats as the per-link path."""

from __future__ import annotations

import numpy as np
import pytest

from clustersim.catalog.hardware import get_hardware
from clustersim.catalog.topologies import get_topology
from clustersim.network import ledger as ledger_module
from clustersim.network.ledger import LinkLedger
from clustersim.topology.graph import build_cluster

Entry = tuple[tuple[int, ...], tuple[float, ...], float, float, float]


def _entries(num_links: int, seed: int) -> list[Entry]:
    """Wide (≥ WIDE_LINKS links) and narrow records, overlapping links, some crossing bins."""
    rng = np.random.default_rng(seed)
    out: list[Entry] = []
    t = 0.0
    for _ in range(600):
        t0 = t + float(rng.exponential(0.002))
        t1 = t0 + float(rng.exponential(0.003))
        wide = rng.random() < 0.6
        size = int(rng.integers(ledger_module.WIDE_LINKS, num_links)) if wide else 2
        links = tuple(rng.choice(num_links, size=size, replace=False).tolist())
        weights = tuple(rng.random(size).tolist())
        out.append((links, weights, t0, t1, float(rng.random()) * 1e6))
        t = t0 if rng.random() < 0.5 else t1  # records overlap in time as entities do
    return out


@pytest.mark.parametrize("seed", [1, 2])
def test_wide_records_equal_per_link_records(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    cluster = build_cluster(get_topology("h800x32_ib"), get_hardware("h800"))
    entries = _entries(len(cluster.links), seed)
    fast = LinkLedger(cluster, 0.01)
    for e in entries:
        fast.record(*e)
    fast_table, fast_totals = fast.table(), fast.totals()
    monkeypatch.setattr(ledger_module, "WIDE_LINKS", 10**9)  # every record per link
    slow = LinkLedger(cluster, 0.01)
    for e in entries:
        slow.record(*e)
    assert fast_table.equals(slow.table())
    assert fast_totals.equals(slow.totals())
    assert len(fast_table) > 0


def test_record_many_after_wide_records(monkeypatch: pytest.MonkeyPatch) -> None:
    cluster = build_cluster(get_topology("h800x32_ib"), get_hardware("h800"))
    entries = _entries(len(cluster.links), 3)
    head, tail = entries[:300], entries[300:]
    fast = LinkLedger(cluster, 0.01)
    for e in head:
        fast.record(*e)
    fast.record_many(tail)
    monkeypatch.setattr(ledger_module, "WIDE_LINKS", 10**9)
    slow = LinkLedger(cluster, 0.01)
    for e in entries:
        slow.record(*e)
    assert fast.table().equals(slow.table())
