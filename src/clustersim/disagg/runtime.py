"""Disaggregated prefill / decode serving at run time (docs/disaggregation.md §1); the pools
are built by disagg/pools.py.

Per request (request ids are global; each pool has its own RequestState, the prefill
one with a one-token output, and its own Recorder for iterations):
1. arrival: the prefill pool's router picks a prefill unit, the decode pool's router a decode
   unit (both at arrival, as SGLang's PD router and Dynamo do); drops as co-located (too long,
   a unit's queue at max_queue, can never fit either unit's KV cache);
2. the decode unit reserves the blocks of the prompt's KV (`Scheduler.reserve_prefilled`,
   decode memory is pre-allocated before prefill, as SGLang / Dynamo do); when they are not
   free the request waits, FIFO per decode unit, retried whenever one of its requests ends;
3. once reserved it joins the prefill unit's queue and is prefilled there (output: one
   token); the prefill lane keeps its KV blocks until the transfer is done;
4. its KV moves prefill GPUs → decode GPUs as one coflow over the fabric (disagg/kv_transfer.py),
   contending with all other traffic; `kv_transfer_s` = that transfer's duration;
5. on arrival the decode unit emits the first token (TTFT includes the transfer) and the
   request resumes in decode with P tokens of KV (`Scheduler.add_prefilled`).

With GPU faults a `UnitGuard` (sim/pool_health.py) routes around lost units and undoes a lost
unit's work at each stage; `stage[rid]` says where a request is, and `attempt[rid]` (bumped
when its work is lost) makes a KV transfer of a superseded attempt land as a no-op.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple, Protocol

import numpy as np
import simpy

from clustersim.deployment.build import PoolBuild
from clustersim.deployment.prefix_caches import pool_prefix_caching, pool_router
from clustersim.deployment.units import Unit, make_units, speculative_rng, unit_shards
from clustersim.disagg.kv_transfer import FlowCoef, kv_flow_coefficients, scale_flows
from clustersim.metrics.recorder import EMITTED_COLUMN, Recorder
from clustersim.moe.moe_runtime import MoERuntime
from clustersim.network.fabric import Fabric
from clustersim.serving.replica import Replica
from clustersim.serving.request_state import RequestState
from clustersim.serving.scheduler import Scheduler
from clustersim.workload.requests import RequestStream

if TYPE_CHECKING:
    import pandas as pd

RngSource = Callable[[str], np.random.Generator]  # named random stream (sim/streams.py)


class RequestColumns(NamedTuple):
    """The per-request lists a disaggregated run contributes to requests.parquet."""

    first_scheduled_s: list[float]  # first prefill step (prefill pool)
    first_token_s: list[float]  # KV landed on the decode unit: first token emitted
    finish_s: list[float]  # last token (decode pool)
    preemptions: list[int]  # both pools
    decode_replica: list[int]  # global replica id of the decode unit (−1: never routed)
    kv_transfer_s: list[float]
    kv_transfer_bytes: list[float]


# where a request is in its disaggregated life (DisaggRuntime.stage)
WAITING, PREFILL, TRANSFER, DECODE, DONE = range(5)


class UnitGuard(Protocol):
    """Lost pool units: routing around them, and the work they held (sim/pool_health.py)."""

    def route(self, rid: int) -> tuple[int, int]:
        """(prefill unit, decode unit) avoiding units known to be out; −1: none is up."""
        ...

    def hold(self, rid: int) -> None: ...

    def absorbs_at_decode(self, rid: int) -> bool:
        """True when the request's decode unit is lost, not yet detected: it waits there."""
        ...

    def submit_prefill(self, rid: int) -> None: ...

    def orphaned(self, rid: int) -> bool:
        """True when the request's decode unit was lost during its prefill (then recovered)."""
        ...

    def on_finish(self, rid: int) -> None: ...


class _Member:
    """One router unit of a pool as the disaggregation runtime drives it."""

    __slots__ = ("gid", "unit", "wake")

    def __init__(self, unit: Unit, gid: int) -> None:
        self.unit = unit
        self.gid = gid  # global replica id
        self.wake: Callable[[int], None]
        if isinstance(unit, Replica):
            self.wake = unit.wake_lane
        else:
            group = unit.group
            self.wake = lambda _lane: group.wake()

    @property
    def schedulers(self) -> list[Scheduler]:
        """The lanes' schedulers now (a stopped unit's lanes get fresh ones)."""
        if isinstance(self.unit, Replica):
            return [lane.scheduler for lane in self.unit.lanes]
        return [self.unit.scheduler]

    def reserve(self, rid: int) -> int:
        """Reserve decode blocks in the least loaded lane that has them: its index, or −1."""
        order = sorted(range(len(self.schedulers)), key=lambda i: self.schedulers[i].outstanding)
        for i in order:
            if self.schedulers[i].reserve_prefilled(rid):
                return i
        return -1

    def release_kept(self, rid: int) -> None:
        for i, sched in enumerate(self.schedulers):
            if rid in sched.admission.kept:
                sched.release_kept(rid)
                self.wake(i)  # a lane asleep for want of these blocks can run again
                return


class DisaggRuntime:
    """Both pools of one disaggregated simulation (see module docstring)."""

    def __init__(
        self,
        pools: tuple[PoolBuild, ...],
        env: simpy.Environment,
        fabric: Fabric,
        rng: RngSource,
        stream: RequestStream,
        recorder: Recorder,
        on_done: Callable[[int, float], None],
    ) -> None:
        self.pools = pools
        self.env, self.fabric, self.recorder, self.on_done = env, fabric, recorder, on_done
        prompt = stream.prompt_tokens.tolist()
        n = len(prompt)
        self.prefill_state = RequestState(prompt, [1] * n)
        self.decode_state = RequestState(list(prompt), stream.output_tokens.tolist())
        record = recorder.record_iterations
        self.recorders = (Recorder(0, record), Recorder(0, record))
        pf, dc = pools
        p_units, self.p_moe = make_units(
            pf.exp,
            pf.built,
            env,
            fabric,
            self.prefill_state,
            self.recorders[0],
            self._prefill_done,
            rng("experts.prefill"),
            stream.phases,
            speculative_rng(pf.exp.serving, rng),
        )
        d_units, self.d_moe = make_units(
            dc.exp,
            dc.built,
            env,
            fabric,
            self.decode_state,
            self.recorders[1],
            self._decode_done,
            rng("experts.decode"),
            stream.phases,
            speculative_rng(dc.exp.serving, rng),
        )
        self.prefill = [_Member(u, pf.replica_offset + i) for i, u in enumerate(p_units)]
        self.decode = [_Member(u, dc.replica_offset + i) for i, u in enumerate(d_units)]
        for m in self.prefill:
            for sched in m.schedulers:
                sched.admission.keep_kv_after_finish = True
        # prefix caching lives in the prefill pool (the decode pool receives whole prompts' KV)
        self.prefix = pool_prefix_caching(
            pf.exp.serving, pf.built, p_units, stream, self.prefill_state
        )
        self.p_router = pool_router(
            pf.exp.serving, p_units, self.prefix, stream, rng("router.prefill")
        )
        self.d_router = pool_router(dc.exp.serving, d_units, None, stream, rng("router.decode"))
        self.p_outstanding = [0] * len(p_units)
        self.d_outstanding = [0] * len(d_units)
        self.p_kv = [0.0] * len(p_units)
        self.d_kv = [0.0] * len(d_units)
        self.pending: list[deque[int]] = [deque() for _ in d_units]
        self.prefill_of = [-1] * n
        self.decode_of = [-1] * n
        self.decode_lane = [-1] * n
        self.transfer_start = [math.nan] * n
        self.stage = [WAITING] * n
        self.attempt = [0] * n
        self.guard: UnitGuard | None = None  # with GPU faults (sim/pool_health.py)
        self.kv_transfer_s = [math.nan] * n
        self.kv_transfer_bytes = [math.nan] * n
        self._coefs: dict[tuple[int, int], list[FlowCoef]] = {}
        self.max_model_len = min(
            p.exp.serving.max_model_len or p.exp.model.max_context for p in pools
        )

    # ------------------------------------------------------------------ arrival

    def admit(self, rid: int, now: float) -> bool:
        """Route an arriving request to a prefill and a decode unit (True), or drop it."""
        if self.p_router.uses_kv:  # only least_kv reads the fractions
            for i, m in enumerate(self.prefill):
                self.p_kv[i] = m.unit.kv_used_blocks / m.unit.kv_capacity_blocks
        if self.d_router.uses_kv:
            for i, m in enumerate(self.decode):
                self.d_kv[i] = m.unit.kv_used_blocks / m.unit.kv_capacity_blocks
        if self.guard is None:
            p = self.p_router.choose_request(rid, self.p_outstanding, self.p_kv)
            d = self.d_router.choose_request(rid, self.d_outstanding, self.d_kv)
        else:
            p, d = self.guard.route(rid)
            if p < 0 or d < 0:  # every unit of a pool is out: it waits for one to come back
                self.recorder.on_arrival(rid, now, 0)
                self.guard.hold(rid)
                return True
        self.recorder.on_arrival(rid, now, self.prefill[p].gid)
        self.prefill_of[rid], self.decode_of[rid] = p, d
        st = self.decode_state
        pf, dc = self.pools
        too_long = st.prompt[rid] + st.output[rid] > self.max_model_len
        p_full = _at_limit(pf.exp.serving.max_queue, self.p_outstanding[p])
        d_full = _at_limit(dc.exp.serving.max_queue, self.d_outstanding[d])
        fits = self.prefill[p].unit.fits_ever(rid) and self.decode[d].unit.fits_ever(rid)
        if too_long or p_full or d_full or not fits:
            self.recorder.on_drop(rid)
            return False
        self.enter(rid, p, d)
        return True

    def enter(self, rid: int, p: int, d: int) -> None:
        """The request joins prefill unit p and decode unit d (admitted, or re-routed)."""
        self.prefill_of[rid], self.decode_of[rid] = p, d
        self.stage[rid] = WAITING
        self.p_outstanding[p] += 1
        self.d_outstanding[d] += 1
        if self.guard is not None and self.guard.absorbs_at_decode(rid):
            return
        if self.pending[d] or not self._reserve(rid, d):
            self.pending[d].append(rid)  # FIFO: a later request never overtakes

    def _reserve(self, rid: int, d: int) -> bool:
        """Reserve the request's decode blocks; on success it joins its prefill unit."""
        lane = self.decode[d].reserve(rid)
        if lane < 0:
            return False
        self.decode_lane[rid] = lane
        self.stage[rid] = PREFILL
        if self.guard is not None:
            self.guard.submit_prefill(rid)
        else:
            self.prefill[self.prefill_of[rid]].unit.submit(rid)
        return True

    def _drain(self, d: int) -> None:
        queue = self.pending[d]
        while queue and self._reserve(queue[0], d):
            queue.popleft()

    # ------------------------------------------------------------------ prefill → decode

    def _prefill_done(self, rid: int, now: float) -> None:
        p, d = self.prefill_of[rid], self.decode_of[rid]
        self.p_outstanding[p] -= 1
        if self.guard is not None and self.guard.orphaned(rid):
            return
        self.stage[rid] = TRANSFER
        coefs = self._coefs.get((p, d))
        if coefs is None:
            pf, dc = self.pools
            src_layers, src_grid = unit_shards(self.prefill[p].unit, pf.built)
            dst_layers, dst_grid = unit_shards(self.decode[d].unit, dc.built)
            coefs = kv_flow_coefficients(
                pf.exp.model, pf.exp.precision, src_layers, src_grid, dst_layers, dst_grid
            )
            self._coefs[(p, d)] = coefs
        flows = scale_flows(coefs, self.prefill_state.prompt[rid])
        self.kv_transfer_bytes[rid] = sum(f[2] for f in flows)
        self.transfer_start[rid] = now
        event = self.fabric.transfer(flows)
        attempt = self.attempt[rid]
        event.callbacks.append(lambda _ev: self._landed(rid, attempt))

    def _landed(self, rid: int, attempt: int) -> None:
        if attempt != self.attempt[rid]:  # its prefill or decode unit was lost meanwhile
            return
        now = self.env.now
        self.stage[rid] = DECODE
        self.kv_transfer_s[rid] = now - self.transfer_start[rid]
        self.prefill[self.prefill_of[rid]].release_kept(rid)
        member = self.decode[self.decode_of[rid]]
        lane = self.decode_lane[rid]
        member.schedulers[lane].add_prefilled(rid, now)
        member.wake(lane)

    def _decode_done(self, rid: int, now: float) -> None:
        d = self.decode_of[rid]
        self.d_outstanding[d] -= 1
        self.stage[rid] = DONE
        if self.guard is not None:
            self.guard.on_finish(rid)
        self._drain(d)
        self.on_done(rid, now)

    # ------------------------------------------------------------------ tables

    @property
    def steps(self) -> int:
        return sum(r.steps for r in self.recorders)

    def request_columns(self, n: int) -> RequestColumns:
        """Per-request columns of the first n requests (the engine's requests table)."""
        pst, dst = self.prefill_state, self.decode_state
        return RequestColumns(
            first_scheduled_s=pst.first_scheduled_s[:n],
            first_token_s=dst.first_token_s[:n],
            finish_s=dst.finish_s[:n],
            preemptions=[
                a + b for a, b in zip(pst.preemptions[:n], dst.preemptions[:n], strict=True)
            ],
            decode_replica=[self.decode[d].gid if d >= 0 else -1 for d in self.decode_of[:n]],
            kv_transfer_s=self.kv_transfer_s[:n],
            kv_transfer_bytes=self.kv_transfer_bytes[:n],
        )

    def iterations_frame(self) -> pd.DataFrame:
        """Both pools' steps: replica ids global (decode offset by the prefill replicas), a
        `pool` column, ordered as Recorder.iterations_frame orders."""
        import pandas as pd

        frames = []
        for pool, rec in zip(self.pools, self.recorders, strict=True):
            frame = rec.iterations_frame()
            frame["replica"] = frame["replica"] + pool.replica_offset
            frame["pool"] = pool.name
            frames.append(frame)
        df = pd.concat(frames, ignore_index=True)
        if EMITTED_COLUMN in df:  # speculation in one pool only: the other's steps verify none
            df[EMITTED_COLUMN] = df[EMITTED_COLUMN].fillna(0).astype(np.int64)
        df = df.sort_values(["start_s", "replica", "stage", "lane"], kind="stable")
        return df.reset_index(drop=True)

    def experts_frame(self) -> pd.DataFrame | None:
        """experts.parquet of both pools: EP group ids offset so they stay distinct, `pool`."""
        df = _moe_tables(self.pools, (self.p_moe, self.d_moe), "experts_frame")
        if df is None:
            return None
        df = df.sort_values(["bin_start_s", "group", "rank", "expert"], kind="stable")
        return df.reset_index(drop=True)

    def eplb_frame(self) -> pd.DataFrame | None:
        df = _moe_tables(self.pools, (self.p_moe, self.d_moe), "eplb_frame")
        if df is None:
            return None
        return df.sort_values(["time_s", "group"], kind="stable").reset_index(drop=True)


def _at_limit(max_queue: int | None, outstanding: int) -> bool:
    return max_queue is not None and outstanding >= max_queue


def _moe_tables(
    pools: tuple[PoolBuild, ...], moes: tuple[MoERuntime | None, ...], attr: str
) -> pd.DataFrame | None:
    """One MoE table of both pools: EP group ids offset so they stay distinct, `pool`."""
    import pandas as pd

    frames = []
    offset = 0
    for pool, moe in zip(pools, moes, strict=True):
        if moe is None:
            continue
        frame: pd.DataFrame | None = getattr(moe, attr)()
        if frame is not None:
            frame = frame.copy()
            if "group" in frame.columns:
                frame["group"] = frame["group"] + offset
            frame["pool"] = pool.name
            frames.append(frame)
        offset += len(moe.groups)
    if not frames:
        return None
    return pd.concat(frames, ignore_index=True)
