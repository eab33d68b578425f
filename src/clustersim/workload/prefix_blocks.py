"""Per-request prefix-block ids as one ragged int64 column (flat ids + offsets).

Request j's prompt is cut into blocks of `block_tokens` tokens; its ids are
``ids[offsets[j]:offsets[j + 1]]``, one per block, the last one possibly for a partial block.
An id names a block *and its whole prefix*: two requests whose first k ids agree share the KV of
their first k · block_tokens tokens (the Mooncake trace convention; a prefix cache keyed by id
sequences also works with ids that only name the block's own content).

Answer blocks (optional, `answer`): the ids of the full blocks a request's answer completes,
i.e. of blocks ⌊P / block_tokens⌋, … of its prompt + answer tokens (P prompt tokens), as the
request's next turn names them. An engine that keeps a finished request's KV (vLLM's automatic
prefix caching, SGLang's RadixAttention) publishes those blocks under these ids, so the next
turn, whose prompt extends prompt + answer, finds them. Synthetic sessions know them exactly
(workload/sessions.py); for a trace, `successor_answers` reads them off the request's next turn.
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
    # ids of the full blocks each request's answer completes (module docstring), or None
    answer: PrefixBlocks | None = None

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
        if self.answer is not None and len(self.answer) != len(offsets) - 1:
            raise ValueError(f"answer has {len(self.answer)} rows for {len(offsets) - 1} requests")

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
        """The requests `rows` (any order, repeats allowed), each one's ids (answer ids
        included) plus its `id_shift` (a scalar, or one per row), vectorised."""
        idx = np.asarray(rows, dtype=np.int64)
        answer = None if self.answer is None else self.answer.take(idx, id_shift)
        counts = np.diff(self.offsets)[idx]
        offsets = np.zeros(len(idx) + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        gather = np.repeat(self.offsets[idx] - offsets[:-1], counts) + np.arange(
            offsets[-1], dtype=np.int64
        )
        shift = np.broadcast_to(np.asarray(id_shift, dtype=np.int64), idx.shape)
        ids = self.ids[gather] + np.repeat(shift, counts)
        return PrefixBlocks(ids, offsets, self.block_tokens, answer)

    def with_answers(self, answer: PrefixBlocks) -> PrefixBlocks:
        """The same prompt ids with `answer` as the answer blocks' ids."""
        return PrefixBlocks(self.ids, self.offsets, self.block_tokens, answer)


def successor_answers(prefix: PrefixBlocks, prompt: I64, output: I64) -> PrefixBlocks:
    """Answer-block ids of a trace's requests (rows in arrival order), read off each one's
    next turn; `prompt` and `output` in tokens, one per row.

    Request j with P prompt tokens, O answer tokens and f = ⌊P / bt⌋ full prompt blocks holds
    the KV of P + O − 1 tokens when it finishes (the last answer token's is never written), so
    its answer completes blocks f … A − 1, A = ⌊(P + O − 1) / bt⌋. Their ids are those of its
    *successor*: the first later request whose ids extend j's f full-prompt ids with more full
    blocks of its own and whose prompt holds j's whole exchange (≥ P + O tokens), as a chat
    service's next turn does. Nothing is inferred (no answer ids) when j has no full prompt
    block, lists fewer ids than its full blocks, or its last full block was already sent by an
    earlier request: then the chain is not j's own (a shared system prompt, a repeated
    request), and a later request extending it need not continue j's answer.

    Ids name their whole prefix (module docstring), so "extends j's first f ids" is "has j's
    f-th id at position f − 1"; one backward pass, O(total ids).
    """
    bt = prefix.block_tokens
    ids = prefix.ids.tolist()
    offsets = prefix.offsets.tolist()
    p_tok, o_tok = prompt.tolist(), output.tolist()
    counts = [offsets[j + 1] - offsets[j] for j in range(len(p_tok))]
    # full prompt blocks with ids (0 when the row lists fewer ids than its full blocks)
    full = [p // bt if c >= p // bt else 0 for p, c in zip(p_tok, counts, strict=True)]
    seen_before = _ids_sent_before(ids, offsets, full)
    nearest: dict[int, int] = {}  # id → nearest later row with a full block after it
    rows: list[list[int]] = [[] for _ in p_tok]
    for j in range(len(p_tok) - 1, -1, -1):
        f, start = full[j], offsets[j]
        if f and not seen_before[j]:
            s = nearest.get(ids[start + f - 1])
            if s is not None and p_tok[s] >= p_tok[j] + o_tok[j]:
                end = min((p_tok[j] + o_tok[j] - 1) // bt, full[s])
                rows[j] = ids[offsets[s] + f : offsets[s] + end]
        for i in range(start, start + f - 1):
            nearest[ids[i]] = j
    return PrefixBlocks.from_lists(rows, bt)


def _ids_sent_before(ids: list[int], offsets: list[int], full: list[int]) -> list[bool]:
    """Per row: whether its last full-block id appeared in an earlier row (False without
    full blocks)."""
    seen: set[int] = set()
    out = []
    for j, f in enumerate(full):
        start = offsets[j]
        out.append(bool(f) and ids[start + f - 1] in seen)
        seen.update(ids[start : offsets[j + 1]])
    return out
