"""What a prefix-cache lookup reports and what the cache counts (serving/prefix_cache.py):
a match's tiers, the host tier's size and bandwidth, the counters, the `prefix_caching` knobs.
Blocks are prefix blocks unless named ``*_blocks`` of the pool (KV) kind."""

from __future__ import annotations

from dataclasses import dataclass


class PrefixCacheError(RuntimeError):
    """A caller broke the cache's contract (a scheduler bug): too few free blocks, an unknown
    or repeated sequence, a publish beyond the caller's private blocks."""


@dataclass(frozen=True)
class HostTier:
    """Host-memory tier of one lane's prefix cache."""

    capacity_blocks: int  # host capacity in pool (KV) blocks, >= 0
    bandwidth_Bps: float  # host → device copy bandwidth (bytes/s), e.g. PCIe Gen5 x16 ≈ 50e9
    block_bytes: int  # bytes of one pool block on this lane (all layers it holds)

    def __post_init__(self) -> None:
        if self.capacity_blocks < 0:
            raise ValueError(f"capacity_blocks must be >= 0, got {self.capacity_blocks}")
        if not self.bandwidth_Bps > 0:
            raise ValueError(f"bandwidth_Bps must be > 0, got {self.bandwidth_Bps}")
        if self.block_bytes < 0:
            raise ValueError(f"block_bytes must be >= 0, got {self.block_bytes}")

    def reload_s(self, blocks: int) -> float:
        """Time to copy `blocks` pool blocks back to the device at full bandwidth (s)."""
        return blocks * self.block_bytes / self.bandwidth_Bps


@dataclass(frozen=True)
class PrefixMatch:
    """The cached prefix of an id sequence, in prefix blocks (a query: nothing changes)."""

    device: int  # leading prefix blocks resident on the device
    host: int  # following prefix blocks on the host tier (reloaded by `acquire`)
    unpinned: int  # of the device ones, how many no sequence pins now (evictable)
    kv_blocks_per_prefix_block: int
    block_bytes: int  # bytes of one pool block (0 without a host tier)

    @property
    def blocks(self) -> int:
        """Prefix blocks whose KV need not be computed (device + host)."""
        return self.device + self.host

    @property
    def cost_blocks(self) -> int:
        """Pool blocks `acquire` takes out of `free`: pinned evictable ones + host reloads."""
        return (self.unpinned + self.host) * self.kv_blocks_per_prefix_block

    @property
    def reload_bytes(self) -> int:
        """Bytes to copy host → device for the host part of the match."""
        return self.host * self.kv_blocks_per_prefix_block * self.block_bytes


@dataclass
class PrefixCacheStats:
    """Counters since construction; blocks are prefix blocks unless named ``*_kv_blocks``."""

    lookups: int = 0  # acquires
    hit_blocks: int = 0  # matched on the device
    host_hit_blocks: int = 0  # matched on the host tier (reloaded)
    miss_blocks: int = 0  # not cached: computed by prefill
    prompt_tokens: int = 0  # prompt tokens of acquires that gave prompt_tokens
    cached_tokens: int = 0  # of those, tokens prefill skips (see `cached_tokens`)
    inserted_blocks: int = 0  # new nodes published
    evicted_blocks: int = 0  # left the device (demoted or dropped)
    demoted_blocks: int = 0  # of those, moved to the host tier
    dropped_host_blocks: int = 0  # dropped from the host tier
    reload_bytes: int = 0  # host → device bytes of all host hits

    @property
    def hit_rate(self) -> float:
        """Share of looked-up prefix blocks found cached (device or host); 0 with no lookups."""
        total = self.hit_blocks + self.host_hit_blocks + self.miss_blocks
        return (self.hit_blocks + self.host_hit_blocks) / total if total else 0.0

    @property
    def token_hit_rate(self) -> float:
        """Share of prompt tokens prefill skipped; 0 with no prompt tokens recorded."""
        return self.cached_tokens / self.prompt_tokens if self.prompt_tokens else 0.0


def cached_tokens(matched_blocks: int, prompt_tokens: int, block_tokens: int) -> int:
    """Prompt tokens prefill skips: the matched blocks' tokens, but at least the last prompt
    token is always computed (its logits start decoding), as in vLLM and SGLang."""
    return max(0, min(matched_blocks * block_tokens, prompt_tokens - 1))


@dataclass(frozen=True)
class PrefixCachingParams:
    """`serving.prefix_caching` as plain data (the schema maps onto it)."""

    enabled: bool = False
    host_memory_GB: float = 0.0  # host-tier KV memory per lane (1e9 bytes); 0: no host tier
    host_bandwidth_GBps: float = 50.0  # host → device copy bandwidth (GB/s; PCIe Gen5 x16)

    def __post_init__(self) -> None:
        if self.host_memory_GB < 0:
            raise ValueError(f"host_memory_GB must be >= 0, got {self.host_memory_GB}")
        if not self.host_bandwidth_GBps > 0:
            raise ValueError(f"host_bandwidth_GBps must be > 0, got {self.host_bandwidth_GBps}")
