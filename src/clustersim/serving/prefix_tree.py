"""The radix tree of a prefix cache with its two LRU tiers (device, host): lookup, pinning,
eviction and the tree's invariants. Pool accounting and sequences: serving/prefix_cache.py.

A node is one prefix block, reached from the root through its id sequence. Evictable device
nodes (reference count 0) sit in an LRU order, oldest first, kept so that every node comes after
all of its descendants: the oldest entry is always a leaf of the device tree. Host nodes keep
the same order on the host list, so host eviction too only drops leaves.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from clustersim.serving.prefix_match import HostTier, PrefixCacheStats, PrefixMatch


class Node:
    """One prefix block: its id, its parent, its children by id, references, tier."""

    __slots__ = ("children", "hash_id", "on_device", "parent", "refs")

    def __init__(self, hash_id: int, parent: Node | None) -> None:
        self.hash_id = hash_id
        self.parent = parent
        self.children: dict[int, Node] = {}
        self.refs = 0  # running sequences whose path holds this node
        self.on_device = True


class PrefixTree:
    """Radix tree of prefix blocks, `node_blocks` pool blocks each, with LRU device / host
    lists; counts pinned nodes (refs > 0) and keeps the statistics."""

    def __init__(self, node_blocks: int, host: HostTier | None) -> None:
        self.node_blocks = node_blocks
        self.host = host
        self.stats = PrefixCacheStats()
        self._root = Node(-1, None)
        self._root.refs = 1  # never evictable, never counted
        self._pinned = 0  # device nodes with refs > 0
        self._lru: OrderedDict[Node, None] = OrderedDict()  # refs == 0 device nodes, oldest first
        self._host_lru: OrderedDict[Node, None] = OrderedDict()  # host nodes, oldest first

    @property
    def evictable(self) -> int:
        """Pool blocks of cached nodes no sequence pins."""
        return len(self._lru) * self.node_blocks

    @property
    def host_used(self) -> int:
        """Pool blocks' worth of KV on the host tier."""
        return len(self._host_lru) * self.node_blocks

    @property
    def cached_prefix_blocks(self) -> int:
        """Prefix blocks in the tree on the device (pinned or not)."""
        return self._pinned + len(self._lru)

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
        block_bytes = self.host.block_bytes if self.host is not None else 0
        return PrefixMatch(device, host, unpinned, self.node_blocks, block_bytes)

    # ---- pinning and eviction ----------------------------------------------------------

    def _pin(self, node: Node) -> None:
        if node.refs == 0:
            del self._lru[node]
            self._pinned += 1
        node.refs += 1

    def _pin_off_lists(self, node: Node) -> None:
        """Pin a node that is on no LRU list (new, or just taken off the host tier)."""
        node.on_device = True
        node.refs = 1
        self._pinned += 1

    def _unpin_path(self, path: list[Node]) -> None:
        """Unpin a sequence's path; nodes no one pins become evictable, newest last (deepest
        first, so descendants stay ahead of ancestors in the LRU order)."""
        for node in reversed(path):
            node.refs -= 1
            if node.refs == 0:
                self._pinned -= 1
                self._lru[node] = None

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
    def _drop(node: Node) -> None:
        assert not node.children and node.parent is not None
        del node.parent.children[node.hash_id]

    # ---- invariants ------------------------------------------------------------------

    def _check_tree(self) -> None:
        """Tree and LRU invariants, by walking the whole tree (O(cache size): tests only)."""
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
        if self.host is not None:
            assert self.host_used <= self.host.capacity_blocks
        for lru in (self._lru, self._host_lru):
            seen: set[Node] = set()
            for n in lru:  # every node after all its descendants in the same tier
                assert all(c in seen for c in n.children.values() if c in lru)
                seen.add(n)
