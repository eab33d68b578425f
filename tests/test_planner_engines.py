"""Engine rules (each positive and negative) and the emitted launch configs, parsed back.

The flag names checked here are DESIGN.md §1's, plus the serving knobs each engine's own
argument parser defines (the planner/engines/ modules cite them)."""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path

import pytest
import yaml

from clustersim.catalog.models import get_model, load_hf_config
from clustersim.config.schema import Layout
from clustersim.planner.engines import LaunchConfig, StepTime, launch_config, verdict
from clustersim.planner.space import Candidate, enumerate_space
from clustersim.planner.spec import load_plan

DENSE = get_model("llama-3.1-70b")
MOE = get_model("deepseek-v3")


def lay(**kw: object) -> Layout:
    return Layout.model_validate(kw)


# --------------------------------------------------------------------------- rules

RULES = [
    # (engine, model, layout, a2a, ok, words in the rule)
    ("vllm", DENSE, lay(tp=8, pp=2, dp=2), "auto", True, ""),
    ("vllm", MOE, lay(tp=8, dp=4, ep=32, dp_attention=True), "auto", True, ""),
    ("vllm", MOE, lay(tp=8, ep=8), "auto", True, ""),
    ("vllm", MOE, lay(tp=8, dp=2, ep=8), "auto", False, "EP size = TP × DP = 16"),
    ("vllm", MOE, lay(tp=8, dp=2, ep=1), "auto", False, "TP group of TP × DP = 16"),
    ("vllm", MOE, lay(tp=8, ep=4, moe_tp=2), "auto", False, "no hybrid expert split"),
    (
        "vllm",
        MOE,
        lay(tp=8, ep=4),
        "auto",
        False,
        "EP size = TP × DP = 8, but the layout has ep = 4",
    ),
    ("sglang", MOE, lay(tp=8, dp=4, ep=32, dp_attention=True), "auto", True, ""),
    ("sglang", MOE, lay(tp=8, ep=4, moe_tp=2), "none", True, ""),
    ("sglang", MOE, lay(tp=8, ep=4, moe_tp=2), "deepep", False, "needs ep_size == tp_size"),
    ("sglang", MOE, lay(tp=8, ep=4, moe_tp=2), "mooncake", False, "ep = 4, tp_size = 8"),
    ("sglang", MOE, lay(tp=8, ep=8), "deepep", True, ""),
    ("sglang", MOE, lay(tp=6, ep=4), "none", False, "--ep-size 4 must divide --tp-size 6"),
    ("sglang", DENSE, lay(tp=4, dp=3), "auto", True, ""),
    ("trtllm", MOE, lay(tp=8, ep=4, moe_tp=2), "auto", True, ""),
    ("trtllm", MOE, lay(tp=8, ep=4, moe_tp=4), "auto", False, "4 × 4 = 16 must equal"),
    ("trtllm", MOE, lay(tp=8, ep=8), "auto", True, ""),
    ("trtllm", MOE, lay(tp=1, dp=8, ep=8, dp_attention=True), "auto", True, ""),
    ("trtllm", MOE, lay(tp=8, dp=4, ep=32, dp_attention=True), "auto", False, "attention TP = 1"),
    ("trtllm", DENSE, lay(tp=8, pp=2), "auto", True, ""),
    # dp > 1 independent replicas: one trtllm-serve per replica (dense, or MoE with EP inside)
    ("trtllm", DENSE, lay(tp=8, dp=2), "auto", True, ""),
    ("trtllm", MOE, lay(tp=8, dp=2, ep=8), "auto", True, ""),
    # context parallelism: vLLM --prefill-context-parallel-size (no DP yet), TensorRT-LLM
    # context_parallel_size (Ulysses: heads over tp × cp), SGLang flagged
    ("vllm", DENSE, lay(tp=2, cp=2), "auto", True, ""),
    ("vllm", DENSE, lay(tp=2, cp=2, dp=2), "auto", False, "does not support data parallelism"),
    ("sglang", DENSE, lay(tp=2, cp=2), "auto", False, "DSA / DeepSeek-V4-series"),
    ("trtllm", DENSE, lay(tp=8, cp=4), "auto", True, ""),
    ("trtllm", DENSE, lay(tp=8, cp=16), "auto", False, "tp × cp = 128"),
]


@pytest.mark.parametrize(("engine", "model", "layout", "a2a", "ok", "words"), RULES)
def test_engine_rules(
    engine: str, model: object, layout: Layout, a2a: str, ok: bool, words: str
) -> None:
    v = verdict(engine, layout, model, a2a)  # type: ignore[arg-type]
    assert v.ok is ok, v.rule
    assert words in v.rule
    if not ok:
        assert "\n" not in v.rule


def test_independent_replicas_get_a_workaround() -> None:
    v = verdict("vllm", lay(tp=8, dp=2, ep=8), MOE)
    assert "run dp = 2 independent servers" in v.workaround


# --------------------------------------------------------------------------- emitted configs

PLAN = """
name: eng
model: {model}
topology: {topology}
precision: {{weights: fp8, activations: fp8, kv_cache: fp8}}
serving: {{max_num_seqs: 128, max_num_batched_tokens: 4096, gpu_memory_utilization: 0.85}}
{extra}
workload:
  arrival: {{process: poisson, rate_rps: 2}}
  prompt_tokens: {{dist: fixed, value: 128}}
  output_tokens: {{dist: fixed, value: 16}}
horizon: {{duration_s: 2}}
slo: {{ttft_p99_s: 1.0, tpot_p99_s: 0.1}}
plan: {{candidates: {{layouts: [{layout}]}}, sglang_moe_a2a_backend: {a2a}}}
"""


def candidate(
    tmp_path: Path, model: str, topology: str, layout: str, extra: str = "", a2a: str = "auto"
) -> Candidate:
    path = tmp_path / "eng.yaml"
    path.write_text(
        PLAN.format(model=model, topology=topology, layout=layout, extra=extra, a2a=a2a)
    )
    spec = load_plan(path)
    space = enumerate_space(spec, 128.0)
    assert len(space.candidates) == 1, space.rejected
    return space.candidates[0]


def configs(
    cand: Candidate, a2a: str = "auto", step: StepTime | None = None
) -> dict[str, LaunchConfig]:
    return {
        e: launch_config(e, cand.exp, cand.memory, cand.label, a2a, step)
        for e in ("vllm", "sglang", "trtllm")
    }


def command_of(cfg: LaunchConfig) -> list[str]:
    """The command line as a shell would split the emitted script's last command."""
    script = cfg.script()
    body = [ln for ln in script.splitlines() if ln and not ln.startswith("#")]
    if cfg.files:  # skip the heredocs
        end = max(i for i, ln in enumerate(body) if ln == "EOF")
        body = body[end + 1 :]
    return shlex.split(" ".join(body).replace("\\ ", " "))


def vllm_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vllm serve", exit_on_error=False)
    p.add_argument("model")
    for flag in (
        "--tensor-parallel-size",
        "--pipeline-parallel-size",
        "--data-parallel-size",
        "--max-num-seqs",
        "--max-num-batched-tokens",
        "--gpu-memory-utilization",
        "--block-size",
        "--max-model-len",
        "--kv-cache-dtype",
        "--eplb-config",
        "--all2all-backend",
    ):
        p.add_argument(flag, required=flag.endswith("-size") and "parallel" in flag)
    for flag in (
        "--enable-expert-parallel",
        "--enable-eplb",
        "--enable-chunked-prefill",
        "--no-enable-chunked-prefill",
    ):
        p.add_argument(flag, action="store_true")
    return p


def sglang_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sglang.launch_server", exit_on_error=False)
    for flag in (
        "--model-path",
        "--tp-size",
        "--pp-size",
        "--dp-size",
        "--ep-size",
        "--moe-a2a-backend",
        "--ep-num-redundant-experts",
        "--max-running-requests",
        "--chunked-prefill-size",
        "--mem-fraction-static",
        "--page-size",
        "--context-length",
        "--kv-cache-dtype",
        "--eplb-rebalance-num-iterations",
    ):
        p.add_argument(flag)
    for flag in ("--enable-dp-attention", "--enable-eplb"):
        p.add_argument(flag, action="store_true")
    return p


def trtllm_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="trtllm-serve", exit_on_error=False)
    p.add_argument("model")
    for flag in (
        "--backend",
        "--tp_size",
        "--pp_size",
        "--ep_size",
        "--max_batch_size",
        "--max_num_tokens",
        "--max_seq_len",
        "--kv_cache_free_gpu_memory_fraction",
        "--extra_llm_api_options",
    ):
        p.add_argument(flag)
    return p


def parse(cfg: LaunchConfig) -> argparse.Namespace:
    argv = command_of(cfg)
    if cfg.engine == "vllm":
        assert argv[:2] == ["vllm", "serve"]
        return vllm_parser().parse_args(argv[2:])
    if cfg.engine == "sglang":
        assert argv[:3] == ["python", "-m", "sglang.launch_server"]
        return sglang_parser().parse_args(argv[3:])
    assert argv[0] == "trtllm-serve"
    return trtllm_parser().parse_args(argv[1:])


def test_dense_commands_parse_with_design_flag_names(tmp_path: Path) -> None:
    cand = candidate(tmp_path, "llama-3.1-8b", "dgx_h100_x1", "{tp: 2, pp: 2, dp: 2}")
    cfgs = configs(cand)
    v = parse(cfgs["vllm"])
    assert (v.tensor_parallel_size, v.pipeline_parallel_size, v.data_parallel_size) == (
        "2",
        "2",
        "2",
    )
    assert not v.enable_expert_parallel and v.enable_chunked_prefill
    assert (v.max_num_seqs, v.max_num_batched_tokens, v.gpu_memory_utilization) == (
        "128",
        "4096",
        "0.850",
    )
    assert v.kv_cache_dtype == "fp8"
    s = parse(cfgs["sglang"])
    assert (s.tp_size, s.pp_size, s.dp_size, s.ep_size) == ("2", "2", "2", None)
    assert s.max_running_requests == "128" and s.chunked_prefill_size == "4096"
    assert s.kv_cache_dtype == "fp8_e4m3" and 0 < float(s.mem_fraction_static) <= 0.85
    # TensorRT-LLM: one replica's command and YAML (tp 2, pp 2, no DP flag), run dp = 2 times
    trt = cfgs["trtllm"]
    t = parse(trt)
    assert (t.tp_size, t.pp_size, t.ep_size) == ("2", "2", None)
    assert t.extra_llm_api_options == f"{cand.label}.trtllm.yaml"
    y = yaml.safe_load(trt.files[t.extra_llm_api_options])
    assert (y["tensor_parallel_size"], y["pipeline_parallel_size"]) == (2, 2)
    assert "enable_attention_dp" not in y and "moe_expert_parallel_size" not in y
    assert trt.notes[0].startswith("one trtllm-serve is one replica")
    assert "run dp = 2 copies of this command, one per replica's 4 GPUs" in trt.notes[0]
    assert "behind a load balancer" in trt.notes[0] and f"# note: {trt.notes[0]}" in trt.script()


def test_dp_attention_commands(tmp_path: Path) -> None:
    cand = candidate(
        tmp_path, "deepseek-v3", "h800x32_ib", "{tp: 8, dp: 4, ep: 32, dp_attention: true}"
    )
    cfgs = configs(cand)
    v = parse(cfgs["vllm"])
    # vLLM: EP size = TP × DP
    assert v.enable_expert_parallel
    assert int(v.tensor_parallel_size) * int(v.data_parallel_size) == cand.layout.ep == 32
    s = parse(cfgs["sglang"])
    assert s.enable_dp_attention and (s.tp_size, s.dp_size, s.ep_size) == ("32", "4", "32")
    assert s.moe_a2a_backend == "deepep" and s.ep_size == s.tp_size
    # SGLang divides these by --dp-size under DP-attention: totals over the 4 ranks
    assert s.max_running_requests == str(128 * 4) and s.chunked_prefill_size == str(4096 * 4)
    # TensorRT-LLM's enable_attention_dp needs attention TP 1: the same 32 GPUs as 32 ranks
    trt = cfgs["trtllm"]
    assert not trt.ok and "attention TP = 1" in trt.rule
    assert trt.nearest.startswith("tp=1 pp=1 dp=32 ep=32 dp_attention (same 32 GPUs")
    assert f"# nearest layout trtllm can express: {trt.nearest}" in trt.script()


def test_trtllm_yaml_keeps_moe_tp_times_ep_equal_to_tp(tmp_path: Path) -> None:
    cand = candidate(tmp_path, "deepseek-v3", "h800x32_ib", "{tp: 8, pp: 2, ep: 4, moe_tp: 2}")
    cfgs = configs(cand, a2a="none")
    t = parse(cfgs["trtllm"])
    ((name, text),) = cfgs["trtllm"].files.items()
    assert t.extra_llm_api_options == name and (t.tp_size, t.pp_size, t.ep_size) == ("8", "2", "4")
    cfg = yaml.safe_load(text)
    assert (
        cfg["moe_tensor_parallel_size"] * cfg["moe_expert_parallel_size"]
        == (cfg["tensor_parallel_size"])
        == 8
    )
    assert cfg["pipeline_parallel_size"] == 2 and cfg["enable_attention_dp"] is False
    assert cfg["kv_cache_config"]["dtype"] == "fp8"
    assert 0 < cfg["kv_cache_config"]["free_gpu_memory_fraction"] <= 1
    assert t.kv_cache_free_gpu_memory_fraction == (
        f"{cfg['kv_cache_config']['free_gpu_memory_fraction']:.3f}"
    )
    # the script writes the YAML next to the command
    assert f"cat > {name} <<'EOF'" in cfgs["trtllm"].script()
    assert not cfgs["vllm"].ok  # no hybrid expert split in vLLM
    s = parse(cfgs["sglang"])
    assert (s.tp_size, s.ep_size, s.moe_a2a_backend) == ("8", "4", None)


EPLB = "experts: {{eplb: {{redundant_experts: 32, rebalance_interval_s: {interval}}}}}"
WIDE_EP = "{tp: 1, dp: 16, ep: 16, dp_attention: true}"  # every engine runs it


def test_eplb_interval_in_each_engines_steps(tmp_path: Path) -> None:
    cand = candidate(tmp_path, "deepseek-v3", "h800x32_ib", WIDE_EP, EPLB.format(interval=60))
    # 60 s at 50 ms per step = 1200 steps, in each engine's own terms
    cfgs = configs(cand, step=StepTime(0.05, "simulated mean TPOT of x"))
    line = "EPLB: rebalance every 60 s = 1200 steps at 50.00 ms per step (simulated mean TPOT of x)"
    v = parse(cfgs["vllm"])
    assert v.enable_eplb and json.loads(v.eplb_config) == {
        "window_size": 1200,
        "step_interval": 1200,
        "num_redundant_experts": 32,
    }
    s = parse(cfgs["sglang"])
    assert s.enable_eplb and s.ep_num_redundant_experts == "32"
    assert s.eplb_rebalance_num_iterations == "1200"
    trt = cfgs["trtllm"]
    (text,) = trt.files.values()
    assert text.splitlines()[0] == f"# {line}"  # the YAML says the conversion too
    # 256 experts + 32 redundant slots; one of DeepSeek-V3's 58 MoE layers per iteration is
    # the slowest online cadence TensorRT-LLM has (a full pass every 58 iterations)
    assert yaml.safe_load(text)["moe_config"] == {
        "load_balancer": {"num_slots": 288, "layer_updates_per_iter": 1}
    }
    assert "every 58 iterations — faster than the simulated 1200" in trt.script()
    for cfg in cfgs.values():
        assert f"# note: {line}" in cfg.script()


def test_eplb_without_a_step_time_or_rebalancing(tmp_path: Path) -> None:
    cand = candidate(tmp_path, "deepseek-v3", "h800x32_ib", WIDE_EP, EPLB.format(interval=60))
    cfgs = configs(cand)  # no step time: the interval stays the engines' default
    assert json.loads(parse(cfgs["vllm"]).eplb_config) == {"num_redundant_experts": 32}
    assert parse(cfgs["sglang"]).eplb_rebalance_num_iterations is None
    assert "not converted to engine steps" in cfgs["sglang"].script()
    static = candidate(tmp_path, "deepseek-v3", "h800x32_ib", WIDE_EP, EPLB.format(interval=0))
    trt = configs(static, step=StepTime(0.05, "x"))["trtllm"]
    (text,) = trt.files.values()
    balancer = yaml.safe_load(text)["moe_config"]["load_balancer"]
    assert balancer == {"num_slots": 288, "layer_updates_per_iter": 0}  # 0: static placement
    assert "the simulation never rebalances" in text.splitlines()[0]


def test_trtllm_moe_replicas_are_one_server_each(tmp_path: Path) -> None:
    # dp = 2 independent replicas with EP 8 inside each: not DP-attention
    cand = candidate(tmp_path, "deepseek-v3", "h800x32_ib", "{tp: 8, pp: 2, dp: 2, ep: 8}")
    trt = configs(cand)["trtllm"]
    t = parse(trt)
    (text,) = trt.files.values()
    y = yaml.safe_load(text)
    assert (t.tp_size, t.ep_size) == ("8", "8") and y["enable_attention_dp"] is False
    assert (y["tensor_parallel_size"], y["moe_expert_parallel_size"]) == (8, 8)
    assert y["moe_tensor_parallel_size"] == 1
    assert "run dp = 2 copies of this command, one per replica's 16 GPUs" in trt.notes[0]


def test_nearest_expressible_layouts(tmp_path: Path) -> None:
    # SGLang DeepEP needs ep_size == tp_size; vLLM has no moe_tp × ep split
    cand = candidate(tmp_path, "deepseek-v3", "h800x32_ib", "{tp: 8, pp: 2, ep: 4, moe_tp: 2}")
    cfgs = configs(cand, a2a="deepep")
    assert not cfgs["sglang"].ok and cfgs["sglang"].nearest.startswith("tp=8 pp=2 dp=1 ep=8 ")
    assert not cfgs["vllm"].ok and cfgs["vllm"].nearest.startswith("tp=8 pp=2 dp=1 ep=8 ")
    assert cfgs["vllm"].to_json()["nearest"] == cfgs["vllm"].nearest
    # SGLang emits no context parallelism: the CP ranks become tensor parallelism
    cp = candidate(tmp_path, "llama-3.1-8b", "dgx_h100_x1", "{tp: 2, cp: 2}")
    sg = configs(cp)["sglang"]
    assert not sg.ok and sg.nearest.startswith("tp=4 pp=1 dp=1 (same 4 GPUs")
    # expressible layouts carry none
    assert all(c.nearest == "" for c in configs(cp).values() if c.ok)


def test_model_id_is_the_hf_id_else_the_name(tmp_path: Path) -> None:
    cand = candidate(tmp_path, "llama-3.1-8b", "dgx_h100_x1", "{tp: 1}")
    assert cand.exp.model.hf_id == "meta-llama/Llama-3.1-8B"  # the HF config's _name_or_path
    hf_dir = tmp_path / "my-llama"
    hf_dir.mkdir()
    cfg = {
        "_name_or_path": "acme/llama-ft",
        "num_hidden_layers": 32,
        "hidden_size": 4096,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "intermediate_size": 14336,
        "vocab_size": 128256,
    }
    (hf_dir / "config.json").write_text(json.dumps(cfg))
    model = load_hf_config(hf_dir / "config.json")
    assert model.hf_id == "acme/llama-ft"
    for m, want in (
        (model, "acme/llama-ft"),
        (model.model_copy(update={"hf_id": "acme/explicit"}), "acme/explicit"),
        (model.model_copy(update={"hf_id": ""}), "my-llama"),
    ):
        exp = cand.exp.model_copy(update={"model": m})
        cfgs = {e: launch_config(e, exp, cand.memory, "x") for e in ("vllm", "sglang", "trtllm")}
        assert parse(cfgs["vllm"]).model == want and parse(cfgs["trtllm"]).model == want
        assert parse(cfgs["sglang"]).model_path == want


def test_trtllm_dp_attention_with_attention_tp_1(tmp_path: Path) -> None:
    cand = candidate(
        tmp_path, "deepseek-v3", "h800x32_ib", "{tp: 1, dp: 16, ep: 16, dp_attention: true}"
    )
    cfg = configs(cand)["trtllm"]
    assert cfg.ok
    t = parse(cfg)
    (text,) = cfg.files.values()
    y = yaml.safe_load(text)
    assert y["enable_attention_dp"] is True and y["tensor_parallel_size"] == 16
    assert y["moe_expert_parallel_size"] * y["moe_tensor_parallel_size"] == 16
    assert t.tp_size == "16" and t.ep_size == "16"


def test_vllm_ep_sets_the_deepep_backend_and_mla_blocks_of_64(tmp_path: Path) -> None:
    cand = candidate(tmp_path, "deepseek-v3", "h800x32_ib", "{tp: 8, dp: 4, ep: 32}")
    assert cand.exp.model.uses_mla and cand.exp.serving.block_size != 64
    cfgs = configs(cand)
    v = parse(cfgs["vllm"])
    assert v.all2all_backend == "deepep_high_throughput" and v.block_size == "64"
    assert any("deepep_low_latency" in n for n in cfgs["vllm"].notes)
    assert parse(cfgs["sglang"]).page_size == "64"


def test_dense_non_mla_keeps_its_block_size(tmp_path: Path) -> None:
    cand = candidate(tmp_path, "llama-3.1-70b", "h100x16_ib", "{tp: 8, dp: 2}")
    v = parse(configs(cand)["vllm"])
    assert v.block_size == str(cand.exp.serving.block_size) and v.all2all_backend is None
