"""Issue 12's seed corpus: every malformed or extreme input gets exit 2 and one clean line
naming the file and the key path, with nothing written (docs/architecture.md, bad inputs)."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from clustersim import cli
from clustersim.cli.signals import Terminated
from clustersim.results import report as results_report

BASE = """\
name: tiny
seed: 3
model: llama-3.1-8b
topology: dgx_h100_x1
layout: {tp: 1, dp: 1}
serving: {max_num_seqs: 8}
workload:
  arrival: {process: poisson, rate_rps: 20}
  prompt_tokens: {dist: fixed, value: 128}
  output_tokens: {dist: fixed, value: 8}
horizon: {requests: 12}
slo: {ttft_p99_s: 1.0, tpot_p99_s: 0.1}
"""


def edit(old: str, new: str) -> str:
    assert old in BASE
    return BASE.replace(old, new)


MOE = edit("model: llama-3.1-8b", "model: mixtral-8x7b").replace(
    "layout: {tp: 1, dp: 1}", "layout: {tp: 4, ep: 4, dp: 2}"
)
TRACE_WL = "workload:\n  arrival: {process: trace}\n  trace: {path: t.csv, format: azure}\n"
HEADER = "TIMESTAMP,ContextTokens,GeneratedTokens\n"
ROW = "2023-11-16 18:15:46.6805900,{},{}\n"

# id → (experiment text, extra files {name: content}, --set overrides, expected substrings)
CASES: dict[str, tuple[str, dict[str, str | bytes], list[str], list[str]]] = {
    "bool_as_int": (
        edit("max_num_seqs: 8", "max_num_seqs: true"),
        {},
        [],
        ["serving.max_num_seqs"],
    ),
    "str_seed": (edit("seed: 3", "seed: '7'"), {}, [], ["seed"]),
    "set_base_dir": (BASE, {}, ["base_dir=/etc"], ["--set", "base_dir"]),
    "set_unknown_key": (BASE, {}, ["serving.max_num_seqz=3"], ["--set", "max_num_seqz"]),
    "hardware_without_nvlink": (
        edit(
            "topology: dgx_h100_x1",
            "topology: dgx_h100_x1\nhardware: {name: g, memory_GiB: 80, "
            "hbm_bandwidth_GBps: 3350, peak_tflops: {bf16: 989}}",
        ),
        {},
        [],
        ["hardware.nvlink_bandwidth_GBps", "has NVLink"],
    ),
    "operator_table_unknown": (BASE, {}, ["hardware.operator_table=h300"], ["operator_table"]),
    "no_16_bit_peak": (BASE, {}, ["hardware.peak_tflops={fp8: 1979}"], ["hardware.peak_tflops"]),
    "tiny_nvlink": (BASE, {}, ["topology.nvlink.bandwidth_GBps=1e-300"], ["nvlink.bandwidth_GBps"]),
    "absurd_nvlink_latency": (BASE, {}, ["topology.nvlink.latency_us=1e300"], ["latency_us"]),
    "tiny_bandwidth": (BASE, {}, ["hardware.hbm_bandwidth_GBps=1e-300"], ["hbm_bandwidth_GBps"]),
    "absurd_memory": (BASE, {}, ["hardware.memory_GiB=1e300"], ["hardware.memory_GiB"]),
    "absurd_step_overhead": (
        BASE,
        {},
        ["hardware.step_overhead_us=1e15"],
        ["hardware.step_overhead_us"],
    ),
    "operator_table_bad_row": (
        edit(
            "topology: dgx_h100_x1",
            "topology: dgx_h100_x1\nhardware: {name: g, "
            "memory_GiB: 80, hbm_bandwidth_GBps: 3350, nvlink_bandwidth_GBps: 450, "
            "peak_tflops: {bf16: 989}, operator_table: t.csv}",
        ),
        {"t.csv": "family,dtype,k,n,batch,m,us\ngemm,bf16,1,2,1,1,nan\n"},
        [],
        ["t.csv", "line 2"],
    ),
    "nan_value": (edit("rate_rps: 20", "rate_rps: .nan"), {}, [], ["workload.arrival.rate_rps"]),
    "huge_fixed": (edit("value: 128", "value: 1.0e+30"), {}, [], ["workload.prompt_tokens.value"]),
    "huge_requests": (
        edit("requests: 12", "requests: 100000000000000000000"),
        {},
        [],
        ["horizon.requests"],
    ),
    "lognormal_min_gt_max": (
        edit(
            "{dist: fixed, value: 128}",
            "{dist: lognormal, median: 100, sigma: 1, min: 500, max: 200}",
        ),
        {},
        [],
        ["workload.prompt_tokens"],
    ),
    "burst_with_duration": (
        edit("arrival: {process: poisson, rate_rps: 20}", "arrival: {process: burst}").replace(
            "horizon: {requests: 12}", "horizon: {duration_s: 10}"
        ),
        {},
        [],
        ["horizon"],
    ),
    "long_name": (edit("name: tiny", "name: " + "x" * 300), {}, [], ["name"]),
    "trace_missing_column": (
        edit(BASE[BASE.index("workload:") : BASE.index("horizon")], TRACE_WL),
        {"t.csv": "TIMESTAMP,ContextTokens\n2023-11-16 18:15:46.6805900,5\n"},
        [],
        ["t.csv", "GeneratedTokens"],
    ),
    "trace_empty": (
        edit(BASE[BASE.index("workload:") : BASE.index("horizon")], TRACE_WL),
        {"t.csv": ""},
        [],
        ["t.csv"],
    ),
    "trace_header_only": (
        edit(BASE[BASE.index("workload:") : BASE.index("horizon")], TRACE_WL),
        {"t.csv": HEADER},
        [],
        ["t.csv"],
    ),
    "trace_binary": (
        edit(BASE[BASE.index("workload:") : BASE.index("horizon")], TRACE_WL),
        {"t.csv": bytes(range(256)) * 8},
        [],
        ["t.csv"],
    ),
    "trace_non_numeric": (
        edit(BASE[BASE.index("workload:") : BASE.index("horizon")], TRACE_WL),
        {"t.csv": HEADER + ROW.format(5, 6) + ROW.format("abc", 6)},
        [],
        ["t.csv", "row 2", "ContextTokens"],
    ),
    "trace_fractional": (
        edit(BASE[BASE.index("workload:") : BASE.index("horizon")], TRACE_WL),
        {"t.csv": HEADER + ROW.format(5.5, 6)},
        [],
        ["t.csv", "ContextTokens"],
    ),
    "trace_five_centuries": (
        edit(BASE[BASE.index("workload:") : BASE.index("horizon")], TRACE_WL),
        {"t.csv": HEADER + "1700-01-01 00:00:00.0,37,4\n" + "2200-01-01 00:00:00.0,37,4\n"},
        [],
        ["t.csv", "292 years"],
    ),
    "trace_year_3000": (
        edit(BASE[BASE.index("workload:") : BASE.index("horizon")], TRACE_WL),
        {"t.csv": HEADER + "3000-01-01 00:00:00.0,37,4\n"},
        [],
        ["t.csv", "between 1678 and 2261"],
    ),
    "trace_one_row_cycled": (
        edit(BASE[BASE.index("workload:") : BASE.index("horizon")], TRACE_WL),
        {"t.csv": HEADER + ROW.format(5, 6)},
        [],
        ["horizon.requests", "one-row trace"],
    ),
    "empirical_infinite_weights": (
        edit(
            "prompt_tokens: {dist: fixed, value: 128}",
            "prompt_tokens: {dist: empirical, values: [8, 16], weights: [1.0e+308, 1.0e+308]}",
        ),
        {},
        [],
        ["workload.prompt_tokens", "finite"],
    ),
    "engine_override_absurd": (
        BASE,
        {},
        ["serving.engine_overrides={host_step_us: 1.0e+300}"],
        ["serving.engine_overrides", "host_step_us"],
    ),
    "session_turns_absurd": (
        edit(
            BASE[BASE.index("workload:") : BASE.index("horizon")],
            "workload:\n  arrival: {process: sessions}\n  sessions:\n"
            "    session_rate_rps: 5\n    classes:\n"
            "      - {name: a, first_user_tokens: {median: 10}, user_tokens: {median: 10},\n"
            "         output_tokens: {median: 10}, turns_mean: 1.0e+300, max_turns: 200000000}\n",
        ),
        {},
        [],
        ["workload.sessions.classes.0.turns_mean"],
    ),
    "session_prompt_pool_absurd": (
        edit(
            BASE[BASE.index("workload:") : BASE.index("horizon")],
            "workload:\n  arrival: {process: sessions}\n  sessions:\n"
            "    session_rate_rps: 5\n    system_prompts: {count: 2147483647}\n",
        ),
        {},
        [],
        ["workload.sessions.system_prompts.count"],
    ),
    "draft_tokens_beyond_16": (
        BASE,
        {},
        [
            "serving.speculative={method: draft_model, draft_model: llama-3.1-8b, "
            "num_tokens: 100000, acceptance: 0.5}"
        ],
        ["serving.speculative.num_tokens", "16"],
    ),
    "prefix_host_memory_absurd": (
        BASE,
        {},
        ["serving.prefix_caching={host_memory_GB: 1.0e+300}"],
        ["serving.prefix_caching.host_memory_GB"],
    ),
    "fault_speed_absurd": (
        BASE
        + "faults: {events: [{kind: gpu_slowdown, target: n0.g0, compute_factor: 1.0e-300}]}\n",
        {},
        [],
        ["faults.events.0.compute_factor"],
    ),
    "pool_max_model_len_beyond_context": (
        BASE
        + "disaggregation:\n  prefill: {layout: {tp: 1, dp: 1}}\n"
        + "  decode: {layout: {tp: 1, dp: 1}, serving: {max_model_len: 99999999}}\n",
        {},
        [],
        ["disaggregation.decode.serving.max_model_len"],
    ),
    "random_faults_mtbf_tiny": (
        BASE + "faults:\n  random:\n    - {component: gpu, mtbf_s: 1.0e-300, repair_mean_s: 1}\n",
        {},
        [],
        ["faults.random.0.mtbf_s"],
    ),
    "popularity_rows_overflow": (
        MOE + "experts: {routing: {distribution: trace, path: pop.csv}}\n",
        {"pop.csv": ",".join(["1e308"] * 8) + "\n"},
        [],
        ["pop.csv", "finite"],
    ),
    "popularity_not_yaml": (
        MOE + "experts: {routing: {distribution: trace, path: pop.yaml}}\n",
        {"pop.yaml": "popularity: [1, 2\n  - ]: x\n"},
        [],
        ["pop.yaml", "cannot read the popularity table"],
    ),
    "yaml_alias_bomb": (
        BASE
        + "a: &a [x, x, x, x, x, x, x, x, x]\n"
        + "".join(
            f"{n}: &{n} [{', '.join(['*' + p] * 9)}]\n"
            for p, n in zip("abcdefgh", "bcdefghi", strict=True)
        ),
        {},
        [],
        ["exp.yaml", "aliases"],
    ),
    "replicates_absurd": (BASE + "replicates: 2147483647\n", {}, [], ["replicates"]),
    "warmup_past_duration": (
        edit("requests: 12", "duration_s: 10, warmup_s: 20"),
        {},
        [],
        ["horizon.warmup_s", "nothing would be measured"],
    ),
    "trace_replay_span_absurd": (
        edit(
            BASE[BASE.index("workload:") : BASE.index("horizon")],
            TRACE_WL.replace("format: azure}", "format: azure, time_scale: 1.0e+8}"),
        ),
        {"t.csv": HEADER + ROW.format(5, 6) + ROW.replace("46.68", "47.68").format(5, 6)},
        [],
        ["workload.trace.time_scale", "time bins"],
    ),
    "trace_absurd_tokens": (
        edit(BASE[BASE.index("workload:") : BASE.index("horizon")], TRACE_WL),
        {"t.csv": HEADER + ROW.format("1e30", 6)},
        [],
        ["t.csv", "ContextTokens"],
    ),
    "trace_bad_timestamp": (
        edit(BASE[BASE.index("workload:") : BASE.index("horizon")], TRACE_WL),
        {"t.csv": HEADER + "yesterday,5,6\n"},
        [],
        ["t.csv", "TIMESTAMP"],
    ),
    "trace_huge_header": (
        edit(BASE[BASE.index("workload:") : BASE.index("horizon")], TRACE_WL),
        {"t.csv": ",".join(f"c{i}" for i in range(2_000_000)) + "\n"},
        [],
        ["t.csv"],
    ),
    "deep_nesting": (BASE + "extra: " + "[" * 20000 + "]" * 20000 + "\n", {}, [], ["exp.yaml"]),
    "alias_bomb": (
        BASE.replace("serving: {max_num_seqs: 8}", "serving: {max_num_seqs: *i}").replace(
            "name: tiny",
            "name: tiny\n"
            + "".join(
                f"x{k}: &{'a' + str(k)} ["
                + ", ".join([f"*a{k - 1}"] * 9 if k else ["lol"] * 9)
                + "]\n"
                for k in range(9)
            )
            + "i: &i *a8",
        ),
        {},
        [],
        ["exp.yaml"],
    ),
    "nics_not_multiple": (
        edit(
            "topology: dgx_h100_x1",
            "topology: {name: t, nodes: 2, gpus_per_node: 8, "
            "gpu: h100-sxm, network: {nics_per_node: 12}}",
        ),
        {},
        [],
        ["topology.network.nics_per_node"],
    ),
    "max_model_len": (
        edit("max_num_seqs: 8", "max_num_seqs: 8, max_model_len: 10000000"),
        {},
        [],
        ["serving.max_model_len"],
    ),
    "hf_zero_heads": (
        edit("model: llama-3.1-8b", "model: m/config.json"),
        {
            "m/config.json": '{"hidden_size": 64, "num_hidden_layers": 2,'
            ' "num_attention_heads": 0, "num_key_value_heads": 1,'
            ' "intermediate_size": 128, "vocab_size": 100}'
        },
        [],
        ["config.json", "num_attention_heads"],
    ),
    "hf_huge_layers": (
        edit("model: llama-3.1-8b", "model: m/config.json"),
        {
            "m/config.json": '{"hidden_size": 64, "num_hidden_layers": 1e400,'
            ' "num_attention_heads": 8, "num_key_value_heads": 1,'
            ' "intermediate_size": 128, "vocab_size": 100}'
        },
        [],
        ["config.json", "num_hidden_layers"],
    ),
    "hf_int_beyond_float": (
        edit("model: llama-3.1-8b", "model: m/config.json"),
        {
            "m/config.json": '{"hidden_size": 64, "num_hidden_layers": 1' + "0" * 400 + ","
            ' "num_attention_heads": 8, "num_key_value_heads": 1,'
            ' "intermediate_size": 128, "vocab_size": 100}'
        },
        [],
        ["config.json", "num_hidden_layers"],
    ),
    "hf_zero_expert_size": (
        edit("model: llama-3.1-8b", "model: m/config.json"),
        {
            "m/config.json": '{"num_hidden_layers": 2, "hidden_size": 64,'
            ' "num_attention_heads": 8, "intermediate_size": 128, "vocab_size": 100,'
            ' "num_experts": 4, "num_experts_per_tok": 2,'
            ' "shared_expert_intermediate_size": 5, "moe_intermediate_size": 0}'
        },
        [],
        ["config.json", "moe_intermediate_size"],
    ),
    "gamma_cv_huge": (
        edit("{process: poisson, rate_rps: 20}", "{process: gamma, rate_rps: 20, cv: 1.0e+5}"),
        {},
        [],
        ["workload.arrival.cv"],
    ),
    "gamma_cv_tiny": (
        edit("{process: poisson, rate_rps: 20}", "{process: gamma, rate_rps: 20, cv: 1.0e-200}"),
        {},
        [],
        ["workload.arrival.cv"],
    ),
    "mmpp_dwell_tiny": (
        edit(
            "{process: poisson, rate_rps: 20}",
            "{process: mmpp, rates_rps: [5, 5], mean_dwell_s: [1.0e-300, 1]}",
        ),
        {},
        [],
        ["workload.arrival.mean_dwell_s"],
    ),
    "mmpp_many_periods": (
        edit(
            "{process: poisson, rate_rps: 20}",
            "{process: mmpp, rates_rps: [5, 5], mean_dwell_s: [0.001, 0.001]}",
        )
        + "limits: {max_requests: 1000}\n",
        {},
        [],
        ["MMPP dwell periods"],
    ),
    "rate_tiny_with_requests": (
        edit("rate_rps: 20", "rate_rps: 1.0e-9"),
        {},
        [],
        ["workload.arrival", "time bins"],
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_one_line(case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text, files, sets, expected = CASES[case]
    for name, content in files.items():
        p = tmp_path / name
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            p.write_bytes(content)
        else:
            p.write_text(content)
    exp = tmp_path / "exp.yaml"
    exp.write_text(text)
    before = sorted(tmp_path.rglob("*"))
    args = [x for s in sets for x in ("--set", s)]
    for command in (
        ["validate", str(exp)],
        ["run", str(exp), "--out", str(tmp_path / "out"), "--quiet"],
    ):
        assert cli.main([*command, *args]) == 2, command
        err = capsys.readouterr().err
        assert "Traceback" not in err and "pydantic.dev" not in err
        lines = err.strip().splitlines()
        assert len(lines) == 1, err
        assert lines[0].startswith("clustersim: error: ")
        for word in expected:
            assert word in lines[0], (word, lines[0])
        assert sorted(tmp_path.rglob("*")) == before


# --------------------------------------------------------------------------- resource limits

LIMIT_CASES = {
    "requests": (["horizon={duration_s: 1e10}"], "limits.max_requests"),
    "time_bins": (["horizon={duration_s: 100}", "output.time_bin_s=1e-9"], "limits.max_time_bins"),
    "gpus": (
        [
            "topology={name: big, nodes: 1000000, gpus_per_node: 8, gpu: h100-sxm,"
            " network: {nics_per_node: 8}}"
        ],
        "limits.max_gpus",
    ),
    "sweep": (
        [
            "sweep={seed: ["
            + ",".join(map(str, range(200)))
            + "], layout.dp: ["
            + ",".join(map(str, range(1, 101)))
            + "]}"
        ],
        "limits.max_sweep_points",
    ),
}


@pytest.mark.parametrize("case", sorted(LIMIT_CASES))
def test_resource_limits_refuse_with_the_numbers(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    exp = tmp_path / "exp.yaml"
    exp.write_text(BASE)
    sets, limit_key = LIMIT_CASES[case]
    args = [x for s in sets for x in ("--set", s)]
    assert cli.main(["validate", str(exp), *args]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert f"--set {limit_key}=N" in line and "above the limit of" in line


def test_a_raised_limit_lets_the_run_through(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    exp = tmp_path / "exp.yaml"
    exp.write_text(BASE)
    sets = ["horizon={duration_s: 10}", "output.time_bin_s=0.001", "limits.max_time_bins=20000"]
    assert cli.main(["validate", str(exp), *[x for s in sets for x in ("--set", s)]]) == 0
    sets[-1] = "limits.max_time_bins=5000"
    assert cli.main(["validate", str(exp), *[x for s in sets for x in ("--set", s)]]) == 2


# --------------------------------------------------------------------------- --out, interruptions


@pytest.mark.parametrize("kind", ["dangling", "loop"])
def test_out_symlink_is_one_line(
    kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    exp = tmp_path / "exp.yaml"
    exp.write_text(BASE)
    out = tmp_path / "out"
    if kind == "dangling":
        out.symlink_to(tmp_path / "nowhere")
    else:
        (tmp_path / "other").symlink_to(out)
        out.symlink_to(tmp_path / "other")
    assert cli.main(["run", str(exp), "--out", str(out), "--quiet"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert str(out) in line and "symbolic link" in line
    assert not (tmp_path / "nowhere").exists()


def test_bad_layout_leaves_no_empty_out(tmp_path: Path) -> None:
    exp = tmp_path / "exp.yaml"
    exp.write_text(edit("layout: {tp: 1, dp: 1}", "layout: {tp: 3, dp: 1}"))
    out = tmp_path / "out"
    assert cli.main(["run", str(exp), "--out", str(out), "--quiet", "--no-report"]) == 2
    assert not out.exists()


def test_interrupt_while_plotting_leaves_run_marked_incomplete(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def interrupted(_run_dir: Path, writing: bool = False) -> None:
        raise Terminated(15)  # what SIGTERM raises

    monkeypatch.setattr(results_report, "render_run", interrupted)
    exp = tmp_path / "exp.yaml"
    exp.write_text(BASE)
    out = tmp_path / "out"
    assert cli.main(["run", str(exp), "--out", str(out), "--quiet"]) == 143
    assert "interrupted (SIGTERM)" in capsys.readouterr().err
    (run_dir,) = [p.parent for p in out.rglob("summary.json")]
    assert (run_dir / "INCOMPLETE").is_file()
    monkeypatch.undo()  # report and compare render with the real render_run
    for command in (["report", str(run_dir)], ["compare", str(run_dir), str(run_dir)]):
        assert cli.main(command) == 2
        assert "incomplete run directory" in capsys.readouterr().err


def test_sigterm_is_handled_like_sigint(tmp_path: Path) -> None:
    exp = tmp_path / "exp.yaml"
    exp.write_text(
        edit("horizon: {requests: 12}", "horizon: {requests: 2000000}").replace(
            "rate_rps: 20", "rate_rps: 2000"
        )
    )
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "clustersim", "run", str(exp), "--out", str(out)],
        stderr=subprocess.PIPE,
        text=True,
    )
    # Wait for the progress bar (the simulation is under way and the handler installed), not a
    # fixed time: imports alone take seconds on a busy machine.
    chunks: list[str] = []
    assert proc.stderr is not None
    reader = threading.Thread(target=lambda: chunks.extend(iter(lambda: proc.stderr.read(1), "")))
    reader.start()
    deadline = time.monotonic() + 60
    while not chunks and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    reader.join(timeout=10)
    err = "".join(chunks)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "Traceback" not in err and "interrupted (SIGTERM)" in err
    leftovers = [p for p in out.rglob("*") if p.is_file()] if out.exists() else []
    assert not [p for p in leftovers if p.name.endswith(".tmp")]


@pytest.mark.parametrize("damage", ["requests_columns", "config_section"])
def test_report_and_compare_refuse_a_damaged_run_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], damage: str
) -> None:
    import pandas as pd

    exp = tmp_path / "exp.yaml"
    exp.write_text(BASE)
    out = tmp_path / "out"
    assert cli.main(["run", str(exp), "--out", str(out), "--quiet", "--no-report"]) == 0
    (run_dir,) = [p.parent for p in out.rglob("summary.json")]
    if damage == "requests_columns":
        pd.DataFrame({"x": [1]}).to_parquet(run_dir / "requests.parquet")
        expected = "missing column"
    else:
        config = run_dir / "config.resolved.yaml"
        config.write_text(config.read_text().replace("model:", "model: 5\nold_model:", 1))
        expected = "model: expected a mapping"
    capsys.readouterr()
    for command in (["report", str(run_dir)], ["compare", str(run_dir), str(run_dir)]):
        assert cli.main(command) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and expected in err


def test_capacity_replicates_are_bounded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    exp = tmp_path / "exp.yaml"
    exp.write_text(BASE)
    assert cli.main(["capacity", str(exp), "--replicates", "2147483647"]) == 2
    assert "--replicates" in capsys.readouterr().err
