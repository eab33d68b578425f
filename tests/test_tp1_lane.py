"""The plain TP1 lane's loop (serving/tp1_lane.py) and the plain arrival path
(sim/plain_arrivals.py) change no number: each case run with both and with the general
paths (Replica._single_stage_lane, _Simulation._admit) writes the same result files, byte
for byte (summary.json without its wall time). The cases reach every fallback: preemption
(chunked and whole prompts), prefill-only steps (SGLang without chunked prefill), whole
prompts beside decodes (TensorRT-LLM), reserve_full, closed loop, drops (too long, queue
full), every router (least_outstanding's tracked heap from 64 replicas), faults (fresh
schedulers, slowed stages), TP2 (all-reduces after each step's compute), an MoE stage
(another cost model) and disaggregated pools (KV kept after a prefill, KV arriving at
decode lanes)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clustersim.serving import replica, scheduler, tp1_lane
from clustersim.sim import engine, plain_arrivals
from run_files import run_files

LENGTHS = """\
  prompt_tokens: {dist: lognormal, median: 768, sigma: 0.6, max: 4096}
  output_tokens: {dist: lognormal, median: 128, sigma: 0.7, max: 1024}
"""


def dense(name: str, serving: str, arrival: str, extra: str = "", dp: int = 2, tp: int = 1) -> str:
    return f"""\
name: {name}
seed: 11
model: llama-3.1-8b
topology: dgx_h100_x1
layout: {{tp: {tp}, dp: {dp}}}
serving: {serving}
workload:
  arrival: {arrival}
{LENGTHS}horizon: {{duration_s: 5}}
{extra}"""


POISSON = "{process: poisson, rate_rps: 30}"
CASES = {
    "drops": dense(
        "drops", "{router: least_outstanding, max_queue: 12, max_model_len: 3000}", POISSON
    ),
    "preempt_chunked": dense(
        "preempt_chunked", "{gpu_memory_utilization: 0.23, router: random}", POISSON
    ),
    "sglang_whole": dense(
        "sglang_whole",
        "{gpu_memory_utilization: 0.23, router: least_kv, engine: sglang, chunked_prefill: false}",
        POISSON,
    ),
    "trtllm_mixed": dense(
        "trtllm_mixed",
        "{engine: trtllm, chunked_prefill: false, gpu_memory_utilization: 0.22, "
        "router: round_robin}",
        "{process: closed, concurrency: 40}",
        dp=3,
    ),
    "reserve_full": dense(
        "reserve_full",
        "{engine: trtllm, kv_admission: reserve_full, router: power_of_two}",
        POISSON,
    ),
    "faults": dense(
        "faults",
        "{router: least_outstanding}",
        POISSON,
        "faults:\n  detect_s: 0.5\n  events: [{kind: gpu_down, target: n0.g0, at_s: 1.5, "
        "duration_s: 1.5}, {kind: gpu_slowdown, target: n0.g1, at_s: 1, compute_factor: 0.5}]\n",
        dp=3,
    ),
    # TP > 1: each step's all-reduces (closed form once the fabric settles, one timer)
    "tp2_chunked": dense(
        "tp2_chunked", "{gpu_memory_utilization: 0.3, router: least_outstanding}", POISSON, tp=2
    ),
    "tp2_faults": dense(
        "tp2_faults",
        "{router: least_outstanding}",
        POISSON,
        "faults:\n  detect_s: 0.5\n  events: [{kind: gpu_slowdown, target: n0.g1, at_s: 1, "
        "compute_factor: 0.5}, {kind: gpu_down, target: n0.g4, at_s: 2, duration_s: 1}]\n",
        dp=4,
        tp=2,
    ),
    "tracked64": """\
name: tracked64
seed: 12
model: llama-3.1-8b
topology: {name: t, nodes: 8, gpus_per_node: 8, gpu: h100-sxm,
  nvlink: {domain: node, bandwidth_GBps: 450, latency_us: 2.0},
  network: {kind: infiniband, nics_per_node: 8, bandwidth_GBps: 50}}
layout: {tp: 1, dp: 64}
serving: {router: least_outstanding, max_queue: 3}
workload:
  arrival: {process: poisson, rate_rps: 400}
  prompt_tokens: {dist: lognormal, median: 768, sigma: 0.6, max: 4096}
  output_tokens: {dist: lognormal, median: 64, sigma: 0.7, max: 512}
horizon: {requests: 1500}
""",
    "disagg": """\
name: disagg
seed: 8
model: llama-3.1-8b
topology: dgx_h100_x1
disaggregation:
  prefill: {layout: {tp: 1, dp: 2}}
  decode: {layout: {tp: 1, dp: 3}, serving: {max_num_seqs: 64}}
workload:
  arrival: {process: poisson, rate_rps: 20}
  prompt_tokens: {dist: lognormal, median: 1024, sigma: 0.5, max: 4096}
  output_tokens: {dist: lognormal, median: 128, sigma: 0.5, max: 512}
horizon: {duration_s: 4}
""",
    # an MoE replica's stage prices steps with its sampled routing (not StageCostModel's
    # cached parts, which the lane reads inline): the lane calls compute_s
    "moe_tp2": """\
name: moe_tp2
seed: 9
model: mixtral-8x7b
topology: dgx_h100_x1
layout: {tp: 2, dp: 2}
serving: {router: least_outstanding, engine: sglang}
workload:
  arrival: {process: poisson, rate_rps: 20}
  prompt_tokens: {dist: lognormal, median: 512, sigma: 0.5, max: 2048}
  output_tokens: {dist: lognormal, median: 64, sigma: 0.5, max: 256}
horizon: {duration_s: 3}
""",
}


def _run(
    tmp_path: Path, name: str, fast: bool, monkeypatch: pytest.MonkeyPatch
) -> dict[str, bytes]:
    monkeypatch.setenv("CLUSTERSIM_TP1_LANE", "1" if fast else "0")
    if not fast:
        monkeypatch.setattr(engine, "plain_admit", lambda run: None)
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / f"{name}.yaml"
    path.write_text(CASES[name])
    files = run_files(path, tmp_path / ("fast" if fast else "general"), name)
    monkeypatch.undo()
    return files


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_fast_paths_write_the_files_the_general_paths_write(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast = _run(tmp_path, name, True, monkeypatch)
    general = _run(tmp_path, name, False, monkeypatch)
    assert fast.keys() == general.keys()
    for key in fast:
        assert fast[key] == general[key], f"{name}: {key} differs"


def test_the_fast_paths_run_and_fall_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """In a plain run the loop forms most batches itself (the scheduler only for what it
    hands over: preemptions, idle lanes) and arrivals take the plain path; a fault's fresh
    scheduler is still stepped by the loop; a disaggregated run takes the general arrival
    path, and its prefill lanes (KV kept after a finish) the general loop."""
    calls = {"next_batch": 0, "steps": 0, "plain_admit": 0, "general_lane": 0}
    next_batch = scheduler.Scheduler.next_batch
    general_lane = replica.Replica._single_stage_lane
    plain_admit = plain_arrivals.plain_admit

    def counting_next_batch(self: scheduler.Scheduler, now: float) -> object:
        calls["next_batch"] += 1
        return next_batch(self, now)

    def counting_general_lane(self: replica.Replica, lane: replica.Lane) -> replica.Process:
        calls["general_lane"] += 1
        return general_lane(self, lane)

    def counting_admit(run: plain_arrivals.PlainRun) -> plain_arrivals.Admit | None:
        admit = plain_admit(run)
        calls["plain_admit"] += admit is not None
        return admit

    for name, plain in (
        ("preempt_chunked", True),
        ("faults", True),
        ("tp2_chunked", True),
        ("disagg", False),
    ):
        calls.update(dict.fromkeys(calls, 0))
        monkeypatch.setattr(scheduler.Scheduler, "next_batch", counting_next_batch)
        monkeypatch.setattr(replica.Replica, "_single_stage_lane", counting_general_lane)
        monkeypatch.setattr(engine, "plain_admit", counting_admit)
        files = _run(tmp_path / name, name, True, monkeypatch)
        steps = json.loads(files["summary.json"])["sim"]["events"]
        assert tp1_lane.tp1_lane_enabled()
        if plain:
            assert calls["general_lane"] == 0, name
            assert 0 < calls["next_batch"] < steps / 4, name
            assert calls["plain_admit"] == (name != "faults"), name
        else:
            # the two prefill replicas keep KV after a finish; the decode lanes are plain
            assert calls["general_lane"] == 2 and calls["plain_admit"] == 0
