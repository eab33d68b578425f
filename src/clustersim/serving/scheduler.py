"""Iteration-level scheduler of one engine lane: continuous batching, chunked prefill,
paged KV blocks and preemption by recompute. Pure policy: no simpy, no clock of its own.

Cost per step is O(prefill chunks + finishing requests), independent of how many sequences
are decoding (serving/decode_set.py). The lane's parts, one module each:
- serving/admission.py        admission and KV accounting (watermark, reserve_full, kept KV)
- serving/prefill_packing.py  the waiting queue and running prefills packed into a step
- serving/decode_set.py       the decoding requests, their context and block growth
- serving/preemption.py       preemption by recompute when blocks run out

Disaggregated serving (docs/disaggregation.md) adds two entry points, both O(1):
`reserve_prefilled` takes a decode replica's blocks for a prompt whose KV will be computed
elsewhere (before its prefill starts, as SGLang / Dynamo pre-allocate), and `add_prefilled`
resumes that request in decode once its P tokens of KV have arrived: it enters decode at the
next batch formation exactly as a locally prefilled request would (same residue / context
bookkeeping). A prefill lane with `admission.keep_kv_after_finish` keeps a finished request's
blocks until `release_kept` (its KV is still being sent).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from clustersim.catalog.engines import serving_engine
from clustersim.config.schema import ServingSpec
from clustersim.serving.admission import KVAdmission
from clustersim.serving.batch import Batch
from clustersim.serving.decode_set import DecodeSet
from clustersim.serving.kv_cache import KVPool
from clustersim.serving.preemption import preempt_latest
from clustersim.serving.prefill_packing import PrefillQueue
from clustersim.serving.request_state import RequestState

if TYPE_CHECKING:  # (prefix caching's and speculative decoding's modules: runs using them)
    from clustersim.serving.prefix_cache import PrefixCache
    from clustersim.serving.prefix_lane import LanePrefix
    from clustersim.serving.speculative_decode import SpeculativeDecodeSet, SpeculativeDecoding

FinishCallback = Callable[[int, float], None]


def no_leap() -> None:
    """The default `Scheduler.interrupt`: no decode leap to cut."""


class Scheduler:
    """One lane (a vLLM 'virtual engine'): its queue, its running set, its KV pool."""

    def __init__(
        self,
        serving: ServingSpec,
        kv: KVPool,
        state: RequestState,
        on_finish: FinishCallback,
        speculative: SpeculativeDecoding | None = None,
    ) -> None:
        self.max_tokens = serving.max_num_batched_tokens
        self.chunked = serving.chunked_prefill
        # without chunked prefill: whole prompts join the running decodes (TensorRT-LLM
        # in-flight batching), or run in prefill-only steps (SGLang, vLLM V0)
        self.mixed_whole_prompts = serving_engine(serving).mixed_prefill
        self.kv: KVPool | PrefixCache = kv  # a PrefixCache with prefix caching
        self.state = state
        self.on_finish = on_finish
        self.admission = KVAdmission(serving, kv, state)
        self.prefills = PrefillQueue(self.admission, state, self.chunked, serving.max_num_seqs)
        self.decodes: DecodeSet | SpeculativeDecodeSet = DecodeSet(serving.block_size, state)
        if speculative is not None:
            from clustersim.serving.speculative_decode import SpeculativeDecodeSet

            self.decodes = SpeculativeDecodeSet(serving.block_size, state, speculative)
        # disaggregation (decode side): requests holding reserved blocks while their KV is in
        # transit, and those whose KV has landed, entered into decode at the next batch
        self.incoming = 0
        self.arrived: list[int] = []
        # called before any change from outside the lane: cuts a decode leap in progress
        # (serving/decode_leap.py) so that the change lands at the right step boundary
        self.interrupt: Callable[[], None] = no_leap
        self.prefix: LanePrefix | None = None  # prefix caching: use_prefix_cache

    def use_prefix_cache(self, prefix: LanePrefix) -> None:
        """Serve from a prefix cache: its PrefixCache becomes the lane's KV pool (before any
        request arrives; serving/prefix_lane.py)."""
        self.prefix = prefix
        self.kv = self.admission.kv = self.prefills.kv = prefix.cache
        self.admission.prefix = self.prefills.prefix = prefix

    # ------------------------------------------------------------------ queries

    @property
    def outstanding(self) -> int:
        p = self.prefills
        return (
            len(p.waiting)
            + len(p.prefilling)
            + len(self.decodes.members)
            + self.incoming
            + len(self.arrived)
        )

    def has_work(self) -> bool:
        p = self.prefills
        return bool(p.waiting or p.prefilling or self.decodes.members or self.arrived)

    def fits_ever(self, rid: int) -> bool:
        """Whether the request's full context can ever be held by this lane's KV pool."""
        return self.admission.fits_ever(rid)

    # ------------------------------------------------------------------ updates

    def add(self, rid: int) -> None:
        self.interrupt()
        self.prefills.waiting.append(rid)
        if self.prefix is not None:
            self.prefix.queued_tokens += self.state.effective_prompt[rid]

    def reserve_prefilled(self, rid: int) -> bool:
        """Disaggregated decode: take the blocks a request prefilled elsewhere needs on arrival
        (KVAdmission.reserve_prefilled); False (nothing taken) when they are not free."""
        self.interrupt()
        if not self.admission.reserve_prefilled(rid):
            return False
        self.incoming += 1
        return True

    def cancel_prefilled(self, rid: int) -> None:
        """Disaggregated decode: give back a reservation whose KV will never arrive (its
        prefill unit was lost, sim/pool_health.py)."""
        self.interrupt()
        self.incoming -= 1
        self.kv.release(self.admission.prefilled_blocks(rid))

    def add_prefilled(self, rid: int, now: float) -> None:
        """Disaggregated decode: the request's prompt KV (reserved by reserve_prefilled) has
        arrived and its first token was produced by the prefill pool; it emits that token now
        and enters decode at the next batch formation (a one-token output finishes here)."""
        self.interrupt()
        st = self.state
        self.incoming -= 1
        st.computed[rid] = st.effective_prompt[rid]
        st.generated[rid] = 1
        if st.first_token_s[rid] != st.first_token_s[rid]:  # NaN: the first token
            st.first_token_s[rid] = now
        if st.generated[rid] >= st.output[rid]:
            self.kv.release(self.admission.held_blocks(rid, st.effective_prompt[rid]))
            self._finish(rid, now)
        else:
            self.arrived.append(rid)

    def release_kept(self, rid: int) -> None:
        """Prefill side: give back the blocks of a finished request kept for its KV transfer."""
        self.interrupt()
        self.admission.release_kept(rid)

    def next_batch(self, now: float) -> Batch | None:
        """Form the next step's batch, allocating its KV blocks; None when idle."""
        decodes, prefills = self.decodes, self.prefills
        if self.arrived:  # between steps: decodes.d is the next decode step
            for rid in self.arrived:
                decodes.enter(rid)
            self.arrived.clear()
        if not (prefills.waiting or prefills.prefilling or decodes.members):
            return None
        while True:
            batch = Batch()
            if self.chunked or self.mixed_whole_prompts:
                self._schedule_decode(batch)
                if prefills.waiting or prefills.prefilling:  # (pack adds nothing otherwise)
                    prefills.pack(batch, now, self.max_tokens - batch.decode_tokens, len(decodes))
            else:
                # Without chunked prefill, whole prompts run in prefill-only steps (vLLM V0).
                prefills.pack(batch, now, self.max_tokens, len(decodes))
                if not batch.prefill:
                    self._schedule_decode(batch)
            if batch.num_seqs > 0:
                return batch
            # Nothing could progress: partial prefills hold the blocks they need to grow.
            # (Never with reserve_full: every admitted request holds all it will need.)
            if self.admission.reserve_full or not self._preempt_latest():
                return None

    def complete(self, batch: Batch, now: float) -> None:
        """Apply a finished step: emit tokens, finish requests, move prefills to decode."""
        d = batch.decode_step
        if d >= 0:
            decodes = self.decodes
            # (a speculative step's emissions are random: it always applies them)
            if not isinstance(decodes, DecodeSet) or decodes.finishes_by(d):
                self._finish_decoders(d, now)
            decodes.d = d + 1
        if batch.prefill:
            for rid in self.prefills.advance(batch):
                self._end_prefill(rid, now)

    # ------------------------------------------------------------------ steps

    def _schedule_decode(self, batch: Batch) -> None:
        decodes = self.decodes
        if not decodes.members:
            return
        if not self.admission.reserve_full:  # reserve_full: blocks reserved at admission
            kv = self.kv
            need = decodes.new_blocks()
            while need > kv.free:
                if not self._preempt_latest():
                    break
                need = decodes.new_blocks()
            if not decodes.members:
                return
            if need:  # (allocating 0 blocks changes nothing)
                kv.allocate(need)
        decodes.fill(batch)

    def _finish_decoders(self, d: int, now: float) -> None:
        st, kv, admission = self.state, self.kv, self.admission
        plain = not admission.reserve_full and admission.prefix is None
        bs = admission.block_size
        for rid, written in self.decodes.finished(d):
            if self.prefix is not None:  # its answer's full blocks stay cached
                self.prefix.publish_answer(rid, self.prefix.accepted_kv_tokens(rid))
            # held_blocks: a plain lane gives back the blocks its written KV occupies
            kv.release(-(-written // bs) if plain else admission.held_blocks(rid, written))
            st.generated[rid] = st.output[rid]
            self._finish(rid, now)

    def _end_prefill(self, rid: int, now: float) -> None:
        st = self.state
        if self.prefix is not None:
            self.prefix.publish(rid)
        st.generated[rid] += 1
        if st.first_token_s[rid] != st.first_token_s[rid]:  # NaN: the first token
            st.first_token_s[rid] = now
        if st.generated[rid] >= st.output[rid]:
            self.admission.finish_prefill(rid)
            self._finish(rid, now)
        else:
            self.decodes.enter(rid)

    def _preempt_latest(self) -> bool:
        return preempt_latest(self.prefills, self.decodes, self.kv, self.state, self.prefix)

    def _finish(self, rid: int, now: float) -> None:
        if self.prefix is not None and rid not in self.admission.kept:
            self.prefix.release(rid)  # a kept request unpins when its KV is sent
        self.state.finish_s[rid] = now
        self.on_finish(rid, now)


def scheduler_requests(sched: Scheduler) -> list[int]:
    """Request ids a lane holds (waiting, prefilling, decoding, KV arrived), in that order;
    KV reserved for requests still in transit (disaggregation) is not counted."""
    p = sched.prefills
    return [*p.waiting, *p.prefilling, *sched.decodes.members, *sched.arrived]
