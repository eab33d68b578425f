"""Request → replica routing policies (data-parallel load balancing).

The simulator keeps, per replica, `outstanding[r]` (requests in the replica: waiting + running)
and `kv_fraction[r]` (KV-cache blocks in use / capacity, 0..1) as plain Python lists updated in
place, and calls `router.choose(outstanding, kv_fraction)` once per arriving request. `choose`
is pure Python, O(replicas), and leans on C-level list builtins (min, index, count); randomised
policies pre-draw their random numbers in blocks, so a call costs well under a microsecond.

Policies (ties are broken deterministically, never by object identity):

* round_robin        0, 1, …, R−1, 0, …
* random             uniform over replicas (rng "router")
* least_outstanding  fewest outstanding; ties → lowest index. O(replicas) a call, or
                     O(log replicas) once the caller `track`s its list (see the class)
* least_kv           lowest KV usage fraction; ties → fewest outstanding, then lowest index
* power_of_two       two distinct replicas sampled uniformly (rng "router"); the one with fewer
                     outstanding; a tie → the first of the two sampled
"""

from __future__ import annotations

import heapq
from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np

from clustersim.config.schema import RouterName

# the routers that read requests (prefix blocks, sessions): serving/prefix_routers.py
PREFIX_ROUTERS = ("cache_aware", "kv_aware", "session_affinity")
_BLOCK = 4096  # random draws pre-drawn per refill


class Router(ABC):
    """Chooses a replica index in [0, num_replicas) for each arriving request."""

    __slots__ = ("num_replicas",)
    name: str = ""
    uses_kv: bool = False  # True: choose() reads kv_fraction, which the caller must refresh
    uses_prefix: bool = False  # True: call choose_request (serving/prefix_routers.py)

    def __init__(self, num_replicas: int) -> None:
        if num_replicas < 1:
            raise ValueError(f"num_replicas must be >= 1, got {num_replicas}")
        self.num_replicas = num_replicas

    @abstractmethod
    def choose(self, outstanding: Sequence[int], kv_fraction: Sequence[float]) -> int:
        """Replica index for the next request, given per-replica load (not modified)."""

    def choose_request(
        self, rid: int, outstanding: Sequence[int], kv_fraction: Sequence[float]
    ) -> int:
        """Replica index for request `rid` (routers that read the request override this)."""
        return self.choose(outstanding, kv_fraction)


class RoundRobinRouter(Router):
    __slots__ = ("_next",)
    name = "round_robin"

    def __init__(self, num_replicas: int) -> None:
        super().__init__(num_replicas)
        self._next = 0

    def choose(self, outstanding: Sequence[int], kv_fraction: Sequence[float]) -> int:
        i = self._next
        self._next = i + 1 if i + 1 < self.num_replicas else 0
        return i


class RandomRouter(Router):
    __slots__ = ("_buf", "_pos", "_rng")
    name = "random"

    def __init__(self, num_replicas: int, rng: np.random.Generator) -> None:
        super().__init__(num_replicas)
        self._rng = rng
        self._buf: list[int] = []
        self._pos = 0

    def choose(self, outstanding: Sequence[int], kv_fraction: Sequence[float]) -> int:
        i = self._pos
        if i >= len(self._buf):
            self._buf = self._rng.integers(0, self.num_replicas, size=_BLOCK).tolist()
            i = 0
        self._pos = i + 1
        return self._buf[i]


class LeastOutstandingRouter(Router):
    """Fewest outstanding, ties → lowest index.

    Untracked, a call scans the list (O(replicas)). A caller that owns the list may `track`
    it and then report every decrease (`decreased`); increases need no report. The router
    then keeps a heap of (count, replica) entries, each a lower bound of that replica's
    count: a top entry that is stale is replaced by the replica's current count, and a
    valid top is the least (count, index), the scan's answer (a replica with a smaller or
    equal count and a lower index has an entry ordered before it). O(log replicas) a call,
    amortised; the heap is rebuilt when stale entries outnumber the replicas."""

    __slots__ = ("_heap", "_tracked")
    name = "least_outstanding"

    def __init__(self, num_replicas: int) -> None:
        super().__init__(num_replicas)
        self._heap: list[tuple[int, int]] = []
        self._tracked: Sequence[int] | None = None

    def track(self, outstanding: Sequence[int]) -> None:
        """From now on `choose` is called with this list, whose decreases are reported."""
        self._tracked = outstanding
        self._heap = [(c, r) for r, c in enumerate(outstanding)]
        heapq.heapify(self._heap)

    def scans(self, outstanding: Sequence[int]) -> bool:
        """Whether `choose(outstanding, …)` scans the list (it is not the tracked one)."""
        return outstanding is not self._tracked

    def decreased(self, replica: int) -> None:
        """The tracked list's count of `replica` went down."""
        tracked = self._tracked
        if tracked is None:
            return
        if len(self._heap) > 2 * self.num_replicas + 64:
            self.track(tracked)
        else:
            heapq.heappush(self._heap, (tracked[replica], replica))

    def choose(self, outstanding: Sequence[int], kv_fraction: Sequence[float]) -> int:
        if outstanding is not self._tracked:
            # index() returns the first occurrence, i.e. the lowest index among ties
            return outstanding.index(min(outstanding))
        heap = self._heap
        while True:
            count, r = heap[0]
            now = outstanding[r]
            if now == count:
                return r
            heapq.heapreplace(heap, (now, r))


class LeastKVRouter(Router):
    __slots__ = ()
    name = "least_kv"
    uses_kv = True

    def choose(self, outstanding: Sequence[int], kv_fraction: Sequence[float]) -> int:
        low = min(kv_fraction)
        best = kv_fraction.index(low)
        ties = kv_fraction.count(low)
        if ties == 1:
            return best
        if ties == len(kv_fraction):  # e.g. every cache empty: plain least_outstanding
            return outstanding.index(min(outstanding))
        best_out = outstanding[best]
        for j in range(best + 1, len(kv_fraction)):
            if kv_fraction[j] == low and outstanding[j] < best_out:
                best, best_out = j, outstanding[j]
        return best


class PowerOfTwoRouter(Router):
    __slots__ = ("_first", "_pos", "_rng", "_second")
    name = "power_of_two"

    def __init__(self, num_replicas: int, rng: np.random.Generator) -> None:
        super().__init__(num_replicas)
        self._rng = rng
        self._first: list[int] = []
        self._second: list[int] = []
        self._pos = 0

    def _refill(self) -> None:
        """Draw _BLOCK pairs of distinct replicas, each pair uniform over ordered pairs."""
        n = self.num_replicas
        a = self._rng.integers(0, n, size=_BLOCK)
        b = self._rng.integers(0, n - 1, size=_BLOCK)
        b += b >= a  # skip a: b uniform over the other n − 1 replicas
        self._first = a.tolist()
        self._second = b.tolist()

    def choose(self, outstanding: Sequence[int], kv_fraction: Sequence[float]) -> int:
        if self.num_replicas == 1:
            return 0
        i = self._pos
        if i >= len(self._first):
            self._refill()
            i = 0
        self._pos = i + 1
        a = self._first[i]
        b = self._second[i]
        return b if outstanding[b] < outstanding[a] else a


ROUTER_NAMES: tuple[RouterName, ...] = (
    "round_robin",
    "random",
    "least_outstanding",
    "least_kv",
    "power_of_two",
)


def make_router(name: RouterName, num_replicas: int, rng: np.random.Generator) -> Router:
    """The router called `name` over `num_replicas` replicas; `rng` feeds the random ones."""
    if name == "round_robin":
        return RoundRobinRouter(num_replicas)
    if name == "random":
        return RandomRouter(num_replicas, rng)
    if name == "least_outstanding":
        return LeastOutstandingRouter(num_replicas)
    if name == "least_kv":
        return LeastKVRouter(num_replicas)
    if name == "power_of_two":
        return PowerOfTwoRouter(num_replicas, rng)
    raise ValueError(f"unknown router {name!r}; known: {', '.join(ROUTER_NAMES)}")
