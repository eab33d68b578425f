"""One engine step's work, as a lane's scheduler forms it (serving/scheduler.py)."""

from __future__ import annotations


class Batch:
    """One engine step's work. Token counts are per replica (before TP sharding)."""

    __slots__ = (
        "decode_ctx_tokens",
        "decode_step",
        "decode_tokens",
        "emitted_tokens",
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
        # speculative decoding: tokens the decoding sequences emit this step (-1: no decode
        # or not speculative; prefill tokens' first tokens are not counted)
        self.emitted_tokens = -1
        self.num_seqs = 0

    @property
    def tokens(self) -> int:
        return self.prefill_tokens + self.decode_tokens
