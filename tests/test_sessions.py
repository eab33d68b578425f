"""Synthetic multi-turn sessions: structure, prefix-block ids, popularity, and cache reuse."""

from __future__ import annotations

import itertools
from collections import defaultdict

import numpy as np
import pytest
from scipy import stats

from clustersim.serving.prefix_cache import PrefixCache, cached_tokens
from clustersim.workload.requests import RequestStream
from clustersim.workload.sessions import (
    AGENT_LOOP,
    CHAT,
    SessionClass,
    SessionWorkload,
    TokenDist,
    _draw_turns,
    _prefix_ids,
    generate_sessions,
    zipf_weights,
)

SMALL = SessionWorkload(
    session_rate_rps=1.0,
    classes=(CHAT, AGENT_LOOP),
    system_prompts=4,
    system_prompt_tokens=TokenDist(300, 0.6),
    block_tokens=64,
    max_context_tokens=20_000,
)


def _by_session(rs: RequestStream) -> dict[int, list[int]]:
    assert rs.session_id is not None
    turns: dict[int, list[int]] = defaultdict(list)
    for j, s in enumerate(rs.session_id.tolist()):
        turns[s].append(j)
    return turns


def test_deterministic_sorted_and_bounded() -> None:
    a = generate_sessions(SMALL, np.random.default_rng(5), duration_s=600)
    b = generate_sessions(SMALL, np.random.default_rng(5), duration_s=600)
    assert a.prefix is not None and b.prefix is not None and a.session_id is not None
    for x, y in [
        (a.arrival_s, b.arrival_s),
        (a.prompt_tokens, b.prompt_tokens),
        (a.prefix.ids, b.prefix.ids),
        (a.session_id, b.session_id),
    ]:
        assert np.array_equal(x, y)
    assert (np.diff(a.arrival_s) >= 0).all() and a.arrival_s.max() < 600
    assert (a.prompt_tokens + a.output_tokens <= SMALL.max_context_tokens).all()
    assert (a.prefix.counts == -(-a.prompt_tokens // SMALL.block_tokens)).all()


def test_each_turn_extends_the_previous_prompt_and_answer() -> None:
    rs = generate_sessions(SMALL, np.random.default_rng(1), sessions=200)
    assert rs.prefix is not None
    bt = SMALL.block_tokens
    for rows in _by_session(rs).values():
        for prev, nxt in itertools.pairwise(rows):
            p, o = int(rs.prompt_tokens[prev]), int(rs.output_tokens[prev])
            assert rs.prompt_tokens[nxt] >= p + o + 1  # + at least one new user token
            assert rs.arrival_s[nxt] >= rs.arrival_s[prev]
            full = p // bt  # the previous prompt's full blocks are the next one's prefix
            assert np.array_equal(rs.prefix.row(nxt)[:full], rs.prefix.row(prev)[:full])
            if p % bt:  # the previous partial block is new content in the next turn
                assert rs.prefix.row(prev)[-1] not in set(rs.prefix.row(nxt).tolist())


def test_answer_ids_are_the_next_turns_ids_of_those_blocks() -> None:
    """A turn of P prompt and O answer tokens holds P + O − 1 tokens of KV when it finishes;
    its answer ids name full blocks ⌊P/bt⌋ … ⌊(P+O−1)/bt⌋ − 1, exactly as its next turn does."""
    rs = generate_sessions(SMALL, np.random.default_rng(2), sessions=200)
    assert rs.prefix is not None and rs.prefix.answer is not None
    bt = SMALL.block_tokens
    answer = rs.prefix.answer
    checked = 0
    for rows in _by_session(rs).values():
        for prev, nxt in itertools.pairwise(rows):
            p, o = int(rs.prompt_tokens[prev]), int(rs.output_tokens[prev])
            expected = rs.prefix.row(nxt)[p // bt : (p + o - 1) // bt]
            assert np.array_equal(answer.row(prev), expected)
            checked += len(expected)
    assert checked > 100
    counts = (rs.prompt_tokens + rs.output_tokens - 1) // bt - rs.prompt_tokens // bt
    assert np.array_equal(answer.counts, counts)  # last turns too: ids of their own
    named = set(rs.prefix.ids.tolist())  # a session's last answer is nobody's prompt
    last_answers = [h for rows in _by_session(rs).values() for h in answer.row(rows[-1])]
    assert last_answers and not named.intersection(last_answers)


def test_equal_ids_exactly_when_prefixes_are_equal() -> None:
    """Rebuild every block's token content (system prompt j's tokens up to its length, then
    the session's own tokens, append-only) and its whole prefix: two blocks get equal ids
    iff their prefixes (content chains) are equal."""
    work = SessionWorkload(
        session_rate_rps=2.0,
        classes=(CHAT,),
        system_prompts=3,
        system_prompt_tokens=TokenDist(100, 0.8),
        system_prompt_skew=0.5,
        block_tokens=32,
    )
    rng = np.random.default_rng(11)
    turns = _draw_turns(work, np.cumsum(rng.exponential(1.0, 60)), rng)
    prefix = _prefix_ids(work, turns)
    bt = work.block_tokens
    key_of_id: dict[int, object] = {}
    id_of_key: dict[object, int] = {}
    system_only: set[int] = set()
    for r in range(len(turns.prompt)):
        j = int(turns.system_prompt[r])
        sys_len = int(turns.system_prompt_tokens[j])
        sess, prompt = int(turns.session[r]), int(turns.prompt[r])
        chain: object = None
        full_chain: object = None  # the chain of the prompt's full blocks
        answer = prefix.answer.row(r).tolist() if prefix.answer is not None else []
        blocks = prefix.row(r).tolist()
        full = prompt // bt
        # prompt blocks, then the answer's full blocks (prompt + answer is append-only too)
        kv = prompt + int(turns.output[r]) - 1  # tokens of KV when the turn finishes
        steps = [(i, h, prompt) for i, h in enumerate(blocks)]
        steps += [(i, h, kv) for i, h in enumerate(answer, start=full)]
        for i, h, last in steps:
            if i == full:
                chain = full_chain
            start, end = i * bt, min((i + 1) * bt, last)
            sys_part = (j, start, min(end, sys_len)) if start < sys_len else None
            own_part = (sess, max(start, sys_len), end) if end > sys_len else None
            chain = (chain, sys_part, own_part)
            if i < full:
                full_chain = chain
            if own_part is None:
                system_only.add(h)
            assert key_of_id.setdefault(h, chain) == chain
            assert id_of_key.setdefault(chain, h) == h
    assert 0 < len(system_only) < len(key_of_id)  # both kinds of block occur
    assert prefix.answer is not None and prefix.answer.counts.sum() > 0


def test_system_prompt_popularity_is_zipf() -> None:
    work = SessionWorkload(
        session_rate_rps=5.0,
        classes=(SessionClass("one", TokenDist(10), TokenDist(10), TokenDist(10), turns_mean=1),),
        system_prompts=6,
        system_prompt_tokens=TokenDist(256),  # exactly 4 blocks of 64: prompt j's first id 4j
        system_prompt_skew=1.2,
        block_tokens=64,
    )
    rs = generate_sessions(work, np.random.default_rng(3), sessions=20_000)
    assert rs.prefix is not None
    first = rs.prefix.ids[rs.prefix.offsets[:-1]]
    counts = np.bincount(first // 4, minlength=6)
    expected = zipf_weights(6, 1.2) * len(rs)
    assert stats.chisquare(counts, expected).pvalue > 1e-4


def test_mean_turns_and_agent_loops() -> None:
    chat_only = SessionWorkload(session_rate_rps=1.0, classes=(CHAT,))
    rs = generate_sessions(chat_only, np.random.default_rng(2), sessions=20_000)
    assert len(rs) / 20_000 == pytest.approx(chat_only.mean_turns, rel=0.03)
    agents = SessionWorkload(session_rate_rps=1.0, classes=(AGENT_LOOP,))
    ra = generate_sessions(agents, np.random.default_rng(2), sessions=300)
    turns = np.bincount(ra.session_id)  # type: ignore[arg-type]
    assert turns.mean() == pytest.approx(agents.mean_turns, rel=0.15)
    assert np.median(ra.prompt_tokens) > 8000 and np.median(ra.output_tokens) < 200
    assert agents.mean_turns > 15 > chat_only.mean_turns


def test_mean_turns_formula_against_the_cap() -> None:
    one = SessionClass("x", TokenDist(1), TokenDist(1), TokenDist(1), turns_mean=5, max_turns=3)
    w = SessionWorkload(1.0, classes=(one,))
    q = 0.8
    assert w.mean_turns == pytest.approx(1 + q + q * q)


def test_bad_parameters() -> None:
    with pytest.raises(ValueError):
        TokenDist(0)
    with pytest.raises(ValueError):
        TokenDist(10, max=0)
    with pytest.raises(ValueError):
        SessionClass("x", TokenDist(1), TokenDist(1), TokenDist(1), turns_mean=0.5)
    with pytest.raises(ValueError):
        SessionWorkload(0.0)
    with pytest.raises(ValueError):
        SessionWorkload(1.0, classes=())
    with pytest.raises(ValueError):
        generate_sessions(SMALL, np.random.default_rng(0), sessions=3, duration_s=3.0)


def test_cache_serves_the_shared_system_prompt_and_earlier_turns() -> None:
    """Theory: one system prompt for every session, an unbounded cache, requests in order:
    after the first, each request's prefill is its uncached suffix — a new session computes
    its own tokens past the system prompt's full blocks, a later turn only what its previous
    turn and answer added past the previous prompt's full blocks."""
    work = SessionWorkload(
        session_rate_rps=0.5,
        classes=(CHAT,),
        system_prompts=1,
        system_prompt_tokens=TokenDist(2048),
        block_tokens=64,
    )
    rs = generate_sessions(work, np.random.default_rng(4), sessions=300)
    assert rs.prefix is not None and rs.session_id is not None
    bt = work.block_tokens
    cache = PrefixCache(10**7, bt)
    last_prompt: dict[int, int] = {}
    for j in range(len(rs)):
        ids = rs.prefix.row(j).tolist()
        prompt = int(rs.prompt_tokens[j])
        m = cache.acquire(j, ids, prompt_tokens=prompt)
        s = int(rs.session_id[j])
        reused = last_prompt.get(s, 2048) // bt if j else 0
        assert m.blocks == reused
        assert prompt - cached_tokens(m.blocks, prompt, bt) == prompt - reused * bt
        cache.allocate(len(ids) - m.blocks)
        cache.insert(j, ids)
        cache.release_seq(j)
        last_prompt[s] = prompt
    assert cache.stats.token_hit_rate > 0.5
