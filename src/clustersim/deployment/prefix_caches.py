"""Prefix caches for the lanes of a built layout: one PrefixCache per scheduler lane (each
replica's virtual engines, each DP-attention rank, each prefill-pool replica), sized as the
lane's KV pool (docs/prefix_caching.md)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from clustersim.config.schema import ServingSpec
from clustersim.deployment.build import Build
from clustersim.serving.replica import Replica
from clustersim.serving.request_state import RequestState
from clustersim.serving.router import PREFIX_ROUTERS, Router, make_router
from clustersim.serving.scheduler import Scheduler
from clustersim.workload.requests import RequestStream

if TYPE_CHECKING:  # (prefix caching's modules load for runs that use it)
    import pandas as pd

    from clustersim.moe.ep_group import DPRank
    from clustersim.serving.prefix_lane import LanePrefix, PrefixRecord

DEFAULT_PREFIX_BLOCK_TOKENS = 512  # a workload without prefix-block ids (nothing is shared)


def unit_schedulers(unit: Replica | DPRank) -> list[Scheduler]:
    """The scheduler lanes of one router unit."""
    if not isinstance(unit, Replica):  # a DP-attention rank
        return [unit.scheduler]
    return [lane.scheduler for lane in unit.lanes]


def pool_block_bytes(built: Build, block_size: int) -> int:
    """Bytes of one paged-KV block on one GPU (the stage holding the most layers)."""
    return int(max(st.kv_bytes_per_token for st in built.memory.stages) * block_size)


def attach_prefix_caches(
    units: Sequence[Replica | DPRank],
    serving: ServingSpec,
    built: Build,
    record: PrefixRecord,
    state: RequestState,
    prefix_block_tokens: int | None,
) -> list[list[LanePrefix]]:
    """Give every lane of `units` a prefix cache (serving.prefix_caching must be on); returns
    each unit's lanes' LanePrefix (routers probe them)."""
    from clustersim.serving.prefix_cache import PrefixCachingParams, lane_prefix_cache
    from clustersim.serving.prefix_lane import LanePrefix

    spec = serving.prefix_caching
    assert spec is not None and spec.enabled
    params = PrefixCachingParams(True, spec.host_memory_GB, spec.host_bandwidth_GBps)
    bt = prefix_block_tokens or DEFAULT_PREFIX_BLOCK_TOKENS
    if bt % serving.block_size:
        raise ValueError(
            f"prefix blocks of {bt} tokens are not a whole number of serving.block_size = "
            f"{serving.block_size}-token KV blocks"
        )
    block_bytes = pool_block_bytes(built, serving.block_size)
    lanes: list[list[LanePrefix]] = []
    for unit in units:
        if isinstance(unit, Replica):
            # a decode leap books KV as a plain pool does; a prefix cache evicts and pins
            unit.forbid_leaps()
        mine = []
        for sched in unit_schedulers(unit):
            cache = lane_prefix_cache(
                params, sched.kv.capacity, serving.block_size, bt, block_bytes
            )
            lane = LanePrefix(cache, record, state, serving.block_size)
            sched.use_prefix_cache(lane)
            mine.append(lane)
        lanes.append(mine)
    return lanes


PREFIX_CACHE_COLUMNS = (
    "replica",
    "lane",
    "lookups",
    "hit_blocks",
    "host_hit_blocks",
    "miss_blocks",
    "prompt_tokens",
    "cached_tokens",
    "inserted_blocks",
    "evicted_blocks",
    "demoted_blocks",
    "reload_bytes",
    "hit_rate",
    "token_hit_rate",
)


def prefix_cache_table(lanes: Sequence[Sequence[LanePrefix]]) -> pd.DataFrame:
    """One row per lane's cache: its counters (blocks are prefix blocks; tokens of prompts
    admitted, re-admissions after preemption included) and hit rates."""
    import pandas as pd

    rows = []
    for r, unit in enumerate(lanes):
        for i, lane in enumerate(unit):
            s = lane.cache.stats
            rows.append(
                (
                    r,
                    i,
                    s.lookups,
                    s.hit_blocks,
                    s.host_hit_blocks,
                    s.miss_blocks,
                    s.prompt_tokens,
                    s.cached_tokens,
                    s.inserted_blocks,
                    s.evicted_blocks,
                    s.demoted_blocks,
                    s.reload_bytes,
                    s.hit_rate,
                    s.token_hit_rate,
                )
            )
    return pd.DataFrame(rows, columns=list(PREFIX_CACHE_COLUMNS))


class PoolPrefix(NamedTuple):
    """A pool's prefix caching: the per-request record and each unit's lanes."""

    record: PrefixRecord
    lanes: list[list[LanePrefix]]


def pool_prefix_caching(
    serving: ServingSpec,
    built: Build,
    units: Sequence[Replica | DPRank],
    stream: RequestStream,
    state: RequestState,
) -> PoolPrefix | None:
    """Prefix caches for `units` when `serving.prefix_caching` is on, else None."""
    if not serving.prefix_caching_on:
        return None
    from clustersim.serving.prefix_lane import PrefixRecord

    record = PrefixRecord(stream.prefix, len(stream))
    bt = stream.prefix.block_tokens if stream.prefix is not None else None
    return PoolPrefix(record, attach_prefix_caches(units, serving, built, record, state, bt))


def pool_router(
    serving: ServingSpec,
    units: Sequence[Replica | DPRank],
    prefix: PoolPrefix | None,
    stream: RequestStream,
    rng: np.random.Generator,
) -> Router:
    """The router over `units`: `serving.router`, reading the units' prefix caches when it is
    a prefix router. A pool without caches (a disaggregated decode pool) routes cache_aware /
    kv_aware requests by least_outstanding: its KV arrives with each request."""
    name = serving.router
    if name not in PREFIX_ROUTERS:
        return make_router(name, len(units), rng)
    if prefix is None and name != "session_affinity":
        return make_router("least_outstanding", len(units), rng)
    from clustersim.serving.prefix_routers import make_prefix_router

    lanes = prefix.lanes if prefix is not None else None
    return make_prefix_router(name, len(units), lanes, serving.router_options, stream.session_id)
