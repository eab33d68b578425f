"""The verify step's cost and the drafter's memory (model/speculative_cost.py, model/memory.py)."""

from __future__ import annotations

import pytest

from clustersim.catalog.hardware import get_hardware
from clustersim.catalog.models import get_model
from clustersim.config.schema import Layout, Precision, ServingSpec, SpeculativeSpec
from clustersim.model.memory import plan_memory
from clustersim.model.speculative_cost import (
    SpeculativeStageCost,
    VerifyAttention,
    drafter_cost_model,
)
from clustersim.model.stage_cost import StageCostModel

FP8 = Precision(weights="fp8", activations="fp8", kv_cache="fp8")


def verify_cost(
    model: str, tp: int, spec: SpeculativeSpec
) -> tuple[StageCostModel, SpeculativeStageCost]:
    m, hw = get_model(model), get_hardware("h200")
    ep = tp if m.is_moe else 1
    base = StageCostModel(m, hw, FP8, tp, m.num_layers, True, True, ep=ep)
    drafter = drafter_cost_model(m, hw, FP8, tp, spec, ep=ep)
    attention = VerifyAttention(m, hw, FP8, tp, spec.num_tokens)
    return base, SpeculativeStageCost(base, base, attention, drafter)


@pytest.mark.parametrize("seqs", [1, 16, 256])
@pytest.mark.parametrize(
    ("model", "tp", "spec"),
    [
        ("deepseek-v3", 8, SpeculativeSpec(method="mtp", num_tokens=3, acceptance=0.8)),
        ("llama-3.1-70b", 4, SpeculativeSpec(method="eagle", num_tokens=2, acceptance=0.8)),
        (
            "llama-3.1-70b",
            4,
            SpeculativeSpec(
                method="draft_model", num_tokens=4, acceptance=0.8, draft_model="llama-3.1-8b"
            ),
        ),
    ],
)
def test_verify_step_between_one_plain_step_and_k_plus_one(
    model: str, tp: int, spec: SpeculativeSpec, seqs: int
) -> None:
    """Verifying k + 1 tokens per sequence costs more than one plain decode step (wider
    GEMMs, more attention FLOPs, the drafter) and less than k + 1 plain steps plus k drafter
    passes (weights are read once, KV once)."""
    base, verify = verify_cost(model, tp, spec)
    q = spec.num_tokens + 1
    ctx = seqs * 2000
    plain = base.compute_s(0, 0.0, seqs, ctx)
    step = verify.compute_s(0, 0.0, seqs * q, ctx)
    drafter = verify.drafter_s(0, 0.0, seqs, ctx, 0)
    assert drafter > 0
    assert plain < step - drafter + 1e-12
    assert step < q * plain + drafter


def test_drafter_of_a_draft_model_is_the_small_model() -> None:
    spec = SpeculativeSpec(
        method="draft_model", num_tokens=4, acceptance=0.8, draft_model="llama-3.1-8b"
    )
    mtp = SpeculativeSpec(method="mtp", num_tokens=1, acceptance=0.9)
    _, draft = verify_cost("llama-3.1-70b", 4, spec)
    _, layer = verify_cost("deepseek-v3", 8, mtp)
    assert draft.drafter is not None and draft.drafter.num_layers == 32
    assert layer.drafter is not None and layer.drafter.num_layers == 1
    assert layer.drafter.num_moe_layers == 1  # DeepSeek-V3's MTP module is an MoE block


def test_drafter_memory_leaves_fewer_kv_tokens() -> None:
    hw = get_hardware("h200")
    plain = ServingSpec()
    for model, layout, spec in (
        (
            "deepseek-v3",
            Layout(tp=8, ep=8),
            SpeculativeSpec(method="mtp", num_tokens=1, acceptance=0.9),
        ),
        (
            "llama-3.1-70b",
            Layout(tp=4),
            SpeculativeSpec(
                method="draft_model", num_tokens=4, acceptance=0.8, draft_model="llama-3.1-8b"
            ),
        ),
    ):
        m = get_model(model)
        without = plan_memory(m, hw, FP8, layout, plain)
        with_spec = plan_memory(m, hw, FP8, layout, ServingSpec(speculative=spec))
        assert with_spec.weights_per_gpu_bytes > without.weights_per_gpu_bytes
        assert with_spec.kv_tokens_per_replica < without.kv_tokens_per_replica
