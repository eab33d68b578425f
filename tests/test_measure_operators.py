"""benchmarks/gpu/measure_operators.py without a GPU (--dry-run): every family is listed, and
its predictions are the cost model's own (so a GPU run's JSON compares like with like)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

from clustersim.catalog.engines import get_engine
from clustersim.catalog.hardware import get_hardware
from clustersim.catalog.models import get_model
from clustersim.model.stage_cost import StageCostModel

REPO = Path(__file__).resolve().parents[1]


def _load() -> ModuleType:
    path = REPO / "benchmarks/gpu/measure_operators.py"
    spec = importlib.util.spec_from_file_location("measure_operators", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["measure_operators"] = module
    spec.loader.exec_module(module)
    return module


ops = _load()


def test_dry_run_writes_every_family(tmp_path: Path) -> None:
    out = tmp_path / "ops.json"
    assert ops.main(["--gpu", "h100-sxm", "--dry-run", "--quick", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["format"] == ops.FORMAT and data["gpu"] == "h100-sxm"
    families = {r["family"] for r in data["records"]}
    assert families == {
        "launch",
        "gemm",
        "grouped_gemm",
        "moe_routing",
        "decode_attention",
        "prefill_attention",
        "elementwise",
        "lm_head",
        "decode_layer",
        "gemm_fp8_rowwise",
    }
    assert all(r["measured_us"] is None and r["predicted_us"] > 0 for r in data["records"])


@pytest.mark.parametrize(
    ("model", "tp", "dtype"), [("llama-3.1-70b", 8, "fp8"), ("llama-3.1-8b", 1, "bf16")]
)
@pytest.mark.parametrize("rows", [1, 64, 1024])
def test_gemm_predictions_sum_to_the_stage_cost(model: str, tp: int, dtype: str, rows: int) -> None:
    """Σ projections × layers + elementwise = StageCostModel's linear time at `rows` tokens."""
    hw, m = get_hardware("h100-sxm"), get_model(model)
    gemms = ops.layer_gemms(m, hw, dtype, tp)
    assert len(gemms) == len(ops.projection_shapes(m, tp)) == 4
    per_layer_us = sum(ops.gemm_predicted_us(g, rows, hw) for g in gemms)
    cost = StageCostModel(
        m, hw, ops.precision_of(dtype), tp, m.num_layers, True, True, engine=get_engine("vllm")
    )
    linear = cost.breakdown(0, 0, rows, rows * 512)["linear"]
    elementwise = max(rows * cost.linear.elementwise_s, cost._graph.elementwise_s)
    assert per_layer_us * 1e-6 * m.num_layers == pytest.approx(linear - elementwise, rel=1e-9)


def test_projection_shapes_hold_the_layer_parameters() -> None:
    """k · n · batch of every projection = the parameters linear_cost charges it for."""
    hw = get_hardware("h200")
    for name, tp in (("llama-3.1-70b", 4), ("deepseek-v3", 8), ("qwen3-235b-a22b", 4)):
        m = get_model(name)
        for (_, k, n, batch), g in zip(
            ops.projection_shapes(m, tp), ops.layer_gemms(m, hw, "bf16", tp), strict=True
        ):
            flops_rate = hw.peak_tflops["bf16"] * 1e12 * hw.matmul_efficiency
            assert 2.0 * k * n * batch / flops_rate == pytest.approx(g.flop_s, rel=1e-6)
