"""Analytic estimates of a layout, from the cost model alone (pure; docs/planner.md §3).

Three numbers per candidate, computed on the very request stream the simulator will run
(same seed, same named random streams):

- `tpot_lb_s` — a LOWER BOUND on every decode step, hence on every request's TPOT: one decode
  token at the shortest prompt's context, summed over the pipeline stages (a token crosses
  each), plus (dense models) the stage's TP all-reduces on an idle fabric. For MoE layers the
  most loaded EP rank holds at least ⌈k/ep⌉ of the token's k routed experts; the all-to-all and
  MoE all-reduces are left out (≥ 0). Every term of the step time is non-decreasing in the batch,
  so no step of the simulation is shorter.
- `ttft_p99_lb_s` — the p99 over the measured requests of each request's own prefill time
  alone on an idle replica (its chunks of max_num_batched_tokens back to back through every
  stage, nothing else in the batch, no queueing). TTFT_i ≥ lb_i for every request i, so the
  p99 of TTFT ≥ the p99 of lb (same sample, same percentile method).
- `capacity_rps` — an ESTIMATE (optimistic, not a bound) of the highest request rate the
  layout sustains: per replica (per DP-attention rank), S sequences decode per step with
  S = min(max_num_seqs, KV tokens per lane / (P̄ + Ō/2), max_num_batched_tokens / (1 + P̄/Ō)),
  the step also prefilling S·P̄/Ō new tokens so admissions match completions; one step costs
  the cost model's compute time plus (dense) its all-reduces, and a pipeline delivers one
  lane's step per slowest-stage time. Rate = S / (Ō · step). Contention, preemption and idle
  bubbles are ignored — so the estimate is high, which is the safe side for pruning.
- `loaded_tpot_s` — an ESTIMATE of the mean TPOT at the offered load: by Little's law
  N = λ · Ō · TPOT sequences decode at once, S = N / (dp · pp) per lane, and a lane produces one
  token per cycle(S) = max(Σ_stages step(S), pp · max_stages step(S)) — with pp lanes busy, each
  stage serves every lane's micro-batch in turn. The least fixed point TPOT = cycle(S(TPOT)) is
  found by iterating from the lower bound (the sequence only grows); S is capped as above
  (beyond the cap the queue grows, which the capacity estimate catches). Closed loop: N is the
  concurrency. NaN when there is no offered load to size for.

Context parallelism (cp > 1): each step is one CP rank's compute (model/cp_cost.py: ceil(P/cp)
prefill tokens, 1/cp of the attention pairs and of the decode KV read, every decode token)
plus its TP all-reduces; the ring exchange and the decode merge are left out of the bounds
(≥ 0) — the simulated step is serial + max(overlapped attention, ring) + merge + all-reduces.

Speculative decoding (`serving.speculative`, docs/speculative.md): a step verifies k + 1
query tokens per decoding sequence (model/speculative_cost.py: target + drafter) and emits
m = E[tokens per verify step] of the acceptance profile per sequence on average: capacity
and loaded TPOT divide the step by m, the TPOT bound by k + 1 (the most a step emits); each
sequence holds k lookahead KV slots more.

Disaggregated pools (`role`): a PREFILL pool runs prefill-only steps (every request has a
one-token output there), so its capacity is prompts per second at a full token budget and
its `ttft_p99_lb_s` the prefill alone (TTFT = queue + prefill + KV transfer ≥ it); a DECODE
pool runs decode-only steps (no prefill mixed in), so its TPOT bound, capacity and loaded
TPOT are those of decode steps holding P̄ + Ō/2 tokens of KV per sequence.
`disagg_estimate` combines them: TTFT bound of the prefill pool, TPOT bound and loaded TPOT
of the decode pool, capacity = the smaller pool's.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
import numpy.typing as npt

from clustersim.config.schema import Experiment
from clustersim.deployment.units import stage_costs
from clustersim.model.attention_cost import causal_pairs
from clustersim.model.cp_cost import CPStageCost
from clustersim.model.kernels import step_seqs
from clustersim.model.speculative_cost import speculative_stage_costs
from clustersim.network.collectives import allreduce_choice_of, estimate_allreduce_s
from clustersim.serving.speculative import AcceptanceProfile
from clustersim.sim.engine import Build, experiment_requests

I64 = npt.NDArray[np.int64]
FIXED_POINT_ITERATIONS = 60  # loaded-TPOT iteration cap
FIXED_POINT_RTOL = 1e-4  # ... and its relative convergence tolerance
PoolRole = Literal["prefill", "decode"]  # a disaggregated pool's role
Role = PoolRole | None  # None: a co-located deployment


@dataclass(frozen=True)
class WorkloadStats:
    """The measured requests of the experiment's stream (arrival ≥ warm-up), tokens."""

    prompts: I64
    outputs: I64
    offered_rps: float | None  # mean arrival rate (req/s); None for closed loop / burst
    mean_prompt: float
    mean_output: float
    p99_prompt: float

    @property
    def n(self) -> int:
        return len(self.prompts)


def workload_stats(exp: Experiment) -> WorkloadStats:
    """Generate the experiment's requests (as the simulator will) and summarise them."""
    stream = experiment_requests(exp)
    arrival = stream.arrival_s
    keep = np.ones(len(arrival), dtype=bool)
    if stream.concurrency is None:
        keep = arrival >= exp.horizon.warmup_s
    prompts = np.asarray(stream.prompt_tokens[keep], dtype=np.int64)
    outputs = np.asarray(stream.output_tokens[keep], dtype=np.int64)
    if len(prompts) == 0:  # a horizon inside the warm-up: fall back to every request
        prompts = np.asarray(stream.prompt_tokens, dtype=np.int64)
        outputs = np.asarray(stream.output_tokens, dtype=np.int64)
    return WorkloadStats(
        prompts=prompts,
        outputs=outputs,
        offered_rps=_offered_rps(exp, arrival, stream.concurrency),
        mean_prompt=float(prompts.mean()) if len(prompts) else 0.0,
        mean_output=float(outputs.mean()) if len(outputs) else 0.0,
        p99_prompt=float(np.percentile(prompts, 99)) if len(prompts) else 0.0,
    )


def _offered_rps(
    exp: Experiment, arrival: npt.NDArray[np.float64], concurrency: int | None
) -> float | None:
    """Requests per second of an open-loop stream; None when the rate is not set by arrivals."""
    if concurrency is not None or exp.workload.arrival.process == "burst" or len(arrival) < 2:
        return None
    span = exp.horizon.duration_s or float(arrival[-1] - arrival[0])
    return len(arrival) / span if span > 0 else None


@dataclass(frozen=True)
class Estimate:
    """Analytic numbers of one layout (seconds, requests/s, sequences)."""

    tpot_lb_s: float
    ttft_p99_lb_s: float
    replica_capacity_rps: float  # one replica / DP-attention rank
    capacity_rps: float  # whole layout
    batch_seqs: float  # S: decoding sequences per lane in the capacity estimate
    step_s: float  # one lane step at that batch, slowest stage (s)
    loaded_tpot_s: float = math.nan  # mean TPOT at the offered load (s); NaN: not estimated
    # disaggregated candidates: each pool's capacity (req/s); NaN for co-located layouts
    prefill_capacity_rps: float = math.nan
    decode_capacity_rps: float = math.nan


class _Analyser:
    """Step-time helpers of one built layout (a whole deployment, or one pool's `role`)."""

    def __init__(self, exp: Experiment, built: Build, role: Role = None) -> None:
        self.exp = exp
        self.built = built
        self.role = role
        self.costs = stage_costs(exp, built)
        cp = exp.layout.cp
        self.cp_costs = (
            [CPStageCost(c, exp.model, exp.precision, cp) for c in self.costs] if cp > 1 else []
        )
        self.dense = not exp.model.is_moe
        self.groups = [built.placement.replicas[0].stages[s] for s in range(exp.layout.pp)]
        k = exp.model.experts_per_token
        self.k = k
        self.ep = built.ep.ep if built.ep is not None else 1
        # speculative decoding: verify-step costs, query tokens per sequence (k + 1), mean
        # tokens emitted per verify step, KV lookahead slots per sequence
        spec = exp.serving.speculative
        self.verify = speculative_stage_costs(exp, self.costs, self.costs) if spec else None
        self.queries = spec.num_tokens + 1 if spec else 1
        decodes = spec is not None and role != "prefill"  # a prefill pool only drafts
        self.tokens_per_step = (
            AcceptanceProfile(np.asarray(spec.rates)).mean_tokens_per_step
            if spec is not None and decodes
            else 1.0
        )
        self.lookahead = spec.num_tokens if spec is not None and decodes else 0

    def comm_s(self, stage: int, tokens: int) -> float:
        """Idle-fabric TP all-reduces of one step of a dense stage (0 for MoE: left out)."""
        cost = self.costs[stage]
        if not self.dense or cost.allreduces_per_step == 0 or tokens <= 0:
            return 0.0
        nbytes = cost.allreduce_bytes(tokens)
        return estimate_allreduce_s(
            self.built.cluster,
            self.groups[stage],
            nbytes,
            cost.allreduces_per_step,
            allreduce_choice_of(cost.engine),
            self.exp.hardware.nvls,
        )

    def moe_lb_s(self, stage: int, tokens: int) -> float:
        """Routed experts of `tokens` tokens at the most loaded EP rank, lower bound."""
        cost = self.costs[stage]
        if self.dense or cost.num_moe_layers == 0 or tokens <= 0:
            return 0.0
        pairs = math.ceil(tokens * self.k / self.ep)
        touched = min(cost.experts_per_rank, math.ceil(pairs / tokens))
        return cost.num_moe_layers * cost.moe_layer_s(pairs, touched)

    def step_lb_s(self, pf: int, pairs: float, dec: int, ctx: int, seqs: int) -> float:
        """Lower bound on one lane step through every stage (s)."""
        total = 0.0
        tokens = pf + dec
        for s, cost in enumerate(self.costs):
            if self.cp_costs:  # one CP rank's compute + its all-reduces (ring, merge ≥ 0)
                step = self.cp_costs[s].step(pf, pairs, 0, dec, ctx, seqs)
                total += step.compute_s + self.comm_s(s, step.rank_tokens)
                continue
            if self.dense:
                total += cost.compute_s(pf, pairs, dec, ctx, seqs)
            else:
                gpu = cost.dense_part_s(pf, pairs, dec, ctx, seqs) + self.moe_lb_s(s, tokens)
                total += cost.with_host(gpu, step_seqs(pf, dec, seqs))
            total += self.comm_s(s, tokens)
        return total

    def tpot_lb_s(self, min_prompt: int) -> float:
        step = self.step_lb_s(0, 0.0, 1, max(1, min_prompt), 0)
        if self.verify is None:
            return step
        # a verify step costs at least a one-token step and emits at most k + 1 tokens
        return step / self.queries

    def prefill_lb_s(self, prompt: int) -> float:
        """One request's prefill alone: chunks of max_num_batched_tokens, back to back."""
        serving = self.exp.serving
        chunk = serving.max_num_batched_tokens if serving.chunked_prefill else prompt
        chunk = max(1, min(chunk, prompt))
        total, done = 0.0, 0
        while done < prompt:
            c = min(chunk, prompt - done)
            total += self.step_lb_s(c, causal_pairs(c, done), 0, 0, 1)
            done += c
        return total

    def lane_step_s(
        self, pf: float, pairs: float, dec: float, ctx: float, seqs: float
    ) -> tuple[float, float]:
        """(Σ over stages, max over stages) of one step with the uniform MoE load (s)."""
        times = []
        pf_i, dec_i, n = round(pf), round(dec), max(1, round(seqs))
        for s, cost in enumerate(self.costs):
            if self.cp_costs:
                step = self.cp_costs[s].step(pf_i, pairs, 0, dec_i, round(ctx), n)
                times.append(step.compute_s + self.comm_s(s, step.rank_tokens))
                continue
            if self.verify is not None:  # k + 1 query tokens per decoding sequence
                q = dec_i * self.queries
                t = self.verify[s].compute_s(pf_i, pairs, q, round(ctx), n)
                times.append(t + self.comm_s(s, pf_i + q))
                continue
            t = cost.compute_s(pf_i, pairs, dec_i, round(ctx), n)
            times.append(t + self.comm_s(s, pf_i + dec_i))
        return sum(times), max(times)

    def max_seqs(self, stats: WorkloadStats) -> float:
        """S cap per lane: max_num_seqs, the lane's KV tokens, the step token budget."""
        s = self.exp.serving
        p, o = max(stats.mean_prompt, 1.0), max(stats.mean_output, 1.0)
        lane_tokens = self.built.memory.kv_blocks_per_replica // self.exp.layout.pp * s.block_size
        held = p + o / 2.0 if self.verify is None else p + o / 2.0 + self.lookahead
        seqs = min(float(s.max_num_seqs), lane_tokens / held)
        return max(min(seqs, s.max_num_batched_tokens / (1.0 + p / o)), 1e-9)

    def cycle_s(self, seqs: float, stats: WorkloadStats) -> float:
        """Seconds between two steps of one lane with `seqs` decoding sequences per lane, each
        step also prefilling seqs · P̄/Ō tokens (a prefill token attends to ~P̄/2 keys)."""
        p, o = max(stats.mean_prompt, 1.0), max(stats.mean_output, 1.0)
        pf = seqs * p / o
        dec, ctx = seqs, seqs * (p + o / 2.0)
        if self.role == "prefill":  # prefill-only steps: the one output token ends prefill
            dec, ctx = 0.0, 0.0
        elif self.role == "decode":  # decode-only steps: prompts were prefilled elsewhere
            pf = 0.0
        total, slowest = self.lane_step_s(pf, pf * p / 2.0, dec, ctx, pf / p)
        return max(total, self.exp.layout.pp * slowest)  # pp lanes share the stages

    def capacity(self, stats: WorkloadStats) -> tuple[float, float, float]:
        """(requests/s of one replica, batch S per lane, lane step s); see module doc."""
        o = max(stats.mean_output, 1.0)
        pp = self.exp.layout.pp
        seqs = self.max_seqs(stats)
        cycle = self.cycle_s(seqs, stats)
        if self.verify is not None:  # each sequence emits tokens_per_step tokens a step
            return pp * seqs * self.tokens_per_step / (o * cycle), seqs, cycle / pp
        return pp * seqs / (o * cycle), seqs, cycle / pp

    def tpot_of_cycle(self, seqs: float, stats: WorkloadStats) -> float:
        """Mean TPOT with `seqs` sequences per lane: the lane's cycle per token emitted."""
        cycle = self.cycle_s(seqs, stats)
        return cycle if self.verify is None else cycle / self.tokens_per_step

    def loaded_tpot_s(self, stats: WorkloadStats, start_s: float) -> float:
        """Least fixed point of TPOT = cycle(S(TPOT)) (module docstring); NaN without a load."""
        lay = self.exp.layout
        lanes = lay.dp * lay.pp
        cap = self.max_seqs(stats)
        concurrency = getattr(self.exp.workload.arrival, "concurrency", None)
        if isinstance(concurrency, int):
            return self.tpot_of_cycle(min(cap, max(1.0, concurrency / lanes)), stats)
        if stats.offered_rps is None:
            return math.nan
        tpot = start_s
        for _ in range(FIXED_POINT_ITERATIONS):
            seqs = min(cap, max(1.0, stats.offered_rps * stats.mean_output * tpot / lanes))
            new = self.tpot_of_cycle(seqs, stats)
            if abs(new - tpot) <= FIXED_POINT_RTOL * tpot:
                return new
            tpot = new
        return tpot


def estimate(exp: Experiment, built: Build, stats: WorkloadStats, role: Role = None) -> Estimate:
    """The analytic numbers of `exp`'s layout on `built` for the request stream `stats`
    (of one disaggregated pool when `role` is set: module docstring)."""
    if role == "prefill":  # every request leaves the prefill pool after one token
        ones = np.ones_like(stats.outputs)
        stats = replace(stats, outputs=ones, mean_output=1.0)
    an = _Analyser(exp, built, role)
    min_prompt = int(stats.prompts.min()) if stats.n else 1
    tpot = an.tpot_lb_s(min_prompt) if role != "prefill" else 0.0
    ttft = p99_of_monotone(stats.prompts, an.prefill_lb_s) if role != "decode" else 0.0
    rate, seqs, step = an.capacity(stats)
    lay = exp.layout
    return Estimate(
        tpot_lb_s=tpot,
        ttft_p99_lb_s=ttft,
        replica_capacity_rps=rate,
        capacity_rps=rate * lay.dp,
        batch_seqs=seqs,
        step_s=step,
        loaded_tpot_s=an.loaded_tpot_s(stats, tpot) if role != "prefill" else math.nan,
    )


def disagg_estimate(prefill: Estimate, decode: Estimate) -> Estimate:
    """A disaggregated deployment from its pools' estimates (module docstring): the TTFT
    bound is the prefill pool's (prefill alone; the KV transfer ≥ 0 is left out), the TPOT
    bound and loaded TPOT the decode pool's, the capacity the smaller pool's."""
    capacity = min(prefill.capacity_rps, decode.capacity_rps)
    return Estimate(
        tpot_lb_s=decode.tpot_lb_s,
        ttft_p99_lb_s=prefill.ttft_p99_lb_s,
        replica_capacity_rps=capacity,
        capacity_rps=capacity,
        batch_seqs=decode.batch_seqs,
        step_s=decode.step_s,
        loaded_tpot_s=decode.loaded_tpot_s,
        prefill_capacity_rps=prefill.capacity_rps,
        decode_capacity_rps=decode.capacity_rps,
    )


def mixed_step_s(exp: Experiment, built: Build, stats: WorkloadStats, chunk: int) -> float:
    """One co-located lane step carrying a prefill chunk of `chunk` tokens (at offset 0) next
    to the decode batch the capacity estimate assumes (seconds, slowest stage × pp lanes):
    what a decode sharing a step with a prompt's chunk waits for (rules.py, disaggregation)."""
    an = _Analyser(exp, built)
    seqs = an.max_seqs(stats)
    p, o = max(stats.mean_prompt, 1.0), max(stats.mean_output, 1.0)
    total, slowest = an.lane_step_s(
        float(chunk), causal_pairs(chunk, 0), seqs, seqs * (p + o / 2.0), 1.0
    )
    return max(total, exp.layout.pp * slowest)


def p99_of_monotone(values: I64, f: Callable[[int], float]) -> float:
    """numpy's linear p99 of f(values) for a non-decreasing f, evaluating f only at the two
    order statistics the percentile interpolates between (f(sorted x) is sorted)."""
    if len(values) == 0:
        return 0.0
    x = np.sort(values)
    h = (len(x) - 1) * 0.99
    lo = math.floor(h)
    hi = min(lo + 1, len(x) - 1)
    f_lo = f(int(x[lo]))
    f_hi = f(int(x[hi])) if hi != lo else f_lo
    return f_lo + (h - lo) * (f_hi - f_lo)
