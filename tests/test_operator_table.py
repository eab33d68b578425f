"""Measured operator tables (catalog/operator_tables.py) and the cost model's use of them
(model/kernels.py, model/stage_parts.py): GEMMs and the LM head of the shapes a table
measured are priced from it, everything else by the roofline."""

from __future__ import annotations

import itertools
import json
import statistics
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clustersim.catalog.engines import get_engine
from clustersim.catalog.hardware import get_hardware
from clustersim.catalog.models import MODELS, get_model
from clustersim.catalog.operator_tables import (
    FOLDER,
    load_operator_table,
    monotone_curve,
    table_names,
)
from clustersim.config.schema import HardwareSpec, Precision
from clustersim.model.decode_run import DecodeStepCost
from clustersim.model.kernels import curve_s
from clustersim.model.stage_cost import StageCostModel

REPO = Path(__file__).resolve().parents[1]
H200 = get_hardware("h200")
ROOFLINE = H200.model_copy(update={"operator_table": None})


def precision(dtype: str, weights: str | None = None) -> Precision:
    return Precision(weights=weights or dtype, activations=dtype, kv_cache=dtype)  # type: ignore[arg-type]


def stage(model: str, hw: HardwareSpec, tp: int, dtype: str, **kw: str) -> StageCostModel:
    m = get_model(model)
    p = precision(dtype, kw.get("weights"))
    return StageCostModel(m, hw, p, tp, m.num_layers, True, True, engine=get_engine("vllm"))


# ------------------------------------------------------------------ the table


def test_h200_is_built_in_and_its_curves_are_ascending_and_positive() -> None:
    assert "h200" in table_names() and H200.operator_table == "h200"
    curves = load_operator_table("h200")
    assert len(curves) > 100
    for rows, seconds in curves.values():
        assert list(rows) == sorted(set(rows)) and len(rows) >= 6
        assert all(0 < s < 0.1 for s in seconds)


def test_table_rows_are_the_profile_medians() -> None:
    """The shipped CSV is export_operator_table.py's output of the committed profile."""
    profile = json.loads((REPO / "benchmarks/gpu/operators_h200_2026-12-04.json").read_text())
    curves = load_operator_table("h200")
    by_shape: dict[tuple[str, int, int, int], list[float]] = {}
    for r in profile["records"]:
        s = r["shape"]
        if r["family"] == "gemm" and s["batch"] == 1:
            by_shape.setdefault((r["dtype"], s["k"], s["n"], s["m"]), []).append(r["measured_us"])
    points: dict[tuple[str, int, int], list[tuple[int, float]]] = {}
    for (dtype, k, n, m), us in by_shape.items():
        points.setdefault((dtype, k, n), []).append((m, statistics.median(us) * 1e-6))
    for (dtype, k, n), pts in points.items():
        rows, seconds = curves[("gemm", dtype, k, n, 1)]
        want_rows, want = monotone_curve(pts)
        assert rows == want_rows and seconds == pytest.approx(want, abs=1e-9)
    assert len(points) > 100


def test_curves_never_fall_with_more_rows() -> None:
    assert monotone_curve([(1, 5e-6), (2, 4e-6), (4, 6e-6)]) == (
        (1.0, 2.0, 4.0),
        (5e-6, 5e-6, 6e-6),
    )
    for _, seconds in load_operator_table("h200").values():
        assert all(a <= b for a, b in itertools.pairwise(seconds))


def test_unknown_table_is_a_key_error() -> None:
    with pytest.raises(KeyError):
        load_operator_table("no-such-gpu")


# ------------------------------------------------------------------ interpolation


def test_curve_is_exact_at_points_linear_between_and_extrapolates_the_last_slope() -> None:
    rows, seconds = (1.0, 16.0, 256.0), (10e-6, 10e-6, 40e-6)
    assert curve_s(rows, seconds, 1) == 10e-6
    assert curve_s(rows, seconds, 16) == pytest.approx(10e-6)
    assert curve_s(rows, seconds, 256) == pytest.approx(40e-6)
    assert curve_s(rows, seconds, 136) == pytest.approx(25e-6)
    assert curve_s(rows, seconds, 0.5) == 10e-6  # below the first point: its time
    assert curve_s(rows, seconds, 496) == pytest.approx(70e-6)  # past the last: its slope
    assert curve_s((8.0,), (5e-6,), 100) == 5e-6


@given(st.integers(min_value=1, max_value=20000))
def test_measured_curves_stay_within_their_neighbouring_points(m: int) -> None:
    rows, seconds = load_operator_table("h200")[("gemm", "bf16", 8192, 1280, 1)]
    t = curve_s(rows, seconds, m)
    if m <= rows[-1]:
        lo = max(r for r in rows if r <= m) if m >= rows[0] else rows[0]
        hi = min(r for r in rows if r >= m) if m >= rows[0] else rows[0]
        a, b = seconds[rows.index(lo)], seconds[rows.index(hi)]
        assert min(a, b) - 1e-15 <= t <= max(a, b) + 1e-15
    else:
        assert t > 0


# ------------------------------------------------------------------ the cost model


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("tp", [1, 2, 4, 8])
@pytest.mark.parametrize("dtype", ["bf16", "fp8"])
def test_every_catalog_gemm_on_h200_is_measured(name: str, tp: int, dtype: str) -> None:
    cost = stage(name, H200, tp, dtype)
    assert cost.linear.gemms == () and cost.linear.measured
    assert cost.ends.lm_curve is not None


@pytest.mark.parametrize("rows", [1, 7, 64, 1000, 8192, 12000])
def test_linear_time_is_the_table_at_measured_shapes(rows: int) -> None:
    """Σ layers × max(curve(T), floor) + elementwise = the breakdown's linear time."""
    cost = stage("llama-3.1-70b", H200, 8, "fp8")
    floor = cost._graph.kernel_s if cost.uses_graph(0, rows) else cost._eager.kernel_s
    expected = sum(
        g.layers * max(curve_s(g.rows, g.seconds, rows), floor) for g in cost.linear.measured
    )
    elt_floor = (cost._graph if cost.uses_graph(0, rows) else cost._eager).elementwise_s
    expected += max(rows * cost.linear.elementwise_s, elt_floor)
    linear = cost.breakdown(0, 0.0, rows, rows * 512)["linear"]
    assert linear == pytest.approx(expected, rel=1e-12)


def test_measured_batch1_decode_is_slower_than_the_roofline_where_gemms_are_small() -> None:
    """70B FP8 at TP8: every projection is a few MB, below what fills the GPU (table: 1.3-3.4×
    the roofline at one row)."""
    measured = stage("llama-3.1-70b", H200, 8, "fp8").breakdown(0, 0.0, 1, 1024)
    roofline = stage("llama-3.1-70b", ROOFLINE, 8, "fp8").breakdown(0, 0.0, 1, 1024)
    assert measured["linear"] > 1.3 * roofline["linear"]
    assert measured["attn_decode"] == roofline["attn_decode"]


@pytest.mark.parametrize(
    ("hw", "dtype", "weights"),
    [
        (get_hardware("h100-sxm"), "fp8", None),  # no table for the H100
        (H200, "bf16", "fp8"),  # weight-only fp8: the table times same-dtype GEMMs only
        (H200, "fp4", None),  # not measured
    ],
)
def test_roofline_prices_what_was_not_measured(hw: HardwareSpec, dtype: str, weights: str) -> None:
    cost = stage("llama-3.1-70b", hw, 4, dtype, **({"weights": weights} if weights else {}))
    assert cost.linear.measured == () and len(cost.linear.gemms) == 4
    assert (cost.ends.lm_curve is None) == (hw is not H200)  # the LM head is 16-bit: measured


def test_without_the_table_h200_is_its_roofline() -> None:
    a = stage("deepseek-v3", ROOFLINE, 8, "fp8")
    assert a.linear.measured == () and a.ends.lm_curve is None


@pytest.mark.parametrize("n", [1, 3, 64, 300])
def test_decode_leap_step_equals_compute_s_with_a_table(n: int) -> None:
    cost = stage("llama-3.1-8b", H200, 1, "bf16")
    run = DecodeStepCost(cost, n)
    for ctx in (n, n * 900, n * 5000):
        assert run.step_s(ctx) == cost.compute_s(0, 0.0, n, ctx, 0)


def test_unknown_table_name_is_one_line_exit_2(tmp_path: Path) -> None:
    from clustersim.cli.entry import main

    exp = tmp_path / "e.yaml"
    exp.write_text(
        "name: t\nmodel: llama-3.1-8b\nhardware: {name: x, memory_GiB: 80, "
        "nvlink_bandwidth_GBps: 1, hbm_bandwidth_GBps: 3000, peak_tflops: {bf16: 900}, "
        "operator_table: nope}\n"
        "topology: dgx_h100_x1\nlayout: {tp: 1}\n"
        "workload: {arrival: {process: poisson, rate_rps: 1}, "
        "prompt_tokens: {dist: fixed, value: 8}, output_tokens: {dist: fixed, value: 4}}\n"
        "horizon: {requests: 4}\n"
    )
    assert main(["validate", str(exp)]) == 2


def test_resolved_hardware_names_its_table_only_when_set() -> None:
    assert H200.model_dump()["operator_table"] == "h200"
    assert "operator_table" not in get_hardware("h100-sxm").model_dump()


# ------------------------------------------------------------------ a user's table file

EXPERIMENT = """\
name: t
model: llama-3.1-8b
hardware: {hardware}
topology: dgx_h100_x1
layout: {{tp: 1}}
workload: {{arrival: {{process: poisson, rate_rps: 1}},
  prompt_tokens: {{dist: fixed, value: 8}}, output_tokens: {{dist: fixed, value: 4}}}}
horizon: {{requests: 4}}
"""
HARDWARE = """\
name: my-gpu
memory_GiB: 80
hbm_bandwidth_GBps: 3350
nvlink_bandwidth_GBps: 450
peak_tflops: {{bf16: 989, fp8: 1979}}
operator_table: {table}
"""


def _user_table(folder: Path, text: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "mine.csv"
    source = FOLDER / "h200.csv"
    path.write_text(text if text is not None else source.read_text())
    return path


def test_a_table_file_relative_to_the_hardware_file_prices_its_gemms(tmp_path: Path) -> None:
    from clustersim.config.load import load_experiment

    table = _user_table(tmp_path / "hw" / "tables")
    (tmp_path / "hw" / "mine.yaml").write_text(HARDWARE.format(table="tables/mine.csv"))
    exp_path = tmp_path / "e.yaml"
    exp_path.write_text(EXPERIMENT.format(hardware="hw/mine.yaml"))
    exp = load_experiment(exp_path)
    assert exp.hardware.operator_table == str(table)
    cost = stage("llama-3.1-8b", exp.hardware, 1, "bf16")
    assert cost.linear.gemms == () and len(cost.linear.measured) == 4


def test_an_inline_table_path_is_relative_to_the_experiment(tmp_path: Path) -> None:
    from clustersim.config.load import load_experiment

    table = _user_table(tmp_path / "t")
    inline = "{name: g, memory_GiB: 80, hbm_bandwidth_GBps: 3350, nvlink_bandwidth_GBps: 450, "
    inline += "peak_tflops: {bf16: 989}, "
    inline += "operator_table: t/mine.csv}"
    exp_path = tmp_path / "e.yaml"
    exp_path.write_text(EXPERIMENT.format(hardware=inline))
    assert load_experiment(exp_path).hardware.operator_table == str(table)


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("family,dtype,k,n,batch,m\n", "header"),
        ("family,dtype,k,n,batch,m,us\ngemm,bf16,10,20,1,1,5\ngemm,int4,10,20,1,2,5\n", "line 3"),
        ("# a comment\nfamily,dtype,k,n,batch,m,us\ngemm,bf16,10,x,1,1,5\n", "line 3"),
        ("family,dtype,k,n,batch,m,us\ngemm,bf16,10,20,1,1,-5\n", "line 2"),
        ("family,dtype,k,n,batch,m,us\n", "header"),
        (None, "file not found"),
    ],
)
def test_a_bad_table_file_is_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str | None, where: str
) -> None:
    from clustersim.cli.entry import main

    if text is not None:
        _user_table(tmp_path, text)
    exp = tmp_path / "e.yaml"
    hw = "{name: g, memory_GiB: 80, hbm_bandwidth_GBps: 3350, nvlink_bandwidth_GBps: 450, "
    hw += "peak_tflops: {bf16: 989}, "
    exp.write_text(EXPERIMENT.format(hardware=hw + "operator_table: mine.csv}"))
    assert main(["validate", str(exp)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and where in err and "mine.csv" in err
