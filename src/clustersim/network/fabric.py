"""Links as shared resources: the transfer API the simulation calls (docs/network.md).

- A transfer is a set of flows started together, by default one *coflow*: its flows advance
  in lockstep, like the chunks of a ring step or an all-to-all, so on each link l it needs a
  share w_l = load_l / load_max of its rate (load = its bytes on that link). With
  `independent_flows=True` every flow is its own entity instead.
- Entities share links max-min fairly (network/fair_share.py), driven by the fluid engine
  (network/flows.py); routes come from network/routing.py, all-reduce algorithms from
  network/collectives.py, and the bytes each link carried per time bin from the ledger
  (network/ledger.py).
- A transfer's event fires when its data has moved, plus a fixed latency: the max path
  latency + the caller's extra for `transfer`, the collective's α-model for collectives.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import simpy

from clustersim.network.collectives import (
    AllReduceChoice,
    IdleModel,
    PhaseDemands,
    phase_demands,
)
from clustersim.network.detours import detours
from clustersim.network.flows import FlowEngine
from clustersim.network.ledger import LinkLedger
from clustersim.network.routing import FlowSpec, PairSet, RouteCache, demand_of, link_loads
from clustersim.topology.graph import Cluster

if TYPE_CHECKING:
    import pandas as pd


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
        self.env = env
        self.cluster = cluster
        self.ledger = LinkLedger(cluster, bin_s)
        self.bin_s = self.ledger.bin_s
        self.flows = FlowEngine(env, [link.bandwidth_Bps for link in cluster.links], self.ledger)
        self.routes = RouteCache(cluster)
        self.allreduce_choice = allreduce_choice or AllReduceChoice()
        self.nvls = nvls
        # group → (algorithm → per phase: (unit demand, latency per collective), idle model)
        self._plans: dict[tuple[str, ...], tuple[dict[str, PhaseDemands], IdleModel]] = {}
        # Whether nothing but the replicas' TP all-reduces uses the fabric (a co-located dense
        # run, set by sim/engine.py): their groups may then be priced in closed form during a
        # decode leap where no other group shares their links (network/private_allreduce.py).
        self.only_tp_allreduces = False
        self.link_owner: dict[int, int] = {}  # link → the one group claiming it, −1: several
        # no claimed group's all-reduce entity moves for longer than this (s): from twice
        # it on, every entity ends by twice its start, which keeps closed forms exact
        self.settle_s = 0.0
        # twin links booked only as their representative (network/twin_links.py)
        self._twins: dict[int, tuple[int, ...]] = {}
        # bookings held back by closed-form transfers, written before the ledger is read
        self._before_read: list[Callable[[], None]] = []

    def plans_of(self, group: tuple[str, ...]) -> tuple[dict[str, PhaseDemands], IdleModel]:
        """The all-reduce algorithms' phases over `group` and their idle model (cached)."""
        entry = self._plans.get(group)
        if entry is None:
            entry = phase_demands(self.cluster, group, self.nvls)
            self._plans[group] = entry
        return entry

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
                return self.flows.start(None, 0.0, latency_s)
            demand = self.routes.pair(src, dst)
            return self.flows.start(demand, float(nbytes), lat(src, dst) + latency_s)
        live = [(s, d, float(b)) for s, d, b in flows if b > 0 and s != d]
        delay = max((lat(s, d) for s, d, _b in live), default=0.0) + latency_s
        if not independent_flows:
            return self.flows.start(demand_of(link_loads(self.cluster, live)), 1.0, delay)
        demands = [demand_of(link_loads(self.cluster, [f])) for f in live]
        return self.flows.start_many([d for d in demands if d is not None], delay)

    def transfer_pairs(
        self, pairs: PairSet, nbytes: np.ndarray, latency_s: float = 0.0
    ) -> simpy.Event:
        """`transfer` of one coflow whose flow i moves nbytes[i] from pairs.pairs[i]."""
        demand, path_latency = pairs.demand(np.asarray(nbytes, dtype=np.float64))
        return self.flows.start(demand, 1.0, path_latency + latency_s)

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
            return self.flows.start(None, 1.0, latency_s)
        uses, path_latency, ones, solo = self.routes.same(pairs)
        if not uses:
            return self.flows.start(None, 1.0, path_latency + latency_s)
        if ones is not None:
            demand = (ones[0], ones[1], nbytes)
            return self.flows.start_many([demand], path_latency + latency_s, solo)
        loads: dict[int, float] = {}
        for link, c in uses:  # repeated addition, exactly as link_loads sums the flows
            x = nbytes
            for _ in range(c - 1):
                x += nbytes
            loads[link] = x
        return self.flows.start(demand_of(loads), 1.0, path_latency + latency_s)

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
        the engine picks for `nbytes` (network/collectives.py).

        Modelled as one all-reduce of count × nbytes with count × the latency term.
        """
        plans, idle = self.plans_of(tuple(group))
        if not plans or nbytes <= 0 or count <= 0:
            return self.flows.start(None, 0.0, 0.0)
        plan = plans[self.allreduce_choice.pick(idle, nbytes)]
        total = nbytes * count
        if len(plan) == 1:
            demand, lat = plan[0]
            return self.flows.start(demand, total, lat * count)
        done = self.env.event()
        self._run_phases(plan, total, count, 0, done, self.env.now)
        return done

    def _run_phases(
        self,
        plan: PhaseDemands,
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
        ev = self.flows.start(demand, total, lat * count)
        ev.callbacks.append(lambda _ev: self._run_phases(plan, total, count, i + 1, done, t0))

    def set_link_faults(
        self, factor: dict[int, float], extra_latency_s: dict[int, float], down: frozenset[int]
    ) -> frozenset[int]:
        """Degrade links (bandwidth factor, extra latency) and take `down` links out of every
        route, in flight too (network/detours.py); returns the down links with no detour."""
        detour, stranded = detours(self.cluster, down)
        self.flows.set_link_faults(factor, extra_latency_s, detour)
        return stranded

    def book_twins(self, twins: dict[int, tuple[int, ...]]) -> None:
        """From now on the links of each class are booked only as their representative (the
        key); the ledger gets the others' cells copied from it when read."""
        self._twins.update(twins)

    def before_read(self, flush: Callable[[], None]) -> None:
        """Call `flush` before the ledger is read (it books what a caller held back)."""
        self._before_read.append(flush)

    def _copy_twins(self) -> None:
        for flush in self._before_read:
            flush()
        for src, dst in self._twins.items():
            self.ledger.copy_cells(src, dst)

    def link_table(self, until_s: float | None = None) -> pd.DataFrame:
        """`link_columns` as a DataFrame."""
        import pandas as pd

        return pd.DataFrame(self.link_columns(until_s), copy=False)

    def link_columns(self, until_s: float | None = None) -> dict[str, np.ndarray]:
        """The ledger's bytes per link per time bin (LinkLedger.columns), transfers still
        running counted up to now."""
        self.flows.flush()
        self._copy_twins()
        return self.ledger.columns(until_s)

    def link_totals(self) -> pd.DataFrame:
        """Bytes per link since the start (LinkLedger.totals), running transfers up to now."""
        self.flows.flush()
        self._copy_twins()
        return self.ledger.totals()
