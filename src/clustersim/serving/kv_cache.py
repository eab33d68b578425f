"""Paged KV-cache block accounting for one scheduler lane.

Blocks hold `block_size` tokens of KV for every layer of the lane's stage shards. Invariant:
0 <= used <= capacity at every instant (checked by `allocate`).
"""

from __future__ import annotations


class KVCapacityError(RuntimeError):
    """Raised when a caller allocates more blocks than are free (a scheduler bug)."""


class KVPool:
    __slots__ = ("capacity", "peak", "used")

    def __init__(self, capacity_blocks: int) -> None:
        if capacity_blocks < 0:
            raise ValueError(f"capacity_blocks must be >= 0, got {capacity_blocks}")
        self.capacity = capacity_blocks
        self.used = 0
        self.peak = 0

    @property
    def free(self) -> int:
        return self.capacity - self.used

    def allocate(self, blocks: int) -> None:
        used = self.used + blocks
        if used > self.capacity:
            raise KVCapacityError(f"allocating {blocks} blocks with {self.free} free")
        self.used = used
        if used > self.peak:
            self.peak = used

    def release(self, blocks: int) -> None:
        used = self.used - blocks
        if used < 0:
            raise KVCapacityError(f"releasing {blocks} blocks with {self.used} used")
        self.used = used


def blocks_for(tokens: int, block_size: int) -> int:
    """Blocks needed to hold `tokens` tokens of KV (ceil division)."""
    return -(-tokens // block_size)
