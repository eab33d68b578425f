"""Links as shared resources: max-min fair fluid transfers, collectives, utilisation ledger.

Model (docs/network.md):
- A flow moves `bytes` from one GPU to another along `Cluster.path` (a fixed route).
- A transfer is a set of flows started together, by default one *coflow*: its flows advance
  in lockstep, like the chunks of a ring step or an all-to-all, so on each link l it needs
  a share w_l = load_l / load_max of its rate (load = its bytes on that link). With
  `independent_flows=True` every flow is its own entity instead.
- Entities share links max-min fairly, weighted by w_l (progressive filling; a single flow is
  the w = 1 case). Rates change only when an entity starts or finishes, and only inside the
  connected component (entities linked by shared links) of the entities that changed.
- One internal simpy timer is armed for the earliest completion; a generation counter
  makes superseded timers no-ops.
- A transfer's event fires when its data has moved, plus a fixed latency: the max path
  latency + the caller's extra for `transfer`, the collective's α-model for collectives.
- Ledger: each constant-rate segment of an entity adds its bytes to each of its links,
  spread over the time bins of width `bin_s` it overlaps, in proportion to the overlap.
Hot path is pure Python (lists, dicts, a heap); pandas only in `link_table` / `link_totals`.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import simpy

from clustersim.sim.collectives import AllReduceChoice, Phase, allreduce_algorithms
from clustersim.topology.graph import Cluster

FlowSpec = tuple[str, str, float]  # (src GPU, dst GPU, bytes)

_TIME_TOL_S = 1e-12  # completions this close to `now` are due now (float rounding of timers)
_MIN_WEIGHT = 1e-15  # floor of a link's residual weight sum during progressive filling


# ------------------------------------------------------------------ max-min fair sharing


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
        entries: dict[tuple[int, int], float] = {}  # (row, pair) → times the path uses it
        self.latency_s = np.zeros(len(self.pairs))
        for i, path in enumerate(paths):
            for link in path:
                key = (order.setdefault(link, len(order)), i)
                entries[key] = entries.get(key, 0.0) + 1.0
            self.latency_s[i] = sum(cluster.links[link].latency_s for link in path)
        self.links = np.fromiter(order, dtype=np.int64, count=len(order))
        self._moving = np.asarray([src != dst for src, dst in self.pairs], dtype=bool)
        # The link × pair matrix is very sparse (each pair crosses a few of ~1,000 links) and
        # ~330 MiB dense at EP128: only its nonzeros are kept, in row-major order, and per-step
        # loads are a bincount over them. Byte counts are whole numbers and the entries small
        # integers, so every sum is exact: the same loads as the dense product, bit for bit
        # (tests/test_fabric.py compares).
        keys = sorted(entries)
        self._rows = np.asarray([k[0] for k in keys], dtype=np.int64)
        self._cols = np.asarray([k[1] for k in keys], dtype=np.int64)
        self._vals = np.asarray([entries[k] for k in keys], dtype=np.float64)
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
        used = loads > 0
        values = loads[used]
        top = float(values.max())
        demand = (tuple(self.links[used].tolist()), tuple((values / top).tolist()), top)
        return demand, float(self.latency_s[moving].max())


# ------------------------------------------------------------------ all-reduce


AllReducePlans = dict[str, tuple[Phase, ...]]


def idle_allreduce_model(
    cluster: Cluster, plans: AllReducePlans
) -> dict[str, tuple[float, float]]:
    """algorithm → (latency s, s per message byte) of one all-reduce on an idle fabric."""
    return {
        name: (
            sum(p.latency_s for p in phases),
            sum(coflow_time_s(cluster, list(p.flows)) for p in phases),
        )
        for name, phases in plans.items()
    }


def estimate_allreduce_s(
    cluster: Cluster,
    group: Sequence[str],
    nbytes: float,
    count: int = 1,
    choice: AllReduceChoice | None = None,
    nvls: bool = False,
) -> float:
    """Seconds for `count` back-to-back all-reduces of `nbytes` each on an idle fabric.

    Same algorithm choice and phases as `Fabric.allreduce`, so it equals what the fabric gives
    without other traffic: count × latency + count × nbytes × seconds per byte."""
    if nbytes <= 0 or count <= 0 or len(group) <= 1:
        return 0.0
    idle = idle_allreduce_model(cluster, allreduce_algorithms(cluster, group, nvls))
    lat, per_byte = idle[(choice or AllReduceChoice()).pick(idle, nbytes)]
    return count * (lat + per_byte * nbytes)


# ------------------------------------------------------------------ the fabric


class _Transfer:
    __slots__ = ("delay_s", "event", "pending", "t0")

    def __init__(self, event: simpy.Event, delay_s: float, t0: float) -> None:
        self.event = event
        self.delay_s = delay_s  # added after the last entity finishes (s)
        self.t0 = t0  # start time (s)
        self.pending = 0  # entities not yet finished


class _Entity:
    """A flow, or a coflow: bytes moving in lockstep on several links.

    Progress is counted in bytes on its most-loaded link (weight 1): `size` in total,
    `remaining` left at `t_last`, `rate` per second. On link links[k] it moves
    rate × weights[k] bytes/s.
    """

    __slots__ = (
        "finish",
        "id",
        "links",
        "rate",
        "remaining",
        "t_last",
        "transfer",
        "version",
        "weights",
    )

    def __init__(
        self,
        eid: int,
        links: tuple[int, ...],
        weights: tuple[float, ...],
        size: float,
        now: float,
        tr: _Transfer,
    ) -> None:
        self.id = eid  # start order; breaks ties
        self.links = links
        self.weights = weights
        self.remaining = size  # bytes (on the weight-1 link) left at t_last
        self.t_last = now  # time of the last rate change / ledger flush (s)
        self.rate = 0.0  # bytes/s on the weight-1 link; 0 until first allocation
        self.finish = math.inf  # t_last + remaining / rate
        self.version = 0  # bumps on every rate change; stale heap entries are skipped
        self.transfer = tr


Demand = tuple[tuple[int, ...], tuple[float, ...], float]  # (links, weights, bytes at weight 1)
PhaseDemands = list[tuple["Demand | None", float]]  # per phase: unit demand, latency (s)
IdleModel = dict[str, tuple[float, float]]  # algorithm → (latency s, s per message byte)
_Route = tuple[
    tuple[tuple[int, int], ...],
    float,
    tuple[tuple[int, ...], tuple[float, ...]] | None,
    float | None,
]


def _demand(loads: dict[int, float]) -> Demand | None:
    if not loads:
        return None
    top = max(loads.values())
    return tuple(loads), tuple(b / top for b in loads.values()), top


class Fabric:
    """Shared-link network for one simulation (see module docstring).

    Every method returning a simpy.Event fires it with the elapsed seconds as its value.
    """

    def __init__(
        self,
        env: simpy.Environment,
        cluster: Cluster,
        bin_s: float,
        allreduce_choice: AllReduceChoice | None = None,
        nvls: bool = False,
    ) -> None:
        if not bin_s > 0:
            raise ValueError(f"bin_s must be > 0, got {bin_s}")
        self.env = env
        self.cluster = cluster
        self.bin_s = float(bin_s)
        self._bw = [link.bandwidth_Bps for link in cluster.links]
        self._on_link: list[dict[int, _Entity]] = [{} for _ in cluster.links]  # start order
        self._active: dict[int, _Entity] = {}
        self._heap: list[tuple[float, int, int]] = []  # (finish, entity id, version)
        self._ledger: list[dict[int, float]] = [{} for _ in cluster.links]  # bin → bytes
        self._next_id = 0
        self._gen = 0
        self._timer_at = math.inf
        self.allreduce_choice = allreduce_choice or AllReduceChoice()
        self.nvls = nvls
        # group → (algorithm → per phase: (unit demand, latency per collective), idle model)
        self._plans: dict[tuple[str, ...], tuple[dict[str, PhaseDemands], IdleModel]] = {}
        self._pairs: dict[tuple[str, str], Demand] = {}
        # transfer_same: pairs → ((link, flows on it), ...) in first-use order, path latency
        # (+ for single-flow links: (links, weights), the rate alone on the fabric)
        self._routes: dict[tuple[tuple[str, str], ...], _Route] = {}
        self.entities_started = 0
        self.transfers_started = 0
        self.reallocations = 0

    # -------------------------------------------------------------- public API
    @property
    def active_entities(self) -> int:
        return len(self._active)

    def transfer(
        self,
        flows: Sequence[FlowSpec],
        latency_s: float = 0.0,
        independent_flows: bool = False,
    ) -> simpy.Event:
        """Start `flows` now; fires when all bytes have moved + max path latency + latency_s.

        Zero-byte and same-GPU flows move nothing and add no path latency. By default the
        flows form one coflow (advance in lockstep); `independent_flows=True` makes each
        flow its own max-min entity (the event still waits for the last one).
        """
        lat = self.cluster.path_latency_s
        if len(flows) == 1:  # fast path: p2p send, cached route
            src, dst, nbytes = flows[0]
            if nbytes <= 0 or src == dst:
                return self._start(None, 0.0, latency_s)
            return self._start(self._pair(src, dst), float(nbytes), lat(src, dst) + latency_s)
        live = [(s, d, float(b)) for s, d, b in flows if b > 0 and s != d]
        delay = max((lat(s, d) for s, d, _b in live), default=0.0) + latency_s
        if not independent_flows:
            return self._start(_demand(link_loads(self.cluster, live)), 1.0, delay)
        demands = [_demand(link_loads(self.cluster, [f])) for f in live]
        return self._start_many([d for d in demands if d is not None], delay)

    def transfer_pairs(
        self, pairs: PairSet, nbytes: np.ndarray, latency_s: float = 0.0
    ) -> simpy.Event:
        """`transfer` of one coflow whose flow i moves nbytes[i] from pairs.pairs[i]."""
        demand, path_latency = pairs.demand(np.asarray(nbytes, dtype=np.float64))
        return self._start(demand, 1.0, path_latency + latency_s)

    def transfer_same(
        self, pairs: tuple[tuple[str, str], ...], nbytes: float, latency_s: float = 0.0
    ) -> simpy.Event:
        """`transfer([(s, d, nbytes) for s, d in pairs], latency_s)`, one coflow, with the
        pairs' routes cached (a PP hand-off repeats the same pairs every step): the same
        loads, weights and latency, summed in the same order, so the same floats."""
        if len(pairs) == 1:
            src, dst = pairs[0]
            return self.transfer(((src, dst, nbytes),), latency_s)
        nbytes = float(nbytes)
        if nbytes <= 0:
            return self._start(None, 1.0, latency_s)
        route = self._routes.get(pairs)
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
            # (links, all weights 1.0, nbytes) whatever nbytes is — as _demand computes it,
            # since nbytes / nbytes == 1.0 — and its rate alone is the slowest link's.
            single = bool(uses) and all(c == 1 for _l, c in uses)
            solo = min(self._bw[x] / 1.0 for x in links) if single else None
            route = (
                uses,
                max((lat(s, d) for s, d in live), default=0.0),
                (links, (1.0,) * len(links)) if single else None,
                solo,
            )
            self._routes[pairs] = route
        uses, path_latency, ones, solo = route
        if not uses:
            return self._start(None, 1.0, path_latency + latency_s)
        if ones is not None:
            return self._start_many([(ones[0], ones[1], nbytes)], path_latency + latency_s, solo)
        loads: dict[int, float] = {}
        for link, c in uses:  # repeated addition, exactly as link_loads sums the flows
            x = nbytes
            for _ in range(c - 1):
                x += nbytes
            loads[link] = x
        return self._start(_demand(loads), 1.0, path_latency + latency_s)

    def _pair(self, src: str, dst: str) -> Demand:
        """Unit demand of one src → dst flow (cached)."""
        key = (src, dst)
        d = self._pairs.get(key)
        if d is None:
            links = self.cluster.path(src, dst)
            d = (links, (1.0,) * len(links), 1.0)
            self._pairs[key] = d
        return d

    def send(self, src: str, dst: str, nbytes: float, latency_s: float = 0.0) -> simpy.Event:
        """Point-to-point transfer (e.g. a PP handoff or a KV-cache move)."""
        return self.transfer(((src, dst, nbytes),), latency_s)

    def all_to_all(
        self,
        group: Sequence[str],
        bytes_matrix: Sequence[Sequence[float]] | np.ndarray,
        latency_s: float = 0.0,
    ) -> simpy.Event:
        """Direct pairwise all-to-all, one coflow: `bytes_matrix[i][j]` from group[i] to [j]."""
        n = len(group)
        flows = [
            (group[i], group[j], float(bytes_matrix[i][j]))
            for i in range(n)
            for j in range(n)
            if i != j
        ]
        return self.transfer(flows, latency_s)

    def allreduce(self, group: Sequence[str], nbytes: float, count: int = 1) -> simpy.Event:
        """`count` back-to-back all-reduces of `nbytes` each over `group`, with the algorithm
        the engine picks for `nbytes` (sim/collectives.py).

        Modelled as one all-reduce of count × nbytes with count × the latency term.
        """
        key = tuple(group)
        entry = self._plans.get(key)
        if entry is None:
            algos = allreduce_algorithms(self.cluster, key, self.nvls)
            plans = {
                name: [(_demand(link_loads(self.cluster, p.flows)), p.latency_s) for p in phases]
                for name, phases in algos.items()
            }
            entry = (plans, idle_allreduce_model(self.cluster, algos))
            self._plans[key] = entry
        plans, idle = entry
        if not plans or nbytes <= 0 or count <= 0:
            return self._start(None, 0.0, 0.0)
        plan = plans[self.allreduce_choice.pick(idle, nbytes)]
        total = nbytes * count
        if len(plan) == 1:
            demand, lat = plan[0]
            return self._start(demand, total, lat * count)
        done = self.env.event()
        self._run_phases(plan, total, count, 0, done, self.env.now)
        return done

    def link_table(self, until_s: float | None = None) -> pd.DataFrame:
        """Bytes per link per time bin: columns link, kind, bin_start_s, bytes, utilisation.

        Only (link, bin) cells that carried bytes, ordered by link id then bin; bins starting
        at or after `until_s` are dropped. utilisation = bytes / (bandwidth × bin_s).
        Transfers still running are counted up to now.
        """
        self._flush()
        limit = math.inf if until_s is None else until_s
        ids: list[int] = []
        bins: list[int] = []
        vals: list[float] = []
        for lid, cells in enumerate(self._ledger):
            for b in sorted(cells):
                if b * self.bin_s < limit:
                    ids.append(lid)
                    bins.append(b)
                    vals.append(cells[b])
        id_arr = np.asarray(ids, dtype=np.int64)
        names = np.asarray([link.name for link in self.cluster.links], dtype=object)
        kinds = np.asarray([link.kind for link in self.cluster.links], dtype=object)
        bw = np.asarray(self._bw, dtype=np.float64)
        nbytes = np.asarray(vals, dtype=np.float64)
        return pd.DataFrame(
            {
                "link": names[id_arr],
                "kind": kinds[id_arr],
                "bin_start_s": np.asarray(bins, dtype=np.float64) * self.bin_s,
                "bytes": nbytes,
                "utilisation": nbytes / (bw[id_arr] * self.bin_s),
            }
        )

    def link_totals(self) -> pd.DataFrame:
        """Bytes per link since the start: columns link, kind, bandwidth_Bps, bytes."""
        self._flush()
        rows = [
            (link.name, link.kind, link.bandwidth_Bps, math.fsum(cells.values()))
            for link, cells in zip(self.cluster.links, self._ledger, strict=True)
            if cells
        ]
        return pd.DataFrame(rows, columns=["link", "kind", "bandwidth_Bps", "bytes"])

    # -------------------------------------------------------------- collectives
    def _run_phases(
        self,
        plan: list[tuple[Demand | None, float]],
        total: float,
        count: int,
        i: int,
        done: simpy.Event,
        t0: float,
    ) -> None:
        """Start phase i; chain the next one on its completion; fire `done` after the last."""
        if i == len(plan):
            done.succeed(self.env.now - t0)
            return
        demand, lat = plan[i]
        ev = self._start(demand, total, lat * count)
        ev.callbacks.append(lambda _ev: self._run_phases(plan, total, count, i + 1, done, t0))

    # -------------------------------------------------------------- fluid engine
    def _start(self, demand: Demand | None, scale: float, delay_s: float) -> simpy.Event:
        """One entity with `demand` scaled by `scale` (bytes per unit), or none."""
        if demand is None:
            return self._start_many([], delay_s)
        links, weights, unit = demand
        return self._start_many([(links, weights, unit * scale)], delay_s)

    def _start_many(
        self, demands: list[Demand], delay_s: float, solo_rate: float | None = None
    ) -> simpy.Event:
        """Start `demands` as one transfer. `solo_rate`: the rate of a single demand with no
        other entity on its links, when the caller knows it (the value computed below)."""
        env = self.env
        now = env.now
        tr = _Transfer(env.event(), delay_s, now)
        self.transfers_started += 1
        if not demands:
            self._complete(tr)
            return tr.event
        tr.pending = len(demands)
        self.entities_started += len(demands)
        active, on_link = self._active, self._on_link
        seeds: list[int] = []
        for links, weights, size in demands:
            self._next_id += 1
            e = _Entity(self._next_id, links, weights, size, now, tr)
            active[e.id] = e
            for link in links:
                on_link[link][e.id] = e
            seeds.extend(links)
        if len(demands) == 1 and all(len(on_link[link]) == 1 for link in seeds):
            if solo_rate is None:
                bw = self._bw
                solo_rate = min(bw[x] / w for x, w in zip(e.links, e.weights, strict=True))
            self._set_rate(e, solo_rate, now)
        else:
            self._reallocate(seeds)
        self._arm()
        return tr.event

    def _complete(self, tr: _Transfer) -> None:
        """All entities of `tr` are done: fire its event after its fixed latency."""
        if tr.delay_s > 0:
            timer = self.env.timeout(tr.delay_s)
            timer.callbacks.append(lambda _e: self._fire(tr))
        else:
            self._fire(tr)

    def _fire(self, tr: _Transfer) -> None:
        tr.event.succeed(self.env.now - tr.t0)

    def _reallocate(self, seeds: list[int]) -> None:
        """Recompute rates of the component of entities reachable from `seeds` links."""
        on_link = self._on_link
        comp: dict[int, _Entity] = {}
        seen: set[int] = set()  # membership only; traversal order comes from `stack`
        stack = seeds
        pop, push = stack.pop, stack.extend
        while stack:
            link = pop()
            if link in seen:
                continue
            seen.add(link)
            on = on_link[link]
            if on:
                for eid, e in on.items():
                    if eid not in comp:
                        comp[eid] = e
                        push(e.links)
        if not comp:
            return
        self.reallocations += 1
        ents = [comp[eid] for eid in sorted(comp)]  # canonical order: start order
        rates = max_min_rates([e.links for e in ents], self._bw, [e.weights for e in ents])
        now = self.env.now
        for e, r in zip(ents, rates, strict=True):
            if r != e.rate:
                self._set_rate(e, r, now)

    def _set_rate(self, e: _Entity, rate: float, now: float) -> None:
        """Book e's progress at its old rate, switch to `rate` (> 0), queue its completion."""
        if e.rate > 0.0:
            self._advance(e, now)
        e.rate = rate
        e.finish = now + e.remaining / rate
        e.version += 1
        heapq.heappush(self._heap, (e.finish, e.id, e.version))

    def _arm(self) -> None:
        """Make sure a timer fires at (or before) the earliest valid completion."""
        heap, active = self._heap, self._active
        while heap:
            finish, eid, ver = heap[0]
            e = active.get(eid)
            if e is not None and e.version == ver:
                break
            heapq.heappop(heap)
        else:
            return
        if finish < self._timer_at:
            self._gen += 1
            self._timer_at = finish
            gen = self._gen
            timer = self.env.timeout(max(finish - self.env.now, 0.0))
            timer.callbacks.append(lambda _e: self._on_timer(gen))

    def _on_timer(self, gen: int) -> None:
        if gen != self._gen:
            return  # superseded by an earlier timer
        self._timer_at = math.inf
        now = self.env.now
        due = now + max(_TIME_TOL_S, 16 * math.ulp(now))
        heap, active, on_link = self._heap, self._active, self._on_link
        done: list[_Entity] = []
        while heap and heap[0][0] <= due:
            _finish, eid, ver = heapq.heappop(heap)
            e = active.get(eid)
            if e is not None and e.version == ver:
                done.append(e)
        if done:
            seeds: list[int] = []
            for e in done:
                self._record(e, e.t_last, now, e.remaining)
                e.remaining = 0.0
                e.t_last = now
                del active[e.id]
                for link in e.links:
                    del on_link[link][e.id]
                seeds.extend(link for link in e.links if on_link[link])
            if seeds:
                self._reallocate(seeds)
            for e in done:
                tr = e.transfer
                tr.pending -= 1
                if tr.pending == 0:
                    self._complete(tr)
        self._arm()

    def _advance(self, e: _Entity, now: float) -> None:
        """Book e's progress at its current rate from t_last to now."""
        dt = now - e.t_last
        if dt <= 0.0:
            return
        moved = min(e.rate * dt, e.remaining)
        self._record(e, e.t_last, now, moved)
        e.remaining -= moved
        e.t_last = now

    def _flush(self) -> None:
        """Book every active entity's progress up to now (rates and finish times unchanged)."""
        now = self.env.now
        for e in self._active.values():
            self._advance(e, now)

    def _record(self, e: _Entity, t0: float, t1: float, moved: float) -> None:
        """Add `moved` × weight bytes to each of e's links, uniformly over [t0, t1]."""
        if moved <= 0.0:
            return
        bin_s = self.bin_s
        b0 = int(t0 / bin_s)
        b1 = int(t1 / bin_s)
        ledger = self._ledger
        if b1 <= b0 or t1 <= t0:
            for link, w in zip(e.links, e.weights, strict=True):
                cells = ledger[link]
                cells[b0] = cells.get(b0, 0.0) + moved * w
            return
        span = t1 - t0
        parts: list[tuple[int, float]] = []
        for b in range(b0, b1 + 1):
            lo = max(t0, b * bin_s)
            hi = min(t1, (b + 1) * bin_s)
            if hi > lo:
                parts.append((b, moved * (hi - lo) / span))
        for link, w in zip(e.links, e.weights, strict=True):
            cells = ledger[link]
            for b, x in parts:
                cells[b] = cells.get(b, 0.0) + x * w
