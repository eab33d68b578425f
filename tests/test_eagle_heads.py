"""The catalog of published EAGLE heads (catalog/eagle_heads.py) and what a head's shape does
to a draft pass (model/speculative_cost.py) and to the engine configs."""

from __future__ import annotations

import pytest

from clustersim.catalog.eagle_heads import EAGLE_HEADS, eagle_head, eagle_head_for
from clustersim.catalog.hardware import get_hardware
from clustersim.catalog.models import MODELS, get_model
from clustersim.config.schema import Precision, SpeculativeSpec
from clustersim.model.speculative_cost import drafter_cost_model, gpu_s


def test_every_head_targets_a_builtin_model_by_name_and_hf_id() -> None:
    for name, head in EAGLE_HEADS.items():
        assert name in MODELS and head.num_layers == 1
        assert head.hf_id.count("/") == 1 and "EAGLE" in head.hf_id
        assert eagle_head_for(MODELS[name]) is head
        renamed = MODELS[name].model_copy(update={"name": "from-config-json"})
        assert eagle_head_for(renamed) is head  # found by its HF id


def test_a_model_without_a_head_needs_a_checkpoint() -> None:
    mixtral = get_model("mixtral-8x7b")
    assert eagle_head_for(mixtral) is None
    with pytest.raises(ValueError, match=r"serving\.speculative\.draft_model"):
        eagle_head(mixtral, None)
    user = eagle_head(mixtral, "/heads/mixtral-eagle")
    assert user.hf_id == "/heads/mixtral-eagle" and not user.eagle3 and user.draft_vocab is None
    listed = EAGLE_HEADS["llama-3.1-8b"]
    assert eagle_head(get_model("llama-3.1-8b"), listed.hf_id) is listed


def test_an_eagle3_head_drafts_over_its_own_smaller_vocabulary() -> None:
    """EAGLE-3's LM head (32 000 draft tokens) reads a quarter of Llama-3.1's 128 256-token
    head: a batch-1 draft pass is cheaper than one layer + the target's head (EAGLE-1)."""
    model, hw, prec = get_model("llama-3.1-8b"), get_hardware("h100-sxm"), Precision()
    eagle3 = SpeculativeSpec(method="eagle", num_tokens=3, acceptance=0.7)
    eagle1 = SpeculativeSpec(
        method="eagle", num_tokens=3, acceptance=0.7, draft_model="/heads/eagle1-8b"
    )
    d3 = drafter_cost_model(model, hw, prec, 1, eagle3)
    d1 = drafter_cost_model(model, hw, prec, 1, eagle1)
    assert d3.num_layers == d1.num_layers == 1
    t3, t1 = gpu_s(d3, 0, 0.0, 1, 1000), gpu_s(d1, 0, 0.0, 1, 1000)
    assert t3 < t1
    # the head's weight read: 128 256 vs 32 000 rows of 4096 bf16 values at HBM speed
    saved = (128256 - 32000) * 4096 * 2 / (hw.hbm_bandwidth_GBps * 1e9 * hw.hbm_efficiency)
    assert t1 - t3 == pytest.approx(saved, rel=0.05)
