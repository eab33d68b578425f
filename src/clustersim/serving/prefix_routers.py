"""Routers that read the request: prefix-cache-aware and session-affine (docs/prefix_caching.md).

They probe the replicas' prefix caches (`PrefixCache.match`, no side effects) at routing time,
i.e. they see each engine's cache exactly, as Dynamo's KV indexer (fed by KV events) and
SGLang's model gateway mirror do; SGLang's Python-era router keeps an approximate tree of
the text it routed instead. Cost per request: O(replicas × prompt blocks).

* cache_aware       SGLang router (`--policy cache_aware`): if the load is imbalanced,
                    (max − min outstanding) > balance_abs_threshold and max >
                    balance_rel_threshold · min, the least loaded replica; otherwise the
                    replica with the longest cached prefix if it covers more than
                    cache_threshold of the prompt, else the replica with the smallest
                    approximate tree (the fewest new prompt tokens routed to it so far).
* kv_aware          Dynamo KV router (temperature 0): cost = overlap_score_weight × prompt
                    blocks still to prefill on that replica + its active KV blocks (blocks of
                    the workload's prefix-block size); the lowest cost wins. llm-d's scorers
                    weigh the same two signals (prefix-cache score and KV / queue load).
* session_affinity  a session's first request goes to the least loaded replica, its later
                    turns follow it (vLLM production-stack's session router keys on a session
                    id); requests without a session id go to the least loaded replica.

Ties go to fewer outstanding requests, then the lowest index.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from clustersim.config.schema import RouterOptions
from clustersim.serving.prefix_lane import LanePrefix
from clustersim.serving.router import PREFIX_ROUTERS, Router


def _least(values: Sequence[float], outstanding: Sequence[int]) -> int:
    """Index of the smallest value; ties → fewer outstanding, then the lowest index."""
    low = min(values)
    best = values.index(low)
    for j in range(best + 1, len(values)):
        if values[j] == low and outstanding[j] < outstanding[best]:
            best = j
    return best


class CacheView:
    """What prefix-aware routers read of the replicas: each one's lanes' prefix caches."""

    def __init__(self, lanes: Sequence[Sequence[LanePrefix]]) -> None:
        self.lanes = [list(unit) for unit in lanes]
        first = self.lanes[0][0]
        self.bt = first.bt
        self.node_blocks = first.node_blocks
        self.state = first.st

    def matched_blocks(self, rid: int) -> list[int]:
        """Per replica: the request's prompt blocks cached in its best lane."""
        return [max(lane.matched_blocks(rid) for lane in unit) for unit in self.lanes]

    def cached_blocks(self) -> list[int]:
        """Per replica: prefix blocks resident in its caches (the tree sizes)."""
        return [sum(lane.cache.cached_prefix_blocks for lane in unit) for unit in self.lanes]

    def active_blocks(self) -> list[float]:
        """Per replica, in prefix blocks: KV held by running requests plus the prompts of
        those waiting (Dynamo counts a request's blocks from the moment it routes it)."""
        nb, bt = self.node_blocks, self.bt
        return [
            sum(lane.cache.used / nb + lane.queued_tokens / bt for lane in unit)
            for unit in self.lanes
        ]


class CacheAwareRouter(Router):
    """SGLang's cache-aware policy. Its "smallest tree" is the router's own approximate tree:
    the prompt tokens routed to a replica that were new to it (never shrunk here: SGLang trims
    it only beyond max_tree_size), so the fallback spreads new prefixes by the work they
    brought. The replicas' real caches would mislead there: once full, the smallest one is
    the replica whose running requests hold the most KV, i.e. the busiest."""

    __slots__ = ("abs_t", "cache_t", "rel_t", "tree_tokens", "view")
    name = "cache_aware"
    uses_prefix = True

    def __init__(self, view: CacheView, options: RouterOptions) -> None:
        super().__init__(len(view.lanes))
        self.view = view
        self.cache_t = options.cache_threshold
        self.abs_t = options.balance_abs_threshold
        self.rel_t = options.balance_rel_threshold
        self.tree_tokens = [0] * len(view.lanes)  # approximate tree size per replica (tokens)

    def choose(self, outstanding: Sequence[int], kv_fraction: Sequence[float]) -> int:
        return outstanding.index(min(outstanding))

    def choose_request(
        self, rid: int, outstanding: Sequence[int], kv_fraction: Sequence[float]
    ) -> int:
        matched = self.view.matched_blocks(rid)
        prompt = self.view.state.prompt[rid]
        hi, lo = max(outstanding), min(outstanding)
        if hi - lo > self.abs_t and hi > self.rel_t * lo:  # imbalanced: shortest queue
            r = outstanding.index(lo)
        elif max(matched) * self.view.bt > self.cache_t * prompt:
            r = _least([-m for m in matched], outstanding)
        else:
            r = _least(self.tree_tokens, outstanding)
        self.tree_tokens[r] += prompt - matched[r] * self.view.bt
        return r


class KVAwareRouter(Router):
    __slots__ = ("view", "weight")
    name = "kv_aware"
    uses_prefix = True

    def __init__(self, view: CacheView, options: RouterOptions) -> None:
        super().__init__(len(view.lanes))
        self.view = view
        self.weight = options.overlap_score_weight

    def choose(self, outstanding: Sequence[int], kv_fraction: Sequence[float]) -> int:
        return outstanding.index(min(outstanding))

    def choose_request(
        self, rid: int, outstanding: Sequence[int], kv_fraction: Sequence[float]
    ) -> int:
        view = self.view
        prompt_blocks = view.state.prompt[rid] / view.bt
        w = self.weight
        cost = [
            w * (prompt_blocks - m) + active
            for m, active in zip(view.matched_blocks(rid), view.active_blocks(), strict=True)
        ]
        return _least(cost, outstanding)


class SessionAffinityRouter(Router):
    __slots__ = ("home", "session_id")
    name = "session_affinity"
    uses_prefix = True

    def __init__(self, num_replicas: int, session_id: npt.NDArray[np.int64] | None) -> None:
        super().__init__(num_replicas)
        self.session_id = session_id.tolist() if session_id is not None else None
        self.home: dict[int, int] = {}  # session → replica of its first request

    def choose(self, outstanding: Sequence[int], kv_fraction: Sequence[float]) -> int:
        return outstanding.index(min(outstanding))

    def choose_request(
        self, rid: int, outstanding: Sequence[int], kv_fraction: Sequence[float]
    ) -> int:
        if self.session_id is None:
            return self.choose(outstanding, kv_fraction)
        s = self.session_id[rid]
        r = self.home.get(s)
        if r is None:
            r = self.home[s] = self.choose(outstanding, kv_fraction)
        return r


def make_prefix_router(
    name: str,
    num_replicas: int,
    lanes: Sequence[Sequence[LanePrefix]] | None,
    options: RouterOptions | None,
    session_id: npt.NDArray[np.int64] | None,
) -> Router:
    """The request-reading router `name` (one of PREFIX_ROUTERS); `lanes`: each replica's
    LanePrefix (None without prefix caching: only session_affinity works then)."""
    opts = options if options is not None else RouterOptions()
    if name == "session_affinity":
        return SessionAffinityRouter(num_replicas, session_id)
    if lanes is None:
        raise ValueError(f"router {name!r} needs serving.prefix_caching")
    view = CacheView(lanes)
    if name == "cache_aware":
        return CacheAwareRouter(view, opts)
    if name == "kv_aware":
        return KVAwareRouter(view, opts)
    raise ValueError(f"unknown prefix router {name!r}; known: {', '.join(PREFIX_ROUTERS)}")
