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

from collections import OrderedDict
from collections.abc import Sequence
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


class _Node:
    """One prefix block: its id, its parent, its children by id, references, tier."""

    __slots__ = ("children", "hash_id", "on_device", "parent", "refs")

    def __init__(self, hash_id: int, parent: _Node | None) -> None:
        self.hash_id = hash_id
        self.parent = parent
        self.children: dict[int, _Node] = {}
        self.refs = 0  # running sequences whose path holds this node
        self.on_device = True


class PrefixCache:
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
        self.capacity = capacity_blocks
        self.block_tokens = block_tokens
        self.node_blocks = kv_blocks_per_prefix_block
        self.host = host
        self.peak = 0  # highest `used` so far (pool blocks)
        self.stats = PrefixCacheStats()
        self._root = _Node(-1, None)
        self._root.refs = 1  # never evictable, never counted
        self._private = 0  # pool blocks allocated and not published
        self._pinned = 0  # device nodes with refs > 0
        self._lru: OrderedDict[_Node, None] = OrderedDict()  # refs == 0 device nodes, oldest first
        self._host_lru: OrderedDict[_Node, None] = OrderedDict()  # host nodes, oldest first
        self._paths: dict[int, list[_Node]] = {}  # sequence → pinned nodes, root excluded

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
    def evictable(self) -> int:
        """Pool blocks of cached nodes no sequence pins."""
        return len(self._lru) * self.node_blocks

    @property
    def resident(self) -> int:
        """Pool blocks holding KV: used + evictable (≤ capacity)."""
        return self.used + self.evictable

    @property
    def host_used(self) -> int:
        """Pool blocks' worth of KV on the host tier."""
        return len(self._host_lru) * self.node_blocks

    @property
    def cached_prefix_blocks(self) -> int:
        """Prefix blocks in the tree on the device (pinned or not)."""
        return self._pinned + len(self._lru)

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

    # ---- prefix operations -----------------------------------------------------------

    def match(self, block_ids: Sequence[int]) -> PrefixMatch:
        """The longest cached prefix of `block_ids` (no side effects: routers may probe)."""
        node = self._root
        device = host = unpinned = 0
        for h in block_ids:
            child = node.children.get(h)
            if child is None:
                break
            if child.on_device:
                device += 1
                unpinned += child.refs == 0
            else:
                host += 1
            node = child
        return self._match(device, host, unpinned)

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
        path: list[_Node] = []
        node = self._root
        for h in block_ids[: m.device]:
            node = node.children[h]
            self._pin(node)
            path.append(node)
        if m.host:
            reloaded: list[_Node] = []
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
                child = _Node(h, node)
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
        """End sequence `seq`: unpin its path; nodes no one pins become evictable, newest last
        (deepest first, so descendants stay ahead of ancestors in the LRU order)."""
        path = self._path(seq)
        del self._paths[seq]
        for node in reversed(path):
            node.refs -= 1
            if node.refs == 0:
                self._pinned -= 1
                self._lru[node] = None

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
        pinned = evictable = host = 0
        stack = list(self._root.children.values())
        while stack:
            node = stack.pop()
            assert node.parent is not None and node.parent.children[node.hash_id] is node
            if node.on_device:
                assert node.parent is self._root or node.parent.on_device, "host parent"
                if node.refs:
                    pinned += 1
                else:
                    evictable += 1
                    assert node in self._lru
            else:
                assert node.refs == 0 and node in self._host_lru
                host += 1
            assert all(c.refs <= node.refs for c in node.children.values()), "refs not monotone"
            stack.extend(node.children.values())
        assert pinned == self._pinned and evictable == len(self._lru)
        assert host == len(self._host_lru)
        refs: dict[_Node, int] = {}
        for path in self._paths.values():
            for n in path:
                refs[n] = refs.get(n, 0) + 1
        assert all(n.refs == r for n, r in refs.items()) and len(refs) == self._pinned
        assert self._private >= 0 and self.used <= self.capacity
        assert self.resident <= self.capacity
        if self.host is not None:
            assert self.host_used <= self.host.capacity_blocks
        for lru in (self._lru, self._host_lru):
            seen: set[_Node] = set()
            for n in lru:  # every node after all its descendants in the same tier
                assert all(c in seen for c in n.children.values() if c in lru)
                seen.add(n)

    # ---- internals -------------------------------------------------------------------

    def _match(self, device: int, host: int, unpinned: int) -> PrefixMatch:
        block_bytes = self.host.block_bytes if self.host is not None else 0
        return PrefixMatch(device, host, unpinned, self.node_blocks, block_bytes)

    def _path(self, seq: int) -> list[_Node]:
        try:
            return self._paths[seq]
        except KeyError:
            raise PrefixCacheError(f"sequence {seq} holds no prefix") from None

    def _pin(self, node: _Node) -> None:
        if node.refs == 0:
            del self._lru[node]
            self._pinned += 1
        node.refs += 1

    def _pin_off_lists(self, node: _Node) -> None:
        """Pin a node that is on no LRU list (new, or just taken off the host tier)."""
        node.on_device = True
        node.refs = 1
        self._pinned += 1

    def _note_peak(self) -> None:
        used = self.used
        if used > self.peak:
            self.peak = used

    def _make_room(self, blocks: int) -> None:
        """Evict LRU nodes until `blocks` pool blocks are empty (the caller checked `free`)."""
        short = blocks - (self.capacity - self.resident)  # pool blocks still to free
        for _ in range(-(-short // self.node_blocks)):
            self._evict_one()

    def _evict_one(self) -> None:
        """Move the oldest evictable node (a device leaf) to the host tier, or drop it."""
        node, _ = self._lru.popitem(last=False)
        self.stats.evicted_blocks += 1
        host = self.host
        if host is None or host.capacity_blocks < self.node_blocks:
            self._drop(node)
            return
        while self.host_used + self.node_blocks > host.capacity_blocks:
            oldest, _ = self._host_lru.popitem(last=False)
            self.stats.dropped_host_blocks += 1
            self._drop(oldest)
        node.on_device = False
        self._host_lru[node] = None
        self.stats.demoted_blocks += 1

    @staticmethod
    def _drop(node: _Node) -> None:
        assert not node.children and node.parent is not None
        del node.parent.children[node.hash_id]
