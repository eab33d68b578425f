"""Disaggregated prefill / decode: KV transfer bytes and time, TTFT, pools, errors."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from clustersim import cli
from clustersim.catalog.models import get_model
from clustersim.config.load import load_sweep
from clustersim.config.schema import Experiment, PoolServing, Precision, ServingSpec
from clustersim.disagg.kv_transfer import kv_flow_coefficients
from clustersim.metrics.summary import summarize
from clustersim.model.params import kv_bytes_per_token
from clustersim.serving.kv_cache import KVPool, blocks_for
from clustersim.serving.request_state import RequestState
from clustersim.serving.scheduler import Scheduler
from clustersim.sim.engine import BuildError, RunOutput, build, run_experiment
from clustersim.topology.graph import build_cluster

MakeExperiment = Callable[..., Experiment]  # the conftest fixture `make_experiment`
KVUtilisation = Callable[[Experiment, int], float]  # the conftest fixture `kv_utilisation`

# Llama-3.1-8B on one 8×H100 node: 2 TP1 prefill replicas, 3 TP2 decode replicas.
SMALL = """\
name: disagg_small
seed: 3
model: llama-3.1-8b
topology: dgx_h100_x1
disaggregation:
  prefill: {layout: {tp: 1, dp: 2}}
  decode: {layout: {tp: 2, dp: 3}, serving: {max_num_seqs: 64}}
workload:
  arrival: {process: poisson, rate_rps: 20}
  prompt_tokens: {dist: lognormal, median: 1024, sigma: 0.5, max: 4096}
  output_tokens: {dist: lognormal, median: 64, sigma: 0.5, max: 256}
horizon: {duration_s: 5}
slo: {ttft_p99_s: 1.0, tpot_p99_s: 0.05}
"""

# One request at a time, prefill on node 0 and decode on node 1: the KV crosses InfiniBand.
TWO_NODES = """\
name: disagg_two_nodes
seed: 5
model: llama-3.1-8b
topology: h100x16_ib
disaggregation:
  prefill: {layout: {tp: 8}}
  decode: {layout: {tp: 8}}
workload:
  arrival: {process: closed, concurrency: 1}
  prompt_tokens: {dist: fixed, value: 6000}
  output_tokens: {dist: fixed, value: 16}
horizon: {requests: 3}
"""


def measured(out: RunOutput) -> pd.DataFrame:
    r = out.requests
    return r.loc[~r["dropped"] & np.isfinite(r["finish_s"])]


# ------------------------------------------------------------------ schema


def test_pool_serving_has_every_serving_key() -> None:
    assert set(PoolServing.model_fields) == set(ServingSpec.model_fields)


def test_pool_serving_overrides_only_what_it_sets(make_experiment: MakeExperiment) -> None:
    built = build(
        make_experiment(
            SMALL.replace(
                "name: disagg_small", "name: x\nserving: {max_num_seqs: 32, block_size: 32}"
            )
        )
    )
    assert built.pools is not None
    prefill, decode = built.pools
    assert prefill.exp.serving.max_num_seqs == 32 and decode.exp.serving.max_num_seqs == 64
    assert prefill.exp.serving.block_size == decode.exp.serving.block_size == 32


def test_sweep_over_deployment_with_null(tmp_path: Path) -> None:
    text = (
        SMALL
        + "layout: {tp: 1, dp: 8}\nsweep:\n  disaggregation: [null, "
        + ("{prefill: {layout: {tp: 1, dp: 4}}, decode: {layout: {tp: 1, dp: 4}}}]\n")
    )
    path = tmp_path / "s.yaml"
    path.write_text(text)
    exps = [exp for _, exp in load_sweep(path)]
    assert len(exps) == 2
    assert exps[0].disaggregation is None and exps[1].disaggregation is not None
    assert build(exps[0]).gpus == 8 and build(exps[1]).gpus == 8


# ------------------------------------------------------------------ scheduler entry points


def test_resume_in_decode_matches_a_local_prefill() -> None:
    """A request resumed with P tokens of KV decodes exactly like one prefilled in the lane:
    same decode steps, same context read per step, same blocks; reserve_prefilled refuses
    when the blocks are not free and takes nothing then."""
    serving = ServingSpec(block_size=16, max_num_batched_tokens=4096)
    prompts, outputs = [100, 37], [10, 5]
    local_state = RequestState(list(prompts), list(outputs))
    local = Scheduler(serving, KVPool(64), local_state, lambda rid, now: None)
    remote_state = RequestState(list(prompts), list(outputs))
    done: list[int] = []
    remote = Scheduler(serving, KVPool(64), remote_state, lambda rid, now: done.append(rid))
    for rid in (0, 1):
        local.add(rid)
        assert remote.reserve_prefilled(rid)
    assert remote.kv.used == blocks_for(100, 16) + blocks_for(37, 16)
    assert remote.outstanding == 2 and not remote.has_work()
    first = local.next_batch(0.0)
    assert first is not None and first.prefill_tokens == 137
    local.complete(first, 1.0)
    for rid in (0, 1):
        remote.add_prefilled(rid, 1.0)
    assert remote_state.first_token_s == [1.0, 1.0] and remote.has_work()
    now = 1.0
    while True:
        a, b = local.next_batch(now), remote.next_batch(now)
        if a is None or b is None:
            assert a is None and b is None
            break
        assert (a.decode_tokens, a.decode_ctx_tokens) == (b.decode_tokens, b.decode_ctx_tokens)
        assert local.kv.used == remote.kv.used
        now += 1.0
        local.complete(a, now)
        remote.complete(b, now)
    assert remote_state.finish_s == local_state.finish_s and done == [1, 0]
    assert remote.kv.used == 0 and remote.outstanding == 0
    tiny = Scheduler(serving, KVPool(3), RequestState([100], [4]), lambda rid, now: None)
    assert not tiny.reserve_prefilled(0) and tiny.kv.used == 0 and tiny.incoming == 0


# ------------------------------------------------------------------ KV bytes


@pytest.mark.parametrize(
    ("src_tp", "src_pp", "src_cp", "dst_tp", "dst_pp"),
    [(8, 1, 1, 4, 1), (2, 2, 1, 8, 1), (4, 1, 2, 2, 2), (1, 1, 1, 1, 1)],
)
def test_gqa_flows_carry_the_models_kv_bytes(
    src_tp: int, src_pp: int, src_cp: int, dst_tp: int, dst_pp: int
) -> None:
    """Σ flows = kv_bytes_per_token (2·KV·d·L·b): no decode TP rank beyond the 8 KV heads."""
    model = get_model("llama-3.1-70b")
    prec = Precision(kv_cache="fp8")
    src_layers, src_grid = _shards(model.num_layers, src_tp, src_pp, src_cp, "p")
    dst_layers, dst_grid = _shards(model.num_layers, dst_tp, dst_pp, 1, "d")
    coefs = kv_flow_coefficients(model, prec, src_layers, src_grid, dst_layers, dst_grid)
    assert sum(c for _, _, c in coefs) == pytest.approx(kv_bytes_per_token(model, prec))
    assert kv_bytes_per_token(model, prec) == 2 * 8 * 128 * 80 * 1
    assert all(s.startswith("p") and d.startswith("d") for s, d, _ in coefs)


def test_mla_flows_carry_the_latent_once_per_decode_copy() -> None:
    """DeepSeek-V3: (kv_lora + rope)·L·b per token; MLA's latent is whole on every TP rank,
    so a decode unit with tp ranks receives tp copies."""
    model = get_model("deepseek-v3")
    prec = Precision(kv_cache="fp8")
    per_token = kv_bytes_per_token(model, prec)
    assert per_token == 61 * 576 * 1
    for dst_tp in (1, 4):
        src = _shards(model.num_layers, 1, 1, 1, "p")
        dst = _shards(model.num_layers, dst_tp, 1, 1, "d")
        coefs = kv_flow_coefficients(model, prec, *src, *dst)
        assert sum(c for _, _, c in coefs) == pytest.approx(per_token * dst_tp)


def _shards(
    layers: int, tp: int, pp: int, cp: int, tag: str
) -> tuple[list[range], list[list[list[str]]]]:
    per = layers // pp
    ranges = [range(s * per, layers if s == pp - 1 else (s + 1) * per) for s in range(pp)]
    grid = [[[f"{tag}{s}.{c}.{t}" for t in range(tp)] for c in range(cp)] for s in range(pp)]
    return ranges, grid


def test_run_records_kv_bytes_per_request(make_experiment: MakeExperiment) -> None:
    exp = make_experiment(SMALL)
    out = run_experiment(exp)
    done = measured(out)
    assert len(done) > 50
    per_token = kv_bytes_per_token(exp.model, exp.precision)  # 2·8·128·32·2 = 131,072 B
    assert per_token == 131072
    np.testing.assert_allclose(done["kv_transfer_bytes"], per_token * done["prompt_tokens"])
    assert (done["kv_transfer_s"] > 0).all()
    # decode replicas are numbered after the prefill replicas
    assert set(done["replica"]) <= {0, 1} and set(done["decode_replica"]) <= {2, 3, 4}


def test_deepseek_pools_with_dp_attention_and_ep(make_experiment: MakeExperiment) -> None:
    text = """\
name: ds_pools
seed: 1
model: deepseek-v3
topology: h800x32_ib
precision: {weights: fp8, activations: fp8, kv_cache: fp8}
serving: {max_num_seqs: 32, max_num_batched_tokens: 1024}
experts: {routing: {distribution: zipf, skew: 0.8}}
disaggregation:
  prefill: {layout: {tp: 1, dp: 16, ep: 16, dp_attention: true}}
  decode:
    layout: {tp: 1, dp: 8, ep: 8}
    serving: {gpu_memory_utilization: 0.95}
    experts: {routing: {distribution: uniform}, eplb: {redundant_experts: 8}}
workload:
  arrival: {process: poisson, rate_rps: 40}
  prompt_tokens: {dist: fixed, value: 300}
  output_tokens: {dist: fixed, value: 8}
horizon: {requests: 40}
"""
    exp = make_experiment(text)
    with pytest.raises(BuildError, match=r"disaggregation\.decode: .*ep=8.*exceed"):
        build(exp)  # 256 + 8 experts on 8 GPUs do not fit: the error names the pool
    exp = make_experiment(
        text.replace("{tp: 1, dp: 8, ep: 8}", "{tp: 1, dp: 16, ep: 16}").replace(
            "eplb: {redundant_experts: 8}", "eplb: null"
        )
    )
    out = run_experiment(exp)
    done = measured(out)
    assert len(done) == 40
    np.testing.assert_allclose(done["kv_transfer_bytes"], 61 * 576 * done["prompt_tokens"])
    assert out.experts is not None and set(out.experts["pool"]) == {"prefill", "decode"}
    groups = out.experts.groupby("pool")["group"].unique()
    assert set(groups["prefill"]).isdisjoint(set(groups["decode"]))
    assert set(out.iterations["pool"]) == {"prefill", "decode"}
    assert out.iterations.loc[out.iterations["pool"] == "decode", "replica"].min() == 16


# ------------------------------------------------------------------ transfer time and TTFT


def test_idle_fabric_transfer_is_bytes_over_bottleneck_plus_latency(
    make_experiment: MakeExperiment,
) -> None:
    exp = make_experiment(TWO_NODES)
    built = build(exp)
    assert built.pools is not None
    prefill, decode = (p.built.placement.replicas[0].stages[0] for p in built.pools)
    assert prefill[0] == "n0.g0" and decode[0] == "n1.g0"
    cluster = build_cluster(exp.topology, exp.hardware)
    path = cluster.path("n0.g0", "n1.g0")
    bottleneck = min(cluster.links[i].bandwidth_Bps for i in path)
    latency = cluster.path_latency_s("n0.g0", "n1.g0")
    out = run_experiment(exp)
    done = measured(out)
    # TP8 → TP8, 8 KV heads: rank i sends its head to rank i over its own rail (disjoint links)
    flow_bytes = 6000 * kv_bytes_per_token(exp.model, exp.precision) / 8
    expected = flow_bytes / bottleneck + latency
    np.testing.assert_allclose(done["kv_transfer_s"], expected, rtol=1e-9)
    assert bottleneck == 50e9 and latency == pytest.approx(7e-6)


def test_ttft_includes_the_transfer(make_experiment: MakeExperiment) -> None:
    """Slowing only the network (the KV path; TP all-reduces stay on NVLink) lengthens TTFT by
    exactly the longer transfer, and leaves TPOT alone."""
    fast = measured(run_experiment(make_experiment(TWO_NODES)))
    slow_exp = make_experiment(TWO_NODES, ["topology.network.bandwidth_GBps=5"])
    slow = measured(run_experiment(slow_exp))
    extra_kv = slow["kv_transfer_s"].to_numpy() - fast["kv_transfer_s"].to_numpy()
    extra_ttft = slow["ttft_s"].to_numpy() - fast["ttft_s"].to_numpy()
    assert (extra_kv > 0.005).all()
    np.testing.assert_allclose(extra_ttft, extra_kv, rtol=1e-6)
    np.testing.assert_allclose(slow["tpot_s"], fast["tpot_s"], rtol=1e-9)
    # TTFT = queue + prefill + transfer: the first token comes after the KV has landed
    assert (fast["ttft_s"] > fast["kv_transfer_s"] + fast["queue_s"]).all()


# ------------------------------------------------------------------ pools, memory, tables


def test_summary_pool_keys_and_colocated_columns(make_experiment: MakeExperiment) -> None:
    exp = make_experiment(SMALL)
    out = run_experiment(exp)
    s = summarize(out, exp.slo, 0.0)
    assert s["gpus"] == 8
    assert s["pools"]["prefill"]["gpus"] == 2 and s["pools"]["decode"]["gpus"] == 6
    assert s["pools"]["prefill"]["input_tokens_per_s"] == pytest.approx(
        s["throughput"]["input_tokens_per_s"]
    )
    assert s["pools"]["decode"]["output_tokens_per_s_per_node"] == pytest.approx(
        s["throughput"]["output_tokens_per_s"] / 0.75
    )
    for pool in ("prefill", "decode"):
        assert 0.0 < s["pools"][pool]["utilisation"] <= 1.0
    assert s["kv_transfer"]["bytes"] == pytest.approx(measured(out)["kv_transfer_bytes"].sum())
    assert 0 < s["kv_transfer"]["mean_s"] <= s["kv_transfer"]["p99_s"]


def test_colocated_runs_keep_their_tables(make_experiment: MakeExperiment) -> None:
    exp = make_experiment(SMALL, ["disaggregation=null", "layout.dp=8"])
    out = run_experiment(exp)
    assert out.pools is None and "pool" not in out.iterations.columns
    assert out.requests["kv_transfer_s"].isna().all()
    assert (out.requests["decode_replica"] == out.requests["replica"]).all()
    s = summarize(out, exp.slo, 0.0)
    assert "pools" not in s and "kv_transfer" not in s


def test_decode_memory_pressure_holds_requests_back(
    make_experiment: MakeExperiment, kv_utilisation: KVUtilisation
) -> None:
    """A decode pool with little KV: requests wait for their decode blocks before prefill
    (pre-allocation), every one still completes, no KV pool ever overflows."""
    exp = make_experiment(SMALL)
    built = build(exp)
    assert built.pools is not None
    # ~300 blocks of 16 tokens per decode replica: one 4,096 + 256-token request fits
    util = kv_utilisation(built.pools[1].exp, 300)
    tight_exp = make_experiment(
        SMALL, [f"disaggregation.decode.serving.gpu_memory_utilization={util}"]
    )
    roomy, tight = run_experiment(exp), run_experiment(tight_exp)
    assert len(measured(tight)) == len(measured(roomy)) == len(tight.requests)
    assert tight.requests["queue_s"].mean() > 2 * roomy.requests["queue_s"].mean()
    it = tight.iterations
    decode = it.loc[it["pool"] == "decode"]
    assert (it["kv_used_blocks"] <= it["kv_capacity_blocks"]).all()
    assert decode["kv_capacity_blocks"].max() < 310
    assert (decode["kv_used_blocks"] / decode["kv_capacity_blocks"]).max() > 0.9


def test_same_seed_same_tables(make_experiment: MakeExperiment) -> None:
    a = run_experiment(make_experiment(SMALL))
    b = run_experiment(make_experiment(SMALL))
    pd.testing.assert_frame_equal(a.requests, b.requests)
    pd.testing.assert_frame_equal(a.iterations, b.iterations)


# ------------------------------------------------------------------ errors


def test_pools_larger_than_the_topology_fail_with_the_numbers(
    make_experiment: MakeExperiment,
) -> None:
    exp = make_experiment(SMALL, ["disaggregation.decode.layout.dp=4"])
    with pytest.raises(BuildError) as err:
        build(exp)
    assert "prefill tp×pp×cp×dp = 1×1×1×2 = 2 + decode tp×pp×cp×dp = 2×1×1×4 = 8" in str(err.value)
    assert "= 10 GPUs; topology dgx_h100_x1 has 8" in str(err.value)


def test_cp_in_the_decode_pool_is_rejected(make_experiment: MakeExperiment) -> None:
    exp = make_experiment(SMALL, ["disaggregation.decode.layout={tp: 2, cp: 2}"])
    with pytest.raises(BuildError, match=r"disaggregation\.decode\.layout\.cp = 2: .*prefill"):
        build(exp)


def test_bad_pool_is_exit_2_through_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(SMALL.replace("{tp: 2, dp: 3}", "{tp: 3, dp: 2}"))
    assert cli.main(["validate", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0]
    assert "disaggregation.decode: tp = 3 does not divide num_attention_heads = 32" in err[0]


def test_cp_prefill_pool_sends_kv_from_every_cp_rank(make_experiment: MakeExperiment) -> None:
    """CP belongs in the prefill pool: each CP rank holds 1/cp of the prompt's tokens and
    sends them itself, so the transfer has twice the sources and the same bytes."""
    exp = make_experiment(
        SMALL,
        ["disaggregation.prefill.layout={tp: 2, cp: 2}", "disaggregation.decode.layout.dp=2"],
    )
    built = build(exp)
    assert built.pools is not None
    prefill, decode = built.pools
    rp, dp = prefill.built.placement.replicas[0], decode.built.placement.replicas[0]
    coefs = kv_flow_coefficients(
        exp.model,
        exp.precision,
        prefill.built.stage_layers,
        rp.cp_groups,
        decode.built.stage_layers,
        dp.cp_groups,
    )
    assert {s for s, _, _ in coefs} == set(rp.gpus) and len(rp.gpus) == 4
    per_token = kv_bytes_per_token(exp.model, exp.precision)
    assert sum(c for _, _, c in coefs) == pytest.approx(per_token)
    done = measured(run_experiment(exp))
    assert len(done) > 50
    np.testing.assert_allclose(done["kv_transfer_bytes"], per_token * done["prompt_tokens"])


def test_prefill_lane_waiting_for_kept_blocks_wakes_when_they_are_freed(
    make_experiment: MakeExperiment, kv_utilisation: KVUtilisation
) -> None:
    """A prefill lane whose KV is held by a finished request's outgoing transfer sleeps; when
    the transfer lands and frees the blocks the lane must run again, with no new arrival."""
    burst = TWO_NODES.replace("{process: closed, concurrency: 1}", "{process: burst}")
    built = build(make_experiment(burst))
    assert built.pools is not None
    util = kv_utilisation(built.pools[0].exp, 400)  # one 6,000-token prompt (375 blocks)
    exp = make_experiment(
        burst,
        [
            "disaggregation.prefill.serving.chunked_prefill=false",
            f"disaggregation.prefill.serving.gpu_memory_utilization={util}",
        ],
    )
    out = run_experiment(exp)
    assert len(measured(out)) == 3


def test_prefill_lane_admits_only_whole_prompts_so_nothing_thrashes(
    make_experiment: MakeExperiment, kv_utilisation: KVUtilisation
) -> None:
    """With chunked prefill and a prefill KV pool that holds one 6,000-token prompt but not
    two, a prompt is admitted only when all of it fits beside the KV still waiting to be sent:
    no partial chunk is stranded, so nothing is preempted and recomputed."""
    burst = TWO_NODES.replace("{process: closed, concurrency: 1}", "{process: burst}").replace(
        "horizon: {requests: 3}", "horizon: {requests: 4}"
    )
    chunk = ["disaggregation.prefill.serving.max_num_batched_tokens=2048"]
    built = build(make_experiment(burst, chunk))
    assert built.pools is not None
    util = kv_utilisation(built.pools[0].exp, 450)  # 375 blocks a prompt: one fits, two don't
    exp = make_experiment(
        burst, [*chunk, f"disaggregation.prefill.serving.gpu_memory_utilization={util}"]
    )
    out = run_experiment(exp)
    assert len(measured(out)) == 4
    assert int(out.requests["preemptions"].sum()) == 0
    prefill = out.iterations.loc[out.iterations["pool"] == "prefill"]
    assert int(prefill["prefill_tokens"].sum()) == 4 * 6000  # every prompt computed once
