"""Answer blocks published for the next turn (docs/prefix_caching.md): the ids a workload
gives them (sessions exactly, traces from each request's next turn) and the cache hits they
give the next turn through the simulator."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from unittest.mock import patch

import numpy as np

from clustersim.config.schema import Experiment
from clustersim.serving import prefix_lane_choice
from clustersim.sim.engine import experiment_requests, run_experiment
from clustersim.workload.prefix_blocks import PrefixBlocks, successor_answers
from test_prefix_caching import (
    BT,
    _conversations,
    experiment_text,
    run_capturing_lanes,
    write_trace,
)

MakeExperiment = Callable[..., Experiment]


def _answers(rows: list[tuple[int, int, list[int]]], bt: int = 4) -> list[list[int]]:
    """successor_answers of (prompt, output, ids) rows, as lists."""
    prefix = PrefixBlocks.from_lists([ids for _, _, ids in rows], bt)
    prompt = np.array([p for p, _, _ in rows], dtype=np.int64)
    output = np.array([o for _, o, _ in rows], dtype=np.int64)
    got = successor_answers(prefix, prompt, output)
    return [got.row(j).tolist() for j in range(len(rows))]


def test_successor_answers_reads_the_next_turn() -> None:
    # blocks of 4 tokens; turn 1: 9 prompt + 8 answer tokens → KV of 16 tokens, 4 full
    # blocks, 2 of them completed by the answer; turn 2 (18 tokens) names them 20, 21
    rows = [(9, 8, [1, 2, 90]), (18, 1, [1, 2, 20, 21, 91])]
    assert _answers(rows) == [[20, 21], []]
    # the next turn's prompt must hold the whole exchange (≥ 9 + 8 tokens)
    assert _answers([(9, 8, [1, 2, 90]), (16, 1, [1, 2, 20, 21])]) == [[], []]
    # only the blocks the answer completes: a 2-token answer completes none past block 2
    assert _answers([(9, 2, [1, 2, 90]), (18, 1, [1, 2, 20, 21, 91])]) == [[], []]
    # the first later extension is the successor; a request in between that does not
    # extend the full blocks is skipped
    rows = [(9, 4, [1, 2, 90]), (9, 1, [1, 7, 92]), (14, 1, [1, 2, 30, 93]), (14, 1, [1, 2, 40])]
    assert _answers(rows)[0] == [30]


def test_successor_answers_needs_a_chain_of_its_own() -> None:
    # the full blocks [1] were sent before (a shared system prompt): whoever extends them
    # next need not continue this request's answer
    rows = [(5, 1, [1, 80]), (5, 8, [1, 81]), (14, 1, [1, 30, 31, 93])]
    assert _answers(rows)[1] == []
    assert _answers(rows)[0] == []  # a 1-token answer completes nothing
    # no full prompt block, or fewer ids than full blocks: nothing inferred
    assert _answers([(3, 8, [80]), (14, 1, [50, 51, 52, 93])])[0] == []
    assert _answers([(9, 8, [1]), (18, 1, [1, 2, 20, 21, 91])])[0] == []


def test_take_carries_answers_with_the_id_shift() -> None:
    prefix = PrefixBlocks.from_lists([[1, 2], [3]], 4).with_answers(
        PrefixBlocks.from_lists([[7], []], 4)
    )
    took = prefix.take([1, 0, 0], [0, 100, 200])
    assert took.answer is not None
    assert [took.answer.row(j).tolist() for j in range(3)] == [[], [107], [207]]


def test_next_turn_reuses_the_answer(tmp_path: Path, make_experiment: MakeExperiment) -> None:
    """Turn 1: 4 full prompt blocks + 100 tokens, a 2-block answer → it finishes holding
    6 full blocks. Turn 2 (after it finished) extends prompt + answer: it reuses all 6, the
    answer's 2 included, and prefills only its own tail."""
    p1, o1 = 4 * BT + 100, 2 * BT
    p2 = p1 + o1 + 50
    rows = [
        (0.0, p1, o1, [0, 1, 2, 3, 900]),
        (60.0, p2, 4, [0, 1, 2, 3, 40, 41, 901]),
    ]
    trace = write_trace(tmp_path / "two_turns.jsonl", rows)
    text = experiment_text(trace).replace("dp: 2", "dp: 1")
    out, lanes = run_capturing_lanes(make_experiment(text))
    req = out.requests.sort_values("arrival_s")
    assert req["finish_s"].iloc[0] < 60.0
    assert req["cached_tokens"].tolist() == [0, 6 * BT]
    assert int(out.iterations["prefill_tokens"].sum()) == p1 + p2 - 6 * BT
    cache = lanes[0][0].cache
    cache.check()
    assert cache.used == 0 and cache.cached_prefix_blocks == 6  # turn 2 added no full block


def test_session_turns_reuse_prompt_and_answer(make_experiment: MakeExperiment) -> None:
    """Synthetic sessions on one replica with a cache that never evicts: a turn arriving after
    its previous turn finished reuses every full block the previous turn held — its prompt's
    and its answer's — up to its own last token."""
    text = """
name: sessions
seed: 7
model: llama-3.1-8b
topology: dgx_h100_x1
layout: {tp: 1, dp: 1}
serving:
  router: session_affinity
  prefix_caching: {enabled: true}
workload:
  arrival: {process: sessions}
  sessions:
    session_rate_rps: 0.2
    block_tokens: 64
    system_prompts: {count: 2, tokens: {median: 300, sigma: 0.3}, skew: 1.0}
    classes:
      - {name: chat, first_user_tokens: {median: 400, sigma: 0.5},
         user_tokens: {median: 60, sigma: 0.5}, output_tokens: {median: 300, sigma: 0.5},
         turns_mean: 4, think_time_s: 20}
horizon: {duration_s: 300}
"""
    exp = make_experiment(text)
    out = run_experiment(exp)
    assert out.prefix_cache is not None and int(out.prefix_cache["evicted_blocks"].sum()) == 0
    req = out.requests
    session = experiment_requests(exp).session_id
    assert req["finish_s"].notna().all() and session is not None
    bt, checked, answer_blocks = 64, 0, 0
    last: dict[int, tuple[int, int, float]] = {}
    columns = ["prompt_tokens", "output_tokens", "arrival_s", "finish_s", "cached_tokens"]
    for s, (p, o, arr, fin, cached) in zip(
        session.tolist(), req[columns].itertuples(index=False), strict=True
    ):
        if s in last and last[s][2] < arr:
            prev_p, prev_o, _ = last[s]
            held = (prev_p + prev_o - 1) // bt  # full blocks of the previous turn's KV
            assert cached == min(held, (p - 1) // bt) * bt
            checked += 1
            answer_blocks += min(held, (p - 1) // bt) - prev_p // bt
        last[s] = (int(p), int(o), float(fin))
    assert checked > 20 and answer_blocks > checked  # answers gave > 1 block a turn


# --------------------------------------------------------------------------- reserve_full


def test_reserve_full_reserves_beside_the_shared_prefix_once(
    tmp_path: Path, make_experiment: MakeExperiment
) -> None:
    """kv_admission: reserve_full with prefix caching (TensorRT-LLM GUARANTEED_NO_EVICT with
    KV reuse). A first request caches an 8-block prompt; then two requests reusing it run at
    once: each reserves only its suffix + output, the 8 shared blocks are counted once, so
    the lane's KV use peaks at 8 · 32 + 2 × (reservation − 8 · 32) pool blocks."""
    tail, out_tokens = 100, 64
    prompt = 8 * BT + tail
    rows = [(0.0, prompt, 4, [*range(8), 900])]
    rows += [(30.0, prompt, out_tokens, [*range(8), 901 + j]) for j in range(2)]
    trace = write_trace(tmp_path / "shared.jsonl", rows)
    text = experiment_text(trace).replace("dp: 2", "dp: 1")
    exp = make_experiment(text, ["serving.kv_admission=reserve_full"])
    out, lanes = run_capturing_lanes(exp)
    req = out.requests.sort_values("arrival_s")
    assert req["cached_tokens"].tolist() == [0, 8 * BT, 8 * BT]
    assert (req["preemptions"] == 0).all()
    assert int(out.iterations["prefill_tokens"].sum()) == prompt + 2 * tail
    block = exp.serving.block_size
    shared = 8 * BT // block
    reservation = -(-(prompt + out_tokens) // block)
    later = out.iterations[out.iterations["start_s"] >= 30.0]
    assert int(later["kv_used_blocks"].max()) == shared + 2 * (reservation - shared)
    cache = lanes[0][0].cache
    cache.check()
    assert cache.used == 0 and cache.cached_prefix_blocks == 8


# --------------------------------------------------------------------------- PP lanes


def test_pipeline_lanes_follow_the_prefix(tmp_path: Path, make_experiment: MakeExperiment) -> None:
    """A PP = 2 replica has two lanes, each with its own cache: a conversation's later turns
    go to the lane holding its earlier ones (serving/prefix_lane_choice.py), so they reuse
    more than under the least-loaded lane choice, which alternates them."""
    # turns overlap (long answers, arrivals 0.1 s apart), so both lanes stay busy
    rows = [(t, p, 300, ids) for t, p, _, ids in _conversations(5, 6, 0.1)]
    trace = write_trace(tmp_path / "conv.jsonl", rows)
    text = experiment_text(trace).replace("{tp: 1, dp: 2}", "{tp: 1, pp: 2, dp: 1}")
    out, lanes = run_capturing_lanes(make_experiment(text))
    with patch.object(prefix_lane_choice, "prefix_lane", _least_outstanding_lane):
        blind = run_experiment(make_experiment(text))
    hit = out.requests["cached_tokens"].sum() / out.requests["prompt_tokens"].sum()
    hit_blind = blind.requests["cached_tokens"].sum() / blind.requests["prompt_tokens"].sum()
    assert hit > hit_blind + 0.1
    assert len(lanes[0]) == 2 and all(lane.cache.stats.lookups > 0 for lane in lanes[0])
    for lane in lanes[0]:
        lane.cache.check()
        assert lane.cache.used == 0


def _least_outstanding_lane(rid: int, lanes: object, outstanding: list[int]) -> int:
    return outstanding.index(min(outstanding))
