"""WorkloadSpec × HorizonSpec × random streams → RequestStream (plain numpy arrays).

Rules (see docs/workloads.md):

* Open loop (poisson, gamma, mmpp, trace, burst): arrival times from the arrival process.
  ``horizon.requests`` gives exactly that many requests; ``horizon.duration_s`` gives every
  arrival before the horizon. ``burst`` needs ``horizon.requests`` (a duration does not say how
  many requests to fire at t = 0).
* Trace arrivals: ``requests`` <= rows takes the first rows, more cycles the trace;
  a duration stops at the horizon or at the trace end, whichever comes first.
* Closed loop (``closed``, concurrency N): arrival times are NaN (the simulator starts request
  j when a slot frees up). With ``requests`` the stream has exactly that many; with
  ``duration_s`` it holds an upper bound on what can be issued before the horizon: requests are
  added until their output tokens total N · duration_s / CLOSED_LOOP_MIN_TOKEN_S, plus N more
  (no sequence decodes faster than one token per CLOSED_LOOP_MIN_TOKEN_S), capped at
  CLOSED_LOOP_MAX_REQUESTS. The simulator stops issuing at the horizon (or when the stream
  runs out).
* Lengths: from the trace when ``trace.use_lengths`` (row j of the trace, cycled, for request
  j — also with synthetic arrivals), otherwise prompt then output drawn from the length specs
  on ``rng_lengths``.
* Prefix-block ids: with lengths from a trace that has them (Mooncake), request j carries the
  ids of its row; the c-th pass of a cycled trace adds c · (largest id + 1) to them, so a
  repetition is new content, not a cache hit on the first pass. Otherwise no ids.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from clustersim.config.schema import HorizonSpec, LengthSpec, WorkloadSpec
from clustersim.workload.arrivals import (
    StateTimeline,
    burst_arrivals,
    closed_arrivals,
    gamma_arrivals,
    mmpp_arrivals,
    poisson_arrivals,
    trace_arrivals,
)
from clustersim.workload.lengths import mean_length, sample_lengths
from clustersim.workload.prefix_blocks import PrefixBlocks
from clustersim.workload.traces import Trace, load_trace

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

CLOSED_LOOP_MIN_TOKEN_S = 1e-3  # fastest decode assumed for the closed-loop bound (s/token)
CLOSED_LOOP_MAX_REQUESTS = 2_000_000  # hard cap on a closed-loop duration stream (requests)


def _frozen(a: npt.NDArray[np.generic]) -> npt.NDArray[np.generic]:
    """`a` made read-only (a view when `a` is writeable, so the caller's array is untouched)."""
    if a.flags.writeable:
        a = a.view()
        a.flags.writeable = False
    return a


@dataclass(frozen=True, eq=False)
class RequestStream:
    """All requests of a run, index j = request id, as read-only numpy arrays."""

    arrival_s: F64  # float64[n], sorted arrival times (s); all NaN for closed loop
    prompt_tokens: I64  # int64[n], >= 1
    output_tokens: I64  # int64[n], >= 1
    concurrency: int | None = None  # closed loop: requests kept in flight
    phases: StateTimeline | None = None  # MMPP state timeline (for plots), else None
    prefix: PrefixBlocks | None = None  # per-request prefix-block ids, else None (no reuse)
    session_id: I64 | None = None  # int64[n], session of each request (multi-turn), else None

    def __post_init__(self) -> None:
        n = len(self.arrival_s)
        if len(self.prompt_tokens) != n or len(self.output_tokens) != n:
            raise ValueError(
                f"arrival_s, prompt_tokens, output_tokens lengths differ: "
                f"{n}, {len(self.prompt_tokens)}, {len(self.output_tokens)}"
            )
        if self.prefix is not None and len(self.prefix) != n:
            raise ValueError(f"prefix has {len(self.prefix)} rows for {n} requests")
        if self.session_id is not None:
            if len(self.session_id) != n:
                raise ValueError(f"session_id has {len(self.session_id)} rows for {n} requests")
            object.__setattr__(self, "session_id", _frozen(self.session_id))
        if n and (self.prompt_tokens.min() < 1 or self.output_tokens.min() < 1):
            raise ValueError("prompt_tokens and output_tokens must be >= 1")
        if self.concurrency is None and n and (np.diff(self.arrival_s) < 0).any():
            raise ValueError("arrival_s must be sorted")
        if self.concurrency is not None and self.concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {self.concurrency}")
        for name in ("arrival_s", "prompt_tokens", "output_tokens"):
            object.__setattr__(self, name, _frozen(getattr(self, name)))

    def __len__(self) -> int:
        return len(self.arrival_s)

    @property
    def closed_loop(self) -> bool:
        return self.concurrency is not None


class _Lengths:
    """Sequential source of (prompt, output) lengths: trace rows cycled, or spec samples."""

    def __init__(
        self,
        trace: Trace | None,
        prompt: LengthSpec | None,
        output: LengthSpec | None,
        rng: np.random.Generator,
    ) -> None:
        self._trace = trace
        self._prompt = prompt
        self._output = output
        self._rng = rng
        self._next_row = 0  # next trace row to hand out

    def mean_output(self) -> float:
        """Mean output length (tokens), for sizing the first block."""
        if self._trace is not None:
            return float(self._trace.output_tokens.mean())
        assert self._output is not None
        return mean_length(self._output)

    def take(self, size: int) -> tuple[I64, I64]:
        """The next `size` (prompt, output) lengths (tokens)."""
        if self._trace is not None:
            rows = (self._next_row + np.arange(size, dtype=np.int64)) % len(self._trace)
            self._next_row = int((self._next_row + size) % len(self._trace))
            return self._trace.prompt_tokens[rows], self._trace.output_tokens[rows]
        assert self._prompt is not None and self._output is not None
        prompt = sample_lengths(self._prompt, size, self._rng)
        return prompt, sample_lengths(self._output, size, self._rng)


def _closed_loop_lengths(source: _Lengths, concurrency: int, duration_s: float) -> tuple[I64, I64]:
    """Lengths for a closed loop over `duration_s`: the upper bound in the module docstring."""
    token_budget = concurrency * duration_s / CLOSED_LOOP_MIN_TOKEN_S  # output tokens
    block = int(min(max(token_budget / source.mean_output() * 1.1, 1024), 1 << 20))
    prompts: list[I64] = []
    outputs: list[I64] = []
    total_tokens = 0.0
    total = 0
    while total < CLOSED_LOOP_MAX_REQUESTS:
        p, o = source.take(min(block, CLOSED_LOOP_MAX_REQUESTS - total))
        prompts.append(p)
        outputs.append(o)
        cum = total_tokens + np.cumsum(o, dtype=np.float64)
        if cum[-1] >= token_budget:
            need = total + int(np.searchsorted(cum, token_budget, side="left")) + 1
            n = min(need + concurrency, CLOSED_LOOP_MAX_REQUESTS)
            if n > total + len(o):  # the extra N in-flight requests spill into a new block
                p2, o2 = source.take(n - total - len(o))
                prompts.append(p2)
                outputs.append(o2)
            return np.concatenate(prompts)[:n], np.concatenate(outputs)[:n]
        total += len(o)
        total_tokens = float(cum[-1])
    return np.concatenate(prompts), np.concatenate(outputs)


def trace_prefix(trace: Trace, n: int) -> PrefixBlocks | None:
    """Prefix-block ids of requests 0 … n−1 when request j takes trace row j mod rows; the
    c-th pass adds c · (largest id + 1) to its ids (module docstring). None if the trace has
    no ids."""
    if trace.prefix is None:
        return None
    j = np.arange(n, dtype=np.int64)
    rows = len(trace)
    span = int(trace.prefix.ids.max()) + 1 if len(trace.prefix.ids) else 0
    return trace.prefix.take(j % rows, (j // rows) * span)


def generate_requests(
    spec: WorkloadSpec,
    horizon: HorizonSpec,
    rng_arrivals: np.random.Generator,
    rng_lengths: np.random.Generator,
    base_dir: str | Path = ".",
) -> RequestStream:
    """Build the request stream of a run (rules in the module docstring).

    `base_dir` is the directory relative trace paths resolve against (the workload file's
    directory, or the experiment's for an inline workload).
    """
    arrival = spec.arrival
    n = horizon.requests
    duration_s = horizon.duration_s
    trace = load_trace(spec.trace, base_dir) if spec.trace is not None else None
    length_trace = trace if spec.trace is not None and spec.trace.use_lengths else None
    lengths = _Lengths(
        length_trace,
        spec.prompt_tokens,
        spec.output_tokens,
        rng_lengths,
    )
    phases: StateTimeline | None = None
    concurrency: int | None = None

    if arrival.process == "closed":
        concurrency = arrival.concurrency
        if n is not None:
            prompt, output = lengths.take(n)
        else:
            assert duration_s is not None
            prompt, output = _closed_loop_lengths(lengths, concurrency, duration_s)
        prefix = trace_prefix(length_trace, len(prompt)) if length_trace is not None else None
        return RequestStream(
            closed_arrivals(len(prompt)), prompt, output, concurrency, prefix=prefix
        )

    if arrival.process == "poisson":
        times = poisson_arrivals(arrival.rate_rps, rng_arrivals, n=n, duration_s=duration_s)
    elif arrival.process == "gamma":
        times = gamma_arrivals(
            arrival.rate_rps, arrival.cv, rng_arrivals, n=n, duration_s=duration_s
        )
    elif arrival.process == "mmpp":
        times, phases = mmpp_arrivals(
            arrival.rates_rps, arrival.mean_dwell_s, rng_arrivals, n=n, duration_s=duration_s
        )
    elif arrival.process == "burst":
        if n is None:
            raise ValueError(
                "arrival process 'burst' needs horizon.requests (how many requests arrive at t=0)"
            )
        times = burst_arrivals(n)
    elif arrival.process == "trace":
        assert trace is not None and spec.trace is not None
        times = trace_arrivals(
            trace.timestamps_s, spec.trace.time_scale, n=n, duration_s=duration_s
        )
    else:  # pragma: no cover - the schema's discriminated union is exhaustive
        raise ValueError(f"unknown arrival process {arrival.process!r}")

    prompt, output = lengths.take(len(times))
    prefix = trace_prefix(length_trace, len(times)) if length_trace is not None else None
    return RequestStream(times, prompt, output, concurrency, phases, prefix=prefix)
