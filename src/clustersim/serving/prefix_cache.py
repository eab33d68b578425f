"""Prefix cache of KV blocks inside one paged KV pool (radix tree + LRU), with a host tier.

One cache per scheduler lane (replica, DP-attention rank, or prefill pool member). It owns the
pool's block accounting, so it is a drop-in for the plain KV pool (`capacity`, `used`, `peak`,
`free`, `allocate`, `release`) with prefix reuse on top.

Units. A *prefix block* holds `block_tokens` tokens of KV and is the unit of sharing (the
Mooncake traces use 512). It occupies `kv_blocks_per_prefix_block` blocks of the paged pool.
Every count named ``*_blocks`` or ``capacity``/``used``/``free`` is in pool (KV) blocks.

Identity. A prefix block is named by its id plus its parent chain: the tree's node for the id
sequence [h1, …, hk] is reached from the root through h1, …, hk (a radix tree over id
sequences, as SGLang's RadixAttention). Ids that already identify their whole prefix (vLLM's
chained block hashes, the Mooncake `hash_ids`) work unchanged.

Accounting (invariants, checked by `check()`):

* private: blocks the caller allocated for sequences and has not published (`allocate`);
* pinned: device nodes with a reference count > 0 (used by running sequences);
* evictable: device nodes with reference count 0 (cached, free to reuse);
* ``used = private + pinned`` ≤ ``capacity``; ``resident = used + evictable`` ≤ ``capacity``;
  ``free = capacity − used`` counts evictable blocks (what `allocate` can hand out), as vLLM's
  free-block queue does, so no cached block is ever counted twice.

A sequence pins a whole path from the root, so a node's reference count is ≥ each child's:
an unreferenced node has only unreferenced descendants. Evictable nodes sit in an LRU order
(oldest first) kept so that every node comes after all of its descendants; the oldest entry is
therefore always a leaf of the device tree, and eviction never touches a pinned node. Each
operation costs O(length of the prefix it touches) plus O(1) per evicted block.

Host tier (optional): evicted device blocks move to host memory (LRU, oldest first); when host
memory is full its oldest block is dropped. Device nodes are closed under ancestors (a host
node's descendants are all on host), so host eviction too only drops leaves. A match that runs
into host blocks reports them; `acquire` copies them back to the device (exclusive tiers) and
the caller carries `reload_bytes` over PCIe as a transfer.
"""

from __future__ import annotations

from collections.abc import Sequence

from clustersim.serving.prefix_match import (
    HostTier,
    PrefixCacheError,
    PrefixCacheStats,
    PrefixCachingParams,
    PrefixMatch,
    cached_tokens,
)
from clustersim.serving.prefix_tree import Node, PrefixTree

__all__ = [
    "HostTier",
    "PrefixCache",
    "PrefixCacheError",
    "PrefixCacheStats",
    "PrefixCachingParams",
    "PrefixMatch",
    "cached_tokens",
    "lane_prefix_cache",
]


class PrefixCache(PrefixTree):
    """Radix/LRU prefix cache inside a paged KV pool of `capacity_blocks` blocks."""

    def __init__(
        self,
        capacity_blocks: int,
        block_tokens: int,
        *,
        kv_blocks_per_prefix_block: int = 1,
        host: HostTier | None = None,
    ) -> None:
        if capacity_blocks < 0:
            raise ValueError(f"capacity_blocks must be >= 0, got {capacity_blocks}")
        if block_tokens < 1:
            raise ValueError(f"block_tokens must be >= 1, got {block_tokens}")
        if kv_blocks_per_prefix_block < 1:
            raise ValueError(
                f"kv_blocks_per_prefix_block must be >= 1, got {kv_blocks_per_prefix_block}"
            )
        super().__init__(kv_blocks_per_prefix_block, host)
        self.capacity = capacity_blocks
        self.block_tokens = block_tokens
        self.peak = 0  # highest `used` so far (pool blocks)
        self._private = 0  # pool blocks allocated and not published
        self._paths: dict[int, list[Node]] = {}  # sequence → pinned nodes, root excluded

    # ---- pool accounting (KVPool-compatible) -------------------------------------------

    @property
    def used(self) -> int:
        """Pool blocks held by running sequences: private + pinned nodes."""
        return self._private + self._pinned * self.node_blocks

    @property
    def free(self) -> int:
        """Pool blocks `allocate` can hand out: empty + evictable (capacity − used)."""
        return self.capacity - self.used

    @property
    def resident(self) -> int:
        """Pool blocks holding KV: used + evictable (≤ capacity)."""
        return self.used + self.evictable

    def free_blocks(self) -> int:
        """Same as `free`: blocks available to running sequences, evictable ones included."""
        return self.free

    def allocate(self, blocks: int) -> None:
        """Give `blocks` private pool blocks to the caller, evicting LRU cached ones if needed."""
        if blocks < 0:
            raise ValueError(f"blocks must be >= 0, got {blocks}")
        if blocks > self.free:
            raise PrefixCacheError(f"allocating {blocks} blocks with {self.free} free")
        self._make_room(blocks)
        self._private += blocks
        self._note_peak()

    def release(self, blocks: int) -> None:
        """Take back `blocks` private pool blocks."""
        if blocks < 0:
            raise ValueError(f"blocks must be >= 0, got {blocks}")
        if blocks > self._private:
            raise PrefixCacheError(f"releasing {blocks} blocks with {self._private} private")
        self._private -= blocks

    # ---- sequences -------------------------------------------------------------------

    def acquire(
        self, seq: int, block_ids: Sequence[int], prompt_tokens: int | None = None
    ) -> PrefixMatch:
        """Start sequence `seq`: pin the cached prefix of `block_ids`, reloading its host part.

        Needs ``free >= match(block_ids).cost_blocks``. Counts hits and misses over all of
        `block_ids`; with `prompt_tokens`, also the prompt tokens prefill skips. The caller then
        allocates blocks for the uncached suffix and publishes them with `insert`.
        """
        if seq in self._paths:
            raise PrefixCacheError(f"sequence {seq} already holds a prefix")
        m = self.match(block_ids)
        if m.cost_blocks > self.free:
            raise PrefixCacheError(
                f"sequence {seq} needs {m.cost_blocks} blocks for its cached prefix, "
                f"{self.free} free"
            )
        path: list[Node] = []
        node = self._root
        for h in block_ids[: m.device]:
            node = node.children[h]
            self._pin(node)
            path.append(node)
        if m.host:
            reloaded: list[Node] = []
            for h in block_ids[m.device : m.blocks]:
                node = node.children[h]
                del self._host_lru[node]  # out of reach of host eviction while room is made
                reloaded.append(node)
            self._make_room(m.host * self.node_blocks)
            for node in reloaded:
                self._pin_off_lists(node)
            path.extend(reloaded)
        self._paths[seq] = path
        self._note_peak()
        st = self.stats
        st.lookups += 1
        st.hit_blocks += m.device
        st.host_hit_blocks += m.host
        st.miss_blocks += len(block_ids) - m.blocks
        st.reload_bytes += m.reload_bytes
        if prompt_tokens is not None:
            st.prompt_tokens += prompt_tokens
            st.cached_tokens += cached_tokens(m.blocks, prompt_tokens, self.block_tokens)
        return m

    def insert(self, seq: int, block_ids: Sequence[int]) -> int:
        """Publish the blocks `seq` has computed: `block_ids` is its whole id sequence so far
        (it starts with the prefix `seq` pins). Returns the pool blocks taken from the
        caller's private blocks (new nodes adopt them; copies of nodes that are already cached
        are freed); the caller must no longer release those.
        """
        path = self._path(seq)
        if len(block_ids) < len(path) or any(
            n.hash_id != h for n, h in zip(path, block_ids, strict=False)
        ):
            raise PrefixCacheError(f"sequence {seq}: block ids do not extend its cached prefix")
        new = len(block_ids) - len(path)
        taken = new * self.node_blocks
        if taken > self._private:
            raise PrefixCacheError(
                f"sequence {seq} publishes {taken} blocks with {self._private} private"
            )
        node = path[-1] if path else self._root
        for h in block_ids[len(path) :]:
            child = node.children.get(h)
            if child is None:  # the common case, inlined: a new pinned node
                child = Node(h, node)
                child.refs = 1
                node.children[h] = child
                self._pinned += 1
                self.stats.inserted_blocks += 1
            elif child.on_device:
                self._pin(child)
            else:  # computed again: the fresh copy replaces the host one
                del self._host_lru[child]
                self._pin_off_lists(child)
            path.append(child)
            node = child
        self._private -= taken
        return taken

    def release_seq(self, seq: int) -> None:
        """End sequence `seq`: unpin its path; nodes no one pins become evictable."""
        path = self._path(seq)
        del self._paths[seq]
        self._unpin_path(path)

    def holds(self, seq: int) -> bool:
        """Whether `seq` currently pins a prefix (acquired and not released)."""
        return seq in self._paths

    def pinned_blocks(self, seq: int) -> int:
        """Prefix blocks `seq` pins."""
        return len(self._path(seq))

    def evict(self, blocks: int) -> int:
        """Evict at least `blocks` pool blocks of LRU cached nodes (fewer if fewer are
        evictable); returns the pool blocks evicted."""
        evicted = 0
        while evicted < blocks and self._lru:
            self._evict_one()
            evicted += self.node_blocks
        return evicted

    def check(self) -> None:
        """Verify every invariant by walking the whole tree (O(cache size): tests only)."""
        self._check_tree()
        refs: dict[Node, int] = {}
        for path in self._paths.values():
            for n in path:
                refs[n] = refs.get(n, 0) + 1
        assert all(n.refs == r for n, r in refs.items()) and len(refs) == self._pinned
        assert self._private >= 0 and self.used <= self.capacity
        assert self.resident <= self.capacity

    # ---- internals -------------------------------------------------------------------

    def _path(self, seq: int) -> list[Node]:
        try:
            return self._paths[seq]
        except KeyError:
            raise PrefixCacheError(f"sequence {seq} holds no prefix") from None

    def _note_peak(self) -> None:
        used = self.used
        if used > self.peak:
            self.peak = used

    def _make_room(self, blocks: int) -> None:
        """Evict LRU nodes until `blocks` pool blocks are empty (the caller checked `free`)."""
        short = blocks - (self.capacity - self.resident)  # pool blocks still to free
        for _ in range(-(-short // self.node_blocks)):
            self._evict_one()


def lane_prefix_cache(
    params: PrefixCachingParams,
    capacity_blocks: int,
    pool_block_tokens: int,
    prefix_block_tokens: int,
    pool_block_bytes: int,
) -> PrefixCache:
    """The prefix cache of one lane: `capacity_blocks` pool blocks of `pool_block_tokens`
    tokens and `pool_block_bytes` bytes; prefix blocks of `prefix_block_tokens` tokens (the
    workload's, e.g. 512 for Mooncake), a whole number of pool blocks."""
    if prefix_block_tokens % pool_block_tokens:
        raise ValueError(
            f"prefix blocks of {prefix_block_tokens} tokens are not a whole number of "
            f"{pool_block_tokens}-token KV blocks"
        )
    host = None
    if params.host_memory_GB > 0:
        host = HostTier(
            capacity_blocks=int(params.host_memory_GB * 1e9 // max(pool_block_bytes, 1)),
            bandwidth_Bps=params.host_bandwidth_GBps * 1e9,
            block_bytes=pool_block_bytes,
        )
    return PrefixCache(
        capacity_blocks,
        prefix_block_tokens,
        kv_blocks_per_prefix_block=prefix_block_tokens // pool_block_tokens,
        host=host,
    )
