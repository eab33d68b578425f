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

from clustersim.catalog.models import get_model
from clustersim.config.schema import Layout
from clustersim.planner.engines import LaunchConfig, launch_config, verdict
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
    ("trtllm", DENSE, lay(tp=8, dp=2), "auto", False, "no data-parallel replica flag"),
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
    v = verdict("trtllm", lay(tp=8, dp=2), DENSE)
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


def configs(cand: Candidate, a2a: str = "auto") -> dict[str, LaunchConfig]:
    return {
        e: launch_config(e, cand.exp, cand.memory, cand.label, a2a)
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
        "--tensor-parallel-size", "--pipeline-parallel-size", "--data-parallel-size",
        "--max-num-seqs", "--max-num-batched-tokens", "--gpu-memory-utilization",
        "--block-size", "--max-model-len", "--kv-cache-dtype", "--eplb-config",
        "--all2all-backend",
    ):
        p.add_argument(flag, required=flag.endswith("-size") and "parallel" in flag)
    for flag in ("--enable-expert-parallel", "--enable-eplb", "--enable-chunked-prefill",
                 "--no-enable-chunked-prefill"):
        p.add_argument(flag, action="store_true")
    return p


def sglang_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sglang.launch_server", exit_on_error=False)
    for flag in (
        "--model-path", "--tp-size", "--pp-size", "--dp-size", "--ep-size",
        "--moe-a2a-backend", "--ep-num-redundant-experts", "--max-running-requests",
        "--chunked-prefill-size", "--mem-fraction-static", "--page-size", "--context-length",
        "--kv-cache-dtype",
    ):
        p.add_argument(flag)
    for flag in ("--enable-dp-attention", "--enable-eplb"):
        p.add_argument(flag, action="store_true")
    return p


def trtllm_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="trtllm-serve", exit_on_error=False)
    p.add_argument("model")
    for flag in (
        "--backend", "--tp_size", "--pp_size", "--ep_size", "--max_batch_size",
        "--max_num_tokens", "--max_seq_len", "--kv_cache_free_gpu_memory_fraction",
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
        "2", "2", "2",
    )
    assert not v.enable_expert_parallel and v.enable_chunked_prefill
    assert (v.max_num_seqs, v.max_num_batched_tokens, v.gpu_memory_utilization) == (
        "128", "4096", "0.850",
    )
    assert v.kv_cache_dtype == "fp8"
    s = parse(cfgs["sglang"])
    assert (s.tp_size, s.pp_size, s.dp_size, s.ep_size) == ("2", "2", "2", None)
    assert s.max_running_requests == "128" and s.chunked_prefill_size == "4096"
    assert s.kv_cache_dtype == "fp8_e4m3" and 0 < float(s.mem_fraction_static) <= 0.85
    assert not cfgs["trtllm"].ok and "no data-parallel replica flag" in cfgs["trtllm"].rule
    assert cfgs["trtllm"].argv == ()


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
    assert not cfgs["trtllm"].ok and "attention TP = 1" in cfgs["trtllm"].rule


def test_trtllm_yaml_keeps_moe_tp_times_ep_equal_to_tp(tmp_path: Path) -> None:
    cand = candidate(tmp_path, "deepseek-v3", "h800x32_ib", "{tp: 8, pp: 2, ep: 4, moe_tp: 2}")
    cfgs = configs(cand, a2a="none")
    t = parse(cfgs["trtllm"])
    (name, text), = cfgs["trtllm"].files.items()
    assert t.extra_llm_api_options == name and (t.tp_size, t.pp_size, t.ep_size) == ("8", "2", "4")
    cfg = yaml.safe_load(text)
    assert cfg["moe_tensor_parallel_size"] * cfg["moe_expert_parallel_size"] == (
        cfg["tensor_parallel_size"]
    ) == 8
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


def test_eplb_flags(tmp_path: Path) -> None:
    cand = candidate(
        tmp_path,
        "deepseek-v3",
        "h800x32_ib",
        "{tp: 8, dp: 4, ep: 32, dp_attention: true}",
        extra="experts: {eplb: {redundant_experts: 32, rebalance_interval_s: 60}}",
    )
    cfgs = configs(cand)
    v = parse(cfgs["vllm"])
    assert v.enable_eplb and json.loads(v.eplb_config) == {"num_redundant_experts": 32}
    s = parse(cfgs["sglang"])
    assert s.enable_eplb and s.ep_num_redundant_experts == "32"


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
