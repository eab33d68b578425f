"""Speculative decoding and multi-token prediction (MTP): acceptance maths and step shapes.

A verify step runs the target model over k + 1 query tokens per sequence (the last accepted
token and k draft tokens). Draft token i is accepted with conditional probability p_i given
that drafts 1 … i − 1 were; the first rejection ends the run, and the target's own token at
that position is kept, so a step emits A + 1 tokens, A ∈ {0, …, k} accepted drafts:

    P(A ≥ j) = S_j = p_1 · … · p_j,   E[tokens per step] = 1 + S_1 + … + S_k,

which for a single rate a (p_i = a) is (1 − a^(k+1)) / (1 − a) (k + 1 when a = 1).

Draws use one uniform per sequence (inverse CDF: A = #{j : u < S_j}) from the numpy Generator
passed in — the experiment's ``speculative`` stream; nothing here touches global randomness.

The drafter's cost is described as plain data (`DrafterCost`) for the cost model: MTP
(DeepSeek-V3) and EAGLE run one extra decoder layer of the target's shape k times per step,
reusing the target's embedding and LM head; a draft model is a separate model run k times.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

SpeculativeMethod = Literal["mtp", "eagle", "draft_model"]
METHODS: tuple[SpeculativeMethod, ...] = ("mtp", "eagle", "draft_model")
RNG_STREAM = "speculative"  # name of the experiment's random stream for acceptance draws


def mean_tokens_closed_form(rate: float, k: int) -> float:
    """Mean tokens per verify step for a single acceptance rate: (1 − a^(k+1)) / (1 − a)."""
    _check_rate(rate, "rate")
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    if rate == 1.0:
        return float(k + 1)
    return (1.0 - rate ** (k + 1)) / (1.0 - rate)


def _check_rate(p: float, what: str) -> None:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{what} must be in [0, 1], got {p}")


@dataclass(frozen=True, eq=False)
class AcceptanceProfile:
    """Per-position conditional acceptance probabilities p_1 … p_k of k draft tokens."""

    conditional: F64  # float64[k], p_i = P(draft i accepted | drafts 1 … i−1 accepted)
    survival: F64 = field(init=False)  # float64[k], S_j = P(A >= j), non-increasing

    def __post_init__(self) -> None:
        p = np.array(self.conditional, dtype=np.float64)
        if p.ndim != 1 or len(p) < 1:
            raise ValueError("acceptance needs at least one draft position")
        for i, pi in enumerate(p):
            _check_rate(float(pi), f"acceptance[{i}]")
        p.flags.writeable = False
        surv = np.cumprod(p)
        surv.flags.writeable = False
        object.__setattr__(self, "conditional", p)
        object.__setattr__(self, "survival", surv)

    @classmethod
    def single_rate(cls, rate: float, k: int) -> AcceptanceProfile:
        """Every draft position accepted with probability `rate` (given the earlier ones)."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        _check_rate(rate, "acceptance rate")
        return cls(np.full(k, rate, dtype=np.float64))

    @property
    def k(self) -> int:
        """Draft tokens per verify step."""
        return len(self.conditional)

    @property
    def mean_accepted(self) -> float:
        """E[A], accepted draft tokens per verify step."""
        return float(self.survival.sum())

    @property
    def mean_tokens_per_step(self) -> float:
        """E[A + 1], tokens emitted per verify step (the target's token included)."""
        return 1.0 + self.mean_accepted

    @property
    def acceptance_rate(self) -> float:
        """E[A] / k, the share of draft tokens accepted (as engines report it)."""
        return self.mean_accepted / self.k

    def distribution(self) -> F64:
        """P(A = j) for j = 0 … k, float64[k + 1] summing to 1."""
        s = np.concatenate(([1.0], self.survival, [0.0]))
        return s[:-1] - s[1:]

    def variance_tokens(self) -> float:
        """Var[A + 1] = Var[A]."""
        j = np.arange(self.k + 1, dtype=np.float64)
        pmf = self.distribution()
        mean = float((j * pmf).sum())
        return float((j * j * pmf).sum()) - mean * mean

    def draw_accepted(self, size: int | tuple[int, ...], rng: np.random.Generator) -> I64:
        """Accepted draft tokens (0 … k) per sequence, one uniform draw each."""
        u = rng.random(size)
        # count of S_j > u: -S is non-decreasing, so it is the left insertion point of -u
        return np.searchsorted(-self.survival, -u, side="left").astype(np.int64)

    def draw_tokens(self, size: int | tuple[int, ...], rng: np.random.Generator) -> I64:
        """Tokens emitted per sequence by one verify step (accepted drafts + 1)."""
        return self.draw_accepted(size, rng) + 1


@dataclass(frozen=True)
class VerifyShape:
    """What one verify step asks of the target model for `num_seqs` decoding sequences."""

    num_seqs: int
    k: int  # draft tokens per sequence

    @property
    def query_tokens_per_seq(self) -> int:
        """Query tokens each sequence runs through the target: the last token + k drafts."""
        return self.k + 1

    @property
    def query_tokens(self) -> int:
        """Query tokens of the whole batch (the target's step is sized by these)."""
        return self.num_seqs * (self.k + 1)

    @property
    def lookahead_slots(self) -> int:
        """KV slots per sequence written beyond the accepted tokens, at most (vLLM's
        num_lookahead_slots): the KV pool must hold them during the step."""
        return self.k


@dataclass(frozen=True)
class DrafterCost:
    """The drafter's work per verify step, as data for the cost model.

    mtp / eagle: `extra_layers` decoder layer(s) of the target's shape, run `runs_per_step`
    times one after another, each over one query token per sequence; they share the target's
    embedding and LM head (the head runs once per draft position) and keep KV for their own
    layer(s) only. draft_model: the separate model `draft_model`, run `runs_per_step` times,
    with its own embedding, head and KV cache. Both also run once over every prompt (prefill).
    """

    method: SpeculativeMethod
    runs_per_step: int  # sequential drafter forward passes per verify step (= k)
    query_tokens_per_seq_per_run: int  # 1: a draft run extends each sequence by one token
    extra_layers: int | None  # mtp / eagle: layers of the target's shape; draft_model: None
    draft_model: str | None  # draft_model: the model's name or path; else None
    shares_target_head: bool  # mtp / eagle reuse the target's embedding and LM head
    prefill_runs: int = 1  # drafter passes over the prompt at prefill

    def query_tokens_per_step(self, num_seqs: int) -> int:
        """Drafter query tokens of one verify step, summed over its runs."""
        return self.runs_per_step * self.query_tokens_per_seq_per_run * num_seqs


@dataclass(frozen=True)
class SpeculativeParams:
    """`serving.speculative` as plain data: method, k and the acceptance profile."""

    method: SpeculativeMethod
    num_tokens: int  # k, draft tokens per verify step (>= 1)
    acceptance: float | tuple[float, ...]  # one rate a, or [p_1 … p_k] conditional
    draft_model: str | None = None  # required for draft_model, refused otherwise

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.num_tokens < 1:
            raise ValueError(f"num_tokens must be >= 1, got {self.num_tokens}")
        if isinstance(self.acceptance, tuple) and len(self.acceptance) != self.num_tokens:
            raise ValueError(
                f"acceptance lists {len(self.acceptance)} probabilities for "
                f"num_tokens={self.num_tokens} (give one per draft position, or one rate)"
            )
        if (self.method == "draft_model") != (self.draft_model is not None):
            raise ValueError("draft_model is required with method draft_model and only then")
        self.profile()  # validates the probabilities

    def profile(self) -> AcceptanceProfile:
        if isinstance(self.acceptance, tuple):
            return AcceptanceProfile(np.asarray(self.acceptance, dtype=np.float64))
        return AcceptanceProfile.single_rate(float(self.acceptance), self.num_tokens)

    def verify_shape(self, num_seqs: int) -> VerifyShape:
        return VerifyShape(num_seqs, self.num_tokens)

    def drafter(self) -> DrafterCost:
        small = self.method != "draft_model"
        return DrafterCost(
            method=self.method,
            runs_per_step=self.num_tokens,
            query_tokens_per_seq_per_run=1,
            extra_layers=1 if small else None,
            draft_model=self.draft_model,
            shares_target_head=small,
        )
