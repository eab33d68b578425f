"""A pipeline trip's stage steps in closed form: the flow-shop recurrence of
serving/pipeline_leap.py, one stage after another.

Stage s starts the batch at max(its arrival from stage s − 1, stage s's previous end),
computes, runs its all-reduce phases and hands off to stage s + 1; each transfer completes
at `complete(start, finish, owner)` (network/completion_ties.py), or, with `complete` None,
at its finish (the trip is checked against the near completions afterwards:
`Completions.hold_clear`). Times are seconds, added as the simpy clock adds them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from clustersim.network.private_allreduce import Phase
from clustersim.network.private_handoff import Transfer
from clustersim.serving.batch import Batch

Complete = Callable[[float, float, int], float]
Price = tuple[tuple[Phase, ...], Transfer | None, float]  # phases, hand-off, its latency (s)


def stage_steps(
    prices: Sequence[Price],
    computes: Sequence[float],
    free_s: list[float],
    done_s: list[float],
    formed: float,
    batch: Batch,
    head: tuple[int, int, bool],
    rows: list[float],
    times: list[float],
    complete: Complete | None,
    owner: int,
) -> None:
    """Append the trip's iteration rows (kv columns 0) to `rows` and its transfers'
    (start, completion) to `times`, advancing `free_s` (each stage's last end) and `done_s`
    (each hand-off's last completion). `head`: the replica, the lane, whether the stages
    all-reduce (TP > 1); `formed`: when the batch reaches stage 0."""
    replica, lane, comm = head
    pre, n = batch.prefill_tokens, batch.decode_tokens
    seqs, tokens = batch.num_seqs, batch.tokens
    arrival = formed
    for s, (phases, hand_off, latency) in enumerate(prices):
        free = free_s[s]
        if arrival > free:
            start = arrival
            bubble = arrival - free if free > 0 else 0.0  # max(0, start - free), > 0
        else:
            start, bubble = free, 0.0
        compute = computes[s]
        t1 = start + compute
        end = t1
        for links, _weights, _size, move_s, delay_s in phases:
            if links is not None:
                done = end + move_s
                if complete is not None:
                    done = complete(end, done, owner)
                times += (end, done)
                end = done
            if delay_s > 0:
                end = end + delay_s
        free_s[s] = end
        rows += (replica, s, lane, start, end, pre, n, seqs, tokens, compute,
                 end - t1 if comm else 0.0, bubble, 0, 0)  # fmt: skip
        if hand_off is None:
            arrival = end
            continue
        if end <= done_s[s]:
            raise RuntimeError("closed-form PP hand-offs overlapped on their links")
        done = end + hand_off.move_s
        if complete is not None:
            done = complete(end, done, owner)
        done_s[s] = done
        times += (end, done)
        arrival = done + latency if latency > 0 else done
