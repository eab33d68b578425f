"""Parameter counts, KV bytes and the roofline StageCostModel."""

from __future__ import annotations

import itertools
import math
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clustersim.catalog.engines import ENGINES
from clustersim.catalog.hardware import get_hardware
from clustersim.catalog.models import get_model
from clustersim.config.schema import Precision
from clustersim.model.attention_cost import causal_pairs
from clustersim.model.kernels import peak_flops
from clustersim.model.memory import stage_weight_bytes
from clustersim.model.params import (
    active_params,
    kv_bytes_per_token,
    param_counts,
    total_params,
    weight_bytes,
)
from clustersim.model.stage_cost import StageCostModel

BF16 = Precision()
FP8 = Precision(weights="fp8", activations="fp8", kv_cache="fp8")
H100 = get_hardware("h100-sxm")

# --------------------------------------------------------------------------- params


@pytest.mark.parametrize(
    ("name", "total_b", "active_b"),
    [
        ("llama-3.1-8b", 8.03, 8.03),
        ("llama-3.1-70b", 70.6, 70.6),
        ("llama-3.1-405b", 405.9, 405.9),
        ("mixtral-8x7b", 46.7, 12.9),
        ("qwen3-235b-a22b", 235.0, 22.0),
        ("deepseek-v3", 671.0, 37.0),
    ],
)
def test_param_counts_match_published(name: str, total_b: float, active_b: float) -> None:
    m = get_model(name)
    assert total_params(m) / 1e9 == pytest.approx(total_b, rel=0.02)
    assert active_params(m) / 1e9 == pytest.approx(active_b, rel=0.02)


def test_kv_bytes_per_token() -> None:
    assert kv_bytes_per_token(get_model("llama-3.1-70b"), BF16) == 327_680
    assert kv_bytes_per_token(get_model("llama-3.1-70b"), FP8) == 163_840
    assert kv_bytes_per_token(get_model("deepseek-v3"), BF16) == 61 * 576 * 2


def test_weight_bytes_by_dtype() -> None:
    m = get_model("llama-3.1-70b")
    c = param_counts(m)
    assert weight_bytes(m, BF16) == pytest.approx(2 * c.total)
    # fp8 linear layers; embeddings, LM head and norms stay bf16
    fp8 = (c.total - c.embeddings) + 2 * c.embeddings
    assert weight_bytes(m, FP8) == pytest.approx(fp8, rel=1e-3)


# --------------------------------------------------------------------------- cost model


# the default engine without host time: these tests check the GPU side
GPU_ONLY = replace(ENGINES["vllm"], host_step_us=0.0, host_seq_us=0.0)


def _stage(
    name: str = "llama-3.1-70b", tp: int = 1, prec: Precision = FP8, **kw: int
) -> StageCostModel:
    m = get_model(name)
    return StageCostModel(m, H100, prec, tp, m.num_layers, True, True, engine=GPU_ONLY, **kw)


def test_causal_pairs() -> None:
    assert causal_pairs(1, 0) == 1
    assert causal_pairs(4, 0) == 10
    assert causal_pairs(2, 5) == 2 * 5 + 3


def test_empty_step_is_overhead() -> None:
    c = _stage()
    sampling = GPU_ONLY.step_kernels * H100.kernel_floor_us  # last stage: sampling kernels
    assert c.compute_s(0, 0.0, 0, 0) == pytest.approx((H100.step_overhead_us + sampling) * 1e-6)
    m = get_model("llama-3.1-70b")
    with_host = StageCostModel(m, H100, FP8, 1, 80, True, True)  # default engine: vLLM
    host = ENGINES["vllm"].host_step_us * 1e-6
    assert with_host.compute_s(0, 0.0, 0, 0) == pytest.approx(c.compute_s(0, 0.0, 0, 0) + host)


def test_breakdown_matches_compute_s() -> None:
    for name in ("llama-3.1-70b", "deepseek-v3", "mixtral-8x7b"):
        c = _stage(name, tp=2)
        args = (1000, causal_pairs(1000, 3000), 48, 48 * 2500, 2)
        assert c.breakdown(*args)["total"] == pytest.approx(c.compute_s(*args), rel=1e-12)


@settings(max_examples=60, deadline=None)
@given(
    p=st.integers(0, 16384),
    d=st.integers(0, 512),
    ctx=st.integers(0, 4096),
    dp=st.integers(1, 4096),
    dd=st.integers(1, 64),
    dc=st.integers(1, 100_000),
)
def test_cost_monotone(p: int, d: int, ctx: int, dp: int, dd: int, dc: int) -> None:
    for c in (_stage(), _stage("deepseek-v3", tp=8)):
        pairs = causal_pairs(p, ctx) if p else 0.0
        base = c.compute_s(p, pairs, d, d * ctx)
        assert c.compute_s(p + dp, causal_pairs(p + dp, ctx), d, d * ctx) >= base
        assert c.compute_s(p, pairs, d + dd, (d + dd) * ctx) >= base
        assert c.compute_s(p, pairs, d, d * ctx + dc) >= base


def test_tp_halves_compute() -> None:
    t1, t2, t8 = (_stage(tp=tp) for tp in (1, 2, 8))
    prefill = (8192, causal_pairs(8192, 0), 0, 0)
    r = t2.compute_s(*prefill) / t1.compute_s(*prefill)
    assert 0.48 < r < 0.55
    decode = (0, 0.0, 64, 64 * 1100)
    r = t2.compute_s(*decode) / t1.compute_s(*decode)
    assert 0.48 < r < 0.55
    # not 1/8: the elementwise kernels and the per-sequence decode overhead are not split by TP
    assert 0.1 < t8.compute_s(*decode) / t1.compute_s(*decode) < 0.2


def _lower_bound_s(name: str, tp: int, prec: Precision, tokens: int, pairs: float) -> float:
    """Ideal time at the GPU's fastest peak and full HBM bandwidth, computed independently:
    2 FLOPs per active parameter per token plus 4 · heads · head_dim per attention pair,
    and every weight byte on the GPU but the embedding table read once (dense model)."""
    m = get_model(name)
    peak = max(H100.peak_tflops.values()) * 1e12
    layers = active_params(m) - param_counts(m).embeddings  # embedding / LM head excluded
    flops = 2 * tokens * layers / tp
    flops += 4 * m.num_attention_heads / tp * m.head_dim * m.num_layers * pairs
    wbytes = stage_weight_bytes(m, prec, range(m.num_layers), tp, True, True)
    wbytes -= param_counts(m).embedding / tp * 2  # the embedding table is gathered, not streamed
    return max(flops / peak, wbytes / (H100.hbm_bandwidth_GBps * 1e9))


@settings(max_examples=40, deadline=None)
@given(p=st.integers(0, 32768), d=st.integers(0, 1024), ctx=st.integers(1, 8192))
def test_never_faster_than_peak(p: int, d: int, ctx: int) -> None:
    for name, prec in (("llama-3.1-70b", FP8), ("llama-3.1-8b", BF16)):
        for tp in (1, 4):
            c = _stage(name, tp, prec)
            pairs = causal_pairs(p, 0)
            got = c.compute_s(p, pairs, d, d * ctx)
            if p + d:
                assert got >= _lower_bound_s(name, tp, prec, p + d, pairs)
            # the decode KV read alone can never beat raw HBM bandwidth
            kv = d * ctx * kv_bytes_per_token(get_model(name), prec) / tp
            assert got >= kv / (H100.hbm_bandwidth_GBps * 1e9)


def test_moe_never_faster_than_peak() -> None:
    m = get_model("deepseek-v3")
    c = _stage("deepseek-v3", tp=8)
    layers = active_params(m) - param_counts(m).embeddings
    for tokens in (1, 64, 4096, 65536):
        flops = 2 * tokens * layers / 8
        assert c.compute_s(tokens, causal_pairs(tokens, 0), 0, 0) >= flops / 1979e12


def test_small_batches_are_memory_bound() -> None:
    c = _stage()
    t1 = c.compute_s(0, 0.0, 1, 1000)
    t32 = c.compute_s(0, 0.0, 32, 32 * 1000)
    assert t32 / t1 < 1.4  # decode steps barely grow with batch while weights dominate
    big = c.compute_s(16384, causal_pairs(16384, 0), 0, 0)
    assert big / c.compute_s(8192, causal_pairs(8192, 0), 0, 0) > 1.9  # compute-bound


def test_precision_sets_matmul_peak() -> None:
    prefill = (8192, causal_pairs(8192, 0), 0, 0)
    fp8 = _stage(prec=FP8).compute_s(*prefill)
    bf16 = _stage(prec=BF16).compute_s(*prefill)
    w8a16 = _stage(prec=Precision(weights="fp8")).compute_s(*prefill)  # weight-only fp8
    assert 0.45 < fp8 / bf16 < 0.6
    assert w8a16 == pytest.approx(bf16, rel=0.05)
    a100 = get_hardware("a100-80gb")  # no fp8 tensor cores: falls back to bf16
    assert peak_flops(a100, "fp8") == 312e12
    assert peak_flops(get_hardware("b200"), "fp4") == 9000e12


def test_matmul_efficiency_curve() -> None:
    """Per-token linear cost falls with batch size and approaches the large-GEMM value."""
    c = _stage(prec=BF16)
    per_tok = [c.breakdown(t, 0.0, 0, 0)["linear"] / t for t in (256, 1024, 4096, 16384)]
    assert all(a > b for a, b in itertools.pairwise(per_tok))
    assert per_tok[-1] / per_tok[-2] > 0.97


def test_mla_decode_reads_full_latent() -> None:
    m = get_model("deepseek-v3")
    bw = H100.hbm_bandwidth_GBps * 1e9 * (H100.decode_attention_efficiency or H100.hbm_efficiency)
    seq = 61 * H100.decode_seq_overhead_us * 1e-6  # one decoding sequence's fixed part
    c8 = _stage("deepseek-v3", tp=8)
    ctx = 100_000
    # 16 heads per rank: memory-bound on the unsharded latent (576 fp8 bytes per layer)
    got = c8.breakdown(0, 0.0, 1, ctx)["attn_decode"]
    assert got == pytest.approx(ctx * 61 * 576 / bw + seq)
    c1 = _stage("deepseek-v3", tp=1)
    # 128 heads: the absorbed form's 2·H·(2·512 + 64) FLOPs per key cost about as much as
    # the latent read (16 heads: an eighth), and the step takes the larger of the two
    rate = 1979e12 * H100.mla_decode_efficiency
    flops = 2 * 128 * (2 * 512 + 64) * 61 * ctx
    read = ctx * 61 * 576 / bw
    assert 0.5 < flops / rate / read < 2.0
    got1 = c1.breakdown(0, 0.0, 1, ctx)["attn_decode"]
    assert got1 == pytest.approx(max(flops / rate, read) + seq)
    assert m.uses_mla


def test_moe_uniform_load_and_hook() -> None:
    c = _stage("deepseek-v3", tp=8)
    pairs, touched = c.uniform_moe_load(1)
    assert (pairs, touched) == pytest.approx((8, 8))
    pairs, touched = c.uniform_moe_load(4096)
    assert touched == pytest.approx(256, rel=1e-6) and pairs == 4096 * 8
    args = (512, causal_pairs(512, 0), 32, 32 * 1000)
    moe = 58 * c.moe_layer_s(*c.uniform_moe_load(544))
    assert c.with_host(c.dense_part_s(*args) + moe, 33) == pytest.approx(c.compute_s(*args))
    # EP over 16 DP-attention ranks: 16 experts per GPU, G = 16 × local tokens
    ep = _stage("deepseek-v3", tp=1, ep=16)
    pairs, touched = ep.uniform_moe_load(10)
    assert pairs == pytest.approx(10 * 8)
    assert touched == pytest.approx(16 * (1 - (1 - 8 / 256) ** 160))
    # a hot rank with all pairs on one expert is slower than a spread one
    assert ep.moe_layer_s(4096, 16) < ep.moe_layer_s(8192, 16)
    dense = _stage()
    assert dense.uniform_moe_load(100) == (0.0, 0.0)


def test_mixtral_reads_only_touched_experts() -> None:
    c = _stage("mixtral-8x7b", tp=1)
    one = c.breakdown(0, 0.0, 1, 100)["moe"]
    many = c.breakdown(0, 0.0, 64, 6400)["moe"]
    assert 3.0 < many / one < 4.2  # 2 of 8 experts at batch 1, all 8 at batch 64


def test_communication_sizes() -> None:
    c1, c4 = _stage(tp=1), _stage(tp=4)
    assert c1.allreduces_per_step == 0 and c4.allreduces_per_step == 160
    assert c4.allreduce_bytes(10) == 10 * 8192 * 2  # residual stream stays bf16
    assert c4.handoff_bytes(3) == 3 * 8192 * 2
    half = StageCostModel(get_model("llama-3.1-70b"), H100, FP8, 2, 40, True, False)
    assert half.allreduces_per_step == 80


def test_stage_validation_and_ends() -> None:
    m = get_model("llama-3.1-70b")
    with pytest.raises(ValueError):
        StageCostModel(m, H100, FP8, 1, 81, True, True)
    mid = StageCostModel(m, H100, FP8, 1, 20, False, False, first_layer=20)
    last = StageCostModel(m, H100, FP8, 1, 20, False, True, first_layer=60)
    b_mid, b_last = mid.breakdown(0, 0.0, 8, 8000), last.breakdown(0, 0.0, 8, 8000)
    assert b_mid["lm_head"] == 0 and b_last["lm_head"] > 0 and b_mid["embed"] == 0
    ds = get_model("deepseek-v3")
    head = StageCostModel(ds, H100, FP8, 8, 15, True, False)
    tail = StageCostModel(ds, H100, FP8, 8, 16, False, False, first_layer=30)
    assert (head.num_dense_layers, head.num_moe_layers) == (3, 12)
    assert (tail.num_dense_layers, tail.num_moe_layers) == (0, 16)
    assert math.isfinite(head.compute_s(100, 5050.0, 10, 10_000))


def test_ideal_hardware_meets_the_bound() -> None:
    """With every efficiency at 1, M½ = 0, no kernel floors, host or step overhead the model
    sits at the roofline:
    never below the independent bound, and within 30 % of it (the elementwise kernels)."""
    ideal = H100.model_copy(
        update={
            "matmul_efficiency": 1.0,
            "attention_efficiency": 1.0,
            "hbm_efficiency": 1.0,
            "step_overhead_us": 0.0,
            "kernel_floor_us": 0.0,
        }
    )
    m = get_model("llama-3.1-70b")
    no_launch = replace(GPU_ONLY, eager_launch_us=0.0)
    c = StageCostModel(m, ideal, FP8, 2, 80, True, True, matmul_half_tokens=0.0, engine=no_launch)
    for tokens in (1, 16, 256, 4096, 16384):
        pairs = causal_pairs(tokens, 0)
        got = c.compute_s(tokens, pairs, 0, 0)
        bound = _lower_bound_s("llama-3.1-70b", 2, FP8, tokens, pairs)
        # the elementwise kernels between the GEMMs (norms, residuals, rope, SiLU: ≈ 15 % of
        # an ideal step from 256 tokens up) are real work the independent bound leaves out
        assert bound <= got < 1.3 * bound
