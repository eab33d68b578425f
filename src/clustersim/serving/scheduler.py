"""Iteration-level scheduler of one engine lane: continuous batching, chunked prefill,
paged KV blocks and preemption by recompute. Pure policy: no simpy, no clock of its own.

Cost per step is O(prefill chunks + finishing requests), independent of how many sequences
are decoding: decode progress is implicit in a per-lane decode-step counter `d`.

A decoding request entered decode before decode step `d0` with an effective prompt of
`P` tokens already in KV (the prompt, plus earlier output if it was recomputed). At decode step
x >= d0 it reads P + 1 + (x - d0) tokens of context, writes KV position P + (x - d0) (a new
block when that position is a multiple of the block size, i.e. when x ≡ d0 - P mod block_size),
and emits one token. So the lane keeps:
  residue[r]  number of decoding requests whose new-block steps are ≡ r (mod block_size)
  ctx_offset  Σ (P + 1 - d0) over decoding requests; total context at step x = ctx_offset + n·x
and a heap of each request's last decode step.

With `serving.kv_admission: reserve_full` (TensorRT-LLM's GUARANTEED_NO_EVICT capacity
policy) a request is admitted only when blocks for its whole prompt + output are free; they
are reserved at admission and released when it finishes. Nothing is allocated while it runs,
so decode steps allocate nothing and no request is ever preempted.

Disaggregated serving (docs/disaggregation.md) adds two entry points, both O(1):
`reserve_prefilled` takes a decode replica's blocks for a prompt whose KV will be computed
elsewhere (before its prefill starts, as SGLang / Dynamo pre-allocate), and `add_prefilled`
resumes that request in decode once its P tokens of KV have arrived: it enters decode at the
next batch formation exactly as a locally prefilled request would (same residue / context
bookkeeping). A prefill lane with `keep_kv_after_finish` keeps a finished request's blocks
until `release_kept` (its KV is still being sent), and admits a prompt only when all of its
blocks fit beside what the unfinished prefills still need.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable
from math import nan

from clustersim.catalog.engines import serving_engine
from clustersim.config.schema import ServingSpec
from clustersim.serving.kv_cache import KVPool, blocks_for

# Admission leaves this share of a lane's blocks free for running sequences to grow into
# (vLLM's block-manager watermark).
ADMISSION_WATERMARK = 0.01


class RequestState:
    """Per-request mutable state shared by all lanes, indexed by request id.

    Plain Python lists: element access is several times faster than numpy scalars.
    """

    __slots__ = (
        "computed",
        "d0",
        "effective_prompt",
        "finish_s",
        "first_scheduled_s",
        "first_token_s",
        "generated",
        "output",
        "preemptions",
        "prompt",
        "version",
    )

    def __init__(self, prompt: list[int], output: list[int]) -> None:
        n = len(prompt)
        self.prompt = prompt
        self.output = output
        self.effective_prompt = list(prompt)  # tokens to (re)compute in prefill
        self.computed = [0] * n  # prefill tokens computed so far (KV written)
        self.generated = [0] * n  # output tokens emitted so far
        self.d0 = [0] * n  # decode step at which the request entered decode
        self.version = [0] * n  # bumped on preemption: stale heap entries are skipped
        self.preemptions = [0] * n
        self.first_scheduled_s = [nan] * n
        self.first_token_s = [nan] * n
        self.finish_s = [nan] * n


class Batch:
    """One engine step's work. Token counts are per replica (before TP sharding)."""

    __slots__ = (
        "decode_ctx_tokens",
        "decode_step",
        "decode_tokens",
        "num_seqs",
        "prefill",
        "prefill_attn_pairs",
        "prefill_ctx_tokens",
        "prefill_tokens",
    )

    def __init__(self) -> None:
        self.prefill: list[tuple[int, int]] = []  # (request id, chunk tokens)
        self.prefill_tokens = 0
        self.prefill_attn_pairs = 0.0  # causal (query, key) pairs in the prefill chunks
        self.prefill_ctx_tokens = 0  # Σ over chunks of offset + chunk: KV the chunks attend to
        self.decode_tokens = 0
        self.decode_ctx_tokens = 0  # Σ context read by decoding sequences
        self.decode_step = -1  # the lane's decode step index, -1 if no decode this step
        self.num_seqs = 0

    @property
    def tokens(self) -> int:
        return self.prefill_tokens + self.decode_tokens


FinishCallback = Callable[[int, float], None]


class Scheduler:
    """One lane (a vLLM 'virtual engine'): its queue, its running set, its KV pool."""

    def __init__(
        self,
        serving: ServingSpec,
        kv: KVPool,
        state: RequestState,
        on_finish: FinishCallback,
    ) -> None:
        self.block_size = serving.block_size
        self.max_seqs = serving.max_num_seqs
        self.max_tokens = serving.max_num_batched_tokens
        self.chunked = serving.chunked_prefill
        # without chunked prefill: whole prompts join the running decodes (TensorRT-LLM
        # in-flight batching), or run in prefill-only steps (SGLang, vLLM V0)
        self.mixed_whole_prompts = serving_engine(serving).mixed_prefill
        self.reserve_full = serving.kv_admission == "reserve_full"
        self.kv = kv
        self.state = state
        self.on_finish = on_finish
        self.watermark_blocks = int(ADMISSION_WATERMARK * kv.capacity)
        self.waiting: deque[int] = deque()
        self.prefilling: list[int] = []  # admission order
        self.decoding: dict[int, None] = {}  # insertion (admission) order
        self.finish_heap: list[tuple[int, int, int]] = []  # (last decode step, rid, version)
        self.residue = [0] * serving.block_size
        self.ctx_offset = 0
        self.d = 0  # decode steps executed so far
        # disaggregation (decode side): requests holding reserved blocks while their KV is in
        # transit, and those whose KV has landed, entered into decode at the next batch
        self.incoming = 0
        self.arrived: list[int] = []
        # disaggregation (prefill side): keep a finished request's blocks until release_kept
        self.keep_kv_after_finish = False
        self.kept: dict[int, int] = {}  # rid → blocks still held

    # ------------------------------------------------------------------ queries

    @property
    def outstanding(self) -> int:
        return (
            len(self.waiting) + len(self.prefilling) + len(self.decoding)
            + self.incoming + len(self.arrived)
        )

    def has_work(self) -> bool:
        return bool(self.waiting or self.prefilling or self.decoding or self.arrived)

    def fits_ever(self, rid: int) -> bool:
        """Whether the request's full context can ever be held by this lane's KV pool."""
        st = self.state
        return blocks_for(st.prompt[rid] + st.output[rid], self.block_size) <= self.kv.capacity

    # ------------------------------------------------------------------ updates

    def add(self, rid: int) -> None:
        self.waiting.append(rid)

    def reserve_prefilled(self, rid: int) -> bool:
        """Disaggregated decode: take the blocks a request prefilled elsewhere needs on arrival
        (its prompt's KV; with reserve_full its prompt + output), keeping the admission
        watermark; False (nothing taken) when they are not free."""
        st = self.state
        if self.reserve_full:
            need = self._reservation(rid)
        else:
            need = blocks_for(st.effective_prompt[rid], self.block_size)
        reserve = self.watermark_blocks if self.kv.used else 0
        if need > self.kv.free - reserve:
            return False
        self.kv.allocate(need)
        self.incoming += 1
        return True

    def add_prefilled(self, rid: int, now: float) -> None:
        """Disaggregated decode: the request's prompt KV (reserved by reserve_prefilled) has
        arrived and its first token was produced by the prefill pool; it emits that token now
        and enters decode at the next batch formation (a one-token output finishes here)."""
        st = self.state
        self.incoming -= 1
        st.computed[rid] = st.effective_prompt[rid]
        st.generated[rid] = 1
        if st.first_token_s[rid] != st.first_token_s[rid]:  # NaN: the first token
            st.first_token_s[rid] = now
        if st.generated[rid] >= st.output[rid]:
            self.kv.release(self._held_blocks(rid, st.effective_prompt[rid]))
            self._finish(rid, now)
        else:
            self.arrived.append(rid)

    def release_kept(self, rid: int) -> None:
        """Prefill side: give back the blocks of a finished request kept for its KV transfer."""
        self.kv.release(self.kept.pop(rid))

    def next_batch(self, now: float) -> Batch | None:
        """Form the next step's batch, allocating its KV blocks; None when idle."""
        if self.arrived:  # between steps: self.d is the next decode step
            for rid in self.arrived:
                self._enter_decode(rid)
            self.arrived.clear()
        if not (self.waiting or self.prefilling or self.decoding):
            return None
        while True:
            batch = Batch()
            if self.chunked or self.mixed_whole_prompts:
                self._schedule_decode(batch)
                self._schedule_prefill(batch, now, self.max_tokens - batch.decode_tokens)
            else:
                # Without chunked prefill, whole prompts run in prefill-only steps (vLLM V0).
                self._schedule_prefill(batch, now, self.max_tokens)
                if not batch.prefill:
                    self._schedule_decode(batch)
            if batch.num_seqs > 0:
                return batch
            # Nothing could progress: partial prefills hold the blocks they need to grow.
            # (Never with reserve_full: every admitted request holds all it will need.)
            if self.reserve_full or not self._preempt_latest():
                return None

    def complete(self, batch: Batch, now: float) -> None:
        """Apply a finished step: emit tokens, finish requests, move prefills to decode."""
        st = self.state
        if batch.decode_step >= 0:
            self._finish_decoders(batch.decode_step, now)
            self.d = batch.decode_step + 1
        if batch.prefill:
            done = []
            for rid, chunk in batch.prefill:
                st.computed[rid] += chunk
                if st.computed[rid] == st.effective_prompt[rid]:
                    done.append(rid)
            if done:
                finished_prefill = set(done)
                self.prefilling = [r for r in self.prefilling if r not in finished_prefill]
                for rid in done:
                    self._end_prefill(rid, now)

    # ------------------------------------------------------------------ decode

    def _schedule_decode(self, batch: Batch) -> None:
        if not self.decoding:
            return
        d = self.d
        if not self.reserve_full:  # reserve_full: blocks were reserved at admission
            slot = d % self.block_size
            kv = self.kv
            while self.residue[slot] > kv.free:
                if not self._preempt_latest():
                    break
            if not self.decoding:
                return
            kv.allocate(self.residue[slot])
        n = len(self.decoding)
        batch.decode_tokens = n
        batch.decode_ctx_tokens = self.ctx_offset + n * d
        batch.decode_step = d
        batch.num_seqs += n

    def _finish_decoders(self, d: int, now: float) -> None:
        heap = self.finish_heap
        st = self.state
        while heap and heap[0][0] <= d:
            _, rid, version = heapq.heappop(heap)
            if version != st.version[rid]:
                continue
            written = st.effective_prompt[rid] + d - st.d0[rid] + 1
            self._leave_decode(rid)
            self.kv.release(self._held_blocks(rid, written))
            st.generated[rid] = st.output[rid]
            self._finish(rid, now)

    def _enter_decode(self, rid: int) -> None:
        st = self.state
        d0 = self.d
        p = st.effective_prompt[rid]
        st.d0[rid] = d0
        self.decoding[rid] = None
        self.residue[(d0 - p) % self.block_size] += 1
        self.ctx_offset += p + 1 - d0
        last = d0 + st.output[rid] - st.generated[rid] - 1
        heapq.heappush(self.finish_heap, (last, rid, st.version[rid]))

    def _leave_decode(self, rid: int) -> None:
        st = self.state
        p = st.effective_prompt[rid]
        d0 = st.d0[rid]
        del self.decoding[rid]
        self.residue[(d0 - p) % self.block_size] -= 1
        self.ctx_offset -= p + 1 - d0

    # ------------------------------------------------------------------ prefill

    def _schedule_prefill(self, batch: Batch, now: float, budget: int) -> None:
        st = self.state
        kv = self.kv
        bs = self.block_size
        for rid in self.prefilling:
            if budget <= 0:
                break
            chunk = self._fit_chunk(rid, budget)
            if chunk > 0:
                self._add_chunk(batch, rid, chunk)
                budget -= chunk
        seqs = len(self.decoding) + len(self.prefilling)  # running sequences
        while self.waiting and budget > 0 and seqs < self.max_seqs:
            rid = self.waiting[0]
            remaining = st.effective_prompt[rid]
            if self.reserve_full:
                need = self._reservation(rid)
                if need > kv.free:
                    break  # FCFS: the head waits for a finishing request's blocks
                chunk = min(remaining, budget) if self.chunked else remaining
                if not self.chunked and remaining > budget and batch.prefill:
                    break
                kv.allocate(need)
                self._admit(batch, rid, chunk, now)
                budget -= chunk
                seqs += 1
                continue
            reserve = self.watermark_blocks if (self.decoding or self.prefilling) else 0
            spare = kv.free - reserve  # blocks this admission may take
            if self.keep_kv_after_finish:
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
            self._admit(batch, rid, chunk, now)
            budget -= chunk
            seqs += 1

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

    def _reservation(self, rid: int) -> int:
        """reserve_full: blocks for the request's prompt + output tokens (a constant per
        request: nothing is ever preempted in this mode, so nothing is recomputed)."""
        st = self.state
        return blocks_for(st.prompt[rid] + st.output[rid], self.block_size)

    def _held_blocks(self, rid: int, written: int) -> int:
        """Blocks a finishing request gives back: its reservation (reserve_full) or the
        blocks its `written` KV tokens occupy (incremental)."""
        if self.reserve_full:
            return self._reservation(rid)
        return blocks_for(written, self.block_size)

    def _fit_chunk(self, rid: int, budget: int) -> int:
        """Largest chunk of the request's remaining prefill that fits budget and free KV."""
        st = self.state
        bs = self.block_size
        c = st.computed[rid]
        chunk = st.effective_prompt[rid] - c
        if self.chunked:
            chunk = min(chunk, budget)
        if self.reserve_full:
            return max(chunk, 0)  # its blocks were reserved at admission
        held = blocks_for(c, bs)
        room = (held + self.kv.free) * bs - c  # tokens that fit in held + free blocks
        if chunk > room:
            chunk = room if self.chunked else 0
        return max(chunk, 0)

    def _add_chunk(self, batch: Batch, rid: int, chunk: int) -> None:
        st = self.state
        c = st.computed[rid]
        bs = self.block_size
        if not self.reserve_full:
            self.kv.allocate(blocks_for(c + chunk, bs) - blocks_for(c, bs))
        batch.prefill.append((rid, chunk))
        batch.prefill_tokens += chunk
        batch.prefill_attn_pairs += chunk * c + chunk * (chunk + 1) / 2
        batch.prefill_ctx_tokens += c + chunk
        batch.num_seqs += 1

    def _end_prefill(self, rid: int, now: float) -> None:
        st = self.state
        st.generated[rid] += 1
        if st.first_token_s[rid] != st.first_token_s[rid]:  # NaN: the first token
            st.first_token_s[rid] = now
        if st.generated[rid] >= st.output[rid]:
            held = self._held_blocks(rid, st.effective_prompt[rid])
            if self.keep_kv_after_finish:
                self.kept[rid] = held
            else:
                self.kv.release(held)
            self._finish(rid, now)
        else:
            self._enter_decode(rid)

    # ------------------------------------------------------------------ preemption

    def _preempt_latest(self) -> bool:
        """Preempt (recompute) the most recently admitted running request; False if none.

        Partial prefills go first (they are the newest and hold the fewest blocks)."""
        st = self.state
        bs = self.block_size
        if self.prefilling:  # the newest admissions sit at the tail of the running list
            rid = self.prefilling.pop()
            self.kv.release(blocks_for(st.computed[rid], bs))
        elif self.decoding:
            rid = next(reversed(self.decoding))
            done = self.d - st.d0[rid]  # decode steps it completed
            written = st.effective_prompt[rid] + done
            self._leave_decode(rid)
            st.generated[rid] += done
            self.kv.release(blocks_for(written, bs))
        else:
            return False
        st.version[rid] += 1
        st.preemptions[rid] += 1
        st.computed[rid] = 0
        st.effective_prompt[rid] = st.prompt[rid] + st.generated[rid]
        self.waiting.appendleft(rid)
        return True

    def _finish(self, rid: int, now: float) -> None:
        self.state.finish_s[rid] = now
        self.on_finish(rid, now)
