"""Twin links: links a private channel's transfers always load alike, booked once.

A channel (a TP group's all-reduces, a PP hand-off) whose links no other transfer uses adds
to each of its links' ledger cells `moved × weight` per transfer. Two links that every shape
the channel can take weighs alike (the same weight, or both absent) receive the same
additions in the same order, so their cells hold the same floats: the ledger may book only
one link of each class (its representative) and copy its cells to the others before it is
read (`Fabric.book_twins`, `LinkLedger.copy_cells`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

Shape = tuple[tuple[int, ...], tuple[float, ...]]  # (links, weight of each)


def twin_classes(shapes: Sequence[Shape]) -> dict[int, tuple[int, ...]]:
    """Representative link → the other links of its class, for every class of two or more
    (the representative: the lowest link id of the class)."""
    signature: dict[int, list[tuple[int, float]]] = {}
    for k, (links, weights) in enumerate(shapes):
        for link, w in zip(links, weights, strict=True):
            signature.setdefault(link, []).append((k, w))
    members: dict[tuple[tuple[int, float], ...], list[int]] = {}
    for link in sorted(signature):
        members.setdefault(tuple(signature[link]), []).append(link)
    return {group[0]: tuple(group[1:]) for group in members.values() if len(group) > 1}


def booked_links(
    links: Iterable[int], weights: Iterable[float], twins: dict[int, tuple[int, ...]]
) -> Shape:
    """A shape's links and weights without the twins a representative books for."""
    hidden = {t for group in twins.values() for t in group}
    kept = [(link, w) for link, w in zip(links, weights, strict=True) if link not in hidden]
    return tuple(link for link, _w in kept), tuple(w for _link, w in kept)
