"""Routes and the load they put on links: flows, coflow demands, cached routes.

A flow moves bytes from one GPU to another along `Cluster.path` (a fixed route). A set of
flows started together as one coflow becomes a `Demand`: the links it uses, the share of its
rate it needs on each (load_l / load_max) and its bytes on the most-loaded link.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from clustersim.topology.graph import Cluster

FlowSpec = tuple[str, str, float]  # (src GPU, dst GPU, bytes)
Demand = tuple[tuple[int, ...], tuple[float, ...], float]  # (links, weights, bytes at weight 1)
# transfer_same's route of a tuple of pairs: ((link, flows on it), ...) in first-use order,
# the longest path latency (s), and for single-flow links ((links, weights), the rate alone)
SameRoute = tuple[
    tuple[tuple[int, int], ...],
    float,
    tuple[tuple[int, ...], tuple[float, ...]] | None,
    float | None,
]


def demand_of(loads: dict[int, float]) -> Demand | None:
    """The coflow demand of per-link loads (link id → bytes), None when nothing moves."""
    if not loads:
        return None
    top = max(loads.values())
    return tuple(loads), tuple(b / top for b in loads.values()), top


def link_loads(cluster: Cluster, flows: Sequence[FlowSpec]) -> dict[int, float]:
    """Bytes each link carries for `flows` (link id → bytes), in first-use order."""
    loads: dict[int, float] = {}
    path = cluster.path
    for src, dst, nbytes in flows:
        if nbytes > 0 and src != dst:
            for link in path(src, dst):
                loads[link] = loads.get(link, 0.0) + nbytes
    return loads


def coflow_time_s(cluster: Cluster, flows: Sequence[FlowSpec]) -> float:
    """Seconds to move `flows` as one coflow on an idle fabric: max over links of load / bw."""
    links = cluster.links
    return max(
        (b / links[i].bandwidth_Bps for i, b in link_loads(cluster, flows).items()),
        default=0.0,
    )


class PairSet:
    """A fixed list of (src, dst) GPU pairs, routed once, for transfers repeated every step
    with new byte counts (an EP group's all-to-all): link loads become one sparse sum.

    `matrix[k, i]` = times pair i's path uses link `links[k]` (links in first-use order);
    `latency_s[i]` = pair i's path latency (0 for a same-GPU pair, which moves nothing).
    via_network: route every pair through the NICs, same-node pairs too (Cluster.rdma_path)."""

    def __init__(
        self, cluster: Cluster, pairs: Sequence[tuple[str, str]], via_network: bool = False
    ) -> None:
        self.pairs = tuple(pairs)
        route = cluster.rdma_path if via_network else cluster.path
        paths = [route(src, dst) if src != dst else () for src, dst in self.pairs]
        order: dict[int, int] = {}
        rows: list[int] = []  # row of each (link use, pair), pairs in order
        link_latency = [link.latency_s for link in cluster.links]
        self.latency_s = np.zeros(len(self.pairs))
        for i, path in enumerate(paths):
            for link in path:
                rows.append(order.setdefault(link, len(order)))
            self.latency_s[i] = sum(link_latency[link] for link in path)
        self.links = np.fromiter(order, dtype=np.int64, count=len(order))
        self._moving = np.asarray([src != dst for src, dst in self.pairs], dtype=bool)
        # The link × pair matrix is very sparse (each pair crosses a few of ~1,000 links) and
        # ~330 MiB dense at EP128: only its nonzeros are kept, and per-step loads are a
        # bincount over them. Byte counts are whole numbers and the entries small
        # integers, so every sum is exact: the same loads as the dense product, bit for bit
        # (tests/test_fabric.py compares).
        # nonzeros sorted by (row, pair); a value counts a pair's uses of the row's link
        width = max(len(paths), 1)
        cols = np.repeat(np.arange(len(paths), dtype=np.int64), [len(p) for p in paths])
        unique, counts = np.unique(
            np.asarray(rows, dtype=np.int64) * width + cols, return_counts=True
        )
        rows_sorted = unique // width
        # Stored interleaved — the k-th entry of every row, then the (k+1)-th — which keeps
        # each row's entries in pair order (so each link's sum adds the same terms in the
        # same order) while consecutive bincount additions hit different links (~2× faster).
        rank = np.arange(len(unique)) - np.searchsorted(rows_sorted, rows_sorted, side="left")
        perm = np.lexsort((rows_sorted, rank))
        self._rows = rows_sorted[perm]
        self._cols = (unique % width)[perm]
        self._vals = counts.astype(np.float64)[perm]
        self._unit = bool(np.all(self._vals == 1.0))

    @property
    def matrix(self) -> np.ndarray:
        """The dense links × pairs matrix: `matrix[k, i]` = times pair i's path uses
        `links[k]` (a reference; the hot path uses the sparse form)."""
        m = np.zeros((len(self.links), len(self.pairs)))
        m[self._rows, self._cols] = self._vals
        return m

    def loads(self, x: np.ndarray) -> np.ndarray:
        """Bytes on each of `links` when pair i moves x[i]: `matrix @ x`, sparse."""
        terms = x[self._cols] if self._unit else x[self._cols] * self._vals
        return np.bincount(self._rows, weights=terms, minlength=len(self.links))

    def demand(self, nbytes: np.ndarray) -> tuple[Demand | None, float]:
        """(The coflow's demand, the longest path latency among pairs that move bytes)."""
        moving = (nbytes > 0) & self._moving
        if not moving.any():
            return None, 0.0
        loads = self.loads(np.where(moving, nbytes, 0.0))
        return self._demand_of(loads), float(self.latency_s[moving].max())

    def demands(self, nbytes: np.ndarray) -> list[tuple[Demand | None, float]]:
        """`demand` of each row of `nbytes` (steps, pairs), bit for bit: every step's link
        loads from one bincount (each link's terms of a step added in the same order)."""
        steps, width = nbytes.shape
        moving = (nbytes > 0) & self._moving
        x = np.where(moving, nbytes, 0.0)
        terms = x[:, self._cols] if self._unit else x[:, self._cols] * self._vals
        links = len(self.links)
        bins = self._rows[None, :] + links * np.arange(steps, dtype=np.int64)[:, None]
        loads = np.bincount(bins.ravel(), weights=terms.ravel(), minlength=steps * links)
        loads = loads.reshape(steps, links)
        latency = np.where(moving, self.latency_s, -np.inf).max(axis=1).tolist() if width else []
        return [
            (self._demand_of(loads[step]), latency[step]) if any_moving else (None, 0.0)
            for step, any_moving in enumerate(moving.any(axis=1).tolist())
        ]

    def _demand_of(self, loads: np.ndarray) -> Demand:
        """The coflow demand of per-link `loads` (bytes, `links` order; some > 0)."""
        used = loads > 0
        values = loads[used]
        top = float(values.max())
        return tuple(self.links[used].tolist()), tuple((values / top).tolist()), top


class RouteCache:
    """Routes a fabric reuses every step: one p2p flow's unit demand, and the link uses of a
    fixed tuple of pairs (a PP hand-off)."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self._bw = [link.bandwidth_Bps for link in cluster.links]
        self._pairs: dict[tuple[str, str], Demand] = {}
        self._same: dict[tuple[tuple[str, str], ...], SameRoute] = {}

    def pair(self, src: str, dst: str) -> Demand:
        """Unit demand of one src → dst flow (cached)."""
        key = (src, dst)
        d = self._pairs.get(key)
        if d is None:
            links = self.cluster.path(src, dst)
            d = (links, (1.0,) * len(links), 1.0)
            self._pairs[key] = d
        return d

    def same(self, pairs: tuple[tuple[str, str], ...]) -> SameRoute:
        """How many of `pairs`' flows use each link, their longest path latency, and when no
        link carries two of them, their unit demand and its rate alone (cached)."""
        route = self._same.get(pairs)
        if route is None:
            lat = self.cluster.path_latency_s
            live = [(s, d) for s, d in pairs if s != d]
            counts: dict[int, int] = {}
            for s, d in live:
                for link in self.cluster.path(s, d):
                    counts[link] = counts.get(link, 0) + 1
            uses = tuple(counts.items())
            links = tuple(counts)
            # Every link carried by one flow (disjoint rails, the usual case): the demand is
            # (links, all weights 1.0, nbytes) whatever nbytes is — as demand_of computes it,
            # since nbytes / nbytes == 1.0 — and its rate alone is the slowest link's.
            single = bool(uses) and all(c == 1 for _l, c in uses)
            solo = min(self._bw[x] / 1.0 for x in links) if single else None
            route = (
                uses,
                max((lat(s, d) for s, d in live), default=0.0),
                (links, (1.0,) * len(links)) if single else None,
                solo,
            )
            self._same[pairs] = route
        return route
