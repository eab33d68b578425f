"""Prefix caches for the lanes of a built layout: one PrefixCache per scheduler lane (each
replica's virtual engines, each DP-attention rank, each prefill-pool replica), sized as the
lane's KV pool (docs/prefix_caching.md)."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from clustersim.config.schema import ServingSpec
from clustersim.deployment.build import Build
from clustersim.moe.ep_group import DPRank
from clustersim.serving.prefix_cache import PrefixCachingParams, lane_prefix_cache
from clustersim.serving.prefix_lane import LanePrefix, PrefixRecord
from clustersim.serving.replica import Replica
from clustersim.serving.request_state import RequestState
from clustersim.serving.scheduler import Scheduler

DEFAULT_PREFIX_BLOCK_TOKENS = 512  # a workload without prefix-block ids (nothing is shared)


def unit_schedulers(unit: Replica | DPRank) -> list[Scheduler]:
    """The scheduler lanes of one router unit."""
    if isinstance(unit, DPRank):
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
