"""Per-request mutable state shared by the lanes of one pool (serving/scheduler.py)."""

from __future__ import annotations

from math import nan


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
