"""The stepped loop of a plain single-stage lane (TP1 first), its hot state in locals.

`Replica._single_stage_lane` steps a lane through the scheduler's methods (next_batch →
_schedule_decode → new_blocks / allocate / fill → pack → _fit_chunk / _add_chunk, then
complete → finishes_by / _finish_decoders / advance / _end_prefill): about twenty calls a
step. At high load (the issue 15 floor: a batch changes every 1.4 steps, so decode leaps
cover little) those calls are most of a step's Python. This loop does the same work inline
for a *plain* lane — one stage (TP1: its step is its compute; TP > 1: its compute, then its
all-reduces, one timer when they run in closed form, as `Replica._execute`; the module keeps
its first case's name), no prefix caching, no speculative decoding, incremental KV
admission, no KV kept after a finish. It keeps in locals what a scheduler never rebinds (its
pool, decode set, queues, per-request lists and limits) and reads their counts afresh after
every yield (an arrival, a fault or a leap's cut may change them while a step runs); a
scheduler replaced by a fault is bound anew.

Inline, with the scheduler's arithmetic in the scheduler's order:
- batch formation when no disaggregated KV arrived, the decode step's new blocks are free
  (no preemption) and prefills join the decodes (chunked prefill, or whole prompts beside
  the decodes as TensorRT-LLM does); the decode step first, then running chunked prefills,
  then waiting requests FCFS within the token budget, max_num_seqs and the free blocks less
  the admission watermark;
- the step's row (Recorder.on_iteration's values, the ten that vary packed into the
  recorder's buffer of lane rows: metrics/lane_rows.py);
- the step's completion: the finish walk over the decode set's heap, prefill progress and
  prefills becoming decodes or finishing (DecodeSet.enter / leave).
A decode-only batch may start a decode leap as in the general loop, except when a request
finishes in it (the leap would hold that one step), and after short leaps the lane steps up
to TP1_MAX_PAUSE batches.
Anything else (a preemption, a step with nothing to run, prefill-only engines, KV that
arrived) forms its batch with `Scheduler.next_batch`, and a scheduler that is not plain
(a fault's fresh one, say) hands the lane to the general loop. The outputs are the same
byte for byte (tests/test_tp1_lane.py compares both loops).
"""

from __future__ import annotations

import heapq
import os
from collections.abc import Generator, Sequence
from typing import Any, Protocol

import simpy
from simpy.events import NORMAL

from clustersim.metrics.lane_rows import pack_lane_row
from clustersim.metrics.recorder import Recorder
from clustersim.model.stage_cost import StageCost, StageCostModel
from clustersim.model.stage_parts import StepPart
from clustersim.serving.batch import Batch
from clustersim.serving.decode_leap import DecodeLeap, LeapPricing
from clustersim.serving.decode_set import DecodeSet
from clustersim.serving.kv_cache import KVCapacityError, KVPool
from clustersim.serving.leap_backoff import TP1_WORTH_STEPS, LeapBackoff
from clustersim.serving.scheduler import Scheduler

Process = Generator[simpy.Event, Any, None]


class LaneLike(Protocol):
    """serving/replica.py Lane."""

    scheduler: Scheduler
    idle: bool
    wake: simpy.Event


class TP1Replica(Protocol):
    """What the loop reads of its serving/replica.py Replica (and its LaneLeaps)."""

    env: simpy.Environment
    index: int
    recorder: Recorder
    epoch: int
    tp: int
    groups: tuple[tuple[str, ...], ...]
    _pricing: LeapPricing | None
    _leap_done: DecodeLeap | None

    @property
    def costs(self) -> Sequence[StageCost]: ...
    def _leap_worth_steps(self, tp1_worth: int) -> int: ...

    def _closed_step(self, start: float, compute_s: float, tokens: int) -> float | None: ...

    def _compute_then_allreduce(
        self, cost: StageCost, group: tuple[str, ...], compute: float, tokens: int
    ) -> Generator[simpy.Event, Any, tuple[float, float]]: ...

    def _leap_from(self, sched: Scheduler, batch: Batch, start: float) -> Process | None: ...

    def _single_stage_lane(self, lane: Any) -> Process: ...


# Batches stepped at most after short leaps (LeapBackoff; the general loop: 16). This loop's
# steps cost less than the general one's, so a short leap costs relatively more: at high load
# (8 × 8B TP1 at 70 %, leaps cut by an arrival every ≈ 2 steps) pausing up to 256 batches
# runs 4 % fewer instructions than 16 (as few as never leaping); at light load (2 replicas,
# 13 %) leaps run long, the pause stays 0 and nothing changes (−0.1 %).
TP1_MAX_PAUSE = 256


def tp1_lane_enabled() -> bool:
    """`CLUSTERSIM_TP1_LANE=0` in the environment steps every lane the general way (the
    equivalence tests run both)."""
    return os.environ.get("CLUSTERSIM_TP1_LANE", "1") != "0"


def plain_lane(sched: Scheduler) -> bool:
    """Whether this loop may step the lane's scheduler (see the module docstring)."""
    adm = sched.admission
    return (
        sched.prefix is None
        and adm.prefix is None
        and type(sched.kv) is KVPool
        and type(sched.decodes) is DecodeSet
        and not adm.reserve_full
        and not adm.keep_kv_after_finish
        and sched.decodes.block_size == adm.block_size
    )


def _decode_batch(n: int, ctx: int, d: int) -> Batch:
    """The Batch of a decode-only step (a decode leap plans from it)."""
    batch = Batch()
    batch.decode_tokens = batch.num_seqs = n
    batch.decode_ctx_tokens = ctx
    batch.decode_step = d
    return batch


def tp1_lane(replica: TP1Replica, lane: LaneLike) -> Process:
    """The lane's process: form a batch, run its compute, record it, complete it; sleep
    while there is nothing to run. Falls back to `replica._single_stage_lane` for good
    once the lane's scheduler is not plain."""
    env = replica.env
    # the lane's step timer: one event re-armed each step where `env.timeout` would create
    # one (`Environment.schedule`'s entry, inline: at now + the step's delay, NORMAL
    # priority, the next event id; only this lane waits on it, and only while it is pending)
    queue, next_eid = env._queue, env._eid.__next__
    step_timer = simpy.Event(env)
    step_timer._ok = True
    step_timer._value = None
    recorder = replica.recorder
    record_rows = recorder.record_iterations
    append_row = recorder.lane_rows.frombytes
    index = replica.index
    tp, group = replica.tp, replica.groups[0]
    backoff = LeapBackoff(replica._leap_worth_steps(TP1_WORTH_STEPS), TP1_MAX_PAUSE)
    heappop, heappush = heapq.heappop, heapq.heappush
    sched: Scheduler | None = None
    priced: StageCost | None = None  # the stage cost whose cached terms are bound below
    while True:
        if lane.scheduler is not sched:  # first step, or a fault's fresh scheduler
            sched = lane.scheduler
            pool, decoding = sched.kv, sched.decodes
            if not (isinstance(pool, KVPool) and isinstance(decoding, DecodeSet)) or not (
                plain_lane(sched)
            ):
                yield from replica._single_stage_lane(lane)
                return
            kv: KVPool = pool
            decodes: DecodeSet = decoding
            st = sched.state
            adm = sched.admission
            prefills = sched.prefills
            on_finish = sched.on_finish
            eff, computed, generated, output = (
                st.effective_prompt,
                st.computed,
                st.generated,
                st.output,
            )
            d0s, version, finish_s = st.d0, st.version, st.finish_s
            first_sched, first_token = st.first_scheduled_s, st.first_token_s
            residue, members, heap = decodes.residue, decodes.members, decodes.finish_heap
            waiting = prefills.waiting
            bs = adm.block_size
            never_inline = not (sched.chunked or sched.mixed_whole_prompts)
            arrived = sched.arrived  # (disaggregated KV that arrived: the scheduler's batch)
            chunked, max_tokens, max_seqs = sched.chunked, sched.max_tokens, prefills.max_seqs
            watermark, capacity = adm.watermark_blocks, kv.capacity
        now = env._now  # (Environment.now, without its property call)
        # ---------------------------------------------------------- batch formation
        batch: Batch | None = None
        chunks: list[tuple[int, int]] = []
        pt = nseqs = 0
        pairs = 0.0
        used = kv.used
        n = len(members)
        d, ctx = -1, 0
        # (truthy: the scheduler forms the batch)
        general: bool | list[int] = never_inline or arrived
        if n and not general:
            d = decodes.d
            need = residue[d % bs]
            if need > capacity - used:
                general = True  # it preempts: Scheduler.next_batch
            else:
                used += need
                ctx = decodes.ctx_offset + n * d
                nseqs = n
        prefilling = prefills.prefilling
        if not general and (waiting or prefilling):  # PrefillQueue.pack, inline
            budget = max_tokens - n
            for rid in prefilling:
                if budget <= 0:
                    break
                c = computed[rid]
                chunk = eff[rid] - c
                if chunked and chunk > budget:
                    chunk = budget
                room = (-(-c // bs) + capacity - used) * bs - c  # held + free blocks
                if chunk > room:
                    chunk = room if chunked else 0
                if chunk > 0:
                    used += -(-(c + chunk) // bs) + (-c // bs)
                    chunks.append((rid, chunk))
                    pt += chunk
                    pairs += chunk * c + chunk * (chunk + 1) / 2
                    nseqs += 1
                    budget -= chunk
            seqs = n + len(prefilling)
            while waiting and budget > 0 and seqs < max_seqs:
                rid = waiting[0]
                remaining = eff[rid]
                spare = capacity - used - (watermark if (n or prefilling) else 0)
                if chunked:  # min(remaining, budget, spare · bs), without the call
                    chunk = remaining if remaining < budget else budget
                    if spare * bs < chunk:
                        chunk = spare * bs
                else:
                    if remaining > budget and chunks:
                        break  # a whole prompt fits the step unless it is its only one
                    chunk = remaining if -(-remaining // bs) <= spare else 0
                if chunk <= 0:
                    break
                waiting.popleft()
                prefilling.append(rid)
                if first_sched[rid] != first_sched[rid]:  # NaN: first time
                    first_sched[rid] = now
                c = computed[rid]
                used += -(-(c + chunk) // bs) + (-c // bs)
                chunks.append((rid, chunk))
                pt += chunk
                pairs += chunk * c + chunk * (chunk + 1) / 2
                nseqs += 1
                budget -= chunk
                seqs += 1
        if general or nseqs == 0:  # (nothing was allocated: the scheduler decides)
            batch = sched.next_batch(now)
            if batch is None:  # nothing to run: sleep until `submit` wakes the lane
                lane.idle = True
                lane.wake = env.event()
                yield lane.wake
                continue
            chunks, pt, pairs = batch.prefill, batch.prefill_tokens, batch.prefill_attn_pairs
            n, ctx, d, nseqs = (
                batch.decode_tokens,
                batch.decode_ctx_tokens,
                batch.decode_step,
                batch.num_seqs,
            )
        else:
            if used > capacity:
                raise KVCapacityError(f"{used} blocks in use of {capacity}")
            kv.used = used
            if used > kv.peak:
                kv.peak = used
        epoch = replica.epoch
        # whether a decoding request finishes in this step (nothing changes the finish heap
        # while the step runs: arrivals only queue)
        finishing = heap and heap[0][0] <= d
        # ---------------------------------------------------------- the step
        if not chunks and not finishing and replica._pricing is not None:
            # (a request finishing in this step leaves no run of steps to leap over)
            if backoff.skip:  # LeapBackoff.try_now, inline
                backoff.skip -= 1
            else:
                if batch is None:
                    batch = _decode_batch(n, ctx, d)
                leap = replica._leap_from(sched, batch, now)
                if leap is not None:
                    yield from leap
                    backoff.ran(replica._leap_done)
                    continue
        # costs are read per step: a fault may slow the stage (serving/replica_faults.py)
        cost = replica.costs[0]
        if cost is not priced:  # first step, or a stage slowed down or restored
            priced = cost
            parts: dict[tuple[int, int, int], StepPart] = {}
            if type(cost) is StageCostModel:
                parts, per_ctx, per_pair, overlap = cost.cached_terms()
        nch = len(chunks)
        part = parts.get((pt, n, nch))
        if part is None:  # (a shape not priced yet, or another cost model)
            compute = cost.compute_s(pt, pairs, n, ctx, nch)
        else:  # StageCostModel.compute_s's arithmetic on its cached part, inline
            compute, attn_floor, decode_seqs_s, embed_s, lm_s, moe_s, host_s = part
            if n:
                attn = ctx * per_ctx + decode_seqs_s
                compute += attn if attn > attn_floor else attn_floor
            if pt:
                attn = pairs * per_pair
                compute += attn if attn > attn_floor else attn_floor
            compute += embed_s
            if lm_s is not None:
                compute += lm_s
            if moe_s is not None:
                compute += moe_s
            if overlap:
                compute = compute if compute > host_s else host_s
            else:
                compute += host_s
        comm = 0.0
        if tp == 1:
            step_timer.callbacks = []
            heappush(queue, (now + compute, NORMAL, next_eid(), step_timer))
            yield step_timer
        elif (closed := replica._closed_step(now, compute, pt + n)) is not None:
            step_timer.callbacks = []  # Replica._execute's one timer, inline
            heappush(queue, (env._now + (closed - now), NORMAL, next_eid(), step_timer))
            yield step_timer
            comm = closed - (now + compute)
        else:
            compute, comm = yield from replica._compute_then_allreduce(cost, group, compute, pt + n)
        end = env._now
        if replica.epoch != epoch:  # the replica stopped during the step: its work is lost
            continue
        recorder.steps += 1  # Recorder.on_iteration, inline (the row packed: lane_rows.py)
        if record_rows:
            append_row(
                pack_lane_row(index, now, end, pt, n, nseqs, compute, comm, kv.used, capacity)
            )
        # ---------------------------------------------------------- Scheduler.complete
        if d >= 0:
            while finishing and heap and heap[0][0] <= d:  # DecodeSet.finished + …, inline
                _, rid, v = heappop(heap)
                if v != version[rid]:
                    continue  # preempted since it was pushed
                p, d0 = eff[rid], d0s[rid]
                del members[rid]  # DecodeSet.leave
                residue[(d0 - p) % bs] -= 1
                decodes.ctx_offset -= p + 1 - d0
                blocks = -(-(p + d - d0 + 1) // bs)  # the blocks its KV occupies
                if blocks > kv.used:  # KVPool.release, inline
                    raise KVCapacityError(f"releasing {blocks} blocks with {kv.used} used")
                kv.used -= blocks
                generated[rid] = output[rid]
                finish_s[rid] = end
                on_finish(rid, end)
            decodes.d = d + 1
        if chunks:  # PrefillQueue.advance + _end_prefill, inline
            done = []
            for rid, chunk in chunks:
                c = computed[rid] = computed[rid] + chunk
                if c == eff[rid]:
                    done.append(rid)
            if len(done) == 1:
                prefills.prefilling.remove(done[0])
            elif done:
                finished_prefill = set(done)
                prefills.prefilling = [r for r in prefills.prefilling if r not in finished_prefill]
            for rid in done:
                generated[rid] += 1
                if first_token[rid] != first_token[rid]:  # NaN: the first token
                    first_token[rid] = end
                if generated[rid] >= output[rid]:
                    blocks = -(-eff[rid] // bs)  # KVAdmission.finish_prefill, plain
                    if blocks > kv.used:  # (KVPool.release, inline)
                        raise KVCapacityError(f"releasing {blocks} blocks with {kv.used} used")
                    kv.used -= blocks
                    finish_s[rid] = end
                    on_finish(rid, end)
                else:  # DecodeSet.enter: it decodes from the next decode step on
                    d0, p = decodes.d, eff[rid]
                    d0s[rid] = d0
                    members[rid] = None
                    residue[(d0 - p) % bs] += 1
                    decodes.ctx_offset += p + 1 - d0
                    heappush(heap, (d0 + output[rid] - generated[rid] - 1, rid, version[rid]))
