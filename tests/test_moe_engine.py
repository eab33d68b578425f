"""MoE expert parallelism end to end: layouts, memory, all-to-all traffic, engine runs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import simpy

from clustersim import cli
from clustersim.catalog.hardware import get_hardware
from clustersim.catalog.models import get_model
from clustersim.config.schema import (
    Experiment,
    Layout,
    NetworkSpec,
    NVLinkSpec,
    Precision,
    ServingSpec,
    TopologySpec,
)
from clustersim.metrics.summary import summarize
from clustersim.model.memory import plan_memory
from clustersim.model.moe_cost import dispatch_bytes_per_pair, expert_weight_bytes
from clustersim.model.params import kv_bytes_per_token, param_counts
from clustersim.network.all_to_all import (
    A2A_NETWORK_EFFICIENCY,
    A2A_NVLINK_EFFICIENCY,
    AllToAllPlan,
)
from clustersim.network.fabric import Fabric
from clustersim.results.writer import write_parquet
from clustersim.sim.engine import BuildError, build, run_experiment
from clustersim.topology.graph import build_cluster

MakeExperiment = Callable[..., Experiment]  # the conftest fixture `make_experiment`

# Mixtral (8 experts, top-2) on one 8×H100 node, DP-attention + EP8: small and fast.
MIXTRAL_DPA = """\
name: moe_small
seed: 11
model: mixtral-8x7b
topology: dgx_h100_x1
layout: {tp: 1, dp: 8, ep: 8, dp_attention: true}
precision: {weights: fp8, activations: fp8, kv_cache: fp8}
serving: {max_num_seqs: 64, max_num_batched_tokens: 1024}
experts:
  routing: {distribution: zipf, skew: 0.0}
workload:
  arrival: {process: poisson, rate_rps: 400}
  prompt_tokens: {dist: fixed, value: 128}
  output_tokens: {dist: fixed, value: 64}
horizon: {duration_s: 2}
slo: {ttft_p99_s: 2.0, tpot_p99_s: 0.1}
output: {time_bin_s: 0.5}
"""


# ------------------------------------------------------------------ model facts


def test_deepseek_v3_kv_bytes_per_token_follow_mla() -> None:
    model = get_model("deepseek-v3")
    assert kv_bytes_per_token(model, Precision(kv_cache="bf16")) == 61 * 576 * 2
    assert kv_bytes_per_token(model, Precision(kv_cache="fp8")) == 61 * 576 * 1


def test_dispatch_bytes_include_fp8_tile_scales() -> None:
    model = get_model("deepseek-v3")
    # 7168 fp8 bytes + one fp32 scale per 128 elements (DeepEP's (1 + 4/128) factor)
    assert dispatch_bytes_per_pair(model, Precision()) == pytest.approx(7168 * (1 + 4 / 128))
    assert expert_weight_bytes(model, Precision(weights="fp8")) == 3 * 7168 * 2048


def test_memory_splits_experts_over_ep_and_counts_redundant_slots() -> None:
    model, hw = get_model("deepseek-v3"), get_hardware("h800")
    prec, serving = Precision(weights="fp8"), ServingSpec()
    lay = Layout(tp=1, dp=32, ep=32, dp_attention=True)
    base = plan_memory(model, hw, prec, lay, serving)
    more = plan_memory(model, hw, prec, lay, serving, redundant_experts=32)
    expert = param_counts(model).expert  # fp8: 1 byte per parameter
    # 256 / 32 = 8 experts per GPU; 288 / 32 = 9 with 32 redundant ones, in 58 MoE layers
    assert more.weights_per_gpu_bytes - base.weights_per_gpu_bytes == pytest.approx(58 * expert)
    assert base.fits and more.fits
    ep8 = plan_memory(model, hw, Precision(weights="bf16"), Layout(tp=8, ep=8), serving)
    assert not ep8.fits and "ep=8" in ep8.reason  # 1.3 TB of bf16 weights on 8 GPUs


# ------------------------------------------------------------------ layouts


@pytest.mark.parametrize(
    ("layout", "extra", "message"),
    [
        ("{tp: 8, ep: 3}", "", r"layout\.ep = 3 must be 1, tp = 8 .* tp × dp = 8×1 = 8"),
        ("{tp: 4, dp: 2, ep: 2}", "", r"layout\.ep = 2 must be 1, tp = 4 .* 4×2 = 8"),
        ("{tp: 8, ep: 2, moe_tp: 2}", "", r"moe_tp × ep = 2 × 2 = 4 must equal tp = 8"),
        (
            "{tp: 4, dp: 2, ep: 4, dp_attention: true}",
            "",
            r"dp_attention needs ep = tp × dp = 4×2 = 8 .*, got ep = 4",
        ),
        (
            "{tp: 1, dp: 8, ep: 8}",
            "experts: {eplb: {redundant_experts: 4}}",
            r"8 \+ 4 = 12 is not divisible by ep = 8",
        ),
        (
            "{tp: 8, ep: 1}",
            "experts: {eplb: {redundant_experts: 8}}",
            r"experts\.eplb .* needs ep > 1",
        ),
        ("{tp: 1, dp: 4, pp: 2, ep: 4}", "", r"layout\.pp = 2 with DP-attention"),
        (
            "{tp: 8, ep: 8}",
            "experts: {routing: {distribution: trace}}",
            r"needs experts\.routing\.path",
        ),
    ],
)
def test_invalid_ep_layouts_fail_with_the_numbers(
    make_experiment: MakeExperiment, layout: str, extra: str, message: str
) -> None:
    text = MIXTRAL_DPA.replace(
        "layout: {tp: 1, dp: 8, ep: 8, dp_attention: true}", f"layout: {layout}"
    )
    text = text.replace("experts:\n  routing: {distribution: zipf, skew: 0.0}\n", extra + "\n")
    with pytest.raises(BuildError, match=message):
        build(make_experiment(text))


def test_ep_on_a_dense_model_is_rejected(make_experiment: MakeExperiment) -> None:
    text = MIXTRAL_DPA.replace("mixtral-8x7b", "llama-3.1-8b").replace(
        "experts:\n  routing: {distribution: zipf, skew: 0.0}\n", ""
    )
    with pytest.raises(BuildError, match=r"layout\.ep = 8: model llama-3.1-8b has no experts"):
        build(make_experiment(text))


def test_routing_table_shape_is_checked_against_the_model(
    make_experiment: MakeExperiment, tmp_path: Path
) -> None:
    (tmp_path / "pop.csv").write_text("1,2,3\n")
    text = MIXTRAL_DPA.replace(
        "{distribution: zipf, skew: 0.0}", "{distribution: trace, path: pop.csv}"
    )
    with pytest.raises(BuildError, match=r"1×3 .* needs 32 MoE layers \(or 1 row .*\) × 8"):
        build(make_experiment(text))


def test_invalid_ep_layout_is_exit_2_through_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(MIXTRAL_DPA.replace("ep: 8, dp_attention: true", "ep: 3"))
    assert cli.main(["validate", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "layout.ep = 3" in err[0] and "Traceback" not in err[0]


def test_ep_groups_and_ranks(make_experiment: MakeExperiment) -> None:
    dpa = build(make_experiment(MIXTRAL_DPA)).ep
    assert dpa is not None and dpa.mode == "dp_attention" and len(dpa.groups) == 1
    assert [r[0] for r in dpa.groups[0].ranks] == [f"n0.g{i}" for i in range(8)]
    text = MIXTRAL_DPA.replace(
        "{tp: 1, dp: 8, ep: 8, dp_attention: true}", "{tp: 4, dp: 2, ep: 2, moe_tp: 2}"
    )
    trt = build(make_experiment(text)).ep
    assert trt is not None and trt.mode == "tp" and len(trt.groups) == 2
    # TensorRT-LLM: moe_ep_rank = tp_rank mod ep → rank 0 = TP ranks 0 and 2
    assert trt.groups[1].ranks == (("n0.g4", "n0.g6"), ("n0.g5", "n0.g7"))


# ------------------------------------------------------------------ all-to-all traffic


def small_cluster() -> tuple[simpy.Environment, Fabric, AllToAllPlan]:
    spec = TopologySpec(
        name="two_by_two",
        nodes=2,
        gpus_per_node=2,
        gpu="h100-sxm",
        nvlink=NVLinkSpec(bandwidth_GBps=100.0, latency_us=2.0),
        network=NetworkSpec(nics_per_node=2, bandwidth_GBps=10.0, latency_us=5.0),
    )
    cluster = build_cluster(spec, get_hardware("h100-sxm"))
    env = simpy.Environment()
    fabric = Fabric(env, cluster, bin_s=1.0)
    plan = AllToAllPlan(cluster, ["n0.g0", "n0.g1", "n1.g0", "n1.g1"], moe_layers=3)
    return env, fabric, plan


def link_bytes(fabric: Fabric) -> dict[str, float]:
    totals = fabric.link_totals()
    return dict(zip(totals["link"], totals["bytes"], strict=True))


def test_all_to_all_bytes_per_link_match_the_formula() -> None:
    env, fabric, plan = small_cluster()
    share = np.asarray([0.4, 0.3, 0.2, 0.1])  # of the step's tokens, per sending GPU
    pairs = np.asarray([100.0, 200.0, 300.0, 400.0])  # routed pairs per receiving GPU
    per_pair = 1000.0  # bytes
    fabric.transfer_pairs(
        *plan.low_latency_transfer(share, pairs, per_pair), plan.extra_latency_s()
    )
    env.run()
    got = link_bytes(fabric)
    net = 1 / A2A_NETWORK_EFFICIENCY
    # DeepEP low-latency kernels: every pair through the NICs, the same node's too
    assert "n0.g0->nvsw0" not in got and "nvsw1->n1.g1" not in got
    # n0.g0 → n0.g1 (RDMA loopback through leaf0) and → both GPUs of node 1
    assert got["n0.g0->n0.pcie"] == pytest.approx(0.4 * (200 + 300 + 400) * per_pair * net)
    # into n1.g0 (NIC 0 of node 1) from the three other GPUs: Σ_i share_i × pairs_2
    assert got["leaf0->n1.nic0"] == pytest.approx((0.4 + 0.3 + 0.1) * 300 * per_pair * net)
    # into n0.g1 from n0.g0, n1.g0, n1.g1
    assert got["leaf0->n0.nic1"] == pytest.approx((0.4 + 0.2 + 0.1) * 200 * per_pair * net)
    # the event took the busiest link's bytes / bandwidth + 3 layers × (path + overhead)
    busiest = max(
        b / link.bandwidth_Bps
        for link in fabric.cluster.links
        for name, b in got.items()
        if name == link.name
    )
    assert env.now == pytest.approx(busiest + 3 * plan.layer_latency_s())


def test_normal_kernel_flows_send_once_per_node_and_forward_over_nvlink() -> None:
    env, fabric, plan = small_cluster()
    tokens = np.asarray([10.0, 20.0, 30.0, 40.0])
    rank_copies = np.asarray([0.5, 0.6, 0.7, 0.8])  # Σ_l P(token hits rank)
    node_copies = np.asarray([0.9, 1.2])  # Σ_l P(token hits node)
    per_token = 1000.0
    fabric.transfer_pairs(*plan.normal_transfer(tokens, rank_copies, node_copies, per_token))
    env.run()
    got = link_bytes(fabric)
    nvl, net = 1 / A2A_NVLINK_EFFICIENCY, 1 / A2A_NETWORK_EFFICIENCY
    # n0.g0 sends its tokens once to node 1 (to its rail peer n1.g0)
    assert got["n0.g0->n0.pcie"] == pytest.approx(10 * 1.2 * per_token * net)
    # n1.g0 forwards node-0 rail-0 tokens to n1.g1, and sends its own tokens to n1.g1
    assert got["n1.g0->nvsw1"] == pytest.approx((10 + 30) * 0.8 * per_token * nvl)


# ------------------------------------------------------------------ engine runs


def p99_tpot(make_experiment: MakeExperiment, overrides: list[str]) -> tuple[float, float]:
    exp = make_experiment(MIXTRAL_DPA, overrides)
    out = run_experiment(exp)
    s = summarize(out, exp.slo, 0.0)
    return s["tpot_s"]["p99"], s["experts"]["imbalance"]


def test_zipf_skew_raises_p99_tpot_over_uniform(make_experiment: MakeExperiment) -> None:
    uniform, imb_u = p99_tpot(make_experiment, [])
    skewed, imb_s = p99_tpot(make_experiment, ["experts.routing.skew=1.6"])
    assert imb_u < 1.3 < 2.0 < imb_s
    assert skewed > 1.5 * uniform


def test_moe_run_outputs_experts_and_eplb_tables(make_experiment: MakeExperiment) -> None:
    exp = make_experiment(
        MIXTRAL_DPA,
        [
            "experts.routing.skew=1.2",
            "experts.eplb={redundant_experts: 8, rebalance_interval_s: 0.5}",
            "experts.two_batch_overlap=true",
        ],
    )
    out = run_experiment(exp)
    assert out.experts is not None and out.eplb is not None
    e = out.experts
    assert {"bin_start_s", "rank", "expert", "tokens"} <= set(e.columns)
    assert set(e["rank"]) == set(range(8)) and set(e["expert"]) <= set(range(8))
    assert len(out.eplb) >= 2
    assert (out.eplb["imbalance_after"] <= out.eplb["imbalance_before"] + 1e-12).all()
    first = out.eplb.iloc[0]
    assert first["imbalance_after"] < first["imbalance_before"] and first["bytes_moved"] > 0
    # every DP rank steps in lock-step: 8 rows per step with equal start and end
    it = out.iterations
    per_step = it.groupby("start_s")["end_s"].agg(["count", "nunique"])
    assert (per_step["count"] == 8).all() and (per_step["nunique"] == 1).all()
    # two-batch overlap: a step is never shorter than its compute
    assert ((it["end_s"] - it["start_s"]) >= it["compute_s"] - 1e-12).all()


def test_same_seed_gives_identical_experts_parquet(
    make_experiment: MakeExperiment, tmp_path: Path
) -> None:
    ov = [
        "experts.routing.skew=1.2",
        "experts.routing.drift_interval_s=0.3",
        "experts.eplb={redundant_experts: 8, rebalance_interval_s: 0.4}",
        "horizon.duration_s=1",
    ]
    files = []
    for run in ("a", "b"):
        out = run_experiment(make_experiment(MIXTRAL_DPA, ov))
        assert out.experts is not None and out.eplb is not None
        path = tmp_path / f"{run}.parquet"
        write_parquet(path, out.experts)
        files.append(path.read_bytes())
    assert files[0] == files[1]
    other = run_experiment(make_experiment(MIXTRAL_DPA, [*ov, "seed=12"]))
    assert other.experts is not None
    assert not other.experts.equals(pd.read_parquet(tmp_path / "a.parquet"))


def test_ep_inside_tp_groups_and_dense_models(make_experiment: MakeExperiment) -> None:
    text = MIXTRAL_DPA.replace(
        "{tp: 1, dp: 8, ep: 8, dp_attention: true}", "{tp: 4, dp: 2, ep: 4}"
    ).replace("duration_s: 2", "duration_s: 1")
    out = run_experiment(make_experiment(text))
    assert out.experts is not None
    assert set(out.experts["group"]) == {0, 1} and set(out.experts["rank"]) == set(range(4))
    dense = (
        MIXTRAL_DPA.replace("mixtral-8x7b", "llama-3.1-8b")
        .replace("{tp: 1, dp: 8, ep: 8, dp_attention: true}", "{tp: 1, dp: 2}")
        .replace("experts:\n  routing: {distribution: zipf, skew: 0.0}\n", "")
        .replace("duration_s: 2", "duration_s: 0.5")
    )
    dense_out = run_experiment(make_experiment(dense))
    assert dense_out.experts is None and dense_out.eplb is None
