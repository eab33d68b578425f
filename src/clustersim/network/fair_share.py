"""Weighted max-min fair sharing of link bandwidth between entities (progressive filling).

An entity is a flow, or a coflow whose flows advance in lockstep: on each link l it needs a
share w_l of its rate (docs/network.md).
"""

from __future__ import annotations

from collections.abc import Sequence

_MIN_WEIGHT = 1e-15  # floor of a link's residual weight sum during progressive filling


def max_min_rates(
    paths: Sequence[tuple[int, ...]],
    bandwidth: Sequence[float],
    weights: Sequence[tuple[float, ...]] | None = None,
) -> list[float]:
    """Weighted max-min fair rate of each entity, by progressive filling.

    `paths[i]` are the link ids of entity i (non-empty, no repeats); `bandwidth[l]` is link
    l's capacity (bytes/s); `weights[i][k]` in (0, 1] is the fraction of entity i's rate it
    needs on link paths[i][k] (None = all 1: plain flows). Returned rates are bytes/s on each
    entity's weight-1 link. Invariants: Σ_i rate_i × w_il <= capacity_l on every link (up to
    float rounding) and every entity crosses at least one saturated link.
    """
    cnt: dict[int, int] = {}
    wsum: dict[int, float] = {}
    cap: dict[int, float] = {}
    ws = weights if weights is not None else [(1.0,) * len(p) for p in paths]
    for p, wp in zip(paths, ws, strict=True):
        for link, w in zip(p, wp, strict=True):
            c = cnt.get(link)
            if c is None:
                cnt[link] = 1
                wsum[link] = w
                cap[link] = bandwidth[link]
            else:
                cnt[link] = c + 1
                wsum[link] += w
    if max(cnt.values(), default=0) <= 1:  # no shared link: each runs at its own bottleneck
        return [
            min(bandwidth[link] / w for link, w in zip(p, wp, strict=True))
            for p, wp in zip(paths, ws, strict=True)
        ]
    rates = [0.0] * len(paths)
    unfrozen = list(range(len(paths)))
    while unfrozen:
        share = min(cap[link] / wsum[link] for link in cnt)
        limit = share * (1.0 + 1e-12)
        bottleneck = {link for link in cnt if cap[link] <= limit * wsum[link]}
        keep: list[int] = []
        for i in unfrozen:
            p = paths[i]
            if bottleneck.isdisjoint(p):
                keep.append(i)
                continue
            rates[i] = share
            for link, w in zip(p, ws[i], strict=True):
                cap[link] = max(cap[link] - share * w, 0.0)
                c = cnt[link] - 1
                if c:
                    cnt[link] = c
                    wsum[link] = max(wsum[link] - w, _MIN_WEIGHT)
                else:
                    del cnt[link]
        unfrozen = keep
    return rates
