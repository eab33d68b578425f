"""Admission and KV accounting of one lane: what a request holds and when it may take more.

Incremental (the default): a request holds the blocks its written KV occupies; admission
leaves ADMISSION_WATERMARK of the lane's blocks free for running sequences to grow into.
With `serving.kv_admission: reserve_full` (TensorRT-LLM's GUARANTEED_NO_EVICT capacity
policy) a request is admitted only when blocks for its whole prompt + output are free; they
are reserved at admission and released when it finishes, so nothing is allocated while it
runs and nothing is ever preempted. With prefix caching too (TensorRT-LLM's
GUARANTEED_NO_EVICT with KV-cache reuse) a request pins its cached prefix and reserves only
the rest: its reservation less the prefix's blocks, so a shared cached block is counted once
(by the cache) however many requests use it; the blocks it publishes later move from its
reservation to the cache.

A prefill lane of a disaggregated run (`keep_kv_after_finish`) keeps a finished request's
blocks until its KV has been sent (`release_kept`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from clustersim.config.schema import ServingSpec
from clustersim.serving.kv_cache import KVPool, blocks_for
from clustersim.serving.request_state import RequestState

if TYPE_CHECKING:  # (prefix caching's modules load for runs that use it)
    from clustersim.serving.prefix_cache import PrefixCache
    from clustersim.serving.prefix_lane import LanePrefix

# Admission leaves this share of a lane's blocks free for running sequences to grow into
# (vLLM's block-manager watermark).
ADMISSION_WATERMARK = 0.01


class KVAdmission:
    """The KV rules of one lane: reservations, blocks held, the admission watermark."""

    def __init__(self, serving: ServingSpec, kv: KVPool, state: RequestState) -> None:
        self.block_size = serving.block_size
        self.reserve_full = serving.kv_admission == "reserve_full"
        self.kv: KVPool | PrefixCache = kv  # a PrefixCache with prefix caching
        self.state = state
        self.watermark_blocks = int(ADMISSION_WATERMARK * kv.capacity)
        # speculative decoding: KV slots written beyond a request's tokens by its last step
        spec = serving.speculative
        self.lookahead = 0 if spec is None else spec.num_tokens
        # disaggregation (prefill side): keep a finished request's blocks until release_kept
        self.keep_kv_after_finish = False
        self.kept: dict[int, int] = {}  # rid → blocks still held
        self.prefix: LanePrefix | None = None  # prefix caching (serving/prefix_lane.py)

    def fits_ever(self, rid: int) -> bool:
        """Whether the request's full context can ever be held by this lane's KV pool."""
        st = self.state
        need = st.prompt[rid] + st.output[rid] + self.lookahead
        return blocks_for(need, self.block_size) <= self.kv.capacity

    def reservation(self, rid: int) -> int:
        """reserve_full: blocks for the request's prompt + output tokens (+ the speculative
        lookahead slots; a constant per request: nothing is ever preempted in this mode, so
        nothing is recomputed)."""
        st = self.state
        return blocks_for(st.prompt[rid] + st.output[rid] + self.lookahead, self.block_size)

    def held_blocks(self, rid: int, written: int) -> int:
        """Blocks a finishing request gives back: its reservation (reserve_full) or the
        blocks its `written` KV tokens occupy (incremental); with prefix caching, less the
        blocks of its shared prefix (they stay with the cache)."""
        if self.reserve_full:
            shared = 0 if self.prefix is None else self.prefix.shared.get(rid, 0)
            return self.reservation(rid) - shared
        if self.prefix is not None:  # its shared prefix stays with the cache
            return self.prefix.private_blocks(rid, written)
        return blocks_for(written, self.block_size)

    def reservation_fits(self, rid: int) -> int | None:
        """reserve_full: the prompt tokens the request's cached prefix covers when pinning
        that prefix and reserving the rest fit the free blocks now; None when they do not."""
        need, reused = self.reservation(rid), 0
        if self.prefix is not None:
            m = self.prefix.probe(rid)
            need += m.cost_blocks - m.blocks * self.prefix.node_blocks
            reused = m.blocks * self.prefix.bt
        return reused if need <= self.kv.free else None

    def reserve(self, rid: int) -> int:
        """reserve_full (after `reservation_fits`): pin the cached prefix and reserve the
        rest of the request's blocks; returns the prompt tokens prefill skips."""
        if self.prefix is None:
            self.kv.allocate(self.reservation(rid))
            return 0
        cached = self.prefix.acquire(rid)
        self.kv.allocate(self.reservation(rid) - self.prefix.shared[rid])
        return cached

    def reserve_prefilled(self, rid: int) -> bool:
        """Take the blocks a request prefilled elsewhere needs on arrival (its prompt's KV;
        with reserve_full its prompt + output), keeping the admission watermark; False
        (nothing taken) when they are not free."""
        need = self.prefilled_blocks(rid)
        reserve = self.watermark_blocks if self.kv.used else 0
        if need > self.kv.free - reserve:
            return False
        self.kv.allocate(need)
        return True

    def prefilled_blocks(self, rid: int) -> int:
        """Blocks `reserve_prefilled` takes for the request."""
        if self.reserve_full:
            return self.reservation(rid)
        return blocks_for(self.state.effective_prompt[rid], self.block_size)

    def finish_prefill(self, rid: int) -> None:
        """A request finished in prefill: release its blocks, or keep them for its KV
        transfer (keep_kv_after_finish)."""
        held = self.held_blocks(rid, self.state.effective_prompt[rid])
        if self.keep_kv_after_finish:
            self.kept[rid] = held
        else:
            self.kv.release(held)

    def release_kept(self, rid: int) -> None:
        """Give back the blocks of a finished request kept for its KV transfer."""
        self.kv.release(self.kept.pop(rid))
        if self.prefix is not None:
            self.prefix.release(rid)
