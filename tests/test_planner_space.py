"""Planner enumeration: hand-computed counts, every check stage, and its reasons' numbers."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from clustersim.config.errors import ConfigError
from clustersim.config.schema import Layout
from clustersim.planner.space import (
    Space,
    divisors,
    enumerate_space,
    expert_variants,
    grid,
    layout_label,
    passes_filter,
)
from clustersim.planner.spec import CandidateFilter, PlanSpec, load_plan

WORKLOAD = """
workload:
  arrival: {process: poisson, rate_rps: 4}
  prompt_tokens: {dist: fixed, value: 256}
  output_tokens: {dist: fixed, value: 32}
horizon: {duration_s: 5}
slo: {ttft_p99_s: 1.0, tpot_p99_s: 0.05}
"""


def plan_file(tmp_path: Path, head: str, plan: str, name: str = "p.yaml") -> Path:
    path = tmp_path / name
    path.write_text(f"name: t\n{head}\n{WORKLOAD}\nplan: {plan}\n")
    return path


def space_of(
    tmp_path: Path, head: str, plan: str, p99_prompt: float = 256.0
) -> tuple[PlanSpec, Space]:
    spec = load_plan(plan_file(tmp_path, head, plan))
    return spec, enumerate_space(spec, p99_prompt)


# --------------------------------------------------------------------------- pure grid


def test_dense_grid_counts_are_the_ordered_factorisations() -> None:
    # n = 1: 1; n = 2: (tp,pp,dp) ∈ {(1,1,2),(1,2,1),(2,1,1)}: 3; n = 3: 3; n = 4: 6
    assert len(grid(moe=False, min_gpus=1, max_gpus=4, with_cp=False)) == 1 + 3 + 3 + 6
    # with CP: ordered 4-factorisations: 1 + 4 + 4 + C(5, 3) = 10
    assert len(grid(moe=False, min_gpus=1, max_gpus=4, with_cp=True)) == 1 + 4 + 4 + 10
    assert len(grid(moe=False, min_gpus=4, max_gpus=4, with_cp=False)) == 6
    assert divisors(12) == [1, 2, 3, 4, 6, 12]


def test_moe_variants_of_one_factorisation() -> None:
    labels = [layout_label(x, moe=True) for x in expert_variants(tp=4, pp=1, dp=2, cp=1)]
    assert labels == [
        "tp4-pp1-dp2-ep1",  # experts TP-split in each replica
        "tp4-pp1-dp2-ep4",  # experts sharded over the TP group
        "tp4-pp1-dp2-ep2-moetp2",  # TensorRT-LLM hybrid: moe_tp × ep = tp
        "tp4-pp1-dp2-ep8-dpa",  # DP-attention + EP over tp × dp
    ]
    assert len(list(expert_variants(1, 1, 1, 1))) == 1
    # n ≤ 2: (1,1,1): 1; (1,1,2): ep1 + dpa; (1,2,1): 1; (2,1,1): ep1 + ep2 → 6
    assert len(grid(moe=True, min_gpus=1, max_gpus=2, with_cp=False)) == 6


def test_filters_and_labels() -> None:
    lay = Layout(tp=8, dp=4, ep=32, dp_attention=True)
    assert layout_label(lay, moe=True) == "tp8-pp1-dp4-ep32-dpa"
    assert layout_label(Layout(tp=2, cp=2), moe=False) == "tp2-pp1-dp1-cp2"
    assert passes_filter(lay, CandidateFilter(tp=[8], dp_attention=[True], gpus=[32]))
    assert not passes_filter(lay, CandidateFilter(dp_attention=[False]))
    assert not passes_filter(lay, CandidateFilter(gpus=[16]))


# --------------------------------------------------------------------------- checks


def test_small_dense_space_hand_computed(tmp_path: Path) -> None:
    _, space = space_of(tmp_path, "model: llama-3.1-8b\ntopology: dgx_h100_x1", "{max_gpus: 4}")
    # 13 layouts of 1..4 GPUs; tp = 3 does not divide 32 heads; everything else fits
    assert len(space.candidates) == 12
    assert [(r.label, r.stage) for r in space.rejected] == [("tp3-pp1-dp1", "model")]
    assert "num_attention_heads = 32" in space.rejected[0].reason
    assert not space.cp_enumerated


def test_memory_rejections_carry_the_numbers(tmp_path: Path) -> None:
    _, space = space_of(tmp_path, "model: llama-3.1-70b\ntopology: dgx_h100_x1", "{max_gpus: 2}")
    mem = {r.label: r.reason for r in space.rejected if r.stage == "memory"}
    assert set(mem) == {"tp1-pp1-dp1", "tp1-pp1-dp2"}  # 131 GiB of bf16 weights on one GPU
    reason = mem["tp1-pp1-dp1"]
    assert re.search(r"weights \d+\.\d\d GiB \+ activations \d+\.\d\d GiB per GPU", reason)
    usable = r"usable \d+\.\d\d GiB = \d+\.\d\d GiB × 0\.90 − \d+\.\d\d GiB reserved"
    assert re.search(usable, reason)
    assert {c.label for c in space.candidates} == {"tp1-pp2-dp1", "tp2-pp1-dp1"}


def test_tp_across_nvlink_domains_needs_the_option(tmp_path: Path) -> None:
    head = "model: llama-3.1-8b\ntopology: h100x16_ib"
    _, space = space_of(tmp_path, head, "{candidates: {tp: [16]}}")
    assert not space.candidates
    (rej,) = space.rejected
    assert rej.stage == "topology" and "8-GPU NVLink domain" in rej.reason
    assert "allow_tp_across_nodes" in rej.reason
    _, space = space_of(tmp_path, head, "{candidates: {tp: [16]}, allow_tp_across_nodes: true}")
    assert [c.label for c in space.candidates] == ["tp16-pp1-dp1"]


def test_engine_rules_reject_a_layout_no_target_engine_runs(tmp_path: Path) -> None:
    head = "model: mixtral-8x7b\ntopology: dgx_h100_x1"
    plan = "{engines: [trtllm], candidates: {gpus: [4], tp: [2], pp: [1]}}"
    _, space = space_of(tmp_path, head, plan)
    engines = {r.label: r.reason for r in space.rejected if r.stage == "engines"}
    # DP-attention with attention TP 2 (dp = 2 independent replicas are one trtllm-serve each)
    assert set(engines) == {"tp2-pp1-dp2-ep4-dpa"}
    assert "attention TP = 1" in engines["tp2-pp1-dp2-ep4-dpa"]
    _, space = space_of(tmp_path, head, plan.replace("[trtllm]", "[vllm, sglang, trtllm]"))
    assert "tp2-pp1-dp2-ep4-dpa" in {c.label for c in space.candidates}


def test_expert_parallel_rules_come_from_the_simulator(tmp_path: Path) -> None:
    head = "model: mixtral-8x7b\ntopology: dgx_h100_x1"
    _, space = space_of(tmp_path, head, "{candidates: {gpus: [3], tp: [1]}}")
    reasons = {r.label: (r.stage, r.reason) for r in space.rejected}
    # 8 experts over ep = 3 DP-attention ranks
    stage, reason = reasons["tp1-pp1-dp3-ep3-dpa"]
    assert stage == "expert parallelism" and "not divisible by ep = 3" in reason


def test_cp_enumerated_only_for_long_prompts(tmp_path: Path) -> None:
    head = "model: llama-3.1-8b\ntopology: dgx_h100_x1"
    _, short = space_of(tmp_path, head, "{max_gpus: 2}", p99_prompt=99_999)
    assert not short.cp_enumerated and not short.notes
    assert all(c.layout.cp == 1 for c in short.candidates)
    assert all(r.layout.cp == 1 for r in short.rejected)
    _, long = space_of(tmp_path, head, "{max_gpus: 2}", p99_prompt=120_000)
    assert long.cp_enumerated and "context-parallel layouts enumerated" in long.notes[0]
    (cp2,) = [c for c in long.candidates if c.layout.cp > 1]
    assert cp2.label == "tp1-pp1-dp1-cp2"  # simulated like the rest, with its engine verdicts
    assert cp2.verdicts["vllm"].ok and cp2.verdicts["trtllm"].ok
    assert not cp2.verdicts["sglang"].ok and "DSA" in cp2.verdicts["sglang"].rule
    # CP with PP is not simulated: the simulator's build says so
    _, long4 = space_of(tmp_path, head, "{max_gpus: 4, min_gpus: 4}", p99_prompt=120_000)
    stages = {r.label: r.stage for r in long4.rejected}
    assert stages["tp1-pp2-dp1-cp2"] == "not simulated yet"
    assert {c.label for c in long4.candidates} >= {"tp2-pp1-dp1-cp2", "tp1-pp1-dp1-cp4"}


def test_explicit_layouts_replace_enumeration(tmp_path: Path) -> None:
    head = "model: llama-3.1-8b\ntopology: dgx_h100_x1"
    plan = "{candidates: {layouts: [{tp: 2}, {tp: 2, dp: 2}, {tp: 3}]}}"
    _, space = space_of(tmp_path, head, plan)
    assert [c.label for c in space.candidates] == ["tp2-pp1-dp1", "tp2-pp1-dp2"]
    assert [r.label for r in space.rejected] == ["tp3-pp1-dp1"]


def test_eplb_dropped_for_replicated_experts(tmp_path: Path) -> None:
    head = (
        "model: mixtral-8x7b\ntopology: dgx_h100_x1\nprecision: {weights: fp8}\n"
        "experts: {eplb: {redundant_experts: 8}}"
    )
    spec, space = space_of(tmp_path, head, "{candidates: {gpus: [2], pp: [1], dp: [1]}}")
    by = {c.label: c for c in space.candidates}
    assert by["tp2-pp1-dp1-ep1"].exp.experts is not None
    assert by["tp2-pp1-dp1-ep1"].exp.experts.eplb is None  # type: ignore[union-attr]
    assert by["tp2-pp1-dp1-ep2"].exp.experts.eplb is not None  # type: ignore[union-attr]
    assert isinstance(spec, PlanSpec)


@pytest.mark.parametrize(
    ("extra", "key", "words"),
    [
        ("layout: {tp: 2}", "layout", "planner chooses the layout"),
        ("sweep: {seed: [1, 2]}", "sweep", "no sweep"),
        ("disaggregation: {}", "disaggregation", "chooses disaggregated prefill / decode pools"),
        ("plan: {max_gpus: 99}", "plan.max_gpus", "at most the topology's 8 GPUs"),
        ("plan: {engines: [vllm, vllm]}", "plan.engines", "each engine at most once"),
        ("plan: {emit: bestest}", "plan.emit", ""),
    ],
)
def test_bad_plan_files_name_file_and_key(tmp_path: Path, extra: str, key: str, words: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(f"model: llama-3.1-8b\ntopology: dgx_h100_x1\n{WORKLOAD}\n{extra}\n")
    with pytest.raises(ConfigError) as err:
        load_plan(path)
    line = str(err.value)
    assert "\n" not in line and line.startswith(str(path)) and f": {key}" in line
    assert words in line


def test_plan_needs_an_slo_bound(tmp_path: Path) -> None:
    path = tmp_path / "noslo.yaml"
    path.write_text(
        WORKLOAD.replace("slo: {ttft_p99_s: 1.0, tpot_p99_s: 0.05}", "")
        + "model: llama-3.1-8b\ntopology: dgx_h100_x1\n"
    )
    with pytest.raises(ConfigError, match="needs an SLO bound"):
        load_plan(path)
