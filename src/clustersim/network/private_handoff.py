"""A PP hand-off in closed form, for pipelined replicas' closed-form trips
(serving/pipeline_leap.py).

`Fabric.transfer_same(pairs, nbytes)` of a stage → stage hand-off is one entity (one coflow
of the TP ranks' flows, or one p2p flow at TP1) followed by the route's latency. When no
other unit and no other channel of its own replica claims its links (`claim_links`), and
consecutive hand-offs of the stage never overlap (the caller checks that a step outlasts the
longest move), the entity always runs alone at its solo rate: it ends `nbytes / rate` after
it starts, the latency later the batch is at the next stage. `of(nbytes)` is that entity, its
demand and move computed as `transfer_same` and the fluid engine compute them (the solo
branch of FlowEngine.start_many).
"""

from __future__ import annotations

from operator import truediv
from typing import NamedTuple

from clustersim.network.fabric import Fabric
from clustersim.network.private_allreduce import claim_links
from clustersim.network.routing import demand_of
from clustersim.network.twin_links import booked_links, twin_classes


class Transfer(NamedTuple):
    """One hand-off's entity: `size` bytes on its weight-1 link, moved in `move_s` alone;
    `links`, `weights`: those it books (its twin links as one, once `book_twins` ran)."""

    links: tuple[int, ...]
    weights: tuple[float, ...]
    size: float
    move_s: float


class PrivateHandoff:
    """The closed form of `Fabric.transfer_same(pairs, nbytes)` for one pair tuple, or
    `links` None when it moves nothing (a GPU to itself)."""

    def __init__(self, fabric: Fabric, pairs: tuple[tuple[str, str], ...], owner: int) -> None:
        self.fabric = fabric
        self.owner = owner
        self.links: tuple[int, ...] | None = None
        self.latency_s = 0.0  # added after the move (no timeout when 0)
        # link → flows of the hand-off on it, in first-use order (RouteCache.same)
        self._uses: tuple[tuple[int, int], ...] = ()
        self._one: tuple[tuple[int, ...], tuple[float, ...]] | None = None  # p2p (TP1)
        self._by_bytes: dict[float, Transfer] = {}
        self._twins: dict[int, tuple[int, ...]] = {}  # links booked as one (twin_links.py)
        if len(pairs) == 1:  # Fabric.transfer's one-flow path
            src, dst = pairs[0]
            if src == dst:
                return
            links, weights, _unit = fabric.routes.pair(src, dst)
            self._one = (links, weights)
            latency = fabric.cluster.path_latency_s(src, dst)
        else:
            uses, latency, _ones, _solo = fabric.routes.same(pairs)
            if not uses:
                return
            self._uses = uses
            links = tuple(link for link, _c in uses)
        self.links = links
        self.latency_s = latency + 0.0  # the caller's extra latency is 0.0
        claim_links(fabric, links, owner)

    def private(self) -> bool:
        """Whether the hand-off is one entity on links no one else claims."""
        links = self.links
        if links is None or not self.fabric.only_tp_allreduces:
            return False
        claims = self.fabric.link_owner
        return all(claims[link] == self.owner for link in links)

    def book_twins(self) -> None:
        """Book its twin links as one from now on (network/twin_links.py); call only while
        `private()`, so that no other transfer loads them."""
        if self._one is not None:
            shapes = [self._one]
        else:  # links carrying as many flows are weighed alike for any size
            links = tuple(link for link, _c in self._uses)
            shapes = [(links, tuple(float(c) for _link, c in self._uses))]
        self._twins = twin_classes(shapes)
        self.fabric.book_twins(self._twins)
        self._by_bytes.clear()

    def of(self, nbytes: float) -> Transfer:
        """The entity moving `nbytes` (> 0) a rank, alone on its links (cached)."""
        t = self._by_bytes.get(nbytes)
        if t is None:
            t = self._by_bytes[nbytes] = self._transfer(float(nbytes))
        return t

    def _transfer(self, nbytes: float) -> Transfer:
        """Fabric.transfer_same's demand for `nbytes`, and its solo move (FlowEngine)."""
        if self._one is not None:
            links, weights = self._one
            size = 1.0 * nbytes
        else:
            loads: dict[int, float] = {}
            for link, c in self._uses:  # repeated addition, as transfer_same sums the flows
                x = nbytes
                for _ in range(c - 1):
                    x += nbytes
                loads[link] = x
            demand = demand_of(loads)
            assert demand is not None
            links, weights, top = demand
            size = top * 1.0
        bw = self.fabric.flows._bw
        rate = min(map(truediv, map(bw.__getitem__, links), weights))
        if self._twins:
            links, weights = booked_links(links, weights, self._twins)
        return Transfer(links, weights, size, size / rate)
