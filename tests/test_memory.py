"""Memory plan: weights / activations / KV per GPU, fit check and its message."""

from __future__ import annotations

import itertools
import re

import pytest

from clustersim.catalog.hardware import get_hardware
from clustersim.catalog.models import get_model
from clustersim.config.schema import Layout, Precision, ServingSpec
from clustersim.model.memory import (
    GIB,
    plan_memory,
    stage_layer_counts,
    stage_layer_ranges,
    stage_weight_bytes,
)
from clustersim.model.params import kv_bytes_per_token, weight_bytes

BF16 = Precision()
FP8 = Precision(weights="fp8", activations="fp8", kv_cache="fp8")
H100 = get_hardware("h100-sxm")


def test_405b_bf16_tp1_rejected_with_numbers() -> None:
    plan = plan_memory(get_model("llama-3.1-405b"), H100, BF16, Layout(), ServingSpec())
    assert not plan.fits and plan.kv_blocks_per_replica == 0
    assert "\n" not in plan.reason
    gib = [float(x) for x in re.findall(r"([\d.]+) GiB", plan.reason)]
    assert any(750 < x < 760 for x in gib)  # weights ≈ 756 GiB
    assert any(70 < x < 72 for x in gib)  # usable ≈ 79.65 × 0.9 − 1
    assert "weights" in plan.reason and "405b" in plan.reason


def test_405b_fp8_tp8_fits() -> None:
    plan = plan_memory(get_model("llama-3.1-405b"), H100, FP8, Layout(tp=8), ServingSpec())
    assert plan.fits and plan.reason == ""
    assert plan.kv_tokens_per_replica > 100_000
    assert plan.kv_blocks_per_replica == plan.kv_tokens_per_replica // 16


def test_budget_arithmetic() -> None:
    serving = ServingSpec(gpu_memory_utilization=0.85)
    m = get_model("llama-3.1-70b")
    plan = plan_memory(m, H100, FP8, Layout(tp=4), serving)
    usable = H100.memory_GiB * GIB * 0.85 - H100.reserved_memory_GiB * GIB
    assert plan.usable_per_gpu_bytes == pytest.approx(usable)
    kv = usable - plan.weights_per_gpu_bytes - plan.activation_per_gpu_bytes
    assert plan.kv_per_gpu_bytes == pytest.approx(kv)
    per_token_gpu = kv_bytes_per_token(m, FP8) / 4  # 8 KV heads over 4 ranks
    assert plan.kv_tokens_per_replica == int(kv // per_token_gpu)
    # TP shards the weights: ≈ a quarter of the model per GPU (embeddings vocab-parallel)
    assert plan.weights_per_gpu_bytes == pytest.approx(weight_bytes(m, FP8) / 4, rel=0.01)
    assert 0.2 * GIB < plan.activation_per_gpu_bytes < 4 * GIB


def test_kv_heads_replicated_beyond_kv_heads() -> None:
    m = get_model("llama-3.1-70b")  # 8 KV heads
    p8 = plan_memory(m, H100, FP8, Layout(tp=8), ServingSpec())
    p16 = plan_memory(m, H100, FP8, Layout(tp=16), ServingSpec())
    assert p8.stages[0].kv_bytes_per_token == p16.stages[0].kv_bytes_per_token


def test_mla_latent_not_sharded_by_tp() -> None:
    m = get_model("deepseek-v3")
    h200 = get_hardware("h200")
    per_tok = [
        plan_memory(m, h200, FP8, Layout(tp=tp), ServingSpec()).stages[0].kv_bytes_per_token
        for tp in (1, 8)
    ]
    assert per_tok[0] == per_tok[1] == 61 * 576 * 1


def test_expert_parallel_splits_experts() -> None:
    m = get_model("deepseek-v3")
    layers = range(61)
    ep16 = stage_weight_bytes(m, FP8, layers, 1, True, True, ep=16)
    ep32 = stage_weight_bytes(m, FP8, layers, 1, True, True, ep=32)
    expert_bytes = 3 * 7168 * 2048  # fp8
    assert ep16 - ep32 == pytest.approx(58 * 8 * expert_bytes)  # 16 vs 8 experts per rank
    tp8 = stage_weight_bytes(m, FP8, layers, 8, True, True)
    assert tp8 == pytest.approx(weight_bytes(m, FP8) / 8, rel=0.03)  # MLA down-proj replicated


def test_pipeline_split() -> None:
    assert stage_layer_counts(61, 4) == [15, 15, 16, 15]
    assert stage_layer_counts(80, 3) == [27, 27, 26]
    assert stage_layer_counts(80, 1) == [80]
    ranges = stage_layer_ranges(61, 4)
    assert ranges[0].start == 0 and ranges[-1].stop == 61
    assert all(a.stop == b.start for a, b in itertools.pairwise(ranges))
    with pytest.raises(ValueError):
        stage_layer_counts(4, 5)
    m = get_model("llama-3.1-70b")
    one = plan_memory(m, H100, FP8, Layout(), ServingSpec())
    four = plan_memory(m, H100, FP8, Layout(pp=4), ServingSpec())
    assert sum(s.weights_bytes for s in four.stages) == pytest.approx(one.weights_per_gpu_bytes)
    assert four.weights_per_gpu_bytes == pytest.approx(one.weights_per_gpu_bytes / 4, rel=0.08)
    first, mid, last = four.stages[0], four.stages[1], four.stages[3]
    emb = 128256 * 8192 * 2
    assert first.weights_bytes - mid.weights_bytes == pytest.approx(emb, rel=0.01)
    assert last.weights_bytes - mid.weights_bytes == pytest.approx(emb, rel=0.01)
    # the replica's KV capacity is set by the fullest stage
    assert four.kv_tokens_per_replica == min(s.kv_tokens for s in four.stages)


def test_context_parallel_multiplies_kv_tokens() -> None:
    m = get_model("llama-3.1-8b")
    one = plan_memory(m, H100, BF16, Layout(), ServingSpec())
    two = plan_memory(m, H100, BF16, Layout(cp=2), ServingSpec())
    assert two.kv_tokens_per_replica >= 2 * one.kv_tokens_per_replica


def test_fit_needs_one_block_and_max_len_reported() -> None:
    m, l40s = get_model("llama-3.1-8b"), get_hardware("l40s")
    probe = plan_memory(m, l40s, BF16, Layout(), ServingSpec(gpu_memory_utilization=0.6))
    assert probe.fits and probe.max_model_len == 131072
    assert not probe.max_model_len_fits  # 128k tokens × 128 KiB = 16 GiB > ≈ 10 GiB left
    need = probe.weights_per_gpu_bytes + probe.activation_per_gpu_bytes
    need += l40s.reserved_memory_GiB * GIB
    util = (need + 8 * 131072) / (l40s.memory_GiB * GIB)  # room for 8 tokens only
    tight = plan_memory(m, l40s, BF16, Layout(), ServingSpec(gpu_memory_utilization=util))
    assert tight.kv_tokens_per_replica < 16 and not tight.fits
    assert "less than one block" in tight.reason
    short = plan_memory(m, l40s, BF16, Layout(), ServingSpec(max_model_len=4096))
    assert short.fits and short.max_model_len_fits


def test_kv_cache_free_memory_fraction_is_a_share_of_what_is_left() -> None:
    """TensorRT-LLM's rule: KV = f × (memory − reserved − weights − activations); the
    gpu_memory_utilization share is not applied."""
    m = get_model("llama-3.1-70b")
    serving = ServingSpec(kv_cache_free_memory_fraction=0.95, gpu_memory_utilization=0.5)
    plan = plan_memory(m, H100, FP8, Layout(tp=2), serving)
    usable = (H100.memory_GiB - H100.reserved_memory_GiB) * GIB
    assert plan.usable_per_gpu_bytes == pytest.approx(usable)
    left = usable - plan.weights_per_gpu_bytes - plan.activation_per_gpu_bytes
    assert plan.kv_per_gpu_bytes == pytest.approx(0.95 * left)
    assert plan.kv_tokens_per_replica == int(0.95 * left // (kv_bytes_per_token(m, FP8) / 2))
    # TP1 fp8 70B: little is left after the weights, and the fraction applies to that rest
    tp1 = plan_memory(m, H100, FP8, Layout(tp=1), serving)
    assert tp1.fits and 0 < tp1.kv_per_gpu_bytes < 0.15 * H100.memory_GiB * GIB
    too_big = plan_memory(get_model("llama-3.1-405b"), H100, FP8, Layout(tp=1), serving)
    assert not too_big.fits and "KV gets 0.95 of what weights and activations leave" in (
        too_big.reason
    )
