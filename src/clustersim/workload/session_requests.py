"""The request stream of synthetic sessions (`workload.sessions`, workload/sessions.py),
from the schema; workload/stream.py's `workload_requests` loads this module for them."""

from __future__ import annotations

import numpy as np

from clustersim.config.schema import HorizonSpec
from clustersim.config.schema.sessions import SessionClassSpec, SessionsSpec, TokenDistSpec
from clustersim.workload.requests import RequestStream
from clustersim.workload.sessions import (
    AGENT_LOOP,
    CHAT,
    SessionClass,
    SessionWorkload,
    TokenDist,
    generate_sessions,
)

BUILTIN_CLASSES = {"chat": CHAT, "agent": AGENT_LOOP}


def _dist(spec: TokenDistSpec) -> TokenDist:
    return TokenDist(spec.median, spec.sigma, spec.min, spec.max)


def _session_class(spec: str | SessionClassSpec) -> SessionClass:
    if isinstance(spec, str):
        return BUILTIN_CLASSES[spec]
    return SessionClass(
        name=spec.name,
        first_user_tokens=_dist(spec.first_user_tokens),
        user_tokens=_dist(spec.user_tokens),
        output_tokens=_dist(spec.output_tokens),
        turns_mean=spec.turns_mean,
        max_turns=spec.max_turns,
        think_time_s=spec.think_time_s,
        weight=spec.weight,
    )


def session_workload(spec: SessionsSpec) -> SessionWorkload:
    """The `workload.sessions` block as the generator's parameters."""
    return SessionWorkload(
        session_rate_rps=spec.session_rate_rps,
        classes=tuple(_session_class(c) for c in spec.classes),
        system_prompts=spec.system_prompts.count,
        system_prompt_tokens=_dist(spec.system_prompts.tokens),
        system_prompt_skew=spec.system_prompts.skew,
        block_tokens=spec.block_tokens,
        max_context_tokens=spec.max_context_tokens,
    )


def _first(stream: RequestStream, n: int) -> RequestStream:
    """The first `n` requests of a stream (by arrival)."""
    assert stream.prefix is not None and stream.session_id is not None
    n = min(n, len(stream))
    return RequestStream(
        stream.arrival_s[:n],
        stream.prompt_tokens[:n],
        stream.output_tokens[:n],
        prefix=stream.prefix.take(np.arange(n)),
        session_id=stream.session_id[:n],
    )


def session_requests(
    spec: SessionsSpec, horizon: HorizonSpec, rng_arrivals: np.random.Generator
) -> RequestStream:
    """Every turn arriving before `duration_s`, or the first `requests` turns of that many
    sessions (each has at least one turn)."""
    work = session_workload(spec)
    if horizon.duration_s is not None:
        return generate_sessions(work, rng_arrivals, duration_s=horizon.duration_s)
    n = horizon.requests
    assert n is not None
    return _first(generate_sessions(work, rng_arrivals, sessions=n), n)
