"""A PP hand-off in closed form, for pipelined replicas' closed-form trips
(serving/pipeline_leap.py).

`Fabric.transfer_same(pairs, nbytes)` of a stage → stage hand-off is one entity (one coflow
of the TP ranks' flows, or one p2p flow at TP1) followed by the route's latency. When no
other unit and no other channel of its own replica claims its links (`claim_links`), and
consecutive hand-offs of the stage never overlap (the caller checks that a step outlasts the
longest move), the entity always runs alone at its solo rate: it ends `nbytes / rate` after
it starts, the latency later the batch is at the next stage. `move_s` is that quotient, as
the fluid engine computes it (FlowEngine.start_many's solo branch).
"""

from __future__ import annotations

from clustersim.network.fabric import Fabric
from clustersim.network.private_allreduce import claim_links


class PrivateHandoff:
    """The closed form of `Fabric.transfer_same(pairs, nbytes)` for one pair tuple, or
    `links` None when it has none (several flows share a link: not a solo-rate entity)."""

    def __init__(self, fabric: Fabric, pairs: tuple[tuple[str, str], ...], owner: int) -> None:
        self.fabric = fabric
        self.owner = owner
        self.links: tuple[int, ...] | None = None
        self.weights: tuple[float, ...] = ()
        self.rate = 0.0  # bytes/s of the entity alone on its links
        self.latency_s = 0.0  # added after the move (no timeout when 0)
        if len(pairs) == 1:  # Fabric.transfer's one-flow path
            src, dst = pairs[0]
            if src == dst:
                return
            links, weights, _unit = fabric.routes.pair(src, dst)
            latency = fabric.cluster.path_latency_s(src, dst)
        else:
            uses, latency, ones, _solo = fabric.routes.same(pairs)
            if not uses or ones is None:
                return
            links, weights = ones
        bw = fabric.flows._bw
        self.links, self.weights = links, weights
        self.rate = min(bw[x] / w for x, w in zip(links, weights, strict=True))
        self.latency_s = latency + 0.0  # the caller's extra latency is 0.0
        claim_links(fabric, links, owner)

    def private(self) -> bool:
        """Whether the hand-off is one entity on links no one else claims."""
        links = self.links
        if links is None or not self.fabric.only_tp_allreduces:
            return False
        claims = self.fabric.link_owner
        return all(claims[link] == self.owner for link in links)

    def move_s(self, nbytes: float) -> float:
        """Seconds the entity moves `nbytes` (> 0) alone on its links."""
        return float(nbytes) / self.rate
