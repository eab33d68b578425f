"""Prefix caching in one scheduler lane: which of a request's prompt blocks it reuses, what it
pins, what it publishes (the lane's PrefixCache replaces its KV pool; serving/prefix_cache.py).

Units. Prefix blocks hold `bt` tokens (the workload's, e.g. 512), a whole number
`node_blocks` of the lane's paged-KV blocks (`block_size` tokens). Only *full* prompt blocks are
cached (as vLLM), and a request reuses at most ⌊(P − 1) / bt⌋ of them for an effective prompt
of P tokens, so its last token is always computed (its logits start decoding). The reused
prefix is therefore block aligned: `cached = u · bt` tokens in `u · node_blocks` shared pool
blocks, and every token a request writes after it lands in private blocks.

Per request (invariant while it runs in the lane):
    shared[r]  pool blocks of the prefix it pins (reused at admission, then its own full
               prompt blocks once published at the end of prefill, then the full blocks its
               answer completed once published at its finish);
    private    blocks_for(written, block_size) − shared[r], counted in the cache's `used`.
"""

from __future__ import annotations

from clustersim.serving.kv_cache import blocks_for
from clustersim.serving.prefix_cache import PrefixCache, PrefixMatch
from clustersim.serving.request_state import RequestState
from clustersim.workload.prefix_blocks import PrefixBlocks


class PrefixRecord:
    """Per-request prefix-cache facts shared by every lane of a run (request id → value)."""

    __slots__ = ("answer_ids", "answer_offsets", "cached_tokens", "ids", "offsets")

    def __init__(self, prefix: PrefixBlocks | None, n: int) -> None:
        # prompt tokens prefill skipped at the request's first admission (-1: never admitted)
        self.cached_tokens = [-1] * n
        self.ids: list[int] = []
        self.offsets = [0] * (n + 1)
        self.answer_ids: list[int] = []  # ids of the full blocks answers complete
        self.answer_offsets = [0] * (n + 1)
        if prefix is not None:  # a workload without ids: nothing is ever shared
            self.ids = prefix.ids.tolist()
            self.offsets = prefix.offsets.tolist()
            if prefix.answer is not None:
                self.answer_ids = prefix.answer.ids.tolist()
                self.answer_offsets = prefix.answer.offsets.tolist()

    def prompt_ids(self, rid: int, blocks: int) -> list[int]:
        """The request's first `blocks` prefix-block ids (fewer if it has fewer)."""
        start = self.offsets[rid]
        return self.ids[start : min(start + blocks, self.offsets[rid + 1])]

    def answer_block_ids(self, rid: int, blocks: int) -> list[int]:
        """Ids of the first `blocks` full blocks the request's answer completes (fewer if the
        workload names fewer)."""
        start = self.answer_offsets[rid]
        return self.answer_ids[start : min(start + blocks, self.answer_offsets[rid + 1])]


class LanePrefix:
    """The prefix side of one lane's admission, prefill end, finish and preemption."""

    __slots__ = (
        "block_size",
        "bt",
        "cache",
        "node_blocks",
        "queued_tokens",
        "record",
        "reload_s",
        "shared",
        "st",
    )

    def __init__(
        self, cache: PrefixCache, record: PrefixRecord, state: RequestState, block_size: int
    ) -> None:
        self.cache = cache
        self.record = record
        self.st = state
        self.block_size = block_size
        self.bt = cache.block_tokens
        self.node_blocks = cache.node_blocks
        self.shared: dict[int, int] = {}  # rid → pool blocks of its pinned prefix
        self.reload_s = 0.0  # host → device copy time owed by the next step (s)
        self.queued_tokens = 0  # effective prompts of the lane's waiting requests (tokens)

    def _lookup_ids(self, rid: int) -> list[int]:
        """Ids of the full prompt blocks the request may reuse (its last token excluded)."""
        st = self.st
        usable = min(st.prompt[rid], st.effective_prompt[rid] - 1) // self.bt
        return self.record.prompt_ids(rid, usable)

    def probe(self, rid: int) -> PrefixMatch:
        """What admitting the request now would reuse (no side effects)."""
        return self.cache.match(self._lookup_ids(rid))

    def matched_blocks(self, rid: int) -> int:
        """Prefix blocks of the request cached in this lane (device + host), for routers."""
        return self.cache.match(self._lookup_ids(rid)).blocks

    def acquire(self, rid: int) -> int:
        """Pin the request's cached prefix (reloading its host part); returns the prompt
        tokens prefill skips. The caller checked `probe(rid).cost_blocks` against `free`."""
        st = self.st
        self.queued_tokens -= st.effective_prompt[rid]
        m = self.cache.acquire(rid, self._lookup_ids(rid), st.effective_prompt[rid])
        self.shared[rid] = m.blocks * self.node_blocks
        if m.host:
            host = self.cache.host
            assert host is not None
            self.reload_s += host.reload_s(m.host * self.node_blocks)
        cached = m.blocks * self.bt
        rec = self.record.cached_tokens
        if rec[rid] < 0:
            rec[rid] = cached
        return cached

    def publish(self, rid: int) -> None:
        """The request's prefill ended: its full prompt blocks join the cache (the blocks move
        from its private ones to its shared prefix)."""
        ids = self.record.prompt_ids(rid, self.st.prompt[rid] // self.bt)
        if len(ids) > self.cache.pinned_blocks(rid):
            self.shared[rid] += self.cache.insert(rid, ids)

    def accepted_kv_tokens(self, rid: int) -> int:
        """KV tokens of accepted context a request finishing decode holds: its effective
        prompt + the tokens it emitted in decode (output − generated before decode), i.e.
        every emitted token's KV but the last one's. Call before `generated` is set to the
        output. Without speculative decoding this is the KV it wrote; with it, the slots of
        the last step's rejected drafts (written, never accepted) are excluded, so no block
        holding rejected KV is published."""
        st = self.st
        return st.effective_prompt[rid] + st.output[rid] - st.generated[rid]

    def publish_answer(self, rid: int, written: int) -> None:
        """The request finished decoding with `written` KV tokens: the full blocks its answer
        completed join the cache under the ids its next turn carries (as vLLM's automatic
        prefix caching and SGLang's RadixAttention keep a finished request's KV). Only after
        the whole prompt chain was published (a row with fewer ids than full blocks leaves
        a gap no answer can extend); the caller releases the rest and unpins as usual."""
        full_prompt = self.st.prompt[rid] // self.bt
        if self.cache.pinned_blocks(rid) != full_prompt:
            return
        ids = self.record.answer_block_ids(rid, written // self.bt - full_prompt)
        if ids:
            chain = self.record.prompt_ids(rid, full_prompt) + ids
            self.shared[rid] += self.cache.insert(rid, chain)

    def private_blocks(self, rid: int, written: int) -> int:
        """Pool blocks the request holds outside its shared prefix with `written` KV tokens."""
        return blocks_for(written, self.block_size) - self.shared.get(rid, 0)

    def release(self, rid: int) -> None:
        """The request left the lane (finished, preempted, or its kept KV was sent): unpin."""
        if rid in self.shared:
            del self.shared[rid]
            self.cache.release_seq(rid)

    def take_reload_s(self) -> float:
        """Host → device copy time owed by the step being formed (s), then zero."""
        s = self.reload_s
        self.reload_s = 0.0
        return s
