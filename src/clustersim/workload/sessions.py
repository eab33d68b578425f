"""Synthetic multi-turn sessions with shared system prompts and agent loops (numpy, no simpy).

A session starts at a Poisson time (rate `session_rate_rps`), picks a class (by weight) and a
system prompt from a pool (Zipf popularity: prompt r, 0-based, has weight (r + 1)^−skew), and
makes T turns, T geometric with mean `turns_mean` (capped at `max_turns`). Turn t's prompt is

    system prompt + (user_1 + answer_1) + … + (user_{t−1} + answer_{t−1}) + user_t,

so each turn extends the previous prompt by its answer and the new user tokens. Turn t + 1
arrives a think time (exponential, mean `think_time_s`) after turn t *arrives*: the gap stands
for generation plus thinking, as in a replayed trace; a simulator that wants turn t + 1 to
wait for turn t's answer can hold it by `session_id`. A session ends early at the first turn
whose prompt + answer would exceed `max_context_tokens`.

Agent loops are a class with many turns, a long first context (instructions, tool schemas,
documents), short tool-result turns, short answers and a short think time (tool latency).

Prefix-block ids (blocks of `block_tokens` tokens; see workload/prefix_blocks.py): an id names
a block and everything before it, so identical prefixes get identical ids, assigned from
disjoint integer ranges rather than by hashing (vectorised, collision-free):

* a block inside system prompt j (all tokens from it): ``sys_base[j] + i``;
* any other full block i of session s (its tokens never change across turns, the context is
  append-only, and its prefix is the session's): ``session_base[s] + i``;
* a request's partial last block: an id of its own (``partial_base + request``).

Answer blocks (`PrefixBlocks.answer`): a turn of P prompt and O answer tokens finishes holding
the KV of P + O − 1 tokens; the full blocks among them past its prompt's, i = ⌊P / bt⌋ …
⌊(P + O − 1) / bt⌋ − 1, lie wholly before the next turn's new user tokens, so they get the
next turn's ids ``session_base[s] + i`` (the session's id range covers every turn's prompt +
answer).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from clustersim.workload.arrivals import check_horizon, poisson_arrivals
from clustersim.workload.lengths import lognormal_lengths
from clustersim.workload.prefix_blocks import PrefixBlocks
from clustersim.workload.requests import RequestStream

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


@dataclass(frozen=True)
class TokenDist:
    """round(median · exp(sigma · Z)) clipped to [min, max] tokens; sigma 0 is fixed."""

    median: float
    sigma: float = 0.0
    min: int = 1
    max: int | None = None

    def __post_init__(self) -> None:
        if not self.median > 0 or self.sigma < 0 or self.min < 1:
            raise ValueError(f"need median > 0, sigma >= 0, min >= 1: {self}")
        if self.max is not None and self.max < self.min:
            raise ValueError(f"max ({self.max}) must be >= min ({self.min})")

    def sample(self, n: int, rng: np.random.Generator) -> I64:
        return lognormal_lengths(self.median, self.sigma, n, rng, self.min, self.max)


@dataclass(frozen=True)
class SessionClass:
    """One kind of session: its share, turn count, token lengths and think time."""

    name: str
    first_user_tokens: TokenDist  # user tokens of turn 1 (after the system prompt)
    user_tokens: TokenDist  # new user (or tool-result) tokens of each later turn
    output_tokens: TokenDist  # answer tokens of every turn
    turns_mean: float = 4.0  # mean of the geometric number of turns (>= 1)
    max_turns: int = 64
    think_time_s: float = 30.0  # mean gap from one turn's arrival to the next (s)
    weight: float = 1.0  # share of sessions (relative to the other classes)

    def __post_init__(self) -> None:
        if not self.turns_mean >= 1 or self.max_turns < 1:
            raise ValueError(f"{self.name}: need turns_mean >= 1 and max_turns >= 1")
        if not self.think_time_s >= 0 or not self.weight > 0:
            raise ValueError(f"{self.name}: need think_time_s >= 0 and weight > 0")


CHAT = SessionClass(
    name="chat",
    first_user_tokens=TokenDist(300, 0.8, max=8192),
    user_tokens=TokenDist(150, 0.8, max=4096),
    output_tokens=TokenDist(300, 0.7, max=2048),
    turns_mean=4.0,
    think_time_s=60.0,
)
AGENT_LOOP = SessionClass(
    name="agent",
    first_user_tokens=TokenDist(8000, 0.5, max=32768),
    user_tokens=TokenDist(200, 0.8, max=4096),
    output_tokens=TokenDist(120, 0.6, max=1024),
    turns_mean=20.0,
    max_turns=100,
    think_time_s=2.0,
)


@dataclass(frozen=True)
class SessionWorkload:
    """Multi-turn session workload parameters (the future `workload.sessions` block)."""

    session_rate_rps: float  # new sessions per second (Poisson)
    classes: tuple[SessionClass, ...] = (CHAT,)
    system_prompts: int = 8  # size of the shared system-prompt pool
    system_prompt_tokens: TokenDist = field(default_factory=lambda: TokenDist(1024, 0.5))
    system_prompt_skew: float = 1.0  # Zipf exponent of the pool's popularity (0: uniform)
    block_tokens: int = 512  # tokens per prefix block (the Mooncake traces use 512)
    max_context_tokens: int = 131_072  # a session ends before prompt + answer exceed this

    def __post_init__(self) -> None:
        if not self.session_rate_rps > 0:
            raise ValueError(f"session_rate_rps must be > 0, got {self.session_rate_rps}")
        if not self.classes:
            raise ValueError("classes must not be empty")
        if self.system_prompts < 1 or self.system_prompt_skew < 0 or self.block_tokens < 1:
            raise ValueError("need system_prompts >= 1, system_prompt_skew >= 0, block_tokens >= 1")
        if self.max_context_tokens < 2:
            raise ValueError(f"max_context_tokens must be >= 2, got {self.max_context_tokens}")

    @property
    def mean_turns(self) -> float:
        """Mean turns per session before the context cap (geometric means, capped)."""
        w = np.array([c.weight for c in self.classes])
        t = np.array([_capped_geometric_mean(c.turns_mean, c.max_turns) for c in self.classes])
        return float((w * t).sum() / w.sum())


def _capped_geometric_mean(mean: float, cap: int) -> float:
    """E[min(T, cap)] for T geometric on {1, 2, …} with mean `mean`: Σ_{t<cap} (1 − 1/mean)^t."""
    q = 1.0 - 1.0 / mean
    return float(cap) if q >= 1.0 else (1.0 - q**cap) / (1.0 - q)


def zipf_weights(n: int, skew: float) -> F64:
    """Popularity of ranks 0 … n−1: (r + 1)^−skew, normalised to sum to 1."""
    w = np.arange(1, n + 1, dtype=np.float64) ** -skew
    return w / w.sum()


@dataclass(frozen=True, eq=False)
class _Turns:
    """Every turn of a batch of sessions, session-major then turn order."""

    session: I64  # int64[m], session index
    arrival_s: F64
    prompt: I64
    output: I64
    system_prompt: I64  # the session's system prompt index
    session_blocks: I64  # int64[sessions], full blocks of each session's longest prompt + answer
    system_prompt_tokens: I64  # int64[pool], length of each system prompt (tokens)

    def select(self, rows: npt.NDArray[np.bool_] | I64) -> _Turns:
        """The turns `rows` (a mask or an index array); per-session arrays unchanged."""
        return _Turns(
            self.session[rows],
            self.arrival_s[rows],
            self.prompt[rows],
            self.output[rows],
            self.system_prompt[rows],
            self.session_blocks,
            self.system_prompt_tokens,
        )


def _draw_turns(work: SessionWorkload, starts: F64, rng: np.random.Generator) -> _Turns:
    """All turns of the sessions starting at `starts` (s), one vectorised draw per quantity."""
    n = len(starts)
    classes = work.classes
    weights = np.array([c.weight for c in classes], dtype=np.float64)
    cls = rng.choice(len(classes), size=n, p=weights / weights.sum())
    sys_idx = rng.choice(
        work.system_prompts, size=n, p=zipf_weights(work.system_prompts, work.system_prompt_skew)
    )
    turns = np.empty(n, dtype=np.int64)
    for k, c in enumerate(classes):  # per class (a handful), vectorised over its sessions
        mine = cls == k
        turns[mine] = np.minimum(rng.geometric(1.0 / c.turns_mean, int(mine.sum())), c.max_turns)
    session = np.repeat(np.arange(n, dtype=np.int64), turns)
    first = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(turns, out=first[1:])
    turn = np.arange(len(session), dtype=np.int64) - first[session]
    turn_cls = cls[session]

    user = np.empty(len(session), dtype=np.int64)
    output = np.empty(len(session), dtype=np.int64)
    gap = np.zeros(len(session), dtype=np.float64)
    for k, c in enumerate(classes):
        mine = turn_cls == k
        opening = mine & (turn == 0)
        later = mine & (turn > 0)
        user[opening] = c.first_user_tokens.sample(int(opening.sum()), rng)
        user[later] = c.user_tokens.sample(int(later.sum()), rng)
        output[mine] = c.output_tokens.sample(int(mine.sum()), rng)
        gap[later] = rng.exponential(c.think_time_s, int(later.sum())) if c.think_time_s else 0.0

    pool_len = work.system_prompt_tokens.sample(work.system_prompts, rng)
    sys_len = pool_len[sys_idx]
    # context before turn t = Σ over earlier turns of (user + output), per session
    grown = np.cumsum(user + output) - (user + output)
    prompt = sys_len[session] + grown - grown[first[session]] + user
    elapsed = np.cumsum(gap)
    arrival = starts[session] + elapsed - elapsed[first[session]]

    keep = prompt + output <= work.max_context_tokens  # monotone within a session
    longest = np.zeros(n, dtype=np.int64)
    np.maximum.at(longest, session[keep], prompt[keep] + output[keep] - 1)
    return _Turns(
        session[keep],
        arrival[keep],
        prompt[keep],
        output[keep],
        sys_idx[session[keep]],
        longest // work.block_tokens,
        pool_len,
    )


def _prefix_ids(work: SessionWorkload, t: _Turns) -> PrefixBlocks:
    """Block ids of every turn (rules in the module docstring), vectorised over all blocks."""
    bt = work.block_tokens
    counts = -(-t.prompt // bt)
    offsets = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    req = np.repeat(np.arange(len(counts), dtype=np.int64), counts)
    i = np.arange(offsets[-1], dtype=np.int64) - offsets[req]
    end = (i + 1) * bt  # token just past block i
    sys_lens = t.system_prompt_tokens
    sys_full = sys_lens // bt
    sys_base = np.concatenate(([0], np.cumsum(sys_full)[:-1]))
    session_base = int(sys_full.sum()) + np.concatenate(([0], np.cumsum(t.session_blocks)[:-1]))
    partial_base = int(sys_full.sum()) + int(t.session_blocks.sum())
    ids = np.where(
        end <= sys_lens[t.system_prompt[req]],
        sys_base[t.system_prompt[req]] + i,
        np.where(end <= t.prompt[req], session_base[t.session[req]] + i, partial_base + req),
    )
    return PrefixBlocks(ids, offsets, bt, _answer_ids(t, bt, session_base))


def _answer_ids(t: _Turns, bt: int, session_base: I64) -> PrefixBlocks:
    """Ids of the full blocks each turn's answer completes (module docstring), vectorised."""
    first = t.prompt // bt
    counts = np.maximum((t.prompt + t.output - 1) // bt - first, 0)
    offsets = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    req = np.repeat(np.arange(len(counts), dtype=np.int64), counts)
    i = first[req] + np.arange(offsets[-1], dtype=np.int64) - offsets[req]
    return PrefixBlocks(session_base[t.session[req]] + i, offsets, bt)


def generate_sessions(
    work: SessionWorkload,
    rng: np.random.Generator,
    *,
    sessions: int | None = None,
    duration_s: float | None = None,
) -> RequestStream:
    """Requests of `sessions` sessions (all their turns), or of every session turn arriving
    before `duration_s` (s); sorted by arrival (ties: session, then turn), with prefix-block
    ids and session ids (sessions numbered in start order)."""
    check_horizon(sessions, duration_s)
    if sessions is not None:
        starts = np.cumsum(rng.exponential(1.0 / work.session_rate_rps, sessions))
    else:
        assert duration_s is not None
        starts = poisson_arrivals(work.session_rate_rps, rng, duration_s=duration_s)
    turns = _draw_turns(work, starts, rng)
    if duration_s is not None:
        turns = turns.select(turns.arrival_s < duration_s)
    turns = turns.select(np.argsort(turns.arrival_s, kind="stable"))
    return RequestStream(
        turns.arrival_s,
        turns.prompt,
        turns.output,
        prefix=_prefix_ids(work, turns),
        session_id=turns.session,
    )
