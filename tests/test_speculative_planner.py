"""The planner with `serving.speculative`: analytic estimates, layouts it cannot simulate, and
each engine's launch flags (docs/speculative.md)."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
import yaml

from clustersim.config.load import load_experiment
from clustersim.config.schema import Layout
from clustersim.planner.analytic import estimate, workload_stats
from clustersim.planner.engines import LaunchConfig, launch_config
from clustersim.planner.space import Candidate, enumerate_space, speculative_rule
from clustersim.planner.spec import load_plan
from clustersim.serving.speculative import mean_tokens_closed_form
from clustersim.sim.engine import build

PLAN = """
name: eng
model: {model}
topology: {topology}
precision: {{weights: fp8, activations: fp8, kv_cache: fp8}}
serving:
  max_num_seqs: 64
  speculative: {spec}
workload:
  arrival: {{process: poisson, rate_rps: 2}}
  prompt_tokens: {{dist: fixed, value: 128}}
  output_tokens: {{dist: fixed, value: 64}}
horizon: {{duration_s: 2}}
slo: {{ttft_p99_s: 1.0, tpot_p99_s: 0.1}}
plan: {{candidates: {{layouts: [{layout}]}}}}
"""

MTP = "{method: mtp, num_tokens: 2, acceptance: [0.9, 0.8]}"
EAGLE = "{method: eagle, num_tokens: 3, acceptance: 0.7}"
DRAFT = "{method: draft_model, num_tokens: 4, acceptance: 0.6, draft_model: llama-3.1-8b}"


def space(tmp_path: Path, model: str, topology: str, layout: str, spec: str) -> list[Candidate]:
    path = tmp_path / "plan.yaml"
    path.write_text(PLAN.format(model=model, topology=topology, layout=layout, spec=spec))
    found = enumerate_space(load_plan(path), 128.0)
    return list(found.candidates)


def one(tmp_path: Path, model: str, topology: str, layout: str, spec: str) -> Candidate:
    (cand,) = space(tmp_path, model, topology, layout, spec)
    return cand


def command(cfg: LaunchConfig) -> list[str]:
    body = [ln for ln in cfg.script().splitlines() if ln and not ln.startswith("#")]
    if cfg.files:
        end = max(i for i, ln in enumerate(body) if ln == "EOF")
        body = body[end + 1 :]
    return shlex.split(" ".join(body).replace("\\ ", " "))


def flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_mtp_flags_of_each_engine(tmp_path: Path) -> None:
    cand = one(tmp_path, "deepseek-v3", "h800x32_ib", "{tp: 8, pp: 2, ep: 8}", MTP)
    vllm = command(launch_config("vllm", cand.exp, cand.memory, cand.label, "auto", None))
    assert json.loads(flag(vllm, "--speculative-config")) == {
        "method": "deepseek_mtp",
        "num_speculative_tokens": 2,
    }
    sglang = command(launch_config("sglang", cand.exp, cand.memory, cand.label, "auto", None))
    assert flag(sglang, "--speculative-algorithm") == "EAGLE"
    assert flag(sglang, "--speculative-num-steps") == "2"
    assert flag(sglang, "--speculative-eagle-topk") == "1"
    assert flag(sglang, "--speculative-num-draft-tokens") == "3"
    assert "--speculative-draft-model-path" not in sglang
    trt = launch_config("trtllm", cand.exp, cand.memory, cand.label, "auto", None)
    cfg = yaml.safe_load(trt.files[flag(command(trt), "--extra_llm_api_options")])
    assert cfg["speculative_config"] == {"decoding_type": "MTP", "num_nextn_predict_layers": 2}
    assert any("acceptance [0.9, 0.8]" in n for n in trt.notes)


@pytest.mark.parametrize(
    ("spec", "vllm_cfg", "sglang_algo", "trt_cfg"),
    [
        (
            DRAFT,
            {"method": "draft_model", "model": "meta-llama/Llama-3.1-8B",
             "num_speculative_tokens": 4},
            "STANDALONE",
            {"decoding_type": "DraftTarget", "max_draft_len": 4,
             "speculative_model_dir": "meta-llama/Llama-3.1-8B"},
        ),
        (
            EAGLE,
            {"method": "eagle3", "model": "yuhuili/EAGLE3-LLaMA3.3-Instruct-70B",
             "num_speculative_tokens": 3},
            "EAGLE3",
            {"decoding_type": "Eagle", "max_draft_len": 3,
             "speculative_model_dir": "yuhuili/EAGLE3-LLaMA3.3-Instruct-70B"},
        ),
    ],
)  # fmt: skip
def test_draft_and_eagle_flags(
    tmp_path: Path,
    spec: str,
    vllm_cfg: dict[str, object],
    sglang_algo: str,
    trt_cfg: dict[str, object],
) -> None:
    cand = one(tmp_path, "llama-3.1-70b", "dgx_h100_x1", "{tp: 4}", spec)
    vllm = command(launch_config("vllm", cand.exp, cand.memory, cand.label, "auto", None))
    got = json.loads(flag(vllm, "--speculative-config"))
    assert {k: got[k] for k in vllm_cfg} == vllm_cfg
    sglang = command(launch_config("sglang", cand.exp, cand.memory, cand.label, "auto", None))
    assert flag(sglang, "--speculative-algorithm") == sglang_algo
    assert "--speculative-draft-model-path" in sglang
    trt = launch_config("trtllm", cand.exp, cand.memory, cand.label, "auto", None)
    cfg = yaml.safe_load(trt.files[flag(command(trt), "--extra_llm_api_options")])
    assert {k: cfg["speculative_config"][k] for k in trt_cfg} == trt_cfg


def test_without_speculative_no_flags(tmp_path: Path) -> None:
    cand = one(tmp_path, "llama-3.1-8b", "dgx_h100_x1", "{tp: 1}", "null")
    for engine in ("vllm", "sglang", "trtllm"):
        cfg = launch_config(engine, cand.exp, cand.memory, cand.label, "auto", None)
        assert "speculative" not in cfg.script()


def test_dp_attention_layouts_are_candidates_with_engine_flags(tmp_path: Path) -> None:
    cand = one(
        tmp_path, "deepseek-v3", "h800x32_ib", "{tp: 1, dp: 32, ep: 32, dp_attention: true}", MTP
    )
    sglang = command(launch_config("sglang", cand.exp, cand.memory, cand.label, "auto", None))
    assert "--enable-dp-attention" in sglang
    assert flag(sglang, "--speculative-algorithm") == "EAGLE"
    assert flag(sglang, "--speculative-num-draft-tokens") == "3"
    vllm = command(launch_config("vllm", cand.exp, cand.memory, cand.label, "auto", None))
    assert json.loads(flag(vllm, "--speculative-config"))["method"] == "deepseek_mtp"
    trt = launch_config("trtllm", cand.exp, cand.memory, cand.label, "auto", None)
    cfg = yaml.safe_load(trt.files[flag(command(trt), "--extra_llm_api_options")])
    assert cfg["enable_attention_dp"] is True
    assert cfg["speculative_config"]["decoding_type"] == "MTP"


def test_cp_layouts_are_not_simulated_with_it(tmp_path: Path) -> None:
    path = tmp_path / "plan.yaml"
    path.write_text(
        PLAN.format(
            model="llama-3.1-8b", topology="dgx_h100_x1", layout="{tp: 1, cp: 2}", spec=EAGLE
        )
    )
    found = enumerate_space(load_plan(path), 128.0)
    assert not found.candidates
    (rejected,) = found.rejected
    assert rejected.stage == "not simulated yet" and "context parallelism" in rejected.reason


def test_analytic_estimate_counts_tokens_per_verify_step(tmp_path: Path) -> None:
    text = PLAN.format(model="llama-3.1-8b", topology="dgx_h100_x1", layout="{tp: 1}", spec=EAGLE)
    path = tmp_path / "exp.yaml"
    path.write_text(text.replace("plan: {candidates: {layouts: [{tp: 1}]}}", ""))
    spec_exp = load_experiment(path)
    plain = spec_exp.model_copy(
        update={"serving": spec_exp.serving.model_copy(update={"speculative": None})}
    )
    stats = workload_stats(plain)
    with_spec = estimate(spec_exp, build(spec_exp), stats)
    without = estimate(plain, build(plain), stats)
    # the TPOT bound divides a (no shorter) step by the k + 1 tokens a step can emit
    assert with_spec.tpot_lb_s == pytest.approx(without.tpot_lb_s / 4)
    # at light load, TPOT ≈ verify step / E[tokens per step]: lower than plain, and not
    # lower than a plain step / E[tokens]
    m = mean_tokens_closed_form(0.7, 3)
    assert without.loaded_tpot_s / m < with_spec.loaded_tpot_s < without.loaded_tpot_s


def test_pools_are_candidates_unless_they_use_cp(tmp_path: Path) -> None:
    text = PLAN.format(model="llama-3.1-8b", topology="dgx_h100_x1", layout="{tp: 1}", spec=EAGLE)
    path = tmp_path / "exp.yaml"
    path.write_text(text.replace("plan: {candidates: {layouts: [{tp: 1}]}}", ""))
    base = load_experiment(path)
    assert speculative_rule(Layout(tp=2), base, "decode") == ""
    reason = speculative_rule(Layout(tp=1, cp=2), base, "prefill")
    assert "context parallelism" in reason and "(the prefill pool)" in reason
