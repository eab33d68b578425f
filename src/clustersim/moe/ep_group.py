"""DP-attention + EP: D DP ranks, one scheduler each, stepping in lock-step (docs/moe.md §2-4).

One simpy process runs the whole group. A step:
1. (EPLB) if a rebalance is due, the new placement's weight copies move over the fabric
   first; no rank steps until they have arrived (blocking, like vLLM's default EPLB).
2. every DP rank forms its batch; a rank with nothing to do runs a dummy step (its dense part
   costs the step overhead only — it never sets the step time, the busiest rank does).
3. the step's tokens T = Σ_d T_d are routed (one sample per MoE layer, all layers at once).
4. time, without two-batch overlap:
       compute  = max_d dense_d + Σ_layers max_ranks expert GEMM time
       then dispatch (all layers, one coflow) and combine (one coflow) over the fabric,
       then each DP rank's TP all-reduces (tp > 1);
   with two-batch overlap (experts.two_batch_overlap): the batch is split in two
   micro-batches (every rank's tokens halved); compute is the two micro-batches' compute
   back to back (weights are read twice), communication runs alongside it, and
       step = max(compute_2mb, dispatch + combine)
   i.e. the shorter of the two is fully hidden (the fill / drain of one micro-batch-layer is
   neglected) — then the TP all-reduces. Steps with a prefill use DeepEP's normal kernels,
   which hold `A2A_NORMAL_SMS` of the GPU's SMs while they run: their compute runs on the
   rest (÷ (1 − SMs / sm_count)). Decode-only steps use the low-latency kernels, which occupy
   no SMs (DeepEP's hook-based receive).
   Each rank's dense part is priced on its own GPUs: a slowed GPU re-prices its rank's
   (moe/rank_dense.py, docs/faults.md) and the step waits for the slowest rank.
   Host time (the engine profile's) is the busiest rank's: added, or hidden behind the GPU
   step with an overlap scheduler (StageCostModel.with_host).
5. every rank's batch completes at the same instant; one iterations row per DP rank.

Speculative decoding (`verify`, model/speculative_cost.py LockstepVerify): every rank's
scheduler verifies k + 1 query tokens per decoding sequence, so the routed experts and the
dispatch / combine see (k + 1)× the decode tokens and each rank's dense part prices its
attention as a verify kernel. After the target's step the drafter's k passes run on every
rank (GPU time after the target's, two-batch overlap or not), and their MoE layers' dispatch
and combine follow as one more exchange: the target's flows scaled by the drafter's routed
rows over the target's (the same per-token pattern), with one layer latency per pass.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt
import simpy

from clustersim.config.schema import ServingSpec
from clustersim.metrics.recorder import Recorder
from clustersim.model.speculative_cost import LockstepVerify, RankStep
from clustersim.model.stage_cost import StageCostModel
from clustersim.moe.ep_leap import GroupLeaps
from clustersim.moe.moe_group import MoEGroup
from clustersim.moe.rank_dense import RankDense
from clustersim.network.all_to_all import A2A_NORMAL_SMS, AllToAllPlan
from clustersim.network.fabric import Fabric
from clustersim.network.routing import PairSet
from clustersim.serving.batch import Batch
from clustersim.serving.kv_cache import KVPool
from clustersim.serving.replica import Process
from clustersim.serving.request_state import RequestState
from clustersim.serving.scheduler import Scheduler, scheduler_requests
from clustersim.serving.speculative_decode import SpeculativeDecoding

Exchange = tuple[PairSet, npt.NDArray[np.float64]]  # routed pairs, bytes per pair

F64 = npt.NDArray[np.float64]


class DPRank:
    """The router's view of one DP rank (same interface as a Replica for admission)."""

    __slots__ = ("group", "index", "kv_capacity_blocks", "scheduler")

    def __init__(self, group: EPGroup, index: int, scheduler: Scheduler) -> None:
        self.group = group
        self.index = index
        self.scheduler = scheduler
        self.kv_capacity_blocks = scheduler.kv.capacity

    def fits_ever(self, rid: int) -> bool:
        return self.scheduler.fits_ever(rid)

    def submit(self, rid: int) -> None:
        self.scheduler.add(rid)
        self.group.wake()

    @property
    def kv_used_blocks(self) -> int:
        return self.scheduler.kv.used

    @property
    def groups(self) -> tuple[tuple[str, ...], ...]:
        """The GPUs whose failure stops this rank: every GPU of its EP group (lock-step)."""
        return self.group.rank_gpus

    def stop(self) -> list[int]:
        """The EP group lost a GPU (docs/faults.md): this rank's state is dropped with the
        group's step in flight; the requests it held are returned for retry or failure."""
        return self.group.stop_rank(self.index)


class EPGroup:
    """D DP ranks (TP groups `rank_gpus[d]`) sharing one EP group of all their GPUs."""

    def __init__(
        self,
        env: simpy.Environment,
        rank_gpus: Sequence[tuple[str, ...]],
        cost: StageCostModel,
        moe: MoEGroup,
        a2a: AllToAllPlan,
        fabric: Fabric,
        serving: ServingSpec,
        kv_blocks_per_rank: int,
        state: RequestState,
        recorder: Recorder,
        on_finish: Callable[[int, float], None],
        dispatch_bytes_per_pair: float,
        combine_bytes_per_pair: float,
        two_batch_overlap: bool = False,
        sm_count: int = 132,
        speculative: tuple[SpeculativeDecoding, LockstepVerify] | None = None,
    ) -> None:
        self.env = env
        # share of the SMs left to compute while DeepEP's normal kernels run (two-batch overlap)
        self.tbo_compute_share = 1.0 - A2A_NORMAL_SMS / sm_count
        self.rank_gpus = tuple(tuple(g) for g in rank_gpus)
        self.tp = len(self.rank_gpus[0])
        self.cost = cost
        self.moe = moe
        self.a2a = a2a
        self.fabric = fabric
        self.recorder = recorder
        self.tbo = two_batch_overlap
        self.dispatch_bytes = dispatch_bytes_per_pair
        self.combine_bytes = combine_bytes_per_pair
        decoding = speculative[0] if speculative is not None else None
        self.verify: LockstepVerify | None = speculative[1] if speculative is not None else None
        self._fresh_scheduler = lambda: Scheduler(
            serving, KVPool(kv_blocks_per_rank), state, on_finish, decoding
        )
        self.ranks = [DPRank(self, d, self._fresh_scheduler()) for d in range(len(self.rank_gpus))]
        self.epoch = 0  # bumped when a fault stops the group: a step in flight is dropped
        # EP rank i (a GPU of the group, in a2a.gpus order) belongs to DP rank i // tp
        self._rank_of_gpu = np.arange(len(a2a.gpus)) // self.tp
        # each DP rank's dense part (a slowed GPU re-prices its rank's: docs/faults.md)
        self.dense = RankDense(cost, len(self.rank_gpus), self._decode_ctx)
        self._copies_version = -1  # MoEGroup.version the cached token copies belong to
        self._copies: tuple[F64, F64] = (np.zeros(0), np.zeros(0))
        self._expected: F64 = np.zeros(0)
        self._idle = True
        self._wake = env.event()
        self.steps = 0
        self.leaps: GroupLeaps | None = None  # decode leaps (MoERuntime.allow_group_leaps)
        env.process(self._run())

    def wake(self) -> None:
        if self._idle:
            self._idle = False
            self._wake.succeed()

    def stop_rank(self, d: int) -> list[int]:
        """Drop DP rank d's state and the group's step in flight; the requests it held."""
        self.epoch += 1
        rank = self.ranks[d]
        held = scheduler_requests(rank.scheduler)
        rank.scheduler = self._fresh_scheduler()
        return held

    # ------------------------------------------------------------------ pricing

    def _decode_ctx(self, b: Batch) -> int:
        """The decode context a rank's dense part is priced with (a verify step's attention
        with speculative decoding: LockstepVerify.verify_ctx)."""
        if self.verify is None:
            return b.decode_ctx_tokens
        return self.verify.verify_ctx(b.decode_tokens, b.decode_ctx_tokens)

    def flows(
        self, batches: Sequence[Batch | None], tokens: Sequence[int], loads: F64
    ) -> tuple[Exchange, Exchange]:
        """Dispatch and combine flows of a step (network/all_to_all.py): normal-kernel pattern
        when any rank prefills, low-latency pattern for decode-only steps — of several
        decode-only steps at once too, `loads` (steps, layers, ranks): the bytes then have a
        row a step (a decode leap's: moe/ep_leap.py)."""
        total = float(sum(tokens))
        per_gpu = np.asarray(tokens, dtype=np.float64)[self._rank_of_gpu] / self.tp
        sampled = loads.sum(axis=-2)  # pairs per rank, Σ over layers
        if not any(b is not None and b.prefill_tokens > 0 for b in batches):
            src_share = per_gpu / total
            dispatch = self.a2a.low_latency_transfer(src_share, sampled, self.dispatch_bytes)
            combine = self.a2a.low_latency_transfer(
                src_share, sampled, self.combine_bytes, reverse=True
            )
            return dispatch, combine
        moe, a2a = self.moe, self.a2a
        if self._copies_version != moe.version:
            self._copies = a2a.node_copies(moe.rank_miss_log)
            self._expected = moe.q.sum(axis=0)  # expected pairs per rank per routed pair
            self._copies_version = moe.version
        rank_copies, node_copies = self._copies
        expected = self._expected * (total * moe.top_k)
        ratio = np.divide(sampled, expected, out=np.ones_like(sampled), where=expected > 0)
        node_sampled = np.bincount(a2a.rank_node, weights=sampled, minlength=a2a.num_nodes)
        node_expected = np.bincount(a2a.rank_node, weights=expected, minlength=a2a.num_nodes)
        node_ratio = np.divide(
            node_sampled, node_expected, out=np.ones_like(node_sampled), where=node_expected > 0
        )
        rc, nc = rank_copies * ratio, node_copies * node_ratio
        dispatch = a2a.normal_transfer(per_gpu, rc, nc, self.dispatch_bytes)
        combine = a2a.normal_transfer(per_gpu, rc, nc, self.combine_bytes, reverse=True)
        return dispatch, combine

    def _exchange(self, dispatch: Exchange, combine: Exchange, mb: int) -> Process:
        lat = self.a2a.extra_latency_s(mb)
        yield self.fabric.transfer_pairs(*dispatch, lat)
        yield self.fabric.transfer_pairs(*combine, lat)

    def _draft_exchange(self, dispatch: Exchange, combine: Exchange, share: float) -> Process:
        """The drafter's MoE dispatch and combine: the step's flows × `share` (its routed rows
        over the target's), one layer latency per draft MoE layer crossed."""
        assert self.verify is not None
        a2a = self.a2a
        layers = self.verify.k * self.verify.drafter.num_moe_layers
        lat = max(layers * a2a.layer_latency_s() - a2a.path_latency_s, 0.0)
        yield self.fabric.transfer_pairs(dispatch[0], dispatch[1] * share, lat)
        yield self.fabric.transfer_pairs(combine[0], combine[1] * share, lat)

    def _allreduces(self, batches: Sequence[Batch | None]) -> simpy.Event:
        cost = self.cost
        events = [
            self.fabric.allreduce(g, cost.allreduce_bytes(b.tokens), cost.allreduces_per_step)
            for g, b in zip(self.rank_gpus, batches, strict=True)
            if b is not None and b.tokens > 0
        ]
        return self.env.all_of(events)

    # ------------------------------------------------------------------ the process

    def _run(self) -> Process:
        env = self.env
        moe = self.moe
        ranks = self.ranks
        while True:
            if not any(r.scheduler.has_work() for r in ranks):
                self._idle = True
                self._wake = env.event()
                yield self._wake
                continue
            if moe.rebalance_due(env.now):
                event = moe.rebalance(env.now)
                if event.flows:
                    t0 = env.now
                    yield self.fabric.transfer(event.flows)
                    event.duration_s = env.now - t0
            now = env.now
            batches = [r.scheduler.next_batch(now) for r in ranks]
            tokens = [b.tokens if b is not None else 0 for b in batches]
            total = sum(tokens)
            if total == 0:
                # work queued but nothing schedulable (KV full everywhere): wait for an arrival
                self._idle = True
                self._wake = env.event()
                yield self._wake
                continue
            leaps = self.leaps
            if leaps is not None and (leap := leaps.plan(self._scheds(), batches, tokens, now)):
                yield from leaps.run(env, leap)  # moe/ep_leap.py: the steps, their rows
                self.steps += leap.last + 1
                continue
            yield from self._step(batches, tokens, total)

    def _scheds(self) -> list[Scheduler]:
        return [r.scheduler for r in self.ranks]

    def _step(self, batches: list[Batch | None], tokens: list[int], total: int) -> Process:
        env = self.env
        moe = self.moe
        start = env.now
        epoch = self.epoch
        loads = moe.route(start, total)
        dispatch, combine = self.flows(batches, tokens, loads)
        seqs = max(b.num_seqs if b is not None else 0 for b in batches)
        draft_s, draft_share = draft_step(self.verify, batches, total, self.a2a.moe_layers)
        if not self.tbo:
            gpu = self.dense.step_s(batches) + moe.moe_s(loads, total) + draft_s
            compute = self.cost.with_host(gpu, seqs)
            yield env.timeout(compute)
            yield from self._exchange(dispatch, combine, 1)
        else:
            dense = self.dense.two_microbatches_step_s(batches)
            gpu = dense + 2.0 * moe.moe_s(loads * 0.5, total / 2.0)
            if any(b is not None and b.prefill_tokens > 0 for b in batches):
                gpu /= self.tbo_compute_share  # normal all-to-all kernels hold SMs
            compute = self.cost.with_host(gpu, seqs)
            comm = env.process(self._exchange(dispatch, combine, 2))
            yield env.all_of([env.timeout(compute), comm])
            if draft_s:  # the drafter runs after the target's micro-batches
                yield env.timeout(draft_s)
                compute += draft_s
        if draft_share:
            yield from self._draft_exchange(dispatch, combine, draft_share)
        if self.tp > 1:
            yield self._allreduces(batches)
        if self.epoch != epoch:  # the group stopped mid-step: its results never land
            return
        end = env.now
        comm_s = end - start - compute if end - start > compute else 0.0
        record = self.recorder.on_iteration
        for d, b in enumerate(batches):
            kv = self.ranks[d].scheduler.kv
            if b is None:
                row = (d, 0, 0, start, end, 0, 0, 0, 0, compute, comm_s, 0.0, kv.used, kv.capacity)
            else:
                row = (
                    d,
                    0,
                    0,
                    start,
                    end,
                    b.prefill_tokens,
                    b.decode_tokens,
                    b.num_seqs,
                    b.tokens,
                    compute,
                    comm_s,
                    0.0,
                    kv.used,
                    kv.capacity,
                )
            record(row)
            if self.verify is not None:
                self.recorder.on_emitted(max(b.emitted_tokens, 0) if b is not None else 0)
        self.steps += 1
        for r, b in zip(self.ranks, batches, strict=True):
            if b is not None:
                r.scheduler.complete(b, end)


def draft_step(
    verify: LockstepVerify | None, batches: Sequence[Batch | None], total: int, moe_layers: int
) -> tuple[float, float]:
    """(GPU seconds of the drafter's k passes over every rank, the drafter's routed rows over
    the target's: its dispatch / combine as a share of the step's); (0, 0) without it."""
    if verify is None:
        return 0.0, 0.0
    q = verify.k + 1
    ranks: list[RankStep] = [
        (
            b.prefill_tokens,
            b.prefill_attn_pairs,
            b.decode_tokens // q,
            b.decode_ctx_tokens,
            len(b.prefill),
        )
        for b in batches
        if b is not None
    ]
    draft_layers = verify.drafter.num_moe_layers
    share = 0.0
    if draft_layers and total and moe_layers:
        share = verify.draft_rows(ranks) * draft_layers / (total * moe_layers)
    return verify.drafter_s(ranks), share
