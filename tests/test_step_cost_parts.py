"""StageCostModel.compute_s with its context-free parts kept per batch shape returns the
floats of the term-by-term computation (dense_part_s + routed experts + host time)."""

from __future__ import annotations

import itertools

import pytest

from clustersim.catalog.engines import ENGINES
from clustersim.catalog.hardware import get_hardware
from clustersim.catalog.models import get_model
from clustersim.config.schema import Precision
from clustersim.model import stage_cost
from clustersim.model.kernels import step_seqs
from clustersim.model.stage_cost import StageCostModel

SHAPES = [
    # prefill tokens, prefill pairs, decode tokens, decode context, prefill chunks
    (0, 0.0, 1, 700, 0),
    (0, 0.0, 17, 9_001, 0),
    (0, 0.0, 300, 150_000, 0),  # beyond the CUDA-graph batch: eager floors
    (512, 131_328.0, 0, 0, 1),
    (512, 131_328.0, 40, 22_000, 1),
    (1_000, 3.1e6, 3, 1_600, 2),
    (0, 0.0, 0, 0, 1),  # an empty step: the overhead only
]


def reference_s(cost: StageCostModel, pt: int, pairs: float, dt: int, ctx: int, ps: int) -> float:
    """compute_s term by term: dense part, routed experts, host time."""
    gpu = cost.dense_part_s(pt, pairs, dt, ctx, ps)
    if cost.num_moe_layers and pt + dt > 0:
        gpu += cost.num_moe_layers * cost.moe_layer_s(*cost.uniform_moe_load(pt + dt))
    return cost.with_host(gpu, step_seqs(pt, dt, ps))


def models() -> list[StageCostModel]:
    hw = get_hardware("h100-sxm")
    out = []
    for engine, (name, tp, layers, first, last) in itertools.product(
        ("vllm", "sglang"),
        [
            ("llama-3.1-8b", 1, 32, True, True),
            ("llama-3.1-70b", 4, 40, False, True),
            ("deepseek-v3", 8, 30, True, False),
        ],
    ):
        out.append(
            StageCostModel(
                get_model(name), hw, Precision(), tp, layers, first, last, engine=ENGINES[engine]
            )
        )
    return out


@pytest.mark.parametrize("cost", models())
def test_kept_parts_give_the_term_by_term_floats(cost: StageCostModel) -> None:
    for _ in range(2):  # first call builds the part, the second reuses it
        for shape in SHAPES:
            assert cost.compute_s(*shape) == reference_s(cost, *shape)
    for shape in SHAPES[:-1]:
        pt, pairs, dt, ctx, ps = shape
        other = (pt, pairs * 3, dt, ctx * 2 + 1, ps)
        assert cost.compute_s(*other) == reference_s(cost, *other)
    assert len(cost._parts) == len(SHAPES) - 1  # the empty step is not kept


def test_parts_stop_growing_at_their_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stage_cost, "MAX_STEP_PARTS", 2)  # read at each call
    cost = models()[0]
    for dt in range(1, 6):
        assert cost.compute_s(0, 0.0, dt, 100 * dt, 0) == reference_s(cost, 0, 0.0, dt, 100 * dt, 0)
    assert len(cost._parts) == 2
