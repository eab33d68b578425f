"""A request trace as arrays (Trace) and the one-line error a malformed trace raises."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from clustersim.workload.prefix_blocks import PrefixBlocks

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

# Bounds on what a trace may hold: a token count above MAX_TRACE_TOKENS is a corrupt cell, not
# a request (no model has a context near it); a header line over MAX_HEADER_BYTES is not a trace.
MAX_TRACE_TOKENS = 100_000_000
MAX_HEADER_BYTES = 65_536
TOKENS_WHAT = f"an integer token count from 0 to {MAX_TRACE_TOKENS:,}"


class TraceError(ValueError):
    """A malformed trace: one line naming the file, the data row (1-based) and the column."""

    def __init__(self, path: str | Path, where: str, problem: str) -> None:
        self.path = str(path)
        self.where = where  # "row 3, column 'ContextTokens'", or '' for the file as a whole
        self.problem = problem
        super().__init__(": ".join(filter(None, [self.path, where, problem])))

    def __reduce__(self) -> tuple[type[TraceError], tuple[str, str, str]]:
        return (TraceError, (self.path, self.where, self.problem))


@dataclass(frozen=True, eq=False)
class Trace:
    """A request trace as read-only arrays, one entry per request, in time order."""

    path: str
    timestamps_s: F64  # float64[n], seconds from the first request (first entry 0.0)
    prompt_tokens: I64  # int64[n], >= 1
    output_tokens: I64  # int64[n], >= 1
    prefix: PrefixBlocks | None = None  # per-row prefix-block ids (Mooncake), else None

    def __len__(self) -> int:
        return len(self.timestamps_s)

    @property
    def span_s(self) -> float:
        """Time from the first to the last request (s)."""
        return float(self.timestamps_s[-1]) if len(self) else 0.0
