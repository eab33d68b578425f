"""The calibration experiments (experiments/calibration/) against cases.csv and the
TensorRT-LLM rules in benchmarks/calibrate.py; one case simulated end to end."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from clustersim.config.load import load_experiment
from clustersim.config.schema import BurstArrival

REPO = Path(__file__).resolve().parents[1]


def _load_calibrate() -> ModuleType:
    spec = importlib.util.spec_from_file_location("calibrate", REPO / "benchmarks/calibrate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["calibrate"] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


cal = _load_calibrate()
CASES = cal.load_cases()


def test_cases_csv_has_the_published_rows() -> None:
    assert len(CASES) == 12
    assert sum(c.model == "llama-3.1-70b" for c in CASES) == 8
    assert sum(c.model == "mixtral-8x7b" for c in CASES) == 4
    assert all(c.metric == "output_tokens_per_s" and c.value > 0 for c in CASES)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.case)
def test_experiment_matches_its_row(case: Any) -> None:
    c = case
    path = cal.experiment_path(c)
    assert path.exists(), f"missing {path.relative_to(REPO)}"
    exp = load_experiment(path)
    assert exp.name == c.case
    assert exp.model.name == c.model
    assert exp.hardware.name == c.gpu
    assert (exp.layout.tp, exp.layout.pp, exp.layout.dp, exp.layout.ep) == (c.tp, c.pp, c.dp, 1)
    p = exp.precision
    assert (p.weights, p.activations, p.kv_cache) == (c.precision,) * 3
    assert cal.fixed_lengths(exp) == (c.input_tokens, c.output_tokens)
    # the max-throughput harness: every request at t = 0, TensorRT-LLM's KV rules
    assert isinstance(exp.workload.arrival, BurstArrival)
    assert exp.horizon.requests is not None and exp.horizon.requests >= 1000
    assert exp.serving.kv_admission == "reserve_full"
    assert exp.serving.kv_cache_free_memory_fraction == 0.95
    assert exp.serving.chunked_prefill and exp.serving.block_size == 64


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.case)
def test_engine_limits_follow_trtllm_rules(case: Any) -> None:
    """max_num_seqs / max_num_batched_tokens are what trtllm-bench would run with, for the
    current memory model (a change there shows up here: rerun the derivation)."""
    exp = load_experiment(cal.experiment_path(case))
    want = cal.expected_serving(exp)
    assert (exp.serving.max_num_seqs, exp.serving.max_num_batched_tokens) == want


def test_trtllm_heuristics_by_hand() -> None:
    gib = 81559 / 1024  # H100 80GB as nvidia-smi reports it
    # llama-3.1-70b fp8, TP1, 128/2048: (79.65 − 70.55) × 0.95 GiB / (160 KiB × 2176) ≈ 26
    assert cal.engine_limits(70_553_706_496, 80, 8, 128, 1, 1, 1, 1, 128, 2048, gib) == (64, 2048)
    # TP8, 2048/128: ≈ 1621 requests → batch 1792; tokens 1621 × 17 → 27648
    tp8 = cal.engine_limits(70_553_706_496, 80, 8, 128, 1, 1, 8, 1, 2048, 128, gib)
    assert tp8 == (1792, 27648)
    # mixtral TP8: the 4096-request cap
    assert cal.engine_limits(46_702_792_704, 32, 8, 128, 1, 1, 8, 1, 128, 2048, gib) == (
        4096,
        4608,
    )
    runtime = {29: 128, 143: 128, 144: 256, 300: 256, 1598: 1536, 1928: 1928, 2100: 2048}
    for capacity, batch in runtime.items():
        assert cal.runtime_batch_size(capacity) == batch


def test_doc_lists_every_case() -> None:
    doc = cal.DOC.read_text()
    assert cal.TABLE_START in doc and cal.TABLE_END in doc
    block = doc.split(cal.TABLE_START)[1].split(cal.TABLE_END)[0]
    for c in CASES:
        assert f"| {c.case} |" in block
    assert "## MoE: DeepEP all-to-all" in doc


def test_one_case_end_to_end() -> None:
    """TP1 llama 2048/128 (prefill-bound, ~0.1 s to simulate) lands near its published value."""
    case = next(c for c in CASES if c.case == "trtllm-70b-tp1-2048-128")
    result = cal.run_case(case)
    assert result.peak_running <= result.kv_capacity_requests  # GUARANTEED_NO_EVICT
    assert abs(result.error_pct) < 25.0


def _load_batch1() -> ModuleType:
    path = REPO / "benchmarks/calibrate_batch1.py"
    spec = importlib.util.spec_from_file_location("calibrate_batch1", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["calibrate_batch1"] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


def test_host_term_rows_are_cases_with_published_figures() -> None:
    b1 = _load_batch1()
    by_name = {c.name: c for c in b1.CASES}
    assert {by_name[n].engine for n in b1.HOST_CASES} == {"vllm", "sglang"}
    for name in b1.HOST_CASES:
        case = by_name[name]
        assert case.published_ms is not None and case.bound == "="
        assert f"| {name} |" in cal.DOC.read_text()


@pytest.mark.parametrize(
    "name", ["evalscope-llama8b-h100-vllm-c5", "evalscope-llama8b-h100-sglang-c5"]
)
def test_host_term_row_end_to_end(name: str) -> None:
    """Each vLLM / SGLang row lands within 15 % of its published TPOT, and the host terms are
    what separates the run from its GPU-only twin (vLLM adds them, SGLang hides them)."""
    b1 = _load_batch1()
    check = b1.run_host_check(next(c for c in b1.CASES if c.name == name))
    assert abs(check.result.error_pct) < 15.0
    gap_ms = check.result.tpot_ms - check.without_host_ms
    if b1.get_engine(check.result.case.engine).host_overlap:
        assert gap_ms == pytest.approx(0.0, abs=1e-6)
    else:
        assert gap_ms == pytest.approx(check.profile_host_ms, rel=0.05)
