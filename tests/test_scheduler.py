"""Unit and property tests of the iteration-level scheduler (no simpy, no cost model)."""

from __future__ import annotations

import math
from typing import Literal

from hypothesis import given, settings
from hypothesis import strategies as st

from clustersim.config.schema import ServingSpec
from clustersim.serving.kv_cache import KVPool, blocks_for
from clustersim.serving.request_state import RequestState
from clustersim.serving.scheduler import Scheduler


def drive(
    prompts: list[int],
    outputs: list[int],
    capacity_blocks: int,
    serving: ServingSpec,
    max_steps: int = 200_000,
) -> tuple[RequestState, Scheduler, list[int], list[int]]:
    """Run a lane to completion with a unit step time; return state, lane, finish order, KV."""
    state = RequestState(prompts, outputs)
    finished: list[int] = []
    lane = Scheduler(serving, KVPool(capacity_blocks), state, lambda rid, now: finished.append(rid))
    for rid in range(len(prompts)):
        lane.add(rid)
    kv_trace: list[int] = []
    now = 0.0
    for _ in range(max_steps):
        batch = lane.next_batch(now)
        if batch is None:
            break
        assert batch.num_seqs <= serving.max_num_seqs
        kv_trace.append(lane.kv.used)
        now += 1.0
        lane.complete(batch, now)
        kv_trace.append(lane.kv.used)
    return state, lane, finished, kv_trace


def test_single_request_timeline_and_blocks() -> None:
    serving = ServingSpec(block_size=16, max_num_batched_tokens=512)
    state, lane, finished, kv = drive([100], [10], 64, serving)
    assert finished == [0]
    assert state.first_token_s[0] == 1.0  # one prefill step
    assert state.finish_s[0] == 10.0  # then 9 decode steps
    assert max(kv) == blocks_for(109, 16)  # 100 prompt + 9 decoded tokens written
    assert lane.kv.used == 0


def test_chunked_prefill_splits_long_prompt() -> None:
    serving = ServingSpec(block_size=16, max_num_batched_tokens=256)
    state, _, finished, _ = drive([1000], [2], 1000, serving)
    assert finished == [0]
    assert state.first_token_s[0] == math.ceil(1000 / 256)


def test_decode_and_prefill_share_a_step() -> None:
    serving = ServingSpec(block_size=16, max_num_batched_tokens=128, max_num_seqs=8)
    state = RequestState([64, 64], [50, 50])
    lane = Scheduler(serving, KVPool(100), state, lambda rid, now: None)
    lane.add(0)
    b1 = lane.next_batch(0.0)
    assert b1 is not None and b1.prefill_tokens == 64
    lane.complete(b1, 1.0)
    lane.add(1)
    b2 = lane.next_batch(1.0)
    assert b2 is not None
    assert b2.decode_tokens == 1 and b2.prefill_tokens == 64
    assert b2.decode_ctx_tokens == 65  # prompt + first token


def test_preemption_by_recompute_when_kv_runs_out() -> None:
    serving = ServingSpec(block_size=4, max_num_batched_tokens=64, max_num_seqs=8)
    # 3 requests of 8 + 20 tokens = 7 blocks each; 12 blocks cannot hold all three.
    state, lane, finished, kv = drive([8, 8, 8], [20, 20, 20], 12, serving)
    assert sorted(finished) == [0, 1, 2]
    assert sum(state.preemptions) > 0
    assert max(kv) <= 12
    assert lane.kv.used == 0


def test_without_chunked_prefill_prefills_run_alone() -> None:
    serving = ServingSpec(block_size=16, max_num_batched_tokens=2048, chunked_prefill=False)
    state = RequestState([100, 100], [5, 5])
    lane = Scheduler(serving, KVPool(100), state, lambda rid, now: None)
    lane.add(0)
    b = lane.next_batch(0.0)
    assert b is not None
    lane.complete(b, 1.0)
    lane.add(1)
    b = lane.next_batch(1.0)
    assert b is not None and b.decode_tokens == 0 and b.prefill_tokens == 100


def test_max_num_seqs_caps_the_running_set() -> None:
    serving = ServingSpec(block_size=16, max_num_batched_tokens=4096, max_num_seqs=3)
    state = RequestState([10] * 10, [100] * 10)
    lane = Scheduler(serving, KVPool(1000), state, lambda rid, now: None)
    for rid in range(10):
        lane.add(rid)
    b = lane.next_batch(0.0)
    assert b is not None and b.num_seqs == 3


@settings(max_examples=60, deadline=None)
@given(
    reqs=st.lists(st.tuples(st.integers(1, 300), st.integers(1, 60)), min_size=1, max_size=25),
    block_size=st.sampled_from([1, 4, 16]),
    spare_blocks=st.integers(0, 60),
    budget=st.integers(32, 600),
    max_seqs=st.integers(1, 16),
    chunked=st.booleans(),
)
def test_every_request_finishes_once_and_kv_stays_in_bounds(
    reqs: list[tuple[int, int]],
    block_size: int,
    spare_blocks: int,
    budget: int,
    max_seqs: int,
    chunked: bool,
) -> None:
    run_random_lane(reqs, block_size, spare_blocks, budget, max_seqs, chunked, "incremental")


def run_random_lane(
    reqs: list[tuple[int, int]],
    block_size: int,
    spare_blocks: int,
    budget: int,
    max_seqs: int,
    chunked: bool,
    admission: Literal["incremental", "reserve_full"],
) -> RequestState:
    """Drive a lane over (prompt, output) requests with KV room for the largest one plus
    `spare_blocks`; check every request finishes exactly once with its whole output, KV stays
    in [0, capacity] and returns to 0, and per-request times are ordered."""
    prompts = [p for p, _ in reqs]
    outputs = [o for _, o in reqs]
    capacity = max(blocks_for(p + o, block_size) for p, o in reqs) + spare_blocks
    if not chunked:
        budget = max(budget, max(p + o for p, o in reqs))
    serving = ServingSpec(
        block_size=block_size,
        max_num_batched_tokens=budget,
        max_num_seqs=max_seqs,
        chunked_prefill=chunked,
        kv_admission=admission,
    )
    state, lane, finished, kv = drive(prompts, outputs, capacity, serving)
    assert sorted(finished) == list(range(len(reqs)))  # each exactly once
    assert all(0 <= used <= capacity for used in kv)
    assert lane.kv.used == 0
    for rid in range(len(reqs)):
        assert state.generated[rid] == outputs[rid]
        assert state.first_scheduled_s[rid] <= state.first_token_s[rid] <= state.finish_s[rid]
        # one token per step at most after the first
        assert state.finish_s[rid] - state.first_token_s[rid] >= outputs[rid] - 1
    return state


# ------------------------------------------------------------------ reserve_full admission


def test_reserve_full_caps_concurrency_by_full_reservations() -> None:
    """GUARANTEED_NO_EVICT: 3 blocks per request (8 + 4 tokens, block 4) and 7 blocks hold
    two requests at once, although their prompts alone would let five in."""
    serving = ServingSpec(
        block_size=4, max_num_batched_tokens=64, max_num_seqs=8, kv_admission="reserve_full"
    )
    state = RequestState([8] * 5, [4] * 5)
    lane = Scheduler(serving, KVPool(7), state, lambda rid, now: None)
    for rid in range(5):
        lane.add(rid)
    b = lane.next_batch(0.0)
    assert b is not None and b.num_seqs == 2 and lane.kv.used == 6
    lane.complete(b, 1.0)
    b = lane.next_batch(1.0)  # decode allocates nothing: the blocks were reserved
    assert b is not None and b.decode_tokens == 2 and lane.kv.used == 6


def test_reserve_full_never_preempts_and_frees_everything() -> None:
    serving = ServingSpec(
        block_size=4, max_num_batched_tokens=64, max_num_seqs=8, kv_admission="reserve_full"
    )
    # the incremental policy preempts on this input (test_preemption_by_recompute_...)
    state, lane, finished, kv = drive([8, 8, 8], [20, 20, 20], 12, serving)
    assert sorted(finished) == [0, 1, 2]
    assert sum(state.preemptions) == 0
    assert max(kv) <= 12 and lane.kv.used == 0
    # 7 blocks each: one runs at a time, so they finish one after another
    assert state.finish_s[0] <= state.first_scheduled_s[1] < state.finish_s[1]


@settings(max_examples=60, deadline=None)
@given(
    reqs=st.lists(st.tuples(st.integers(1, 300), st.integers(1, 60)), min_size=1, max_size=25),
    block_size=st.sampled_from([1, 4, 16, 64]),
    spare_blocks=st.integers(0, 60),
    budget=st.integers(32, 600),
    max_seqs=st.integers(1, 16),
    chunked=st.booleans(),
)
def test_reserve_full_every_request_finishes_within_reservations(
    reqs: list[tuple[int, int]],
    block_size: int,
    spare_blocks: int,
    budget: int,
    max_seqs: int,
    chunked: bool,
) -> None:
    state = run_random_lane(
        reqs, block_size, spare_blocks, budget, max_seqs, chunked, "reserve_full"
    )
    assert sum(state.preemptions) == 0
