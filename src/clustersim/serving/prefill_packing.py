"""Chunked-prefill packing of one lane: the waiting queue and the running prefills, packed
into what a step's token budget, `max_num_seqs` and the free KV blocks leave.

Running chunked prefills go first (admission order), then waiting requests are admitted
FCFS. Without chunked prefill a whole prompt must fit the step unless it is the step's only
one. A prefill-only lane of a disaggregated run admits a prompt only when all of its blocks
fit beside what the unfinished prefills still need.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from clustersim.serving.admission import KVAdmission
from clustersim.serving.batch import Batch
from clustersim.serving.kv_cache import blocks_for
from clustersim.serving.request_state import RequestState

if TYPE_CHECKING:  # (prefix caching's modules load for runs that use it)
    from clustersim.serving.prefix_lane import LanePrefix


class PrefillQueue:
    """Requests waiting for their first chunk and those part-way through prefill."""

    def __init__(
        self, admission: KVAdmission, state: RequestState, chunked: bool, max_seqs: int
    ) -> None:
        self.admission = admission
        self.kv = admission.kv
        self.block_size = admission.block_size
        self.state = state
        self.chunked = chunked
        self.max_seqs = max_seqs
        self.waiting: deque[int] = deque()
        self.prefilling: list[int] = []  # admission order
        self.prefix: LanePrefix | None = None  # prefix caching: admit only the uncached suffix

    def pack(self, batch: Batch, now: float, budget: int, decoding: int) -> None:
        """Add prefill chunks to `batch` within `budget` tokens, allocating their KV blocks;
        `decoding`: requests decoding in the lane (they count against max_num_seqs)."""
        st = self.state
        kv = self.kv
        bs = self.block_size
        adm = self.admission
        for rid in self.prefilling:
            if budget <= 0:
                break
            chunk = self._fit_chunk(rid, budget)
            if chunk > 0:
                self._add_chunk(batch, rid, chunk)
                budget -= chunk
        seqs = decoding + len(self.prefilling)  # running sequences
        while self.waiting and budget > 0 and seqs < self.max_seqs:
            rid = self.waiting[0]
            remaining = st.effective_prompt[rid]
            if adm.reserve_full:
                reused = adm.reservation_fits(rid)
                if reused is None:
                    break  # FCFS: the head waits for a finishing request's blocks
                remaining -= reused  # prefix caching: prefill computes the suffix
                chunk = min(remaining, budget) if self.chunked else remaining
                if not self.chunked and remaining > budget and batch.prefill:
                    break
                cached = adm.reserve(rid)
                if self.prefix is not None:
                    st.computed[rid] = cached  # prefill resumes after the prefix
                self._admit(batch, rid, chunk, now)
                budget -= chunk
                seqs += 1
                continue
            reserve = adm.watermark_blocks if (decoding or self.prefilling) else 0
            spare = kv.free - reserve  # blocks this admission may take
            if self.prefix is not None:
                match = self.prefix.probe(rid)
                spare -= match.cost_blocks  # cached blocks it pins leave the free count
                remaining -= match.blocks * self.prefix.bt  # prefill computes the suffix
            if adm.keep_kv_after_finish:
                # A prefill-only lane keeps each prompt's KV until it is sent, so a prompt is
                # admitted only when all of it fits beside what unfinished prefills still need
                # (SGLang's prefill adder budgets the whole input): no chunk is stranded.
                spare -= self._blocks_still_needed(batch)
                if blocks_for(remaining, bs) > spare:
                    break
            if self.chunked:
                chunk = min(remaining, budget, spare * bs)
            else:
                if remaining > budget and batch.prefill:
                    break  # a whole prompt must fit the step unless it is the step's only one
                chunk = remaining if blocks_for(remaining, bs) <= spare else 0
            if chunk <= 0:
                break
            if self.prefix is not None:
                st.computed[rid] = self.prefix.acquire(rid)  # prefill resumes after the prefix
            self._admit(batch, rid, chunk, now)
            budget -= chunk
            seqs += 1

    def advance(self, batch: Batch) -> list[int]:
        """Book `batch`'s computed chunks; the requests whose prefill is now complete (taken
        out of the running prefills), in the batch's order."""
        computed, prompt = self.state.computed, self.state.effective_prompt
        done = []
        for rid, chunk in batch.prefill:
            c = computed[rid] = computed[rid] + chunk
            if c == prompt[rid]:
                done.append(rid)
        if len(done) == 1:
            self.prefilling.remove(done[0])  # (ids are unique: the same list as filtering)
        elif done:
            finished_prefill = set(done)
            self.prefilling = [r for r in self.prefilling if r not in finished_prefill]
        return done

    def _blocks_still_needed(self, batch: Batch) -> int:
        """Blocks the running prefills will still allocate after this step's chunks."""
        bs = self.block_size
        st = self.state
        scheduled = dict(batch.prefill)  # rid → tokens scheduled in this step
        return sum(
            blocks_for(st.effective_prompt[r], bs)
            - blocks_for(st.computed[r] + scheduled.get(r, 0), bs)
            for r in self.prefilling
        )

    def _admit(self, batch: Batch, rid: int, chunk: int, now: float) -> None:
        """Move the head of the waiting queue into prefill with its first chunk."""
        st = self.state
        self.waiting.popleft()
        self.prefilling.append(rid)
        if st.first_scheduled_s[rid] != st.first_scheduled_s[rid]:  # NaN: first time
            st.first_scheduled_s[rid] = now
        self._add_chunk(batch, rid, chunk)

    def _fit_chunk(self, rid: int, budget: int) -> int:
        """Largest chunk of the request's remaining prefill that fits budget and free KV."""
        st = self.state
        bs = self.block_size
        c = st.computed[rid]
        chunk = st.effective_prompt[rid] - c
        if self.chunked:
            chunk = min(chunk, budget)
        if self.admission.reserve_full:
            return max(chunk, 0)  # its blocks were reserved at admission
        held = blocks_for(c, bs)
        room = (held + self.kv.free) * bs - c  # tokens that fit in held + free blocks
        if chunk > room:
            chunk = room if self.chunked else 0
        return max(chunk, 0)

    def _add_chunk(self, batch: Batch, rid: int, chunk: int) -> None:
        c = self.state.computed[rid]
        if not self.admission.reserve_full:
            bs = self.block_size  # blocks_for inline: -(-tokens // bs)
            self.kv.allocate(-(-(c + chunk) // bs) + (-c // bs))
        batch.prefill.append((rid, chunk))
        batch.prefill_tokens += chunk
        batch.prefill_attn_pairs += chunk * c + chunk * (chunk + 1) / 2
        batch.prefill_ctx_tokens += c + chunk
        batch.num_seqs += 1
