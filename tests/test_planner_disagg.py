"""The planner with disaggregated prefill / decode pools and context parallelism: pool sizes and
layouts (hand-counted), the combination count, pool bounds, the rule of thumb's CP and
disaggregation steps, the emitted launch configs (verified flag names, parsed back) and a tiny
disaggregated plan end to end."""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path

import pytest
import yaml

from clustersim.catalog.models import get_model
from clustersim.catalog.topologies import get_topology
from clustersim.cli import main
from clustersim.config.schema import Layout
from clustersim.planner.analytic import disagg_estimate, estimate, workload_stats
from clustersim.planner.disagg import (
    enumerate_disaggregated,
    pool_layouts,
    pool_sizes,
    resolve_mode,
)
from clustersim.planner.engines import LaunchConfig, disagg_verdict, pool_verdict, verdict
from clustersim.planner.rules import rule_of_thumb
from clustersim.planner.run import candidate_launch, run_plan
from clustersim.planner.space import enumerate_space, layout_label
from clustersim.planner.spec import PlanSpec, load_plan

# Llama-3.1-8B on one 8×H100 node; the workload, SLO and plan block are filled in per test.
PLAN = """
name: {name}
seed: 3
model: {model}
topology: dgx_h100_x1
precision: {{weights: fp8, activations: fp8, kv_cache: fp8}}
serving: {{max_num_seqs: 64, max_num_batched_tokens: 4096}}
workload:
  arrival: {{process: poisson, rate_rps: {rate}}}
  prompt_tokens: {{dist: {prompt}}}
  output_tokens: {{dist: fixed, value: {output}}}
horizon: {{duration_s: {duration}, warmup_s: 1}}
slo: {{ttft_p99_s: {ttft}, tpot_p99_s: {tpot}}}
plan: {{workers: 2, {plan}}}
"""


def spec_of(tmp_path: Path, plan: str, **kw: object) -> PlanSpec:
    fields: dict[str, object] = {
        "name": "t",
        "model": "llama-3.1-8b",
        "rate": 8,
        "prompt": "fixed, value: 2048",
        "output": 32,
        "duration": 4,
        "ttft": 1.0,
        "tpot": 0.05,
        "plan": plan,
    }
    fields.update(kw)
    path = tmp_path / f"{fields['name']}.yaml"
    path.write_text(PLAN.format(**fields))
    return load_plan(path)


# --------------------------------------------------------------------------- pure enumeration


def test_pool_sizes_whole_domains_or_powers_of_two() -> None:
    four_nodes = get_topology("h800x32_ib")  # 4 × 8 GPUs: whole NVLink domains
    assert pool_sizes(four_nodes, 32) == [8, 16, 24]
    assert pool_sizes(four_nodes, 16) == [8]
    assert pool_sizes(four_nodes, 15) == []  # no two whole nodes fit
    one_node = get_topology("dgx_h100_x1")  # a single domain: 1, 2, 4 GPUs
    assert pool_sizes(one_node, 8) == [1, 2, 4]
    assert pool_sizes(one_node, 4) == [1, 2]


def test_pool_layouts_hand_counted() -> None:
    dense = [layout_label(x, moe=False) for x in pool_layouts(False, 4, with_cp=False)]
    assert dense == ["tp1-pp1-dp4", "tp2-pp1-dp2", "tp4-pp1-dp1"]  # tp × dp = 4, pp = 1
    # with CP (prefill pools of long prompts): ordered tp × cp × dp = 4 → 6
    assert len(pool_layouts(False, 4, with_cp=True)) == 6
    moe = [layout_label(x, moe=True) for x in pool_layouts(True, 4, with_cp=True)]
    # DP-attention + EP, or ep = tp (ep = 1 only where tp = 1); no hybrid split, no CP
    assert moe == [
        "tp1-pp1-dp4-ep1",
        "tp1-pp1-dp4-ep4-dpa",
        "tp2-pp1-dp2-ep2",
        "tp2-pp1-dp2-ep4-dpa",
        "tp4-pp1-dp1-ep4",
    ]


def test_mode_resolution(tmp_path: Path) -> None:
    short = spec_of(tmp_path, "max_gpus: 4", prompt="fixed, value: 512")
    assert resolve_mode(short, 512.0)[0] == "off"  # auto: dense, short prompts
    assert resolve_mode(short, 4096.0)[0] == "also"  # auto: long prompts
    moe = spec_of(tmp_path, "max_gpus: 4", model="mixtral-8x7b", name="m")
    assert resolve_mode(moe, 512.0) == ("also", "auto: mixtral-8x7b is an MoE model")
    pinned = spec_of(tmp_path, "disaggregation: also, candidates: {layouts: [{tp: 2}]}")
    assert resolve_mode(pinned, 4096.0)[0] == "off"  # explicit co-located layouts


# --------------------------------------------------------------------------- small case


def test_disaggregated_enumeration_counts(tmp_path: Path) -> None:
    spec = spec_of(tmp_path, "max_gpus: 4, disaggregation: also, pool_layouts: 1")
    stats = workload_stats(spec.base)
    dis = enumerate_disaggregated(spec, stats, with_cp=False)
    # sizes 1, 2; splits (1,1) (1,2) (2,1) (2,2); one pool layout kept per role and size
    assert dis.mode == "also" and len(dis.candidates) == 4
    assert {c.gpus for c in dis.candidates} == {2, 3, 4}
    # 2-GPU pools: tp1-dp2 and tp2-dp1 pass; the lower-capacity one of each role is cut
    choice = [r for r in dis.rejected if r.stage == "pool choice"]
    assert sorted(r.label[0] for r in choice) == ["D", "P"]
    assert "not among the 1 highest" in choice[0].reason
    for cand in dis.candidates:
        assert cand.pools is not None and cand.disaggregated
        pf, dc = cand.pools
        assert cand.label == f"P[{pf.label}]+D[{dc.label}]"
        assert cand.gpus == pf.gpus + dc.gpus == cand.built.gpus
        assert cand.exp.disaggregation is not None
        assert pf.exp.layout == cand.exp.disaggregation.prefill.layout
    # two pool layouts per role and size: 1·1 + 1·2 + 2·1 + 2·2 = 9 combinations
    spec2 = spec_of(tmp_path, "max_gpus: 4, disaggregation: also", name="t2")
    assert len(enumerate_disaggregated(spec2, stats, with_cp=False).candidates) == 9


def test_pool_bounds_reject_pools(tmp_path: Path) -> None:
    # a 1 ms TPOT bound: no decode pool's batch-1 step is that fast
    spec = spec_of(tmp_path, "max_gpus: 4, disaggregation: also", tpot=0.001)
    dis = enumerate_disaggregated(spec, workload_stats(spec.base), with_cp=False)
    assert not dis.candidates
    bound = [r for r in dis.rejected if r.stage == "pool bound"]
    assert bound and all(r.label.startswith("D[") for r in bound)
    assert "decode pool: TPOT lower bound" in bound[0].reason and "> SLO 1.0 ms" in bound[0].reason


def test_rule_adds_cp_only_for_long_prompts(tmp_path: Path) -> None:
    long = "fixed, value: 110000"
    pinned = "max_gpus: 4, candidates: {tp: [2]}"  # TP 2 units: tp2-cp2 fits the 4 GPUs
    probe = spec_of(tmp_path, pinned, prompt=long, rate=2, ttft=100.0, name="p")
    stats = workload_stats(probe.base)
    assert stats.p99_prompt >= 100_000
    space = enumerate_space(probe, stats.p99_prompt)
    assert space.cp_enumerated
    est = {c.label: estimate(c.exp, c.built, stats) for c in space.candidates}
    pick = rule_of_thumb(probe, space.candidates, est, stats)
    assert any("no CP needed" in r for r in pick.reasons)  # 100 s of TTFT: room enough
    one, two = est["tp2-pp1-dp1"].ttft_p99_lb_s, est["tp2-pp1-dp1-cp2"].ttft_p99_lb_s
    assert two < one
    # a TTFT bound the TP unit misses (at 80 %) and CP 2 meets: the rule adds cp 2
    ttft = (one + two) / 2 / 0.8
    spec = spec_of(tmp_path, pinned, prompt=long, rate=2, ttft=ttft, name="q")
    pick = rule_of_thumb(spec, space.candidates, est, stats)
    assert pick.label is not None and pick.label.endswith("-cp2")
    assert any("→ cp 2" in r for r in pick.reasons)
    # short prompts: no CP layout is enumerated, no CP step in the reasons
    short = spec_of(tmp_path, "max_gpus: 4", name="s")
    s_stats = workload_stats(short.base)
    s_space = enumerate_space(short, s_stats.p99_prompt)
    assert all(c.layout.cp == 1 for c in s_space.candidates)
    s_est = {c.label: estimate(c.exp, c.built, s_stats) for c in s_space.candidates}
    assert not any(
        "CP" in r for r in rule_of_thumb(short, s_space.candidates, s_est, s_stats).reasons
    )


def pick_for(spec: PlanSpec) -> tuple[str | None, tuple[str, ...]]:
    """The rule of thumb's pick (and reasons) over co-located + disaggregated candidates."""
    stats = workload_stats(spec.base)
    space = enumerate_space(spec, stats.p99_prompt)
    dis = enumerate_disaggregated(spec, stats, space.cp_enumerated)
    est = {c.label: estimate(c.exp, c.built, stats) for c in space.candidates}
    for c in dis.candidates:
        assert c.pools is not None
        est[c.label] = disagg_estimate(
            dis.pool_estimates[f"P[{c.pools[0].label}]"],
            dis.pool_estimates[f"D[{c.pools[1].label}]"],
        )
    pick = rule_of_thumb(spec, (*space.candidates, *dis.candidates), est, stats)
    return pick.label, pick.reasons


def test_rule_disaggregates_only_long_prompts_with_tight_tpot(tmp_path: Path) -> None:
    plan = "max_gpus: 4, disaggregation: also"
    # 8k-token prompts, 20 ms TPOT: a step carrying a 4,096-token chunk takes longer
    label, reasons = pick_for(spec_of(tmp_path, plan, prompt="fixed, value: 8192", tpot=0.02))
    assert label is not None and label.startswith("P[")
    (line,) = [r for r in reasons if r.startswith("disaggregate (")]
    assert "4,096-token prefill chunk" in line and "> the 20.00 ms TPOT bound" in line
    # the same prompts with a loose TPOT bound: chunked prefill keeps decodes inside it
    label, reasons = pick_for(
        spec_of(tmp_path, plan, prompt="fixed, value: 8192", tpot=2.0, name="loose")
    )
    assert label is not None and not label.startswith("P[")
    assert any(r.startswith("stay co-located: a ") for r in reasons)
    # short prompts: stays co-located whatever the TPOT bound
    label, reasons = pick_for(
        spec_of(tmp_path, plan, prompt="fixed, value: 512", tpot=0.02, name="short")
    )
    assert label is not None and not label.startswith("P[")
    assert any("stay co-located: mean prompt 512 < 2,048" in r for r in reasons)


# --------------------------------------------------------------------------- launch configs


def commands_of(cfg: LaunchConfig) -> list[list[str]]:
    """Every command of the emitted script (heredocs skipped), shell-split; leading
    VAR=value assignments dropped."""
    out: list[list[str]] = []
    lines = cfg.script().splitlines()
    i, current = 0, ""
    while i < len(lines):
        line = lines[i]
        i += 1
        if line.startswith("cat > "):
            while lines[i] != "EOF":
                i += 1
            i += 1
            continue
        if not line or line.startswith("#"):
            continue
        current += line.rstrip("\\") + " "
        if not line.endswith("\\"):
            argv = shlex.split(current)
            while argv and "=" in argv[0] and not argv[0].startswith("-"):
                argv = argv[1:]
            out.append(argv)
            current = ""
    return out


def flags(argv: list[str], *names: str) -> argparse.Namespace:
    p = argparse.ArgumentParser(exit_on_error=False)
    for name in names:
        p.add_argument(name, action="store_true" if name.startswith("--pd") else "store")
    ns, _ = p.parse_known_args(argv)
    return ns


def test_disaggregated_configs_use_verified_flags(tmp_path: Path) -> None:
    spec = spec_of(tmp_path, "max_gpus: 4, disaggregation: also")
    dis = enumerate_disaggregated(spec, workload_stats(spec.base), with_cp=False)
    cand = next(c for c in dis.candidates if c.label == "P[tp2-pp1-dp1]+D[tp1-pp1-dp2]")
    a2a = spec.options.sglang_moe_a2a_backend
    sg = commands_of(candidate_launch("sglang", cand, a2a))
    assert [c[:3] for c in sg] == [["python", "-m", "sglang.launch_server"]] * 2 + [
        ["python", "-m", "sglang_router.launch_router"]
    ]
    names = (
        "--disaggregation-mode",
        "--disaggregation-transfer-backend",
        "--port",
        "--base-gpu-id",
        "--tp-size",
        "--dp-size",
    )
    pf, dc = flags(sg[0], *names), flags(sg[1], *names)
    assert (pf.disaggregation_mode, dc.disaggregation_mode) == ("prefill", "decode")
    assert pf.disaggregation_transfer_backend == dc.disaggregation_transfer_backend == "nixl"
    assert (pf.tp_size, dc.tp_size, dc.dp_size) == ("2", "1", "2")
    assert pf.base_gpu_id is None and dc.base_gpu_id == "2"  # decode after the prefill GPUs
    router = flags(sg[2], "--pd-disaggregation", "--prefill", "--decode")
    assert router.pd_disaggregation
    assert router.prefill.endswith(f":{pf.port}") and router.decode.endswith(f":{dc.port}")

    vl = commands_of(candidate_launch("vllm", cand, a2a))
    assert [c[:2] for c in vl] == [["vllm", "serve"]] * 2
    kv = [json.loads(flags(c, "--kv-transfer-config").kv_transfer_config) for c in vl]
    assert [k["kv_connector"] for k in kv] == ["NixlConnector"] * 2
    assert [k["kv_role"] for k in kv] == ["kv_producer", "kv_consumer"]

    trt = candidate_launch("trtllm", cand, a2a)
    cmds = commands_of(trt)
    assert cmds[-1] == ["trtllm-serve", "disaggregated", "-c", "disagg_config.yaml"]
    disagg = yaml.safe_load(trt.files["disagg_config.yaml"])
    assert disagg["context_servers"]["num_instances"] == 1
    assert disagg["generation_servers"]["num_instances"] == 2  # dp 2: two instances
    assert len(disagg["generation_servers"]["urls"]) == 2
    ctx = yaml.safe_load(trt.files["prefill.trtllm.yaml"])
    gen = yaml.safe_load(trt.files["decode.trtllm.yaml"])
    assert ctx["cache_transceiver_config"]["backend"] == "NIXL"
    assert gen["cache_transceiver_config"]["backend"] == "NIXL"
    assert ctx["disable_overlap_scheduler"] is True and "disable_overlap_scheduler" not in gen
    assert [flags(c, "--extra_llm_api_options").extra_llm_api_options for c in cmds[:2]] == [
        "prefill.trtllm.yaml",
        "decode.trtllm.yaml",
    ]


def test_cp_configs(tmp_path: Path) -> None:
    plan = "candidates: {layouts: [{tp: 2, cp: 2}]}"
    spec = spec_of(tmp_path, plan, prompt="fixed, value: 120000", rate=0.2)
    space = enumerate_space(spec, 120_000.0)
    (cand,) = space.candidates
    a2a = spec.options.sglang_moe_a2a_backend
    (vl,) = commands_of(candidate_launch("vllm", cand, a2a))
    assert flags(vl, "--prefill-context-parallel-size").prefill_context_parallel_size == "2"
    trt = candidate_launch("trtllm", cand, a2a)
    (text,) = trt.files.values()
    assert yaml.safe_load(text)["context_parallel_size"] == 2
    sg = candidate_launch("sglang", cand, a2a)
    assert not sg.ok and "DSA / DeepSeek-V4-series" in sg.rule


def test_pool_engine_rules() -> None:
    dense, moe = get_model("llama-3.1-70b"), get_model("deepseek-v3")
    # TensorRT-LLM: dp replicas are dp trtllm-serve instances, behind a load balancer
    # (co-located) or behind the disaggregated server (a pool)
    assert verdict("trtllm", Layout(tp=4, dp=2), dense).ok
    assert disagg_verdict("trtllm", Layout(tp=4, dp=2), Layout(tp=2, dp=4), dense).ok
    # ... but DP-attention still needs attention TP 1; the rule names the pool
    v = disagg_verdict(
        "trtllm",
        Layout(tp=2, dp=8, ep=16, dp_attention=True),
        Layout(tp=1, dp=16, ep=16, dp_attention=True),
        moe,
    )
    assert not v.ok and v.rule.startswith("prefill pool: TensorRT-LLM enable_attention_dp")
    # vLLM's prefill context parallelism is not documented with a KV connector
    assert verdict("vllm", Layout(tp=2, cp=2), dense).ok
    assert not pool_verdict("vllm", "prefill", Layout(tp=2, cp=2), dense).ok


# --------------------------------------------------------------------------- end to end


def test_tiny_disaggregated_plan_end_to_end(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec_of(
        tmp_path,
        "max_gpus: 3, disaggregation: only, search: exhaustive, "
        "pool_serving: {prefill: {max_num_batched_tokens: 8192}}, emit: all, engines: [sglang]",
        rate=4,
        duration=3,
        ttft=2.0,
        tpot=0.05,
        name="tiny",
    )
    out = tmp_path / "results"
    rc = main(["plan", str(tmp_path / "tiny.yaml"), "--out", str(out), "--quiet"])
    text = capsys.readouterr().out
    assert rc == 0
    assert "disaggregation only (plan.disaggregation: only)" in text
    (plan_dir,) = (out / "tiny").iterdir()
    data = json.loads((plan_dir / "plan.json").read_text())
    assert data["disaggregation"] == "only"
    labels = [c["label"] for c in data["candidates"]]
    # sizes 1, 2 within 3 GPUs: (1,1), (1,2), (2,1) → 1 + 2 + 2 = 5 combinations
    assert len(labels) == 5 and all(lab.startswith("P[") for lab in labels)
    assert data["rule_of_thumb"]["layout"] in labels
    rows = data["ranking"]
    assert all(r["status"] == "simulated" and r["tp"] is None for r in rows)
    assert all(r["prefill_pool"] and r["decode_pool"] for r in rows)
    assert data["best"] is not None
    csv = (plan_dir / "plan.csv").read_text().splitlines()
    assert "prefill_pool,decode_pool" in csv[0]
    # each simulated disaggregated layout's p99s are at or above its analytic bounds
    by_label = {c["label"]: c for c in data["candidates"]}
    for r in rows:
        est = by_label[r["layout"]]["estimate"]
        assert r["tpot_p99_s"] >= est["tpot_lb_s"] and r["ttft_p99_s"] >= est["ttft_p99_lb_s"]
        summary = by_label[r["layout"]]["summary"]
        assert (
            summary["pools"]["prefill"]["gpus"] + summary["pools"]["decode"]["gpus"] == (r["gpus"])
        )
    # every simulated layout's SGLang launch script: two servers and the PD router
    for label in labels:
        script = (
            plan_dir / "launch" / label.replace("[", "_").replace("]", "_") / "sglang.sh"
        ).read_text()
        assert script.count("--disaggregation-mode") == 2 and "--pd-disaggregation" in script


def test_also_mode_keeps_colocated_and_ranks_together(tmp_path: Path) -> None:
    spec = spec_of(
        tmp_path,
        "max_gpus: 2, disaggregation: also, search: exhaustive",
        rate=4,
        duration=3,
        ttft=2.0,
        name="both",
    )
    result = run_plan(spec, tmp_path / "out", "local", quiet=True)
    kinds = {r.label: r.pools is not None for r in result.rows}
    assert kinds == {
        "tp1-pp1-dp1": False,
        "tp1-pp1-dp2": False,
        "tp1-pp2-dp1": False,
        "tp2-pp1-dp1": False,
        "P[tp1-pp1-dp1]+D[tp1-pp1-dp1]": True,
    }
    assert result.best is not None and result.best.gpus == 1  # 4 req/s: one GPU suffices


def test_cp_bounds_hold_in_simulation(tmp_path: Path) -> None:
    plan = "candidates: {layouts: [{tp: 2}, {tp: 2, cp: 2}]}, search: exhaustive, prune: false"
    # 3 req/s of 110k-token prompts for 4 s: 18 measured requests queue on one replica
    spec = spec_of(
        tmp_path,
        plan,
        prompt="fixed, value: 110000",
        rate=3,
        duration=4,
        ttft=60.0,
        tpot=1.0,
        name="cpsim",
    )
    result = run_plan(spec, tmp_path / "out", "local", quiet=True)
    rows = {r.label: r for r in result.rows}
    assert set(rows) == {"tp2-pp1-dp1", "tp2-pp1-dp1-cp2"}
    for label, row in rows.items():
        est = result.estimates[label]
        ttft, tpot = row.metric("ttft_s", "p99"), row.metric("tpot_s", "p99")
        assert ttft is not None and tpot is not None
        assert ttft >= est.ttft_p99_lb_s and tpot >= est.tpot_lb_s, label
    # CP 2 halves the per-rank prefill: its TTFT bound and simulated p50 TTFT are lower
    cp, one = rows["tp2-pp1-dp1-cp2"], rows["tp2-pp1-dp1"]
    assert result.estimates[cp.label].ttft_p99_lb_s < result.estimates[one.label].ttft_p99_lb_s
    assert (cp.metric("ttft_s", "p50") or 0.0) < (one.metric("ttft_s", "p50") or 0.0)


@pytest.mark.parametrize(
    ("name", "mode"),
    [
        ("plan_llama70b_h100x16", "auto"),
        ("plan_deepseek_v3_h800x32", "auto"),
        ("plan_deepseek_v3_disagg", "also"),
        ("plan_llama70b_long_context", "auto"),
    ],
)
def test_plan_experiments_load(name: str, mode: str) -> None:
    spec = load_plan(Path(__file__).parent.parent / "experiments" / f"{name}.yaml")
    assert spec.options.disaggregation == mode and spec.max_gpus in (16, 32)
