"""A TP group's all-reduces in closed form, for decode leaps (serving/decode_leap.py).

When nothing but the replicas' TP all-reduces uses the fabric (`Fabric.only_tp_allreduces`)
and no other group's all-reduce plans touch this group's links, each all-reduce of the group
runs alone on its links: every phase is one entity at its solo rate (FlowEngine.start_many's
solo branch), ending size / rate after it starts, followed by its latency. `phases` returns
those increments computed with the fluid engine's own operations, so a leap can add them to
its clock as the simpy clock would, and replay the ledger bookings (`book`) the entities'
completions make. While a leap is in flight its links are leased: a transfer starting on
them raises (FlowEngine.start_many), so a future traffic source cannot silently break this.
"""

from __future__ import annotations

from collections.abc import Generator, Iterable
from typing import Any, NamedTuple

import simpy

from clustersim.network.fabric import Fabric
from clustersim.network.ledger import Cycle, Entity, LinkLedger
from clustersim.network.twin_links import booked_links, twin_classes


def claim_links(fabric: Fabric, links: Iterable[int], owner: int) -> None:
    """Mark `links` as used by `owner` (build time, before the run): a link two owners
    claim is marked −1 (shared), and no owner prices its transfers there in closed form."""
    claims = fabric.link_owner
    for link in links:
        claims[link] = owner if claims.get(link, owner) == owner else -1


class Phase(NamedTuple):
    """One all-reduce phase: an entity over `links` moving `size` bytes (None: no entity)
    taking `move_s`, then `delay_s` of latency (no timeout when 0)."""

    links: tuple[int, ...] | None
    weights: tuple[float, ...]
    size: float
    move_s: float
    delay_s: float


class PrivateAllReduce:
    """`Fabric.allreduce(group, nbytes, count)` of one group, in closed form (see module)."""

    def __init__(
        self, fabric: Fabric, group: tuple[str, ...], owner: int, max_bytes: float, count: int
    ) -> None:
        """`max_bytes`: the largest message a step may all-reduce, `count` times a step."""
        self.fabric = fabric
        self.owner = owner
        self.group = group
        self._plans, self._idle = fabric.plans_of(group)
        self.links = frozenset(
            link
            for plan in self._plans.values()
            for demand, _lat in plan
            if demand is not None
            for link in demand[0]
        )
        claim_links(fabric, self.links, owner)  # build time: every group claims its links
        self._private: bool | None = None
        self._twins: dict[int, tuple[int, ...]] = {}  # links booked as one (twin_links.py)
        bw = fabric.flows._bw
        for plan in self._plans.values():  # move time is linear in the message's bytes
            for demand, _lat in plan:
                if demand is not None:
                    links, weights, unit = demand
                    rate = min(bw[x] / w for x, w in zip(links, weights, strict=True))
                    fabric.settle_s = max(fabric.settle_s, unit * max_bytes * count / rate)

    def shapes(self) -> list[tuple[tuple[int, ...], tuple[float, ...]]]:
        """(links, weights) of every phase of every algorithm the group may run."""
        return [
            (demand[0], demand[1])
            for plan in self._plans.values()
            for demand, _lat in plan
            if demand is not None
        ]

    def settled(self, now: float) -> bool:
        """Whether every entity in flight ends by twice its start: an entity's completion
        time then does not depend on when the fluid engine's timer for it was armed (Sterbenz),
        so leaving this group's entities out of the engine changes no other's."""
        return now >= 2.0 * self.fabric.settle_s

    def private(self) -> bool:
        """Whether this group's all-reduces are alone on their links for the whole run."""
        if self._private is None:
            f = self.fabric
            claims = f.link_owner
            self._private = f.only_tp_allreduces and all(
                claims[link] == self.owner for link in self.links
            )
        return self._private

    def book_twins(self) -> None:
        """Book its twin links as one from now on (network/twin_links.py): phases computed
        after this carry the booked links only. Call only while `private()`, so that no
        other transfer loads them."""
        if not self._twins:
            self._twins = twin_classes(self.shapes())
            self.fabric.book_twins(self._twins)

    def phases(self, nbytes: float, count: int) -> list[Phase] | None:
        """The phases `Fabric.allreduce(group, nbytes, count)` runs; None if it runs none."""
        if not self._plans or nbytes <= 0 or count <= 0:
            return None
        plan = self._plans[self.fabric.allreduce_choice.pick(self._idle, nbytes)]
        total = nbytes * count
        bw = self.fabric.flows._bw
        out = []
        for demand, lat in plan:
            delay = lat * count
            if demand is None:
                out.append(Phase(None, (), 0.0, 0.0, delay))
                continue
            links, weights, unit = demand
            size = unit * total
            rate = min(bw[x] / w for x, w in zip(links, weights, strict=True))
            if self._twins:
                links, weights = booked_links(links, weights, self._twins)
            out.append(Phase(links, weights, size, size / rate, delay))
        return out

    def run(self, env: simpy.Environment, phases: list[Phase]) -> Generator[simpy.Event, Any, None]:
        """One all-reduce stepped in closed form: each phase's move as one timeout (the
        clock lands on the entity's finish, `now + size / rate` as the fluid engine computes
        it), its ledger booking at that instant, then its latency."""
        record = self.fabric.ledger.record
        for ph in phases:
            if ph.links is not None:
                t0 = env.now
                yield env.timeout(ph.move_s)
                record(ph.links, ph.weights, t0, env.now, ph.size)
            if ph.delay_s > 0:
                yield env.timeout(ph.delay_s)

    def lease(self, on: bool) -> None:
        leased = self.fabric.flows.leased
        if on:
            leased.update(self.links)
        else:
            leased.difference_update(self.links)

    def book_steps(
        self,
        start: float,
        ends: list[float],
        compute_s: list[float],
        phases: list[Phase],
        cycle: Cycle,
    ) -> None:
        """Book the all-reduces of consecutive steps in the link ledger, in completion order:
        step i runs from ends[i − 1] (`start` for step 0) to ends[i], its all-reduce's
        `phases` after compute_s[i]. A run of steps inside one time bin adds `cycle` (the
        ledger's `cycle_of` the phases' entities) repeated; a step across a bin boundary
        books its entities one by one at the times the clock gave them (the same additions)."""
        steps = len(ends)
        ledger = self.fabric.ledger
        bin_s = ledger.bin_s
        run_bin, run = int(start / bin_s), 0  # steps in bin run_bin not yet booked
        if int(ends[steps - 1] / bin_s) == run_bin:
            ledger.add_cycles(cycle, run_bin, steps)
            return
        t = start
        for i in range(steps):
            end = ends[i]
            b = int(end / bin_s)
            if int(t / bin_s) == b:  # the whole step is in bin b
                if b != run_bin:
                    if run:
                        ledger.add_cycles(cycle, run_bin, run)
                    run_bin, run = b, 0
                run += 1
            else:
                if run:
                    ledger.add_cycles(cycle, run_bin, run)
                run_bin, run = b, 0
                book_entities(ledger, t + compute_s[i], phases)
            t = end
        if run:
            ledger.add_cycles(cycle, run_bin, run)


def book_entities(ledger: LinkLedger, t: float, phases: list[Phase]) -> float:
    """Book an all-reduce's entities starting at `t` (`PrivateAllReduce.run`'s clock: each
    phase's move, its booking, its latency); returns its end."""
    record = ledger.record_few  # an all-reduce's phases run on a few links
    for ph in phases:
        if ph.links is not None:
            t0 = t
            t = t + ph.move_s
            record(ph.links, ph.weights, t0, t, ph.size)
        if ph.delay_s > 0:
            t = t + ph.delay_s
    return t


def moving(phases: list[Phase]) -> list[Entity]:
    """The entities of an all-reduce's phases (links, weights, bytes), in order."""
    return [(ph.links, ph.weights, ph.size) for ph in phases if ph.links is not None]


def clock_adds(phases: list[Phase]) -> tuple[float, ...]:
    """The seconds the clock adds after a step's compute for its all-reduce, in order: each
    phase's move (when it has an entity), then its latency (when > 0)."""
    adds: list[float] = []
    for ph in phases:
        if ph.links is not None:
            adds.append(ph.move_s)
        if ph.delay_s > 0:
            adds.append(ph.delay_s)
    return tuple(adds)
