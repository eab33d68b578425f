"""A minimal continuous-batching simulator: the cost floor of issue 15 item 5a.

  python benchmarks/reference_model.py OUT_DIR [--requests N] [--replicas R] [--rate RPS]

What it models, and nothing more: R replicas behind a least-outstanding router; Poisson
arrivals; per replica one simpy process running vLLM-style iteration-level batching (every
decoding sequence emits one token per step, prefill chunks fill the rest of a token budget,
at most `MAX_SEQS` running sequences, FCFS admission); a linear step-time function. No KV
capacity (the floor case never fills it), no TP/PP, no fabric. It writes one row per request
and one per engine step (as .npy) and a summary JSON, so start-up and result writing are part
of its cost, as they are of clustersim's. No clustersim imports.

The step-time coefficients are a linear fit of clustersim's cost model (model/cost.py) for
llama-3.1-8b TP1 on h100-sxm, bf16, vLLM with CUDA graphs, over decode batches of 1-256 at
contexts up to 640 and prefill chunks of 128-2048 tokens: within ≈ 10 % of it on the floor
case's steps, so both simulators run a similar number of engine steps.
"""

from __future__ import annotations

import argparse
import heapq
import json
from array import array
from collections import deque
from collections.abc import Generator
from pathlib import Path
from typing import Any

import numpy as np
import simpy

# step time (s) = BASE + PREFILL·prefill tokens + SEQ·decoding sequences + CTX·context read
STEP_BASE_S = 7.7e-3
STEP_PREFILL_TOKEN_S = 15.2e-6
STEP_DECODE_SEQ_S = 19.5e-6
STEP_CTX_TOKEN_S = 49e-9
MAX_SEQS = 256
MAX_BATCHED_TOKENS = 8192
STEP_COLUMNS = ("replica", "start_s", "end_s", "prefill_tokens", "decode_tokens")


def step_time_s(prefill_tokens: int, decode_seqs: int, ctx_tokens: int) -> float:
    return (
        STEP_BASE_S
        + STEP_PREFILL_TOKEN_S * prefill_tokens
        + STEP_DECODE_SEQ_S * decode_seqs
        + STEP_CTX_TOKEN_S * ctx_tokens
    )


class Requests:
    """Per-request lengths and times, plain lists indexed by request id."""

    def __init__(self, arrival_s: list[float], prompt: int, output: int) -> None:
        n = len(arrival_s)
        self.arrival_s = arrival_s
        self.prompt = prompt
        self.output = output
        self.first_token_s = [0.0] * n
        self.finish_s = [0.0] * n
        self.replica = [0] * n
        self.d0 = [0] * n  # decode step at which the request entered decode


class Replica:
    """One engine: a waiting queue, prefilling requests, and decoding requests kept implicit.

    Decode progress is a step counter `d`: a request whose prompt of P tokens finished prefill
    (emitting its first token) enters decode at step d0, reads P + 1 + (x - d0) tokens of
    context at decode step x and emits its last token at step d0 + output - 2 (a heap). So
    the context read at step x is ctx_offset + n·x, ctx_offset = Σ (P + 1 - d0)."""

    def __init__(self, env: simpy.Environment, index: int, reqs: Requests, sim: Sim) -> None:
        self.env, self.index, self.reqs, self.sim = env, index, reqs, sim
        self.waiting: deque[int] = deque()
        self.prefilling: list[list[int]] = []  # [rid, prompt tokens computed]
        self.finish_heap: list[tuple[int, int]] = []  # (last decode step, rid)
        self.decoding = 0
        self.ctx_offset = 0
        self.d = 0
        self.wake: simpy.Event | None = None
        env.process(self.run())

    def submit(self, rid: int) -> None:
        self.waiting.append(rid)
        if self.wake is not None:
            self.wake.succeed()
            self.wake = None

    def run(self) -> Generator[simpy.Event, Any, None]:
        env, reqs = self.env, self.reqs
        while True:
            if not (self.waiting or self.prefilling or self.decoding):
                self.wake = env.event()
                yield self.wake
            n, d = self.decoding, self.d
            budget = MAX_BATCHED_TOKENS - n
            chunks: list[tuple[list[int], int]] = []
            for entry in self.prefilling:
                chunk = min(reqs.prompt - entry[1], budget)
                if chunk <= 0:
                    break
                chunks.append((entry, chunk))
                budget -= chunk
            while self.waiting and budget > 0 and n + len(self.prefilling) < MAX_SEQS:
                entry = [self.waiting.popleft(), 0]
                self.prefilling.append(entry)
                chunk = min(reqs.prompt, budget)
                chunks.append((entry, chunk))
                budget -= chunk
            prefill = MAX_BATCHED_TOKENS - n - budget
            start = env.now
            yield env.timeout(step_time_s(prefill, n, self.ctx_offset + n * d))
            now = env.now
            self.sim.record((self.index, start, now, prefill, n))
            if n:
                self.finish_decoders(d, now)
                self.d = d + 1
            for entry, chunk in chunks:
                entry[1] += chunk
                if entry[1] == reqs.prompt:
                    self.prefilling.remove(entry)
                    self.enter_decode(entry[0], now)

    def enter_decode(self, rid: int, now: float) -> None:
        reqs = self.reqs
        reqs.first_token_s[rid] = now
        if reqs.output == 1:
            self.finish(rid, now)
            return
        d0 = self.d
        reqs.d0[rid] = d0
        self.decoding += 1
        self.ctx_offset += reqs.prompt + 1 - d0
        heapq.heappush(self.finish_heap, (d0 + reqs.output - 2, rid))

    def finish_decoders(self, d: int, now: float) -> None:
        heap, reqs = self.finish_heap, self.reqs
        while heap and heap[0][0] <= d:
            _, rid = heapq.heappop(heap)
            self.decoding -= 1
            self.ctx_offset -= reqs.prompt + 1 - reqs.d0[rid]
            self.finish(rid, now)

    def finish(self, rid: int, now: float) -> None:
        self.reqs.finish_s[rid] = now
        self.sim.finished(self.index)


class Sim:
    def __init__(
        self, n: int, replicas: int, rate_rps: float, prompt: int, output: int, seed: int
    ) -> None:
        rng = np.random.default_rng(seed)
        arrival = np.cumsum(rng.exponential(1.0 / rate_rps, n)).tolist()
        self.env = simpy.Environment()
        self.reqs = Requests(arrival, prompt, output)
        self.outstanding = [0] * replicas
        self.rows = array("d")
        self.replicas = [Replica(self.env, r, self.reqs, self) for r in range(replicas)]
        self.n = self.left = n
        self.done = self.env.event()
        self.env.process(self.arrivals())

    def arrivals(self) -> Generator[simpy.Event, Any, None]:
        env, out = self.env, self.outstanding
        for rid, t in enumerate(self.reqs.arrival_s):
            if t > env.now:
                yield env.timeout(t - env.now)
            r = out.index(min(out))  # least outstanding, lowest index on ties
            out[r] += 1
            self.reqs.replica[rid] = r
            self.replicas[r].submit(rid)

    def record(self, row: tuple[int, float, float, int, int]) -> None:
        self.rows.extend(row)

    def finished(self, replica: int) -> None:
        self.outstanding[replica] -= 1
        self.left -= 1
        if self.left == 0:
            self.done.succeed()

    def run(self) -> None:
        self.env.run(until=self.done)

    @property
    def steps(self) -> int:
        return len(self.rows) // len(STEP_COLUMNS)

    def write(self, out: Path) -> dict[str, float]:
        """requests.npy (arrival, first token, finish, replica), steps.npy (STEP_COLUMNS) and
        summary.json (means over requests, seconds)."""
        out.mkdir(parents=True, exist_ok=True)
        r = self.reqs
        table = np.array([r.arrival_s, r.first_token_s, r.finish_s, r.replica]).T
        np.save(out / "requests.npy", table)
        np.save(out / "steps.npy", np.frombuffer(self.rows).reshape(-1, len(STEP_COLUMNS)))
        ttft = table[:, 1] - table[:, 0]
        tpot = (table[:, 2] - table[:, 1]) / max(r.output - 1, 1)
        summary = {
            "requests": float(len(table)),
            "engine_steps": float(len(self.rows) // len(STEP_COLUMNS)),
            "simulated_s": float(self.env.now),
            "ttft_mean_s": float(ttft.mean()),
            "tpot_mean_s": float(tpot.mean()),
            "throughput_rps": float(len(table) / self.env.now),
        }
        (out / "summary.json").write_text(json.dumps(summary, indent=1))
        return summary


def _parser(with_out: bool) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    if with_out:
        ap.add_argument("out", type=Path)
    ap.add_argument("--requests", type=int, default=100_000)
    ap.add_argument("--replicas", type=int, default=8)
    ap.add_argument("--rate", type=float, required=True, help="arrivals per second, all replicas")
    ap.add_argument("--prompt", type=int, default=512)
    ap.add_argument("--output", type=int, default=128)
    ap.add_argument("--seed", type=int, default=1)
    return ap


def _sim(a: argparse.Namespace) -> Sim:
    return Sim(a.requests, a.replicas, a.rate, a.prompt, a.output, a.seed)


def sim_from_args(argv: list[str]) -> Sim:
    """The simulation `main` would run for these options (no OUT_DIR), not yet run."""
    return _sim(_parser(with_out=False).parse_args(argv))


def main(argv: list[str] | None = None) -> dict[str, float]:
    a = _parser(with_out=True).parse_args(argv)
    sim = _sim(a)
    sim.run()
    return sim.write(a.out)


if __name__ == "__main__":
    print(json.dumps(main()))
