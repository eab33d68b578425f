"""The decoding requests of one lane under speculative decoding (docs/speculative.md).

A drop-in for serving/decode_set.py's DecodeSet when `serving.speculative` is set: every
decode step verifies k draft tokens per sequence, so a sequence advances by a random number
of tokens and progress is kept per request (numpy arrays indexed by request id), not implied
by the lane's step counter. Per request:

  written[r]   KV tokens that hold accepted context (the prompt, then every emitted token
               but the newest, whose KV the next step writes)
  held[r]      KV blocks it holds: blocks_for(written + k + 1) after each step's allocation —
               the step writes KV for its k + 1 query tokens (vLLM's lookahead slots); the
               slots of rejected drafts stay allocated and are overwritten by the next step
  left[r]      tokens it still has to emit
  emitted[r]   tokens emitted since it entered decode

At batch formation (`fill`) each sequence's accepted drafts A are drawn from the acceptance
profile with the experiment's "speculative" stream; the step emits min(A + 1, left) tokens
(the target's own token at the first rejection, or after k accepted drafts, is always kept).
`finished` applies the step when it completes. Between the two the lane's membership does not
change (a lane has one batch in flight), so the draws line up with the sequences they price.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from clustersim.config.schema import SpeculativeSpec
from clustersim.serving.batch import Batch
from clustersim.serving.request_state import RequestState
from clustersim.serving.speculative import AcceptanceProfile

I64 = np.int64


class SequenceProgress:
    """Per-request decode progress (int64 arrays indexed by request id), one set per run:
    a request decodes in one lane at a time, so every lane of a run shares them."""

    __slots__ = ("emitted", "held", "left", "written")

    def __init__(self, num_requests: int) -> None:
        self.written = np.zeros(num_requests, dtype=I64)
        self.held = np.zeros(num_requests, dtype=I64)
        self.left = np.zeros(num_requests, dtype=I64)
        self.emitted = np.zeros(num_requests, dtype=I64)


@dataclass(frozen=True, eq=False)
class SpeculativeDecoding:
    """What the lanes of one run share: the acceptance profile, the "speculative" stream
    every acceptance draw comes from (numpy Generator, in step order) and the requests'
    decode progress."""

    profile: AcceptanceProfile
    rng: np.random.Generator
    _progress: dict[int, SequenceProgress] = field(default_factory=dict)

    def progress(self, state: RequestState) -> SequenceProgress:
        """The progress arrays of `state`'s requests (created on first use)."""
        found = self._progress.get(id(state))
        if found is None:
            found = self._progress[id(state)] = SequenceProgress(len(state.prompt))
        return found

    @classmethod
    def from_spec(cls, spec: SpeculativeSpec, rng: np.random.Generator) -> SpeculativeDecoding:
        return cls(AcceptanceProfile(np.asarray(spec.rates, dtype=np.float64)), rng)

    @property
    def k(self) -> int:
        """Draft tokens verified per sequence per step."""
        return self.profile.k


class SpeculativeDecodeSet:
    """Requests decoding in one lane with speculative decoding; DecodeSet's interface."""

    def __init__(
        self, block_size: int, state: RequestState, speculative: SpeculativeDecoding
    ) -> None:
        self.block_size = block_size
        self.state = state
        self.speculative = speculative
        self.k = speculative.k
        self.members: dict[int, None] = {}  # insertion (admission) order
        progress = speculative.progress(state)
        self.written = progress.written
        self.held = progress.held
        self.left = progress.left
        self.emitted_since_enter = progress.emitted
        self.d = 0  # decode steps executed so far (set by the scheduler)
        self._ids: np.ndarray | None = None  # members as an array, rebuilt after a change
        self._pending: tuple[np.ndarray, np.ndarray] | None = None  # (ids, tokens) of a step

    def __len__(self) -> int:
        return len(self.members)

    def _member_ids(self) -> np.ndarray:
        if self._ids is None:
            self._ids = np.fromiter(self.members, dtype=I64, count=len(self.members))
        return self._ids

    def _step_blocks(self, ids: np.ndarray) -> np.ndarray:
        """Blocks each sequence holds during its next step: its context + k + 1 slots."""
        bs = self.block_size
        return -(-(self.written[ids] + self.k + 1) // bs)

    def new_blocks(self) -> int:
        """Blocks the next decode step allocates (lookahead slots crossing into new blocks)."""
        if not self.members:
            return 0
        ids = self._member_ids()
        return int(np.maximum(self._step_blocks(ids) - self.held[ids], 0).sum())

    def fill(self, batch: Batch) -> None:
        """Every decoding request verifies k + 1 query tokens in `batch`; draws what each
        will emit. decode_ctx_tokens: Σ context of each sequence's first query token (the
        cost model adds the k later positions: model/speculative_cost.py)."""
        ids = self._member_ids()
        n = len(ids)
        self.held[ids] = np.maximum(self.held[ids], self._step_blocks(ids))
        spec = self.speculative
        tokens = np.minimum(spec.profile.draw_tokens(n, spec.rng), self.left[ids])
        self._pending = (ids, tokens)
        batch.decode_tokens = n * (self.k + 1)
        batch.decode_ctx_tokens = int(self.written[ids].sum()) + n
        batch.decode_step = self.d
        batch.num_seqs += n
        batch.emitted_tokens = int(tokens.sum())

    def enter(self, rid: int) -> None:
        """The request decodes from the next decode step on, with its effective prompt in KV
        and its blocks (blocks_for(prompt)) already held."""
        st = self.state
        p = st.effective_prompt[rid]
        self.members[rid] = None
        self._ids = None
        self.written[rid] = p
        self.held[rid] = -(-p // self.block_size)
        self.left[rid] = st.output[rid] - st.generated[rid]
        self.emitted_since_enter[rid] = 0

    def leave(self, rid: int) -> None:
        del self.members[rid]
        self._ids = None

    def emitted(self, rid: int) -> int:
        """Tokens the request emitted since it entered decode (preemption adds them)."""
        return int(self.emitted_since_enter[rid])

    def held_blocks(self, rid: int) -> int:
        """KV blocks the request holds (preemption gives them back)."""
        return int(self.held[rid])

    def finished(self, d: int) -> Iterator[tuple[int, int]]:
        """Apply decode step `d`'s emissions; requests with nothing left are taken out of the
        set before each is yielded with the KV slots its last step wrote: (rid, written)."""
        if self._pending is None:
            return
        ids, tokens = self._pending
        self._pending = None
        slots = self.written[ids] + self.k + 1  # KV written by this step, accepted or not
        self.written[ids] += tokens
        self.left[ids] -= tokens
        self.emitted_since_enter[ids] += tokens
        done = self.left[ids] <= 0
        for rid, written in zip(ids[done].tolist(), slots[done].tolist(), strict=True):
            self.leave(rid)
            yield rid, written

    def newest(self) -> int:
        """The most recently admitted decoding request."""
        return next(reversed(self.members))
