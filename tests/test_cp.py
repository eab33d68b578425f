"""Context parallelism: prefill split, ring traffic, KV memory, decode unchanged, errors."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from clustersim import cli
from clustersim.catalog.hardware import get_hardware
from clustersim.catalog.models import get_model
from clustersim.config.schema import Experiment, Layout, Precision, ServingSpec
from clustersim.model.attention_cost import causal_pairs
from clustersim.model.cp_cost import CPStageCost, ring_block_bytes
from clustersim.model.memory import plan_memory
from clustersim.model.stage_cost import StageCostModel
from clustersim.sim.engine import BuildError, build, run_experiment

MakeExperiment = Callable[..., Experiment]  # the conftest fixture `make_experiment`

FP8 = Precision(weights="fp8", activations="fp8", kv_cache="fp8")

# Llama-3.1-70B TP8 over two 8×H100 nodes: CP rank 0 on node 0, CP rank 1 on node 1.
LONG = """\
name: cp_long
seed: 2
model: llama-3.1-70b
topology: h100x16_ib
layout: {tp: 8, cp: 2}
precision: {weights: fp8, activations: fp8, kv_cache: fp8}
serving: {max_num_seqs: 8, max_num_batched_tokens: 32768}
workload:
  arrival: {process: closed, concurrency: 1}
  prompt_tokens: {dist: fixed, value: 32000}
  output_tokens: {dist: fixed, value: 1}
horizon: {requests: 1}
"""


def cost70(tp: int = 8) -> StageCostModel:
    model, hw = get_model("llama-3.1-70b"), get_hardware("h100-sxm")
    return StageCostModel(model, hw, FP8, tp, model.num_layers, True, True)


# ------------------------------------------------------------------ cost model


@pytest.mark.parametrize("cp", [2, 4])
def test_cp_divides_prefill_compute(cp: int) -> None:
    """One CP rank's prefill of a 32k prompt is 1/cp of the whole, within 1 %: only the step
    overhead, the LM head's row and the M½ GEMM rows are not split (≈ 0.3 % here)."""
    base = cost70()
    p = 32768
    pairs = causal_pairs(p, 0)
    step = CPStageCost(base, get_model("llama-3.1-70b"), FP8, cp).step(p, pairs, p, 0, 0, 1)
    whole = base.compute_s(p, pairs, 0, 0, 1)
    assert step.compute_s == pytest.approx(whole / cp, rel=0.01)
    assert step.overlap_s == pytest.approx(base.prefill_attention_s(pairs / cp) * (cp - 1) / cp)
    assert step.rank_tokens == p // cp


def test_cp_leaves_decode_step_time_unchanged() -> None:
    """Decode is not split by CP: every rank runs every sequence through its linear layers;
    only its 1/cp of the KV read shrinks (not the per-sequence decode cost). With 64
    sequences of 1,100 tokens the KV read is ~10 % of the step, so a CP rank's step is
    0.9–1.0 of the cp = 1 step (0.95 at cp 2); with 64 one-token contexts it is the same
    within 1 %."""
    base = cost70()
    model = get_model("llama-3.1-70b")
    for cp in (2, 4):
        cpc = CPStageCost(base, model, FP8, cp)
        short = cpc.step(0, 0.0, 0, 64, 64, 1)
        assert short.compute_s == pytest.approx(base.compute_s(0, 0.0, 64, 64), rel=0.01)
        assert short.ring_bytes == 0 and short.overlap_s == 0
        chat = cpc.step(0, 0.0, 0, 64, 64 * 1100, 1).compute_s
        assert 0.9 < chat / base.compute_s(0, 0.0, 64, 64 * 1100) < 1.0


def test_ring_block_is_the_local_kv_shard() -> None:
    """Bytes per layer per ring step = ceil(ctx / cp) tokens × KV bytes per token per layer on
    one TP rank (llama-3.1-70b fp8, TP8: 2 × 1 KV head × 128 × 1 B = 256 B)."""
    model = get_model("llama-3.1-70b")
    assert ring_block_bytes(model, FP8, 8, 2, 32000) == 16000 * 256
    assert ring_block_bytes(model, FP8, 8, 4, 32001) == 8001 * 256
    cpc = CPStageCost(cost70(), model, FP8, 4)
    step = cpc.step(1000, causal_pairs(1000, 31000), 32000, 0, 0, 1)
    assert step.ring_bytes == ring_block_bytes(model, FP8, 8, 4, 32000) * 80 * 3


def test_cp_divides_kv_memory_per_gpu() -> None:
    """With CP a token's KV lives on one CP rank: a replica holds cp × the per-GPU tokens.
    Against cp = 1 the ratio is cp plus a little (< 3 %): the activation workspace of
    max_num_batched_tokens / cp tokens leaves slightly more memory for KV."""
    model, hw = get_model("llama-3.1-70b"), get_hardware("h100-sxm")
    serving = ServingSpec(max_num_batched_tokens=32768)
    one = plan_memory(model, hw, FP8, Layout(tp=8), serving)
    for cp in (2, 4):
        plan = plan_memory(model, hw, FP8, Layout(tp=8, cp=cp), serving)
        assert plan.kv_tokens_per_replica == cp * plan.stages[0].kv_tokens
        assert plan.stages[0].kv_bytes_per_token == one.stages[0].kv_bytes_per_token
        assert cp <= plan.kv_tokens_per_replica / one.kv_tokens_per_replica < cp * 1.03


# ------------------------------------------------------------------ simulation


def test_ring_traffic_has_the_expected_size(make_experiment: MakeExperiment) -> None:
    """One 32k prompt in one step, output 1 token: the only inter-node bytes are the ring's
    (TP all-reduces stay in each node): tp rings × cp members × ceil(P/cp) × 256 B × L ×
    (cp − 1), each crossing two network links (NIC → leaf → NIC)."""
    exp = make_experiment(LONG)
    out = run_experiment(exp)
    ring = 8 * 2 * math.ceil(32000 / 2) * 256 * 80 * (2 - 1)
    network = out.links.loc[out.links["kind"] == "network", "bytes"].sum()
    assert network == pytest.approx(2 * ring, rel=1e-9)


def test_cp_cuts_ttft_of_long_prompts(make_experiment: MakeExperiment) -> None:
    """A 32k prompt alone: CP2 prefill is ≈ half the cp = 1 time (the ring hides under the
    attention compute); at least 40 % faster."""
    ttft = {}
    for cp in (1, 2):
        out = run_experiment(make_experiment(LONG, [f"layout.cp={cp}"]))
        ttft[cp] = float(out.requests["ttft_s"].iloc[0])
    assert ttft[2] < 0.6 * ttft[1]
    assert ttft[2] > 0.45 * ttft[1]


def test_cp_tpot_stays_close(make_experiment: MakeExperiment) -> None:
    """Short contexts, one request at a time on one node (TP4 × CP2 vs TP4): TPOT within 5 %
    (linear layers are not split; the per-layer merge adds 80 NVLink hops of 2 µs)."""
    text = LONG.replace("h100x16_ib", "dgx_h100_x1").replace("{tp: 8, cp: 2}", "{tp: 4, cp: 2}")
    text = text.replace("value: 32000", "value: 512").replace("value: 1}", "value: 64}")
    text = text.replace("{requests: 1}", "{requests: 3}")
    tpot = {}
    for cp in (1, 2):
        out = run_experiment(make_experiment(text, [f"layout.cp={cp}"]))
        tpot[cp] = float(np.mean(out.requests["tpot_s"]))
    assert tpot[2] == pytest.approx(tpot[1], rel=0.05)


# ------------------------------------------------------------------ errors


def test_cp_with_pp_or_moe_is_rejected(make_experiment: MakeExperiment) -> None:
    with pytest.raises(BuildError, match=r"layout\.cp = 2 with pp = 2: .*not simulated"):
        build(make_experiment(LONG, ["layout={tp: 4, pp: 2, cp: 2}"]))
    moe = LONG.replace("llama-3.1-70b", "mixtral-8x7b")
    with pytest.raises(BuildError, match=r"layout\.cp = 2: .*MoE model \(mixtral-8x7b\)"):
        build(make_experiment(moe))


def test_cp_layout_too_big_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(LONG.replace("{tp: 8, cp: 2}", "{tp: 8, cp: 4}"))
    assert cli.main(["validate", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0]
    assert "tp×pp×cp×dp = 8×1×4×1 = 32 GPUs; topology h100x16_ib has 16" in err[0]
