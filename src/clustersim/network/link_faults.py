"""Demands on a faulty fabric: down links replaced by their detours (network/detours.py),
extra latency of degraded links added to a transfer's fixed delay."""

from __future__ import annotations

from collections.abc import Mapping

from clustersim.network.routing import Demand


def remap(
    detour: Mapping[int, tuple[int, ...]], links: tuple[int, ...], weights: tuple[float, ...]
) -> tuple[tuple[int, ...], tuple[float, ...], float]:
    """(links, weights, scale): down links replaced by their detours, weights merged and
    renormalised to a maximum of 1 (scale multiplies the bytes at weight 1)."""
    loads: dict[int, float] = {}
    for link, w in zip(links, weights, strict=True):
        for x in detour.get(link, (link,)):
            loads[x] = loads.get(x, 0.0) + w
    top = max(loads.values())
    return tuple(loads), tuple(w / top for w in loads.values()), top


def rerouted(
    demands: list[Demand],
    delay_s: float,
    detour: Mapping[int, tuple[int, ...]],
    extra_latency_s: Mapping[int, float],
) -> tuple[list[Demand], float]:
    """The demands through detours, and the delay plus the largest extra latency (s) of a
    link they cross."""
    out: list[Demand] = []
    extra = 0.0
    for links, weights, size in demands:
        for link in links:
            extra = max(extra, extra_latency_s.get(link, 0.0))
        if detour and any(link in detour for link in links):
            new_links, new_weights, scale = remap(detour, links, weights)
            out.append((new_links, new_weights, size * scale))
        else:
            out.append((links, weights, size))
    return out, delay_s + extra
