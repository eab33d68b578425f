"""Per-request prefix-block ids as one ragged int64 column (flat ids + offsets).

Request j's prompt is cut into blocks of `block_tokens` tokens; its ids are
``ids[offsets[j]:offsets[j + 1]]``, one per block, the last one possibly for a partial block.
An id names a block *and its whole prefix*: two requests whose first k ids agree share the KV of
their first k · block_tokens tokens (the Mooncake trace convention; a prefix cache keyed by id
sequences also works with ids that only name the block's own content).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

I64 = npt.NDArray[np.int64]


def _frozen(a: I64) -> I64:
    if a.flags.writeable:
        a = a.view()
        a.flags.writeable = False
    return a


@dataclass(frozen=True, eq=False)
class PrefixBlocks:
    """Ragged prefix-block ids of n requests (read-only arrays)."""

    ids: I64  # int64[total], every request's block ids, request after request
    offsets: I64  # int64[n + 1], offsets[0] == 0, non-decreasing, offsets[-1] == total
    block_tokens: int  # tokens per block

    def __post_init__(self) -> None:
        ids = np.asarray(self.ids, dtype=np.int64)
        offsets = np.asarray(self.offsets, dtype=np.int64)
        if self.block_tokens < 1:
            raise ValueError(f"block_tokens must be >= 1, got {self.block_tokens}")
        if ids.ndim != 1 or offsets.ndim != 1 or len(offsets) < 1:
            raise ValueError("ids and offsets must be 1-D and offsets non-empty")
        if offsets[0] != 0 or offsets[-1] != len(ids) or (np.diff(offsets) < 0).any():
            raise ValueError("offsets must start at 0, never decrease and end at len(ids)")
        object.__setattr__(self, "ids", _frozen(ids))
        object.__setattr__(self, "offsets", _frozen(offsets))

    @classmethod
    def from_lists(cls, rows: Sequence[Sequence[int]], block_tokens: int) -> PrefixBlocks:
        """From one id list per request."""
        counts = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
        offsets = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        flat = np.fromiter((h for r in rows for h in r), dtype=np.int64, count=int(offsets[-1]))
        return cls(flat, offsets, block_tokens)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def counts(self) -> I64:
        """Blocks per request, int64[n]."""
        return np.diff(self.offsets)

    def row(self, j: int) -> I64:
        """Request j's block ids (a read-only view)."""
        return self.ids[self.offsets[j] : self.offsets[j + 1]]

    def take(self, rows: npt.ArrayLike, id_shift: npt.ArrayLike = 0) -> PrefixBlocks:
        """The requests `rows` (any order, repeats allowed), each one's ids plus its
        `id_shift` (a scalar, or one per row), vectorised."""
        idx = np.asarray(rows, dtype=np.int64)
        counts = np.diff(self.offsets)[idx]
        offsets = np.zeros(len(idx) + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        gather = np.repeat(self.offsets[idx] - offsets[:-1], counts) + np.arange(
            offsets[-1], dtype=np.int64
        )
        shift = np.broadcast_to(np.asarray(id_shift, dtype=np.int64), idx.shape)
        ids = self.ids[gather] + np.repeat(shift, counts)
        return PrefixBlocks(ids, offsets, self.block_tokens)
