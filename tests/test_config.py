"""Config layer: resolution of references, --set overrides, sweeps, resolved config, and the
one-line ConfigError for every kind of bad input."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import pytest
import yaml

from clustersim import __version__
from clustersim.config import (
    ConfigError,
    expand_sweep,
    load_experiment,
    load_raw_experiment,
    load_sweep,
    parse_override,
    resolved_config,
)
from clustersim.config.schema import Experiment

MODEL: dict[str, Any] = {
    "name": "tiny",
    "num_layers": 4,
    "hidden_size": 256,
    "num_attention_heads": 4,
    "num_kv_heads": 2,
    "head_dim": 64,
    "intermediate_size": 512,
    "vocab_size": 1000,
}
HARDWARE: dict[str, Any] = {
    "name": "gpu-x",
    "memory_GiB": 80,
    "hbm_bandwidth_GBps": 3000,
    "peak_tflops": {"bf16": 900},
}
TOPOLOGY: dict[str, Any] = {"name": "box", "nodes": 1, "gpus_per_node": 8, "gpu": "h100-sxm"}
WORKLOAD: dict[str, Any] = {
    "name": "chat",
    "arrival": {"process": "poisson", "rate_rps": 10},
    "prompt_tokens": {"dist": "fixed", "value": 100},
    "output_tokens": {"dist": "fixed", "value": 10},
}
MMPP_WORKLOAD: dict[str, Any] = {
    **WORKLOAD,
    "arrival": {"process": "mmpp", "rates_rps": [20, 200], "mean_dwell_s": [20, 2]},
}


def write(path: Path, data: Any) -> Path:
    """Write `data` as YAML (or raw text when a str) and return the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return path


def experiment(**changes: Any) -> dict[str, Any]:
    """An all-inline valid experiment; `changes` replace top-level keys (None deletes)."""
    exp: dict[str, Any] = {
        "name": "t",
        "seed": 3,
        "model": MODEL,
        "hardware": HARDWARE,
        "topology": TOPOLOGY,
        "workload": WORKLOAD,
        "horizon": {"requests": 100},
    }
    for key, value in changes.items():
        if value is None:
            exp.pop(key, None)
        else:
            exp[key] = value
    return exp


def error_of(path: Path, overrides: tuple[str, ...] = ()) -> str:
    """The ConfigError line `load_experiment` raises; asserts it is one line."""
    with pytest.raises(ConfigError) as info:
        load_experiment(path, overrides)
    message = str(info.value)
    assert "\n" not in message
    return message


# --------------------------------------------------------------------------- resolution


def test_inline_experiment_fills_defaults_and_base_dir(tmp_path: Path) -> None:
    exp = load_experiment(write(tmp_path / "exp.yaml", experiment()))
    assert isinstance(exp, Experiment)
    assert exp.model.name == "tiny" and exp.hardware.name == "gpu-x"
    assert exp.layout.tp == 1 and exp.serving.gpu_memory_utilization == 0.9
    assert exp.base_dir == str(tmp_path)
    assert exp.seed == 3


def test_name_defaults_to_file_stem(tmp_path: Path) -> None:
    exp = load_experiment(write(tmp_path / "my_run.yaml", experiment(name=None)))
    assert exp.name == "my_run"


def test_sections_from_files_relative_to_experiment(tmp_path: Path) -> None:
    write(tmp_path / "models" / "tiny.yaml", MODEL)
    write(tmp_path / "hw" / "x.yml", HARDWARE)
    write(tmp_path / "topologies" / "box.yaml", TOPOLOGY)
    write(
        tmp_path / "traces" / "t.csv",
        "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.6805900,5,6\n"
        "2023-11-16 18:15:47.0,5,6\n",
    )
    trace_wl = {"arrival": {"process": "trace"}, "trace": {"path": "../traces/t.csv"}}
    write(tmp_path / "workloads" / "tr.yaml", trace_wl)
    exp_file = write(
        tmp_path / "experiments" / "exp.yaml",
        experiment(
            model="../models/tiny.yaml",
            hardware="../hw/x.yml",
            topology="../topologies/box.yaml",
            workload="../workloads/tr.yaml",
        ),
    )
    exp = load_experiment(exp_file)
    assert exp.model.num_layers == 4 and exp.hardware.memory_GiB == 80
    assert exp.topology.name == "box"
    assert exp.workload.trace is not None
    assert exp.workload.trace.path == str(tmp_path / "traces" / "t.csv")  # absolute
    assert exp.base_dir == str(tmp_path / "experiments")


def test_builtin_names_and_hardware_from_topology_gpu(tmp_path: Path) -> None:
    raw = experiment(model="llama-3.1-8b", topology="dgx_h100_x1", hardware=None)
    exp = load_experiment(write(tmp_path / "exp.yaml", raw))
    assert exp.model.name == "llama-3.1-8b"
    assert exp.topology.name == "dgx_h100_x1"
    assert exp.hardware.name == exp.topology.gpu == "h100-sxm"


def test_experiment_hardware_overrides_topology_gpu(tmp_path: Path) -> None:
    raw = experiment(topology="dgx_h100_x1", hardware="h200")
    exp = load_experiment(write(tmp_path / "exp.yaml", raw))
    assert exp.hardware.name == "h200"


def test_huggingface_config_json_model(tmp_path: Path) -> None:
    hf = {
        "num_hidden_layers": 2,
        "hidden_size": 128,
        "num_attention_heads": 4,
        "num_key_value_heads": 4,
        "intermediate_size": 256,
        "vocab_size": 500,
    }
    (tmp_path / "mini").mkdir()
    (tmp_path / "mini" / "config.json").write_text(json.dumps(hf))
    exp = load_experiment(write(tmp_path / "exp.yaml", experiment(model="mini/config.json")))
    assert exp.model.num_layers == 2 and exp.model.head_dim == 32


# --------------------------------------------------------------------------- overrides


def test_override_values_are_yaml(tmp_path: Path) -> None:
    exp = load_experiment(
        write(tmp_path / "exp.yaml", experiment()),
        [
            "layout={tp: 2, dp: 4}",
            "serving.chunked_prefill=false",
            "serving.max_num_seqs=64",
            "slo.ttft_p99_s=1.5",
            "experts.routing.skew=1.2",  # creates the missing experts section
        ],
    )
    assert (exp.layout.tp, exp.layout.dp) == (2, 4)
    assert exp.serving.chunked_prefill is False and exp.serving.max_num_seqs == 64
    assert exp.slo.ttft_p99_s == 1.5
    assert exp.experts is not None and exp.experts.routing.skew == 1.2


def test_override_into_referenced_file_and_builtins(tmp_path: Path) -> None:
    write(tmp_path / "wl.yaml", MMPP_WORKLOAD)
    raw = experiment(workload="wl.yaml", model="llama-3.1-8b", topology="dgx_h100_x1")
    del raw["hardware"]
    exp = load_experiment(
        write(tmp_path / "exp.yaml", raw),
        [
            "workload.arrival.rates_rps.1=50",
            "model.max_context=4096",
            "hardware.memory_GiB=40",  # hardware comes from the topology's gpu
        ],
    )
    assert exp.workload.arrival.process == "mmpp"
    assert exp.workload.arrival.rates_rps == [20, 50]
    assert exp.model.max_context == 4096 and exp.model.num_layers == 32
    assert exp.hardware.name == "h100-sxm" and exp.hardware.memory_GiB == 40
    # the file on disk is untouched
    assert yaml.safe_load((tmp_path / "wl.yaml").read_text()) == MMPP_WORKLOAD


def test_override_replaces_a_reference_then_reaches_into_it(tmp_path: Path) -> None:
    write(tmp_path / "wl.yaml", WORKLOAD)
    exp = load_experiment(
        write(tmp_path / "exp.yaml", experiment()),
        ["workload=wl.yaml", "workload.arrival.rate_rps=40"],
    )
    assert exp.workload.arrival.process == "poisson"
    assert exp.workload.arrival.rate_rps == 40


def test_parse_override_forms() -> None:
    assert parse_override("a.b.1=[1, 2]").path == ("a", "b", 1)
    assert parse_override("a.b=[1, 2]").value == [1, 2]
    assert parse_override("x=a=b").value == "a=b"
    assert parse_override("x=").value is None
    assert parse_override("sweep.layout.tp=[1]").path == ("sweep", "layout.tp")


# --------------------------------------------------------------------------- sweeps


def test_expand_sweep_order_and_labels() -> None:
    raw = {"sweep": {"layout.pp": [1, 2], "experts.routing.skew": [0.0, 1.2]}}
    points = expand_sweep(raw)
    assert [p.label for p in points] == [
        "pp=1_skew=0",
        "pp=1_skew=1.2",
        "pp=2_skew=0",
        "pp=2_skew=1.2",
    ]
    assert points[1].overrides == {"layout.pp": 1, "experts.routing.skew": 1.2}
    assert list(points[0].overrides) == ["layout.pp", "experts.routing.skew"]


def test_expand_sweep_sections_paths_and_collisions() -> None:
    raw = {
        "sweep": {
            "layout": [{"tp": 8, "dp": 2}, {"tp": 8, "pp": 2}],
            "model": ["llama-3.1-8b", "models/x y.yaml"],
        }
    }
    labels = [p.label for p in expand_sweep(raw)]
    assert labels == [
        "layout=tp8-dp2_model=llama-3.1-8b",
        "layout=tp8-dp2_model=models-x-y.yaml",
        "layout=tp8-pp2_model=llama-3.1-8b",
        "layout=tp8-pp2_model=models-x-y.yaml",
    ]
    # same short name under two sections → longer suffix; same text → numbered
    raw = {"sweep": {"serving.max_queue": [1], "experts.routing.path": ["a/b", "a:b"]}}
    labels = [p.label for p in expand_sweep(raw)]
    assert labels == ["max_queue=1_path=a-b", "max_queue=1_path=a-b-2"]
    raw = {"sweep": {"workload.arrival.rates_rps.1": [50], "serving.router": ["random"]}}
    assert [p.label for p in expand_sweep(raw)] == ["rates_rps.1=50_router=random"]


def test_expand_sweep_without_block() -> None:
    assert [(p.label, p.overrides) for p in expand_sweep({})] == [("", {})]
    assert [p.label for p in expand_sweep({"sweep": {}})] == [""]


def test_load_sweep_applies_each_point(tmp_path: Path) -> None:
    write(tmp_path / "wl.yaml", WORKLOAD)
    raw = experiment(
        workload="wl.yaml",
        sweep={"workload.arrival.rate_rps": [5, 50], "layout": [{"tp": 2}, {"pp": 2}]},
    )
    points = load_sweep(write(tmp_path / "exp.yaml", raw), ["layout.dp=3"])
    got = [
        (
            p.label,
            getattr(e.workload.arrival, "rate_rps", None),
            e.layout.tp,
            e.layout.pp,
            e.layout.dp,
        )
        for p, e in points
    ]
    assert got == [
        # labels say what runs: the --set reached inside the swept layouts (issue 10)
        ("rate_rps=5_layout=tp2-dp3", 5, 2, 1, 3),
        ("rate_rps=5_layout=pp2-dp3", 5, 1, 2, 3),
        ("rate_rps=50_layout=tp2-dp3", 50, 2, 1, 3),
        ("rate_rps=50_layout=pp2-dp3", 50, 1, 2, 3),
    ]


def test_load_sweep_without_block_and_set_into_sweep(tmp_path: Path) -> None:
    path = write(tmp_path / "exp.yaml", experiment())
    [(point, exp)] = load_sweep(path)
    assert point.label == "" and exp.layout.tp == 1
    points = load_sweep(path, ["sweep.layout.tp=[1, 2]"])
    assert [(p.label, e.layout.tp) for p, e in points] == [("tp=1", 1), ("tp=2", 2)]


def test_load_experiment_ignores_sweep_but_checks_it(tmp_path: Path) -> None:
    exp = load_experiment(write(tmp_path / "exp.yaml", experiment(sweep={"layout.tp": [2]})))
    assert exp.layout.tp == 1
    assert "sweep" in load_raw_experiment(tmp_path / "exp.yaml")


# --------------------------------------------------------------------------- resolved config


def test_resolved_config_is_plain_and_reloads(tmp_path: Path) -> None:
    write(
        tmp_path / "t.csv",
        "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.6,5,6\n"
        "2023-11-16 18:15:47.0,5,6\n",
    )
    wl = {"arrival": {"process": "trace"}, "trace": {"path": "t.csv"}}
    exp = load_experiment(write(tmp_path / "exp.yaml", experiment(workload=wl)))
    cfg = resolved_config(exp)
    assert cfg["clustersim_version"] == __version__
    assert cfg["layout"]["cp"] == 1 and cfg["serving"]["router"] == "least_outstanding"
    assert json.loads(json.dumps(cfg)) == cfg  # JSON-safe, so YAML-safe too
    out = write(tmp_path / "results" / "config.resolved.yaml", yaml.safe_dump(cfg))
    again = load_experiment(out)
    assert again.model_copy(update={"base_dir": exp.base_dir}) == exp


# --------------------------------------------------------------------------- bad input


def test_unknown_key_lists_the_expected_keys(tmp_path: Path) -> None:
    path = write(tmp_path / "exp.yaml", experiment(layout={"tp": 2, "tpp": 2}))
    assert error_of(path) == (
        f"{path}: layout.tpp: unknown key "
        "(expected one of: tp, pp, dp, ep, cp, moe_tp, dp_attention)"
    )


def test_unknown_top_level_key(tmp_path: Path) -> None:
    path = write(tmp_path / "exp.yaml", experiment(horizonn={"requests": 1}))
    message = error_of(path)
    assert message.startswith(f"{path}: horizonn: unknown key (expected one of: name, seed, ")
    assert message.endswith("output, limits, faults, sweep)") and "base_dir" not in message


def test_unknown_key_beats_the_missing_key_it_explains(tmp_path: Path) -> None:
    wl = {**WORKLOAD, "arrival": {"process": "poisson", "rate": 3}}
    path = write(tmp_path / "exp.yaml", experiment(workload=wl))
    assert error_of(path) == (
        f"{path}: workload.arrival.rate: unknown key (expected one of: process, rate_rps)"
    )


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        (
            {"serving": {"max_num_seqs": "many"}},
            "serving.max_num_seqs: expected an integer (got 'many')",
        ),
        (
            {"serving": {"chunked_prefill": "maybe"}},
            "serving.chunked_prefill: expected true or false (got 'maybe')",
        ),
        (
            {"serving": {"gpu_memory_utilization": 1.5}},
            "serving.gpu_memory_utilization: expected a number <= 1 (got 1.5)",
        ),
        (
            {"serving": {"router": "fastest"}},
            "serving.router: expected one of: round_robin, random, least_outstanding, "
            "least_kv, power_of_two, cache_aware, session_affinity, kv_aware (got 'fastest')",
        ),
        (
            {"workload": {**WORKLOAD, "arrival": {"process": "poisson", "rate_rps": -1}}},
            "workload.arrival.rate_rps: expected a number > 0 (got -1)",
        ),
        (
            {"workload": {**WORKLOAD, "arrival": {"process": "mmp"}}},
            "workload.arrival.process: expected one of: poisson, gamma, mmpp, burst, closed, "
            "trace, sessions (got 'mmp')",
        ),
        (
            {"workload": {**WORKLOAD, "arrival": {"rate_rps": 3}}},
            "workload.arrival.process: missing required key (expected one of: poisson, gamma, "
            "mmpp, burst, closed, trace, sessions)",
        ),
        (
            {"hardware": {**HARDWARE, "peak_tflops": {"fp9": 3}}},
            "hardware.peak_tflops.fp9: invalid key: expected one of: bf16, fp16, fp8, fp4 "
            "(got 'fp9')",
        ),
        ({"horizon": {}}, "horizon: give exactly one of duration_s or requests"),
        ({"layout": [2]}, "layout: expected a mapping (got [2])"),
        ({"model": 7}, "model: expected a built-in name, a file path or a mapping (got 7)"),
        ({"workload": None}, "workload: missing required key"),
        ({"topology": None, "hardware": None}, "topology: missing required key"),
    ],
)
def test_bad_inline_values(tmp_path: Path, changes: dict[str, Any], expected: str) -> None:
    path = write(tmp_path / "exp.yaml", experiment(**changes))
    assert error_of(path) == f"{path}: {expected}"


def test_errors_inside_a_referenced_file_name_that_file(tmp_path: Path) -> None:
    bad = {**MMPP_WORKLOAD, "arrival": {**MMPP_WORKLOAD["arrival"], "rates_rps": [1, -2]}}
    write(tmp_path / "workloads" / "wl.yaml", bad)
    path = write(tmp_path / "exp" / "exp.yaml", experiment(workload="../workloads/wl.yaml"))
    wl_label = str(tmp_path / "workloads" / "wl.yaml")
    assert error_of(path) == f"{wl_label}: arrival.rates_rps.1: expected a number >= 0 (got -2)"

    bad = {**MMPP_WORKLOAD, "arrival": {**MMPP_WORKLOAD["arrival"], "rates_rps": [1, 2, 3]}}
    write(tmp_path / "workloads" / "wl.yaml", bad)
    assert error_of(path) == (
        f"{wl_label}: arrival: rates_rps and mean_dwell_s must have the same length"
    )


def test_missing_key_in_model_file(tmp_path: Path) -> None:
    model = {k: v for k, v in MODEL.items() if k != "num_layers"}
    write(tmp_path / "m.yaml", model)
    path = write(tmp_path / "exp.yaml", experiment(model="m.yaml"))
    assert error_of(path) == f"{tmp_path / 'm.yaml'}: num_layers: missing required key"


def test_missing_file(tmp_path: Path) -> None:
    path = write(tmp_path / "exp.yaml", experiment(topology="topos/none.yaml"))
    assert error_of(path) == (
        f"{path}: topology: file not found: {tmp_path / 'topos' / 'none.yaml'}"
    )
    assert error_of(tmp_path / "nope.yaml") == (
        f"{tmp_path / 'nope.yaml'}: file not found: {tmp_path / 'nope.yaml'}"
    )


def test_missing_trace_file(tmp_path: Path) -> None:
    wl = {"arrival": {"process": "trace"}, "trace": {"path": "gone.csv"}}
    write(tmp_path / "w" / "wl.yaml", wl)
    path = write(tmp_path / "exp.yaml", experiment(workload="w/wl.yaml"))
    assert error_of(path) == (
        f"{tmp_path / 'w' / 'wl.yaml'}: trace.path: file not found: {tmp_path / 'w' / 'gone.csv'}"
    )


def test_bad_yaml_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path / "exp.yaml", "name: x\nlayout: {tp: 2\nseed: 1\n")
    message = error_of(path)
    assert message.startswith(f"{path}: line 3, column ") and "invalid YAML" in message

    write(tmp_path / "topo.yaml", "name: t\nnodes: 1\n  gpus_per_node: 8\n")
    path = write(tmp_path / "exp.yaml", experiment(topology="topo.yaml"))
    message = error_of(path)
    assert message.startswith(f"{tmp_path / 'topo.yaml'}: line 3, column ")
    assert "invalid YAML" in message


def test_duplicate_key_and_non_mapping_file(tmp_path: Path) -> None:
    path = write(tmp_path / "exp.yaml", "name: x\nseed: 1\nseed: 2\n")
    assert error_of(path) == f"{path}: line 3, column 1: invalid YAML: duplicate key 'seed'"
    path = write(tmp_path / "exp.yaml", "- 1\n- 2\n")
    assert error_of(path) == f"{path}: expected a mapping at the top level (got [1, 2])"
    path = write(tmp_path / "exp.yaml", "")
    assert error_of(path) == f"{path}: expected a mapping at the top level (got an empty file)"


def test_unknown_builtin_names(tmp_path: Path) -> None:
    path = write(tmp_path / "exp.yaml", experiment(model="gpt-9"))
    message = error_of(path)
    assert message.startswith(f"{path}: model: unknown model 'gpt-9' (expected a built-in name: ")
    assert "llama-3.1-8b" in message and message.endswith(" or a path)")

    path = write(tmp_path / "exp.yaml", experiment(topology="h100x99"))
    assert error_of(path).startswith(f"{path}: topology: unknown topology 'h100x99' (expected")

    write(tmp_path / "topo.yaml", {**TOPOLOGY, "gpu": "h900"})
    path = write(tmp_path / "exp.yaml", experiment(topology="topo.yaml", hardware=None))
    message = error_of(path)
    assert message.startswith(f"{tmp_path / 'topo.yaml'}: gpu: unknown hardware 'h900' (expected")
    assert "h100-sxm" in message


def test_bad_huggingface_config(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"hidden_size": 8}))
    path = write(tmp_path / "exp.yaml", experiment(model="config.json"))
    assert error_of(path) == (
        f"{tmp_path / 'config.json'}: num_hidden_layers: missing required field"
    )


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("layout.tp", "--set: layout.tp: expected key.path=value"),
        ("layout..tp=2", "--set: layout..tp: expected key.path=value with non-empty keys"),
        ("layout.tp=[1", "--set: layout.tp: value is not valid YAML"),
        ("layout.tp=0", "--set: layout.tp: expected a number > 0 (got 0)"),
        ("layout.tpp=2", "--set: layout.tpp: unknown key (expected one of: tp, pp, dp, ep, "),
        ("seed.x=1", "--set: seed.x: cannot set a key inside seed: it is not a mapping (got 3)"),
        ("workload.arrival.rate_rps=-4", "--set: workload.arrival.rate_rps: expected a number"),
        # non-finite numbers are bad input, not a crash in the arrival generator
        ("workload.arrival.rate_rps=inf", "--set: workload.arrival.rate_rps: expected a finite"),
        ("horizon.warmup_s=.nan", "--set: horizon.warmup_s: expected a finite number"),
    ],
)
def test_bad_overrides(tmp_path: Path, override: str, expected: str) -> None:
    write(tmp_path / "wl.yaml", WORKLOAD)
    path = write(tmp_path / "exp.yaml", experiment(workload="wl.yaml"))
    assert error_of(path, (override,)).startswith(expected)


def test_override_that_breaks_a_file_section_is_noted(tmp_path: Path) -> None:
    write(tmp_path / "wl.yaml", MMPP_WORKLOAD)
    path = write(tmp_path / "exp.yaml", experiment(workload="wl.yaml"))
    # the value itself is fine, the section around it is not: name the file, note the --set
    message = error_of(path, ("workload.arrival.rates_rps=[1, 2, 3]",))
    assert message == (
        f"{tmp_path / 'wl.yaml'}: arrival: rates_rps and mean_dwell_s must have the same "
        "length (with --set workload.arrival.rates_rps)"
    )


@pytest.mark.parametrize(
    ("sweep", "expected"),
    [
        ({"layout.tpp": [1]}, "sweep.layout.tpp: not a key path of an experiment"),
        ({"base_dir": ["x"]}, "sweep.base_dir: not a key path of an experiment"),
        ({"layout.tp": 2}, "sweep.layout.tp: expected a non-empty list of values (got 2)"),
        ({"layout.tp": []}, "sweep.layout.tp: expected a non-empty list of values (got [])"),
        ({"layout": [{}], "layout.tp": [1]}, "sweep.layout.tp: overlaps sweep.layout"),
        ([1], "sweep: expected a mapping of key paths to lists of values (got [1])"),
    ],
)
def test_bad_sweep_blocks(tmp_path: Path, sweep: Any, expected: str) -> None:
    path = write(tmp_path / "exp.yaml", experiment(sweep=sweep))
    with pytest.raises(ConfigError) as info:
        load_sweep(path)
    assert str(info.value) == f"{path}: {expected}"
    assert error_of(path) == f"{path}: {expected}"


def test_bad_sweep_value_names_the_sweep_entry(tmp_path: Path) -> None:
    path = write(tmp_path / "exp.yaml", experiment(sweep={"layout.tp": [1, 0]}))
    with pytest.raises(ConfigError) as info:
        load_sweep(path)
    assert str(info.value) == f"{path}: sweep.layout.tp.1: expected a number > 0 (got 0)"


def test_set_may_not_overwrite_a_swept_key(tmp_path: Path) -> None:
    path = write(tmp_path / "exp.yaml", experiment(sweep={"layout.tp": [1, 2]}))
    with pytest.raises(ConfigError) as info:
        load_sweep(path, ["layout={tp: 4}"])
    assert str(info.value) == (
        "--set: layout: also swept by sweep.layout.tp; set sweep.layout.tp=[...] instead"
    )


def test_files_are_named_as_the_user_sees_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "workloads" / "wl.yaml", {**WORKLOAD, "name": 5})
    write(tmp_path / "experiments" / "exp.yaml", experiment(workload="../workloads/wl.yaml"))
    assert error_of(Path("experiments/exp.yaml")) == (
        f"{Path('workloads/wl.yaml')}: name: expected a string (got 5)"
    )


def test_config_error_pickles_and_is_one_line() -> None:
    err = ConfigError("a.yaml", "x.y", "expected\na number", "3")
    again = pickle.loads(pickle.dumps(err))
    assert isinstance(again, ConfigError)
    assert str(again) == str(err) == "a.yaml: x.y: expected a number (got 3)"
    assert str(ConfigError("a.yaml", "", "empty")) == "a.yaml: empty"


def test_sweep_labels_for_a_section_switched_on_and_off() -> None:
    from clustersim.config.sweep import expand_sweep

    raw = {
        "sweep": {
            "experts.routing.skew": [0.0, 1.2],
            "experts.eplb": [None, {"redundant_experts": 32, "rebalance_interval_s": 5}],
        }
    }
    labels = [p.label for p in expand_sweep(raw)]
    assert labels == ["skew=0_eplb=off", "skew=0_eplb=on", "skew=1.2_eplb=off", "skew=1.2_eplb=on"]


def test_sweep_labels_for_long_mappings_use_their_position() -> None:
    from clustersim.config.sweep import expand_sweep

    long_a = {"tp": 8, "dp": 2, "ep": 16, "dp_attention": True, "moe_tp": 1}
    long_b = {"tp": 4, "dp": 4, "ep": 16, "dp_attention": True, "moe_tp": 1}
    labels = [p.label for p in expand_sweep({"sweep": {"layout": [long_a, long_b]}})]
    assert labels == ["layout=v1", "layout=v2"]
