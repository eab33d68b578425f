"""The fluid engine under the fabric: entities that move bytes at max-min fair rates.

- An entity is a flow, or a coflow (flows advancing in lockstep, docs/network.md); a
  transfer is a set of entities started together, whose event fires when the last one has
  moved its bytes, plus a fixed delay.
- Rates change only when an entity starts or finishes, and only inside the connected
  component (entities linked by shared links) of the entities that changed
  (network/fair_share.py).
- One internal simpy timer is armed for the earliest completion; a generation counter makes
  superseded timers no-ops.
- Every constant-rate segment of an entity is booked in the link ledger (network/ledger.py).
Hot path is pure Python (lists, dicts, a heap).
"""

from __future__ import annotations

import heapq
import math

import simpy

from clustersim.network.fair_share import max_min_rates
from clustersim.network.ledger import LinkLedger
from clustersim.network.link_faults import remap, rerouted
from clustersim.network.routing import Demand

_TIME_TOL_S = 1e-12  # completions this close to `now` are due now (float rounding of timers)


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


class FlowEngine:
    """Entities on the links of one cluster, their rates, completions and ledger bookings.

    `start` / `start_many` return a simpy.Event fired with the transfer's elapsed seconds."""

    def __init__(self, env: simpy.Environment, bandwidth: list[float], ledger: LinkLedger) -> None:
        self.env = env
        self.ledger = ledger
        self._bw = list(bandwidth)  # bytes/s per link id (degraded by faults)
        self._nominal = tuple(bandwidth)
        # faults (set_link_faults): extra latency per link (s) and detours of down links
        self._extra_latency: dict[int, float] = {}
        self._detour: dict[int, tuple[int, ...]] = {}
        self._faulty = False
        self._on_link: list[dict[int, _Entity]] = [{} for _ in bandwidth]  # start order
        self._active: dict[int, _Entity] = {}
        self._heap: list[tuple[float, int, int]] = []  # (finish, entity id, version)
        self._next_id = 0
        self._gen = 0
        self._timer_at = math.inf
        self.entities_started = 0
        self.transfers_started = 0
        self.reallocations = 0

    @property
    def active_entities(self) -> int:
        return len(self._active)

    def start(self, demand: Demand | None, scale: float, delay_s: float) -> simpy.Event:
        """One entity with `demand` scaled by `scale` (bytes per unit), or none."""
        if demand is None:
            return self.start_many([], delay_s)
        links, weights, unit = demand
        return self.start_many([(links, weights, unit * scale)], delay_s)

    def start_many(
        self, demands: list[Demand], delay_s: float, solo_rate: float | None = None
    ) -> simpy.Event:
        """Start `demands` as one transfer. `solo_rate`: the rate of a single demand with no
        other entity on its links, when the caller knows it (the value computed below)."""
        env = self.env
        now = env.now
        if self._faulty and demands:
            demands, delay_s = rerouted(demands, delay_s, self._detour, self._extra_latency)
            solo_rate = None
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
                self.ledger.record(e.links, e.weights, e.t_last, now, e.remaining)
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
        self.ledger.record(e.links, e.weights, e.t_last, now, moved)
        e.remaining -= moved
        e.t_last = now

    def flush(self) -> None:
        """Book every active entity's progress up to now (rates and finish times unchanged)."""
        now = self.env.now
        for e in self._active.values():
            self._advance(e, now)

    # ------------------------------------------------------------------ faults

    def set_link_faults(
        self,
        factor: dict[int, float],
        extra_latency_s: dict[int, float],
        detour: dict[int, tuple[int, ...]],
    ) -> None:
        """Links at `factor` × nominal bandwidth, `extra_latency_s` added to transfers that
        cross them, and down links replaced by their detour links in every demand (entities
        in flight included); the rates of the entities touched are solved again."""
        now = self.env.now
        seeds: list[int] = []
        for link, nominal in enumerate(self._nominal):
            bw = nominal * factor.get(link, 1.0)
            if bw != self._bw[link]:
                self._bw[link] = bw
                seeds.append(link)
        self._extra_latency = dict(extra_latency_s)
        self._detour = dict(detour)
        self._faulty = bool(factor or extra_latency_s or detour)
        for link in detour:
            for e in list(self._on_link[link].values()):
                seeds.extend(e.links)
                self._reroute(e, now)
                seeds.extend(e.links)
        if seeds:
            self._reallocate(seeds)
            self._arm()

    def _reroute(self, e: _Entity, now: float) -> None:
        """Move an entity in flight onto its detour: book its progress, swap its links, and
        leave it rateless until the next reallocation."""
        self._advance(e, now)
        for link in e.links:
            del self._on_link[link][e.id]
        e.links, e.weights, scale = remap(self._detour, e.links, e.weights)
        e.remaining *= scale
        for link in e.links:
            self._on_link[link][e.id] = e
        e.rate = 0.0
        e.version += 1
        e.finish = math.inf
