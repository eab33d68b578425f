"""Prefix cache inside a paged KV pool: unit, theory and property (state machine) tests."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    precondition,
    rule,
)

from clustersim.serving.prefix_cache import (
    HostTier,
    PrefixCache,
    PrefixCacheError,
    PrefixCachingParams,
    cached_tokens,
    lane_prefix_cache,
)


def _run(cache: PrefixCache, seq: int, ids: list[int], extra: int = 0) -> int:
    """Admit `seq`, allocate its uncached blocks (+ `extra` decode blocks), publish the prompt
    blocks; returns the private blocks the caller still holds."""
    m = cache.acquire(seq, ids)
    private = (len(ids) - m.blocks) * cache.node_blocks + extra
    cache.allocate(private)
    return private - cache.insert(seq, ids)


def _finish(cache: PrefixCache, seq: int, private: int) -> None:
    cache.release_seq(seq)
    cache.release(private)


# ---- unit ---------------------------------------------------------------------------------


def test_kvpool_compatible_accounting() -> None:
    cache = PrefixCache(10, 16)
    cache.allocate(4)
    assert (cache.used, cache.free, cache.peak) == (4, 6, 4)
    cache.release(3)
    assert (cache.used, cache.free, cache.peak) == (1, 9, 4)
    with pytest.raises(PrefixCacheError):
        cache.allocate(10)
    with pytest.raises(PrefixCacheError):
        cache.release(2)


def test_match_after_insert_and_evictable_after_release() -> None:
    cache = PrefixCache(8, 16)
    assert cache.match([1, 2, 3]).blocks == 0
    private = _run(cache, 0, [1, 2, 3], extra=1)
    assert private == 1
    m = cache.match([1, 2, 3, 4])
    assert (m.device, m.host, m.unpinned) == (3, 0, 0)
    assert (cache.used, cache.evictable, cache.resident) == (4, 0, 4)
    _finish(cache, 0, private)
    assert (cache.used, cache.evictable, cache.free) == (0, 3, 8)
    assert cache.match([1, 2, 9]).device == 2
    assert cache.match([2]).blocks == 0  # identity includes the parent chain
    cache.check()


def test_allocate_evicts_lru_leaves_first() -> None:
    cache = PrefixCache(4, 16)
    _finish(cache, 0, _run(cache, 0, [1, 2]))
    _finish(cache, 1, _run(cache, 1, [5, 6]))
    cache.allocate(1)  # the pool is full of cached blocks: the oldest leaf (2 under 1) goes
    assert cache.match([1, 2]).blocks == 1 and cache.match([5, 6]).blocks == 2
    cache.allocate(1)  # then its parent, now a leaf and the oldest
    assert cache.match([1]).blocks == 0 and cache.match([5, 6]).blocks == 2
    cache.allocate(1)
    assert cache.match([5, 6]).blocks == 1
    assert cache.stats.evicted_blocks == 3
    cache.check()


def test_pinned_blocks_are_never_evicted() -> None:
    cache = PrefixCache(4, 16)
    private = _run(cache, 0, [1, 2, 3])
    assert cache.free == 1
    with pytest.raises(PrefixCacheError):
        cache.allocate(2)
    cache.allocate(1)
    assert cache.match([1, 2, 3]).device == 3
    _finish(cache, 0, private + 1)


def test_shared_prefix_pins_once_and_counts_once() -> None:
    cache = PrefixCache(10, 16)
    a = _run(cache, 0, [1, 2, 3])
    b = _run(cache, 1, [1, 2, 4])
    assert cache.used == 4  # 1, 2 shared; 3 and 4 own
    assert cache.match([1, 2]).unpinned == 0
    _finish(cache, 0, a)
    assert (cache.used, cache.evictable) == (3, 1)
    _finish(cache, 1, b)
    assert (cache.used, cache.evictable, cache.resident) == (0, 4, 4)
    cache.check()


def test_concurrent_duplicate_insert_frees_the_copy() -> None:
    cache = PrefixCache(10, 16)
    cache.acquire(0, [7, 8])
    cache.acquire(1, [7, 8])
    cache.allocate(4)  # both compute the two blocks
    assert cache.insert(0, [7, 8]) == 2
    assert cache.insert(1, [7, 8]) == 2  # already cached: its copies are freed
    assert (cache.used, cache.resident) == (2, 2)
    cache.release_seq(0)
    cache.release_seq(1)
    assert (cache.used, cache.evictable) == (0, 2)
    cache.check()


def test_kv_blocks_per_prefix_block_scales_accounting() -> None:
    cache = PrefixCache(12, 512, kv_blocks_per_prefix_block=4)
    private = _run(cache, 0, [1, 2], extra=3)
    assert (cache.used, private) == (11, 3)
    m = cache.match([1, 2])
    assert m.cost_blocks == 0
    _finish(cache, 0, private)
    assert cache.match([1, 2]).cost_blocks == 8
    cache.allocate(5)  # 4 empty + one evicted node of 4 blocks
    assert cache.match([1, 2]).blocks == 1 and cache.stats.evicted_blocks == 1
    cache.check()


def test_insert_must_extend_the_pinned_prefix_and_own_the_blocks() -> None:
    cache = PrefixCache(10, 16)
    _finish(cache, 0, _run(cache, 0, [1, 2]))
    cache.acquire(1, [1, 2, 3])
    with pytest.raises(PrefixCacheError, match="do not extend"):
        cache.insert(1, [1, 9, 3])
    with pytest.raises(PrefixCacheError, match="private"):
        cache.insert(1, [1, 2, 3])
    with pytest.raises(PrefixCacheError, match="already holds"):
        cache.acquire(1, [1])
    with pytest.raises(PrefixCacheError, match="holds no prefix"):
        cache.release_seq(2)


def test_acquire_refuses_without_room_for_its_host_reload() -> None:
    # a device match only pins blocks that `free` already counts; a host reload needs room
    cache = PrefixCache(2, 16, host=HostTier(2, 1e9, 10))
    _finish(cache, 0, _run(cache, 0, [1, 2]))
    cache.allocate(2)  # both demoted to the host
    assert cache.match([1, 2]).cost_blocks == 2 and cache.free == 0
    with pytest.raises(PrefixCacheError, match="needs 2 blocks"):
        cache.acquire(1, [1, 2])
    assert not cache.holds(1)
    cache.check()


def test_host_tier_demotes_and_reloads() -> None:
    host = HostTier(capacity_blocks=2, bandwidth_Bps=1e9, block_bytes=1000)
    cache = PrefixCache(3, 16, host=host)
    _finish(cache, 0, _run(cache, 0, [1, 2, 3]))
    cache.allocate(2)  # 3 then 2 go to the host
    m = cache.match([1, 2, 3, 4])
    assert (m.device, m.host, m.reload_bytes) == (1, 2, 2000)
    assert host.reload_s(2) == pytest.approx(2e-6)
    assert cache.host_used == 2 and cache.stats.demoted_blocks == 2
    cache.release(2)
    got = cache.acquire(1, [1, 2, 3, 4], prompt_tokens=60)
    assert got == m
    assert cache.host_used == 0 and cache.used == 3
    s = cache.stats
    assert (s.hit_blocks, s.host_hit_blocks, s.miss_blocks, s.reload_bytes) == (1, 2, 3 + 1, 2000)
    assert s.cached_tokens == 48 and s.prompt_tokens == 60
    cache.check()


def test_host_tier_drops_oldest_when_full() -> None:
    cache = PrefixCache(2, 16, host=HostTier(1, 1e9, 10))
    _finish(cache, 0, _run(cache, 0, [1, 2]))
    cache.allocate(2)  # 2 → host, then 1 → host drops 2
    assert cache.stats.dropped_host_blocks == 1
    assert (cache.match([1, 2]).device, cache.match([1, 2]).host) == (0, 1)
    cache.check()


def test_host_reload_is_not_dropped_while_making_room() -> None:
    # host full of the very blocks being reloaded; making room demotes others to the host
    cache = PrefixCache(2, 16, host=HostTier(2, 1e9, 10))
    _finish(cache, 0, _run(cache, 0, [1, 2]))
    cache.allocate(2)
    cache.release(2)  # 1, 2 on host; device empty
    _finish(cache, 1, _run(cache, 1, [5, 6]))  # device: 5, 6 evictable
    m = cache.acquire(2, [1, 2])
    assert (m.device, m.host) == (0, 2)
    assert cache.match([1, 2]).device == 2
    cache.check()


def test_insert_over_a_host_block_reuses_the_node() -> None:
    cache = PrefixCache(2, 16, host=HostTier(4, 1e9, 10))
    _finish(cache, 0, _run(cache, 0, [1, 2]))
    cache.allocate(1)  # 2 → host
    cache.release(1)
    cache.acquire(1, [1])  # pins 1 only
    cache.allocate(1)  # and computes block 2 again
    assert cache.insert(1, [1, 2]) == 1
    assert cache.match([1, 2]).device == 2 and cache.host_used == 0
    cache.check()


def test_cached_tokens_always_leaves_the_last_token() -> None:
    assert cached_tokens(2, 32, 16) == 31
    assert cached_tokens(1, 40, 16) == 16
    assert cached_tokens(0, 5, 16) == 0


def test_bad_parameters() -> None:
    with pytest.raises(ValueError):
        PrefixCache(-1, 16)
    with pytest.raises(ValueError):
        PrefixCache(1, 0)
    with pytest.raises(ValueError):
        PrefixCache(1, 16, kv_blocks_per_prefix_block=0)
    with pytest.raises(ValueError):
        HostTier(1, 0.0, 1)


def test_lane_prefix_cache_from_params() -> None:
    params = PrefixCachingParams(enabled=True, host_memory_GB=1.0, host_bandwidth_GBps=25.0)
    cache = lane_prefix_cache(params, 1000, 16, 512, pool_block_bytes=2_000_000)
    assert (cache.capacity, cache.block_tokens, cache.node_blocks) == (1000, 512, 32)
    assert cache.host == HostTier(500, 25e9, 2_000_000)
    assert lane_prefix_cache(PrefixCachingParams(True), 10, 16, 16, 100).host is None
    with pytest.raises(ValueError, match="whole number"):
        lane_prefix_cache(params, 1000, 16, 100, 100)
    with pytest.raises(ValueError):
        PrefixCachingParams(host_memory_GB=-1)


# ---- theory -------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [10, 100, 1000])
def test_one_shared_prompt_hit_rate_tends_to_one(n: int) -> None:
    """Every request has the same prompt: all but the first hit every block, and prefill
    computes only the one token that starts decoding."""
    block_tokens, prompt = 16, 16 * 20
    ids = list(range(20))
    cache = PrefixCache(64, block_tokens)
    prefill = 0
    for seq in range(n):
        m = cache.acquire(seq, ids, prompt_tokens=prompt)
        prefill += prompt - cached_tokens(m.blocks, prompt, block_tokens)
        cache.allocate((len(ids) - m.blocks) + 2)
        held = len(ids) - m.blocks + 2 - cache.insert(seq, ids)
        _finish(cache, seq, held)
    assert cache.stats.hit_rate == pytest.approx((n - 1) / n)
    assert prefill == prompt + (n - 1)  # the first prompt, then one token per request


def test_shared_system_prompt_prefill_tends_to_the_suffix() -> None:
    """A shared 30-block system prompt plus a unique 3-block question, 8 requests in flight at
    a time in a pool that holds the prefix and the running suffixes: prefill per request → the
    suffix, and the hit rate over all blocks → 30/33."""
    bt, shared, own, n, inflight = 16, 30, 3, 400, 8
    cache = PrefixCache(shared + inflight * (own + 2), bt)
    running: list[tuple[int, int]] = []
    prefill = []
    for seq in range(n):
        ids = list(range(shared)) + [1000 + seq * own + i for i in range(own)]
        prompt = len(ids) * bt
        m = cache.acquire(seq, ids, prompt_tokens=prompt)
        prefill.append(prompt - cached_tokens(m.blocks, prompt, bt))
        cache.allocate(len(ids) - m.blocks + 2)
        running.append((seq, len(ids) - m.blocks + 2 - cache.insert(seq, ids)))
        if len(running) == inflight:
            _finish(cache, *running.pop(0))
        cache.check() if seq % 97 == 0 else None
    assert prefill[0] == (shared + own) * bt
    assert all(p == own * bt for p in prefill[1:])
    assert cache.stats.hit_rate == pytest.approx((n - 1) * shared / (n * (shared + own)))


# ---- properties ---------------------------------------------------------------------------

_IDS = st.lists(st.integers(0, 3), min_size=0, max_size=6)


class PrefixCacheMachine(RuleBasedStateMachine):
    """Random admits, publishes, decode growth, releases and explicit evictions."""

    seqs = Bundle("seqs")

    @initialize(
        capacity=st.integers(0, 24),
        node_blocks=st.integers(1, 2),
        host=st.one_of(st.none(), st.integers(0, 6)),
    )
    def setup(self, capacity: int, node_blocks: int, host: int | None) -> None:
        tier = HostTier(host, 1e9, 100) if host is not None else None
        self.cache = PrefixCache(capacity, 16, kv_blocks_per_prefix_block=node_blocks, host=tier)
        self.next_seq = 0
        self.ids: dict[int, list[int]] = {}  # running sequence → its id sequence
        self.published: dict[int, int] = {}  # running sequence → prefix blocks it pins
        self.private: dict[int, int] = {}  # running sequence → private blocks it holds

    @rule(target=seqs, ids=_IDS)
    def admit(self, ids: list[int]) -> int:
        c = self.cache
        m = c.match(ids)
        seq = self.next_seq
        self.next_seq += 1
        if m.cost_blocks > c.free:
            return -1
        before = c.free
        got = c.acquire(seq, ids)
        assert got == m and c.free == before - m.cost_blocks
        assert c.match(ids).device == m.blocks
        self.ids[seq] = ids
        self.published[seq] = m.blocks
        self.private[seq] = 0
        return seq

    @rule(seq=seqs)
    def prefill(self, seq: int) -> None:
        c = self.cache
        if seq not in self.ids:
            return
        ids = self.ids[seq]
        need = (len(ids) - self.published[seq]) * c.node_blocks
        if need > c.free:
            return
        c.allocate(need)
        self.private[seq] += need
        taken = c.insert(seq, ids)
        assert taken == need
        self.private[seq] -= taken
        self.published[seq] = len(ids)
        assert c.match(ids).device == len(ids)  # match after insert: the inserted length

    @rule(seq=seqs, blocks=st.integers(0, 3))
    def decode(self, seq: int, blocks: int) -> None:
        if seq in self.ids and blocks <= self.cache.free:
            self.cache.allocate(blocks)
            self.private[seq] += blocks

    @rule(seq=consumes(seqs))
    def finish(self, seq: int) -> None:
        if seq not in self.ids:
            return
        self.cache.release_seq(seq)
        self.cache.release(self.private.pop(seq))
        del self.ids[seq], self.published[seq]

    @rule(blocks=st.integers(0, 8))
    def evict(self, blocks: int) -> None:
        before = self.cache.evictable
        got = self.cache.evict(blocks)
        assert got == min(before, -(-blocks // self.cache.node_blocks) * self.cache.node_blocks)

    @precondition(lambda self: hasattr(self, "cache"))
    @invariant()
    def accounting(self) -> None:
        c = self.cache
        c.check()
        assert 0 <= c.used <= c.capacity and c.resident <= c.capacity
        assert c.used == sum(self.private.values()) + c.node_blocks * c.cached_prefix_blocks - (
            c.evictable
        )
        assert c.peak >= c.used
        for seq, ids in self.ids.items():  # eviction never took a pinned block
            assert c.match(ids[: self.published[seq]]).device == self.published[seq]
            assert c.pinned_blocks(seq) == self.published[seq]
        if not self.ids:
            assert c.used == 0 and c.evictable == c.resident  # every refcount back to zero


TestPrefixCacheMachine = PrefixCacheMachine.TestCase
TestPrefixCacheMachine.settings = settings(
    max_examples=150,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
