"""The dense part (attention and dense GEMMs) of each DP rank of a lock-step DP-attention
group (moe/ep_group.py). Each rank is priced on its own TP group's GPUs, so a slowed GPU
(docs/faults.md) re-prices its rank only; the group's step waits for the slowest rank."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from clustersim.model.stage_cost import StageCostModel
from clustersim.serving.batch import Batch


class RankDense:
    """Dense-part seconds of each DP rank's batch (None: a dummy step, overhead only)."""

    def __init__(
        self, cost: StageCostModel, ranks: int, decode_ctx: Callable[[Batch], int]
    ) -> None:
        """`decode_ctx`: the decode context a rank's attention is priced with (a verify
        step's with speculative decoding)."""
        self.decode_ctx = decode_ctx
        self.costs = [cost] * ranks
        self._idle_s = [cost.dense_part_s(0, 0.0, 0, 0)] * ranks

    def set_costs(self, costs: Sequence[StageCostModel]) -> None:
        """Each rank's cost model from the next step on (a step in flight keeps its price)."""
        self.costs = list(costs)
        self._idle_s = [c.dense_part_s(0, 0.0, 0, 0) for c in costs]

    def step_s(self, batches: Sequence[Batch | None]) -> float:
        """The group's dense seconds: the slowest rank's."""
        return max(self.rank_s(d, b) for d, b in enumerate(batches))

    def two_microbatches_step_s(self, batches: Sequence[Batch | None]) -> float:
        """The slowest rank's dense seconds with its batch run as two micro-batches."""
        return max(self.two_microbatches_s(d, b) for d, b in enumerate(batches))

    def rank_s(self, rank: int, b: Batch | None) -> float:
        if b is None:
            return self._idle_s[rank]
        return self.costs[rank].dense_part_s(
            b.prefill_tokens,
            b.prefill_attn_pairs,
            b.decode_tokens,
            self.decode_ctx(b),
            len(b.prefill),
        )

    def two_microbatches_s(self, rank: int, b: Batch | None) -> float:
        """Dense seconds of a rank's batch run as two micro-batches (each reads the weights)."""
        if b is None:
            return 2.0 * self._idle_s[rank]
        c = self.costs[rank]
        p, d = b.prefill_tokens, b.decode_tokens
        pairs, ctx, seqs = b.prefill_attn_pairs, self.decode_ctx(b), len(b.prefill)
        first = c.dense_part_s(
            (p + 1) // 2, pairs / 2.0, (d + 1) // 2, (ctx + 1) // 2, max(1, (seqs + 1) // 2)
        )
        second = c.dense_part_s(p // 2, pairs / 2.0, d // 2, ctx // 2, max(1, seqs // 2))
        return first + second
