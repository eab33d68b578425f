"""Synthetic multi-turn sessions (`workload.sessions`, with `arrival: {process: sessions}`):
shared system prompts, chat turns and agent loops (workload/sessions.py; docs/workloads.md)."""

from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag, model_validator

from clustersim.config.schema.base import NonNegFloat, PosFloat, PosInt, Strict


class SessionsArrival(Strict):
    process: Literal["sessions"]  # session starts are Poisson; turns follow workload.sessions


class TokenDistSpec(Strict):
    """round(median · exp(sigma · Z)) tokens clipped to [min, max]; sigma 0 is fixed."""

    median: PosFloat
    sigma: NonNegFloat = 0.0
    min: PosInt = 1
    max: PosInt | None = None

    @model_validator(mode="after")
    def _check_bounds(self) -> "TokenDistSpec":
        if self.max is not None and self.max < self.min:
            raise ValueError(f"max ({self.max}) must be >= min ({self.min})")
        return self


class SessionClassSpec(Strict):
    """One kind of session: its share, turns, token lengths and think time."""

    name: str
    first_user_tokens: TokenDistSpec  # user tokens of turn 1 (after the system prompt)
    user_tokens: TokenDistSpec  # new user (or tool-result) tokens of each later turn
    output_tokens: TokenDistSpec  # answer tokens of every turn
    turns_mean: Annotated[float, Field(ge=1, le=10_000)] = 4.0  # geometric number of turns
    max_turns: Annotated[int, Field(gt=0, le=10_000)] = 64
    think_time_s: NonNegFloat = 30.0  # mean gap from one turn's arrival to the next (s)
    # share of sessions (relative to the other classes)
    weight: Annotated[float, Field(gt=0, le=1e6)] = 1.0


class SystemPromptsSpec(Strict):
    count: Annotated[int, Field(gt=0, le=1_000_000)] = 8  # shared system-prompt pool size
    tokens: TokenDistSpec = TokenDistSpec(median=1024, sigma=0.5)
    skew: NonNegFloat = 1.0  # Zipf exponent of the pool's popularity (0: uniform)


def _entry_kind(value: Any) -> str:
    """A built-in class name or a mapping: the errors of a mapping are the class spec's."""
    return "builtin" if isinstance(value, str) else "spec"


SessionClassEntry = Annotated[
    Annotated[Literal["chat", "agent"], Tag("builtin")] | Annotated[SessionClassSpec, Tag("spec")],
    Discriminator(_entry_kind),
]


def _chat_only() -> list[SessionClassEntry]:
    return ["chat"]


class SessionsSpec(Strict):
    """Multi-turn sessions; `classes` entries are mappings or the built-in `chat` / `agent`."""

    session_rate_rps: PosFloat  # new sessions per second (Poisson)
    system_prompts: SystemPromptsSpec = SystemPromptsSpec()
    block_tokens: PosInt = 512  # tokens per prefix block
    max_context_tokens: Annotated[int, Field(ge=2, le=2**31 - 1)] = 131_072
    classes: list[SessionClassEntry] = Field(default_factory=_chat_only, min_length=1)
