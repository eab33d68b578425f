"""Decode leaps (serving/decode_leap.py) change no number: every experiment family run with
leaps and with CLUSTERSIM_DECODE_LEAP=0 (stepping) writes the same result files, byte for
byte (summary.json without its wall time), and the vectorised step times equal the scalar
cost model's, bit for bit."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clustersim.catalog.engines import ENGINES
from clustersim.catalog.hardware import get_hardware
from clustersim.catalog.models import get_model
from clustersim.catalog.topologies import get_topology
from clustersim.config.schema import Precision
from clustersim.model.decode_run import DecodeStepCost
from clustersim.model.stage_cost import StageCostModel
from clustersim.moe import ep_leap
from clustersim.network import completion_ties, twin_links
from clustersim.network.ledger import LinkLedger
from clustersim.serving import decode_leap, lane_leaps, pipeline_leap, replica, tp1_lane
from clustersim.topology.graph import build_cluster
from run_files import run_files

# dense TP1 (leaps), with preemption + least_kv + no chunked prefill (SGLang), closed loop +
# reserve_full (TensorRT-LLM), TP2 × PP2 on one node (links shared by its stages: steps);
# MoE with sampled routing (moe/routed_leap.py): ep = 1 × DP2 with and without hot-set
# drift, TP4 = EP4 and DeepSeek-V3 TP8 = EP8 (one replica: leaps), TP2 = EP2 × DP2 (a shared
# stream: steps); DP-attention groups (moe/ep_leap.py): EP8 with drift and EPLB, EP8 with
# little KV (leaps end before a step that would preempt), EP16 across
# two nodes in a closed loop with reserve_full; disaggregated pools (leaps cut by KV
# arrivals and reservations), TP2 and TP8 (leaps with closed-form all-reduces); pipeline
# leaps (serving/pipeline_leap.py): TP1 × PP4, TP1 × PP2 with preemption + least_kv, TP8 ×
# PP2 on two nodes, TP8 × PP8 on eight nodes (hand-offs crossing the fat tree's spine,
# several flows on a link); one replica at TP2 and TP1 (leaps planned up to the announced
# next arrival: serving/next_arrival.py)
CASES = {
    "dense": """\
name: dense
seed: 3
model: llama-3.1-8b
topology: dgx_h100_x1
layout: {tp: 1, dp: 2}
workload:
  arrival: {process: poisson, rate_rps: 15}
  prompt_tokens: {dist: lognormal, median: 512, sigma: 0.5, max: 4096}
  output_tokens: {dist: lognormal, median: 128, sigma: 0.7, max: 1024}
horizon: {duration_s: 8}
""",
    "preempt": """\
name: preempt
seed: 4
model: llama-3.1-8b
topology: dgx_h100_x1
layout: {tp: 1, dp: 2}
serving: {gpu_memory_utilization: 0.23, router: least_kv, engine: sglang, chunked_prefill: false}
workload:
  arrival: {process: poisson, rate_rps: 40}
  prompt_tokens: {dist: lognormal, median: 1024, sigma: 0.5, max: 4096}
  output_tokens: {dist: lognormal, median: 256, sigma: 0.7, max: 1024}
horizon: {duration_s: 6}
""",
    "closed": """\
name: closed
seed: 5
model: llama-3.1-8b
topology: dgx_h100_x1
layout: {tp: 1, dp: 3}
serving: {engine: trtllm, kv_admission: reserve_full, router: power_of_two}
workload:
  arrival: {process: closed, concurrency: 24}
  prompt_tokens: {dist: lognormal, median: 256, sigma: 0.5, max: 4096}
  output_tokens: {dist: lognormal, median: 128, sigma: 0.7, max: 1024}
horizon: {duration_s: 5}
""",
    "tp2_pp2": """\
name: tp2_pp2
seed: 6
model: llama-3.1-8b
topology: dgx_h100_x1
layout: {tp: 2, pp: 2, dp: 2}
workload:
  arrival: {process: poisson, rate_rps: 10}
  prompt_tokens: {dist: lognormal, median: 512, sigma: 0.5, max: 4096}
  output_tokens: {dist: lognormal, median: 64, sigma: 0.7, max: 512}
horizon: {duration_s: 3}
""",
    "moe": """\
name: moe
seed: 7
model: mixtral-8x7b
topology: dgx_h100_x1
layout: {tp: 1, dp: 2}
precision: {weights: fp8, activations: fp8, kv_cache: fp8}
workload:
  arrival: {process: poisson, rate_rps: 8}
  prompt_tokens: {dist: lognormal, median: 512, sigma: 0.5, max: 4096}
  output_tokens: {dist: lognormal, median: 128, sigma: 0.7, max: 1024}
horizon: {duration_s: 4}
""",
    "moe_tp4_ep4": """\
name: moe_tp4_ep4
seed: 16
model: mixtral-8x7b
topology: dgx_h100_x1
layout: {tp: 4, ep: 4}
precision: {weights: fp8, activations: fp8, kv_cache: fp8}
experts:
  routing: {distribution: zipf, skew: 1.2, drift_interval_s: 0.7}
workload:
  arrival: {process: poisson, rate_rps: 10}
  prompt_tokens: {dist: lognormal, median: 512, sigma: 0.5, max: 4096}
  output_tokens: {dist: lognormal, median: 128, sigma: 0.7, max: 1024}
horizon: {duration_s: 5}
""",
    "moe_tp1_drift": """\
name: moe_tp1_drift
seed: 17
model: mixtral-8x7b
topology: dgx_h100_x1
layout: {tp: 1, dp: 2}
precision: {weights: fp8, activations: fp8, kv_cache: fp8}
experts:
  routing: {distribution: dirichlet, concentration: 0.5, drift_interval_s: 0.6}
workload:
  arrival: {process: gamma, rate_rps: 8, cv: 2.0}
  prompt_tokens: {dist: lognormal, median: 512, sigma: 0.5, max: 4096}
  output_tokens: {dist: lognormal, median: 128, sigma: 0.7, max: 1024}
horizon: {duration_s: 5}
""",
    "moe_tp2_ep2_dp2": """\
name: moe_tp2_ep2_dp2
seed: 18
model: mixtral-8x7b
topology: dgx_h100_x1
layout: {tp: 2, ep: 2, dp: 2}
precision: {weights: fp8, activations: fp8, kv_cache: fp8}
experts:
  routing: {distribution: zipf, skew: 1.0}
workload:
  arrival: {process: poisson, rate_rps: 10}
  prompt_tokens: {dist: lognormal, median: 512, sigma: 0.5, max: 4096}
  output_tokens: {dist: lognormal, median: 128, sigma: 0.7, max: 1024}
horizon: {duration_s: 4}
""",
    "moe_deepseek_tp8_ep8": """\
name: moe_deepseek_tp8_ep8
seed: 19
model: deepseek-v3
hardware: h200
topology: {name: h200x8, nodes: 1, gpus_per_node: 8, gpu: h200,
  nvlink: {domain: node, bandwidth_GBps: 450, latency_us: 2.0}}
layout: {tp: 8, ep: 8}
precision: {weights: fp8, activations: fp8, kv_cache: fp8, dispatch: fp8, combine: bf16}
experts:
  routing: {distribution: zipf, skew: 0.8}
workload:
  arrival: {process: poisson, rate_rps: 6}
  prompt_tokens: {dist: lognormal, median: 1000, sigma: 0.6, max: 8192}
  output_tokens: {dist: lognormal, median: 300, sigma: 0.5, max: 2048}
horizon: {duration_s: 5}
""",
    "dp_attention_ep8": """\
name: dp_attention_ep8
seed: 20
model: mixtral-8x7b
topology: dgx_h100_x1
layout: {tp: 1, dp: 8, ep: 8, dp_attention: true}
precision: {weights: fp8, activations: fp8, kv_cache: fp8}
experts:
  routing: {distribution: zipf, skew: 1.2, drift_interval_s: 0.8}
  eplb: {redundant_experts: 8, rebalance_interval_s: 1.0}
workload:
  arrival: {process: poisson, rate_rps: 10}
  prompt_tokens: {dist: lognormal, median: 512, sigma: 0.5, max: 4096}
  output_tokens: {dist: lognormal, median: 128, sigma: 0.7, max: 1024}
horizon: {duration_s: 4}
""",
    "dp_attention_ep8_kv": """\
name: dp_attention_ep8_kv
seed: 22
model: mixtral-8x7b
topology: dgx_h100_x1
layout: {tp: 1, dp: 8, ep: 8, dp_attention: true}
precision: {weights: fp8, activations: fp8, kv_cache: fp8}
serving: {gpu_memory_utilization: 0.2}
experts:
  routing: {distribution: zipf, skew: 1.2}
  eplb: {redundant_experts: 8}
workload:
  arrival: {process: poisson, rate_rps: 40}
  prompt_tokens: {dist: lognormal, median: 512, sigma: 0.5, max: 4096}
  output_tokens: {dist: lognormal, median: 512, sigma: 0.7, max: 1024}
horizon: {duration_s: 4}
""",
    "dp_attention_ep16_closed": """\
name: dp_attention_ep16_closed
seed: 21
model: qwen3-235b-a22b
topology: h100x16_ib
layout: {tp: 1, dp: 16, ep: 16, dp_attention: true}
precision: {weights: fp8, activations: fp8, kv_cache: fp8}
serving: {kv_admission: reserve_full}
experts:
  routing: {distribution: dirichlet, concentration: 0.3}
workload:
  arrival: {process: closed, concurrency: 6}
  prompt_tokens: {dist: lognormal, median: 256, sigma: 0.5, max: 4096}
  output_tokens: {dist: lognormal, median: 96, sigma: 0.7, max: 1024}
horizon: {duration_s: 3}
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
horizon: {duration_s: 5}
""",
    "tp2": """\
name: tp2
seed: 9
model: llama-3.1-70b
topology: dgx_h100_x1
layout: {tp: 2, dp: 4}
precision: {weights: fp8, activations: fp8, kv_cache: fp8}
workload:
  arrival: {process: poisson, rate_rps: 6}
  prompt_tokens: {dist: lognormal, median: 512, sigma: 0.5, max: 4096}
  output_tokens: {dist: lognormal, median: 128, sigma: 0.7, max: 1024}
horizon: {duration_s: 8}
""",
    "tp8_two_nodes": """\
name: tp8_two_nodes
seed: 9
model: llama-3.1-70b
topology: h100x16_ib
layout: {tp: 8, dp: 2}
workload:
  arrival: {process: poisson, rate_rps: 6}
  prompt_tokens: {dist: lognormal, median: 512, sigma: 0.5, max: 4096}
  output_tokens: {dist: lognormal, median: 128, sigma: 0.7, max: 1024}
horizon: {duration_s: 6}
""",
    "one_replica_tp2": """\
name: one_replica_tp2
seed: 14
model: llama-2-70b
topology: dgx_a100_x1
layout: {tp: 2}
workload:
  arrival: {process: poisson, rate_rps: 3}
  prompt_tokens: {dist: lognormal, median: 512, sigma: 0.5, max: 2048}
  output_tokens: {dist: lognormal, median: 128, sigma: 0.7, max: 512}
horizon: {duration_s: 10}
""",
    "one_replica_tp1": """\
name: one_replica_tp1
seed: 15
model: llama-3.1-8b
topology: dgx_h100_x1
layout: {tp: 1}
workload:
  arrival: {process: gamma, rate_rps: 12, cv: 2.0}
  prompt_tokens: {dist: lognormal, median: 512, sigma: 0.5, max: 4096}
  output_tokens: {dist: lognormal, median: 128, sigma: 0.7, max: 1024}
horizon: {duration_s: 8}
""",
    "pp4": """\
name: pp4
seed: 10
model: llama-3.1-8b
topology: dgx_h100_x1
layout: {tp: 1, pp: 4, dp: 2}
workload:
  arrival: {process: poisson, rate_rps: 30}
  prompt_tokens: {dist: lognormal, median: 512, sigma: 0.5, max: 4096}
  output_tokens: {dist: lognormal, median: 64, sigma: 0.7, max: 512}
horizon: {duration_s: 3}
""",
    "pp2_preempt": """\
name: pp2_preempt
seed: 11
model: llama-3.1-8b
topology: dgx_h100_x1
layout: {tp: 1, pp: 2, dp: 4}
serving: {gpu_memory_utilization: 0.13, router: least_kv}
workload:
  arrival: {process: poisson, rate_rps: 40}
  prompt_tokens: {dist: lognormal, median: 1024, sigma: 0.5, max: 4096}
  output_tokens: {dist: lognormal, median: 256, sigma: 0.7, max: 1024}
horizon: {duration_s: 2}
""",
    "tp8_pp2_two_nodes": """\
name: tp8_pp2_two_nodes
seed: 12
model: llama-3.1-70b
topology: h100x16_ib
layout: {tp: 8, pp: 2, dp: 1}
workload:
  arrival: {process: poisson, rate_rps: 3}
  prompt_tokens: {dist: lognormal, median: 512, sigma: 0.5, max: 4096}
  output_tokens: {dist: lognormal, median: 64, sigma: 0.7, max: 512}
horizon: {duration_s: 6}
""",
    "tp8_pp8_spine": """\
name: tp8_pp8_spine
seed: 13
model: llama-3.1-70b
topology: {name: t, nodes: 8, gpus_per_node: 8, gpu: h100-sxm,
  nvlink: {domain: node, bandwidth_GBps: 450, latency_us: 2.0},
  network: {kind: infiniband, nics_per_node: 8, bandwidth_GBps: 50}}
layout: {tp: 8, pp: 8}
workload:
  arrival: {process: poisson, rate_rps: 10}
  prompt_tokens: {dist: lognormal, median: 512, sigma: 0.5, max: 4096}
  output_tokens: {dist: lognormal, median: 64, sigma: 0.7, max: 512}
horizon: {duration_s: 2}
""",
}


def _run(
    tmp_path: Path, name: str, leap: bool, monkeypatch: pytest.MonkeyPatch
) -> dict[str, bytes]:
    monkeypatch.setenv("CLUSTERSIM_DECODE_LEAP", "1" if leap else "0")
    # every lane tries every leap it can (no backoff pauses: serving/leap_backoff.py), so the
    # leaping run leaps wherever leaps are possible
    monkeypatch.setattr(tp1_lane, "TP1_WORTH_STEPS", 0)
    monkeypatch.setattr(replica, "TP1_WORTH_STEPS", 0)
    path = tmp_path / f"{name}.yaml"
    path.write_text(CASES[name])
    return run_files(path, tmp_path / ("leap" if leap else "step"), name)


@pytest.mark.parametrize("name", sorted(CASES))
def test_leaping_writes_the_files_stepping_writes(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    leaped = _run(tmp_path, name, True, monkeypatch)
    stepped = _run(tmp_path, name, False, monkeypatch)
    assert "iterations.parquet" in leaped and "links.parquet" in leaped
    assert leaped.keys() == stepped.keys()
    changed = sorted(k for k in leaped if leaped[k] != stepped[k])
    assert not changed, f"{name}: leaping changed {changed}"


def test_leaps_happen_and_outside_events_cut_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The equivalence above is not vacuous: leaps run, and arrivals / KV landings cut some."""
    counts = {"leaps": 0, "steps": 0, "cuts": 0}
    plan, cut = decode_leap.plan_leap, decode_leap.DecodeLeap.cut

    def counting_plan(*args: object) -> decode_leap.DecodeLeap | None:
        leap = plan(*args)  # type: ignore[arg-type]
        if leap is not None:
            counts["leaps"] += 1
        return leap

    def counting_cut(self: decode_leap.DecodeLeap, now: float) -> None:
        counts["cuts"] += not self.allocated
        cut(self, now)

    monkeypatch.setattr(lane_leaps, "plan_leap", counting_plan)
    monkeypatch.setattr(decode_leap.DecodeLeap, "cut", counting_cut)
    for name in ("dense", "disagg", "tp2"):
        (tmp_path / name).mkdir()
        _run(tmp_path / name, name, True, monkeypatch)
    assert counts["leaps"] > 100
    assert 0 < counts["cuts"] < counts["leaps"]


def test_moe_leaps_happen(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The MoE cases above leap (not vacuous): replica stages drawing their routing ahead
    (one replica, or ep = 1), and the DP-attention groups, some leaps cut by arrivals; the
    replicas sharing one stream at ep = 2 step."""
    routed: dict[str, int] = {}
    group = {"leaps": 0, "cuts": 0}
    plan, plan_group, cut = lane_leaps.plan_leap, ep_leap.GroupLeaps.plan, ep_leap.GroupLeap.cut

    def counting_plan(*args: Any) -> decode_leap.DecodeLeap | None:
        leap = plan(*args)
        if leap is not None and leap.routing is not None:
            routed[name] = routed.get(name, 0) + 1
        return leap

    def counting_group_plan(self: ep_leap.GroupLeaps, *args: Any) -> ep_leap.GroupLeap | None:
        leap = plan_group(self, *args)
        group["leaps"] += leap is not None
        return leap

    def counting_cut(self: ep_leap.GroupLeap, now: float) -> None:
        group["cuts"] += not self.allocated
        cut(self, now)

    monkeypatch.setattr(lane_leaps, "plan_leap", counting_plan)
    monkeypatch.setattr(ep_leap.GroupLeaps, "plan", counting_group_plan)
    monkeypatch.setattr(ep_leap.GroupLeap, "cut", counting_cut)
    names = ("moe", "moe_tp1_drift", "moe_tp4_ep4", "moe_tp2_ep2_dp2", "dp_attention_ep8")
    for name in names:
        (tmp_path / name).mkdir()
        _run(tmp_path / name, name, True, monkeypatch)
    assert min(routed.get(n, 0) for n in ("moe", "moe_tp1_drift", "moe_tp4_ep4")) > 50
    assert "moe_tp2_ep2_dp2" not in routed
    assert group["leaps"] > 50 and group["cuts"] > 0


def test_pipeline_leaps_happen(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The pipelined cases above cross their stages in closed form (not vacuous), with
    preemptions in one, hand-off coflows sharing spine links in another; one node's TP2 ×
    PP2 shares links between its stages and steps."""
    trips: dict[str, int] = {}
    start = pipeline_leap.PipelineLeap.start

    def counting_start(self: pipeline_leap.PipelineLeap, *args: Any) -> Any:
        trips[name] = trips.get(name, 0) + 1
        return start(self, *args)

    monkeypatch.setattr(pipeline_leap.PipelineLeap, "start", counting_start)
    for name in ("pp4", "pp2_preempt", "tp8_pp2_two_nodes", "tp8_pp8_spine", "tp2_pp2"):
        (tmp_path / name).mkdir()
        _run(tmp_path / name, name, True, monkeypatch)
    assert min(trips.get(n, 0) for n in ("pp4", "pp2_preempt", "tp8_pp8_spine")) > 500
    assert trips["tp8_pp2_two_nodes"] > 100
    assert "tp2_pp2" not in trips


@pytest.mark.parametrize("engine", sorted(ENGINES))
@pytest.mark.parametrize(
    ("model", "tp", "first", "last"),
    [
        ("llama-3.1-8b", 1, True, True),
        ("llama-3.1-70b", 4, False, True),
        ("mixtral-8x7b", 2, True, False),
    ],
)
def test_decode_step_cost_equals_compute_s_bit_for_bit(
    engine: str, model: str, tp: int, first: bool, last: bool
) -> None:
    spec = get_model(model)
    cost = StageCostModel(
        spec,
        get_hardware("h100-sxm"),
        Precision(),
        tp,
        spec.num_layers,
        first,
        last,
        engine=ENGINES[engine],
    )
    rng = np.random.default_rng(1)
    for n in (1, 7, 64, 300, 1024):
        step = DecodeStepCost(cost, n)
        for ctx in rng.integers(n, 4_000_000, size=50).tolist():
            assert step.step_s(ctx) == cost.compute_s(0, 0.0, n, ctx, 0)


def test_ledger_record_many_equals_record_one_by_one() -> None:
    """The leap's bulk booking adds the same floats to the same cells as `record` does."""
    cluster = build_cluster(get_topology("dgx_h100_x1"), get_hardware("h100-sxm"))
    rng = np.random.default_rng(3)
    entries = []
    t = 0.0
    for _ in range(2000):
        t0 = t + float(rng.exponential(0.003))
        t1 = t0 + float(rng.exponential(0.004))
        links = tuple(sorted(rng.choice(len(cluster.links), size=2, replace=False).tolist()))
        weights = (1.0, float(rng.random()))
        entries.append((links, weights, t0, t1, float(rng.random()) * 1e6))
        t = t1
    one, many = LinkLedger(cluster, 0.05), LinkLedger(cluster, 0.05)
    for e in entries:
        one.record(*e)
    many.record_many(entries)
    assert one.table().equals(many.table())


def test_twin_links_are_the_links_every_shape_weighs_alike() -> None:
    shapes = [((1, 2, 3, 4), (1.0, 1.0, 0.5, 1.0)), ((2, 4, 5), (1.0, 1.0, 1.0))]
    assert twin_links.twin_classes(shapes) == {2: (4,)}  # 1 and 3 differ, 5 is alone
    assert twin_links.booked_links((1, 2, 3, 4), (1.0, 1.0, 0.5, 1.0), {2: (4,)}) == (
        (1, 2, 3),
        (1.0, 1.0, 0.5),
    )


def test_completion_ties_follow_the_fluid_engine_tolerance() -> None:
    """A transfer finishing within 1e-12 s after a firing completes at it; one that would
    take an earlier-held transfer's completion is reported as a tie."""
    ties = completion_ties.Completions()
    assert ties.complete(0.4, 0.5, owner=1) == (0.5, False)
    later = math.nextafter(0.5, 1.0)
    assert ties.complete(0.45, later, owner=2) == (0.5, False)  # merged into the firing
    assert ties.complete(0.45, 0.5 + 1e-9, owner=3) == (0.5 + 1e-9, False)  # too far
    assert ties.complete(0.51, 0.5 + 1e-9 + 1e-13, owner=4)[0] == 0.5 + 1e-9 + 1e-13
    early = math.nextafter(0.7, 0.0)
    assert ties.complete(0.6, 0.7, owner=5) == (0.7, False)
    assert ties.complete(0.65, early, owner=6) == (early, True)  # would take owner 5's


def test_one_replica_leaps_end_where_the_next_arrival_lands(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With one replica the arrival process announces the next arrival; leaps are planned up
    to the step running when it lands, so arrivals cut no leap short (the equivalence above
    shows the files are those of stepping)."""
    counts = {"leaps": 0, "announced": 0, "cut_short": 0}
    plan, cut = decode_leap.plan_leap, decode_leap.DecodeLeap.cut

    def counting_plan(*args: Any) -> decode_leap.DecodeLeap | None:
        leap = plan(*args)
        if leap is not None:
            counts["leaps"] += 1
            counts["announced"] += len(args) > 4 and args[4] < math.inf
        return leap

    def counting_cut(self: decode_leap.DecodeLeap, now: float) -> None:
        cut(self, now)
        counts["cut_short"] += self.cut_short

    monkeypatch.setattr(lane_leaps, "plan_leap", counting_plan)
    monkeypatch.setattr(decode_leap.DecodeLeap, "cut", counting_cut)
    for name in ("one_replica_tp2", "one_replica_tp1"):
        (tmp_path / name).mkdir()
        _run(tmp_path / name, name, True, monkeypatch)
    assert counts["leaps"] > 50
    assert counts["announced"] > 50  # the rest: after the last arrival (nothing announced)
    assert counts["cut_short"] == 0


MOE_LAYOUTS = {
    "ep1_dp2": "{tp: 1, dp: 2}",
    "tp4_ep4": "{tp: 4, ep: 4}",
    "dp_attention_ep8": "{tp: 1, dp: 8, ep: 8, dp_attention: true}",
}
TIGHT_KV = {"ep1_dp2": 0.64, "tp4_ep4": 0.31, "dp_attention_ep8": 0.2}  # memory left to KV
ROUTINGS = (
    "{distribution: uniform}",
    "{distribution: zipf, skew: 1.4, drift_interval_s: 0.3}",
    "{distribution: dirichlet, concentration: 0.4, drift_interval_s: 0.45}",
)


@settings(max_examples=30, deadline=None, derandomize=True)
@given(
    layout=st.sampled_from(sorted(MOE_LAYOUTS)),
    routing=st.sampled_from(ROUTINGS),
    rate=st.floats(1.0, 40.0),
    tight=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_moe_leaps_equal_steps_on_drawn_experiments(
    layout: str, routing: str, rate: float, tight: bool, seed: int
) -> None:
    """Drawn MoE experiments (layout, routing and its drift, load, little or ample KV room,
    seed) write the same files leaping and stepping: the fixed cases above, generalised."""
    text = f"""\
name: drawn
seed: {seed}
model: mixtral-8x7b
topology: dgx_h100_x1
layout: {MOE_LAYOUTS[layout]}
precision: {{weights: fp8, activations: fp8, kv_cache: fp8}}
serving: {{gpu_memory_utilization: {TIGHT_KV[layout] if tight else 0.9}}}
experts:
  routing: {routing}
  eplb: {{redundant_experts: 8}}
workload:
  arrival: {{process: poisson, rate_rps: {rate}}}
  prompt_tokens: {{dist: lognormal, median: 256, sigma: 0.5, max: 2048}}
  output_tokens: {{dist: lognormal, median: 96, sigma: 0.7, max: 1024}}
horizon: {{duration_s: 1.5}}
"""
    if layout == "ep1_dp2":  # (no redundant experts without EP)
        text = text.replace("  eplb: {redundant_experts: 8}\n", "")
    with tempfile.TemporaryDirectory() as tmp, pytest.MonkeyPatch.context() as patch:
        root = Path(tmp)
        (root / "drawn.yaml").write_text(text)
        out = {}
        for leap in (True, False):
            patch.setenv("CLUSTERSIM_DECODE_LEAP", "1" if leap else "0")
            patch.setattr(tp1_lane, "TP1_WORTH_STEPS", 0)
            patch.setattr(replica, "TP1_WORTH_STEPS", 0)
            out[leap] = run_files(root / "drawn.yaml", root / str(leap), "drawn")
    assert out[True].keys() == out[False].keys()
    assert not [k for k in out[True] if out[True][k] != out[False][k]]
