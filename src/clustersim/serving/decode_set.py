"""The decoding requests of one lane, in O(1) per step (docs/architecture.md).

Decode progress is implicit in the lane's decode-step counter `d`. A request that entered
decode before decode step `d0` with an effective prompt of `P` tokens already in KV (the
prompt, plus earlier output if it was recomputed) reads P + 1 + (x - d0) tokens of context at
decode step x >= d0, writes KV position P + (x - d0) (a new block when that position is a
multiple of the block size, i.e. when x ≡ d0 - P mod block_size), and emits one token. So the
set keeps:
  residue[r]  number of decoding requests whose new-block steps are ≡ r (mod block_size)
  ctx_offset  Σ (P + 1 - d0) over decoding requests; total context at step x = ctx_offset + n·x
and a heap of each request's last decode step.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator

from clustersim.serving.batch import Batch
from clustersim.serving.kv_cache import blocks_for
from clustersim.serving.request_state import RequestState


class DecodeSet:
    """Requests decoding in one lane, their context and block growth, and their last steps."""

    def __init__(self, block_size: int, state: RequestState) -> None:
        self.block_size = block_size
        self.state = state
        self.members: dict[int, None] = {}  # insertion (admission) order
        self.finish_heap: list[tuple[int, int, int]] = []  # (last decode step, rid, version)
        self.residue = [0] * block_size
        self.ctx_offset = 0
        self.d = 0  # decode steps executed so far

    def __len__(self) -> int:
        return len(self.members)

    def new_blocks(self) -> int:
        """Blocks the next decode step allocates (requests whose KV crosses a block)."""
        return self.residue[self.d % self.block_size]

    def fill(self, batch: Batch) -> None:
        """Every decoding request runs one token in `batch` (the lane's next decode step)."""
        n = len(self.members)
        d = self.d
        batch.decode_tokens = n
        batch.decode_ctx_tokens = self.ctx_offset + n * d
        batch.decode_step = d
        batch.num_seqs += n

    def enter(self, rid: int) -> None:
        """The request decodes from the next decode step on."""
        st = self.state
        d0 = self.d
        p = st.effective_prompt[rid]
        st.d0[rid] = d0
        self.members[rid] = None
        self.residue[(d0 - p) % self.block_size] += 1
        self.ctx_offset += p + 1 - d0
        last = d0 + st.output[rid] - st.generated[rid] - 1
        heapq.heappush(self.finish_heap, (last, rid, st.version[rid]))

    def leave(self, rid: int) -> None:
        st = self.state
        p = st.effective_prompt[rid]
        d0 = st.d0[rid]
        del self.members[rid]
        self.residue[(d0 - p) % self.block_size] -= 1
        self.ctx_offset -= p + 1 - d0

    def emitted(self, rid: int) -> int:
        """Tokens the request emitted since it entered decode (one per decode step)."""
        return self.d - self.state.d0[rid]

    def held_blocks(self, rid: int) -> int:
        """KV blocks the request holds: its effective prompt + the tokens it emitted."""
        return blocks_for(self.state.effective_prompt[rid] + self.emitted(rid), self.block_size)

    def finishes_by(self, d: int) -> bool:
        """Whether a request's last decode step may be at most `d` (`finished(d)` may yield;
        a stale entry of a preempted request also answers True)."""
        heap = self.finish_heap
        return bool(heap) and heap[0][0] <= d

    def finished(self, d: int) -> Iterator[tuple[int, int]]:
        """Requests whose last decode step is at most `d`, each taken out of the set before
        it is yielded with the KV tokens it wrote: (rid, written)."""
        heap = self.finish_heap
        st = self.state
        while heap and heap[0][0] <= d:
            _, rid, version = heapq.heappop(heap)
            if version != st.version[rid]:
                continue
            written = st.effective_prompt[rid] + d - st.d0[rid] + 1
            self.leave(rid)
            yield rid, written

    def newest(self) -> int:
        """The most recently admitted decoding request."""
        return next(reversed(self.members))
