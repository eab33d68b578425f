"""Property tests on whole simulations: random small experiments, invariants of the tables.

Each example is an inline experiment (llama-3.1-8b; tp, pp, dp in {1, 2}; random serving
knobs, arrival process, lengths and seed) whose KV cache is sized to a random small number of
blocks, so admission limits, preemption by recompute and drops all happen.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest.mock import patch

import numpy as np
import pandas as pd
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clustersim.config.load import load_experiment
from clustersim.config.schema import Experiment
from clustersim.metrics.summary import summarize
from clustersim.sim import engine
from clustersim.sim.engine import RunOutput, run_experiment

KVUtilisation = Callable[[Experiment, int], float]  # the conftest fixture `kv_utilisation`
EPS_S = 1e-9  # float slack on simulated times (s)

# --------------------------------------------------------------------------- strategies


@st.composite
def arrivals(draw: st.DrawFn) -> dict[str, Any]:
    process = draw(st.sampled_from(["poisson", "gamma", "mmpp", "burst", "closed"]))
    rate = draw(st.floats(2.0, 400.0))
    if process == "poisson":
        return {"process": "poisson", "rate_rps": rate}
    if process == "gamma":
        return {"process": "gamma", "rate_rps": rate, "cv": draw(st.floats(0.3, 4.0))}
    if process == "mmpp":
        return {
            "process": "mmpp",
            "rates_rps": [draw(st.floats(0.0, 20.0)), rate],
            "mean_dwell_s": [draw(st.floats(0.05, 2.0)), draw(st.floats(0.05, 2.0))],
        }
    if process == "burst":
        return {"process": "burst"}
    return {"process": "closed", "concurrency": draw(st.integers(1, 40))}


@st.composite
def lengths(draw: st.DrawFn, most: int) -> dict[str, Any]:
    """A length distribution with values in 1..most tokens."""
    dist = draw(st.sampled_from(["fixed", "uniform", "lognormal"]))
    if dist == "fixed":
        return {"dist": "fixed", "value": draw(st.integers(1, most))}
    if dist == "uniform":
        low = draw(st.integers(1, most))
        return {"dist": "uniform", "min": low, "max": draw(st.integers(low, most))}
    return {
        "dist": "lognormal",
        "median": draw(st.floats(1.0, most / 2)),
        "sigma": draw(st.floats(0.0, 1.2)),
        "max": most,
    }


@st.composite
def raw_experiments(draw: st.DrawFn) -> dict[str, Any]:
    """An experiment mapping; `kv_blocks` (not a schema key) is the KV size to aim for."""
    tp, pp, dp = (draw(st.sampled_from([1, 2])) for _ in range(3))
    max_seqs = draw(st.integers(1, 48))
    serving: dict[str, Any] = {
        "max_num_seqs": max_seqs,
        "max_num_batched_tokens": max(max_seqs, draw(st.integers(16, 2048))),
        "chunked_prefill": draw(st.booleans()),
        "block_size": draw(st.sampled_from([8, 16, 32])),
        "kv_admission": draw(st.sampled_from(["incremental", "reserve_full"])),
        "router": draw(
            st.sampled_from(
                ["round_robin", "random", "least_outstanding", "least_kv", "power_of_two"]
            )
        ),
    }
    if draw(st.integers(0, 3)) == 0:  # sometimes: a bounded queue (drops when full)
        serving["max_queue"] = draw(st.integers(1, 30))
    if draw(st.integers(0, 3)) == 0:  # sometimes: a context limit (drops longer requests)
        serving["max_model_len"] = draw(st.integers(64, 1024))
    prompt, output = draw(lengths(600)), draw(lengths(160))
    # KV per lane: a random multiple (0.8x .. 6x) of the largest possible request's blocks,
    # so some requests may never fit (dropped) and a few large ones fill the cache (preempted)
    largest = -(-(longest(prompt) + longest(output)) // serving["block_size"])
    lane_blocks = max(4, int(draw(st.floats(0.8, 6.0)) * largest))
    return {
        "name": "prop",
        "seed": draw(st.integers(0, 2**31 - 1)),
        "model": "llama-3.1-8b",
        "topology": draw(st.sampled_from(["dgx_h100_x1", "h100x16_ib"])),
        "layout": {"tp": tp, "pp": pp, "dp": dp},
        "serving": serving,
        "workload": {"arrival": draw(arrivals()), "prompt_tokens": prompt, "output_tokens": output},
        "horizon": {"requests": draw(st.integers(20, 150))},
        "kv_blocks": pp * lane_blocks,  # per replica: pp lanes share it
    }


def longest(spec: dict[str, Any]) -> int:
    """Largest value (tokens) a length spec made by `lengths` can draw."""
    return int(spec["value"] if spec["dist"] == "fixed" else spec["max"])


# --------------------------------------------------------------------------- helpers


def load_raw(directory: Path, raw: dict[str, Any], kv_utilisation: KVUtilisation) -> Experiment:
    """Write the mapping (minus `kv_blocks`) as YAML, load it, then size the KV cache."""
    raw = dict(raw)
    blocks = raw.pop("kv_blocks")
    path = directory / "exp.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    exp = load_experiment(path)
    u = kv_utilisation(exp, blocks)
    return load_experiment(path, [f"serving.gpu_memory_utilization={u!r}"])


def run_counting_finishes(exp: Experiment) -> tuple[RunOutput, np.ndarray]:
    """Run and count completion callbacks per request id."""
    calls: list[int] = []
    original = engine._Simulation._on_finish

    def counting(self: Any, rid: int, now: float) -> None:
        calls.append(rid)
        original(self, rid, now)

    with patch.object(engine._Simulation, "_on_finish", counting):
        out = run_experiment(exp)
    return out, np.bincount(np.asarray(calls, dtype=np.int64), minlength=len(out.requests))


# --------------------------------------------------------------------------- invariants


def check_requests(exp: Experiment, req: pd.DataFrame, finishes: np.ndarray) -> None:
    n = exp.horizon.requests
    assert len(req) == n and list(req["id"]) == list(range(n))
    dropped = req["dropped"].to_numpy(dtype=bool)
    finish = req["finish_s"].to_numpy(dtype=float)
    done = np.isfinite(finish)
    assert (done ^ dropped).all()  # finished, or dropped: never both, never neither
    assert (finishes == done.astype(np.int64)).all()  # finished exactly once
    assert done.sum() + dropped.sum() == n
    arrival = req["arrival_s"].to_numpy(dtype=float)
    first = req["first_token_s"].to_numpy(dtype=float)
    scheduled = arrival + req["queue_s"].to_numpy(dtype=float)
    assert np.isfinite(arrival).all()  # every request arrived (horizon.requests)
    d = done
    assert (arrival[d] <= scheduled[d] + EPS_S).all()
    assert (scheduled[d] <= first[d] + EPS_S).all()
    assert (first[d] <= finish[d] + EPS_S).all()
    assert np.isnan(first[dropped]).all() and (req["preemptions"][dropped] == 0).all()
    replica = req["replica"].to_numpy()
    assert ((replica >= 0) & (replica < exp.layout.dp)).all()
    # one output token per step at most after the first
    out_tokens = req["output_tokens"].to_numpy()
    assert (finish[d] - first[d] >= 0).all()
    assert ((out_tokens[d] == 1) <= (finish[d] == first[d])).all()


def check_iterations(exp: Experiment, it: pd.DataFrame, req: pd.DataFrame) -> None:
    assert (len(it) > 0) == (not req["dropped"].all())  # no steps only if nothing to do
    if len(it) == 0:
        return
    start, end = it["start_s"].to_numpy(), it["end_s"].to_numpy()
    assert (start <= end).all()
    span = end - start
    np.testing.assert_allclose(span, it["compute_s"] + it["comm_s"], rtol=1e-9, atol=EPS_S)
    assert (it[["compute_s", "comm_s", "bubble_s"]].to_numpy() >= 0).all()
    used, cap = it["kv_used_blocks"].to_numpy(), it["kv_capacity_blocks"].to_numpy()
    assert ((used >= 0) & (used <= cap)).all()
    assert (it["num_seqs"] <= exp.serving.max_num_seqs).all() and (it["num_seqs"] > 0).all()
    assert (it["batch_tokens"] == it["prefill_tokens"] + it["decode_tokens"]).all()
    if exp.serving.chunked_prefill:
        assert (it["batch_tokens"] <= exp.serving.max_num_batched_tokens).all()
    if exp.layout.pp == 1:
        assert (it["bubble_s"] == 0).all()
    for _, steps in it.groupby(["replica", "stage"], sort=True):
        s = steps.sort_values("start_s", kind="stable")
        # one stage of one replica runs one step at a time
        assert (s["start_s"].to_numpy()[1:] >= s["end_s"].to_numpy()[:-1] - EPS_S).all()
    # every batch passes through every stage
    per_stage = it.groupby("stage")[["prefill_tokens", "decode_tokens", "num_seqs"]].sum()
    assert len(per_stage) == exp.layout.pp
    assert (per_stage.nunique() == 1).all()


def check_tokens(req: pd.DataFrame, it: pd.DataFrame) -> None:
    """Work done in steps accounts for every completed request's prompt and output."""
    done = np.isfinite(req["finish_s"].to_numpy(dtype=float))
    stage0 = it[it["stage"] == 0]
    prompt = int(req["prompt_tokens"][done].sum())
    decodes_needed = int((req["output_tokens"][done] - 1).sum())
    preempted = int(req["preemptions"].sum())
    prefilled, decoded = int(stage0["prefill_tokens"].sum()), int(stage0["decode_tokens"].sum())
    # each prefill completion emits one token; a preempted decoder re-emits via prefill
    assert decodes_needed - preempted <= decoded <= decodes_needed
    assert prefilled >= prompt
    if preempted == 0:
        assert decoded == decodes_needed and prefilled == prompt


def check_finish_times_are_step_ends(req: pd.DataFrame, it: pd.DataFrame, pp: int) -> None:
    last = it[it["stage"] == pp - 1]
    done = req[np.isfinite(req["finish_s"].to_numpy(dtype=float))]
    for r, rows in done.groupby("replica"):
        ends = last.loc[last["replica"] == r, "end_s"].to_numpy()
        assert np.isin(rows["finish_s"].to_numpy(), ends).all()
        assert np.isin(rows["first_token_s"].to_numpy(), ends).all()


def check_summary(exp: Experiment, out: RunOutput) -> None:
    s = summarize(out, exp.slo, exp.horizon.warmup_s)
    req = out.requests
    assert s["requests_completed"] == int(np.isfinite(req["finish_s"]).sum())
    assert s["requests_dropped"] == int(req["dropped"].sum())
    assert s["requests_completed"] + s["requests_dropped"] == exp.horizon.requests
    assert s["gpus"] == exp.layout.gpus
    assert s["preemptions"] == int(req["preemptions"].sum())


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(raw=raw_experiments())
def test_random_experiments_keep_invariants(
    tmp_path_factory: pytest.TempPathFactory, kv_utilisation: KVUtilisation, raw: dict[str, Any]
) -> None:
    exp = load_raw(tmp_path_factory.mktemp("prop"), raw, kv_utilisation)
    out, finishes = run_counting_finishes(exp)
    check_requests(exp, out.requests, finishes)
    check_iterations(exp, out.iterations, out.requests)
    check_tokens(out.requests, out.iterations)
    check_finish_times_are_step_ends(out.requests, out.iterations, exp.layout.pp)
    check_summary(exp, out)


# --------------------------------------------------------------------------- pinned cases

# KV pressure that certainly preempts: 40 KV blocks of 16 tokens for requests that each grow
# to 5–13 blocks, all arriving at once into a lane admitting 16.
PRESSURE = {
    "name": "pressure",
    "seed": 11,
    "model": "llama-3.1-8b",
    "topology": "dgx_h100_x1",
    "layout": {"tp": 1, "pp": 2, "dp": 1},
    "serving": {"max_num_seqs": 16, "max_num_batched_tokens": 512, "chunked_prefill": True},
    "workload": {
        "arrival": {"process": "burst"},
        "prompt_tokens": {"dist": "uniform", "min": 40, "max": 120},
        "output_tokens": {"dist": "uniform", "min": 30, "max": 80},
    },
    "horizon": {"requests": 60},
    "kv_blocks": 2 * 40,  # two lanes (pp = 2) of 40 blocks
}


def test_kv_pressure_preempts_and_everyone_still_finishes(
    tmp_path: Path, kv_utilisation: KVUtilisation
) -> None:
    exp = load_raw(tmp_path, PRESSURE, kv_utilisation)
    out, finishes = run_counting_finishes(exp)
    assert out.requests["preemptions"].sum() > 0
    assert not out.requests["dropped"].any()
    check_requests(exp, out.requests, finishes)
    check_iterations(exp, out.iterations, out.requests)
    check_tokens(out.requests, out.iterations)
    assert out.iterations["kv_used_blocks"].max() > 0.9 * out.iterations["kv_capacity_blocks"].max()


def test_requests_that_can_never_fit_are_dropped(
    tmp_path: Path, kv_utilisation: KVUtilisation
) -> None:
    raw = {**PRESSURE, "horizon": {"requests": 30}, "kv_blocks": 2 * 8}  # 8 blocks per lane
    exp = load_raw(tmp_path, raw, kv_utilisation)
    out, finishes = run_counting_finishes(exp)
    req = out.requests
    too_big = -(-(req["prompt_tokens"] + req["output_tokens"]) // exp.serving.block_size) > 8
    assert too_big.any() and (~too_big).any()
    assert (req["dropped"] == too_big).all()
    check_requests(exp, req, finishes)


def test_closed_loop_survives_a_long_run_of_drops(
    tmp_path: Path, kv_utilisation: KVUtilisation
) -> None:
    """A closed-loop client replaces a dropped request at once; thousands of drops in a row
    (queue of 1, 3 clients) must not recurse once per drop (it overflowed the stack)."""
    raw = {
        **PRESSURE,
        "layout": {"tp": 1, "pp": 1, "dp": 1},
        "serving": {"max_num_seqs": 1, "max_queue": 1},
        "workload": {
            "arrival": {"process": "closed", "concurrency": 3},
            "prompt_tokens": {"dist": "fixed", "value": 64},
            "output_tokens": {"dist": "fixed", "value": 16},
        },
        "horizon": {"requests": 3000},
        "kv_blocks": 1000,
    }
    exp = load_raw(tmp_path, raw, kv_utilisation)
    out, finishes = run_counting_finishes(exp)
    req = out.requests
    check_requests(exp, req, finishes)
    check_iterations(exp, out.iterations, req)
    assert req["dropped"].sum() > 2000 and (~req["dropped"]).sum() > 0
