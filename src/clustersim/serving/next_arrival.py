"""When the next open-loop arrival reaches a replica that receives every arrival.

A decode leap planned past the next arrival is cut when the request lands (its planned
steps after the cut wasted, its timer moved, its horizon halved). When a run has one replica
and open-loop arrivals, the engine knows the next arrival's time in advance: the arrival
process writes it here before it waits, and the lane plans its leap to end with the step
running when it lands (serving/decode_leap.py `plan_leap`'s `until`): the arrival's cut then
trims nothing, and the leap's horizon is not halved for it. The steps planned are the ones a
longer plan would have kept after the cut, so the outputs are the same.
"""

from __future__ import annotations

import math


class NextArrival:
    """`at_s`: engine time (s) of the next arrival not yet admitted; inf when none is due."""

    __slots__ = ("at_s",)

    def __init__(self, at_s: float = math.inf) -> None:
        self.at_s = at_s
