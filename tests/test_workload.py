"""Arrival processes, length samplers, trace reader and generate_requests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from clustersim.config.schema import (
    EmpiricalLength,
    HorizonSpec,
    LognormalLength,
    WorkloadSpec,
)
from clustersim.sim.streams import Streams
from clustersim.workload import (
    burst_arrivals,
    empirical_lengths,
    fixed_lengths,
    gamma_arrivals,
    generate_requests,
    lognormal_lengths,
    mmpp_arrivals,
    poisson_arrivals,
    read_azure_trace,
    sample_lengths,
    trace_arrivals,
    uniform_lengths,
)
from clustersim.workload.requests import CLOSED_LOOP_MIN_TOKEN_S

REPO = Path(__file__).parents[1]
TRACES = REPO / "traces"
CONV = TRACES / "AzureLLMInferenceTrace_conv.csv"
CODE = TRACES / "AzureLLMInferenceTrace_code.csv"

CHAT: dict[str, Any] = {
    "prompt_tokens": {"dist": "lognormal", "median": 1024, "sigma": 0.8, "max": 8192},
    "output_tokens": {"dist": "lognormal", "median": 256, "sigma": 0.6, "max": 2048},
}


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def workload(arrival: dict[str, Any], **extra: Any) -> WorkloadSpec:
    return WorkloadSpec.model_validate({"arrival": arrival, **CHAT, **extra})


def gen(spec: WorkloadSpec, seed: int = 0, base_dir: str | Path = ".", **horizon: Any) -> Any:
    s = Streams(seed)
    return generate_requests(
        spec, HorizonSpec(**horizon), s.get("arrivals"), s.get("lengths"), str(base_dir)
    )


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# --------------------------------------------------------------------------- arrivals


def test_poisson_mean_rate() -> None:
    t = poisson_arrivals(50.0, rng(1), n=100_000)
    assert len(t) == 100_000
    assert np.all(np.diff(t) >= 0)
    assert abs(len(t) / t[-1] / 50.0 - 1) < 0.03
    gaps = np.diff(t)
    assert abs(gaps.std() / gaps.mean() - 1) < 0.05  # exponential gaps: CV 1


@pytest.mark.parametrize("cv", [0.5, 2.0])
def test_gamma_rate_and_cv(cv: float) -> None:
    t = gamma_arrivals(20.0, cv, rng(2), n=100_000)
    gaps = np.diff(t)
    assert abs(gaps.std() / gaps.mean() / cv - 1) < 0.05
    assert abs(len(t) / t[-1] / 20.0 - 1) < 0.03


def test_mmpp_long_run_rate_and_timeline() -> None:
    rates, dwell = [2.0, 20.0], [20.0, 2.0]
    duration = 200_000.0
    t, tl = mmpp_arrivals(rates, dwell, rng(3), duration_s=duration)
    expected = sum(r * d for r, d in zip(rates, dwell, strict=True)) / sum(dwell)
    assert abs(len(t) / duration / expected - 1) < 0.05
    assert np.all(np.diff(t) >= 0) and t[-1] < duration
    # timeline: starts at 0 in state 0, alternates, covers the horizon
    assert tl.start_s[0] == 0.0 and tl.state[0] == 0
    assert np.all(np.diff(tl.state) != 0) and np.all(np.diff(tl.start_s) > 0)
    assert tl.start_s[-1] < duration <= tl.end_s
    lengths = np.diff(np.append(tl.start_s, tl.end_s))
    for k in (0, 1):
        in_k = tl.state == k
        assert abs(lengths[in_k].mean() / dwell[k] - 1) < 0.06  # mean dwell
        # arrivals inside state-k segments come at rate_k
        arrivals_in_k = (tl.state_at(t) == k).sum()
        assert abs(arrivals_in_k / lengths[in_k].sum() / rates[k] - 1) < 0.05
    np.testing.assert_array_equal(tl.segment_rate_rps, np.asarray(rates)[tl.state])


def test_mmpp_request_horizon_and_zero_rate_state() -> None:
    t, tl = mmpp_arrivals([0.0, 50.0], [5.0, 1.0], rng(4), n=5_000)
    assert len(t) == 5_000
    assert tl.start_s[-1] <= t[-1] <= tl.end_s
    assert np.all(tl.state_at(t) == 1)  # nothing arrives in the silent state


def test_burst_all_zeros() -> None:
    t = burst_arrivals(1000)
    assert t.dtype == np.float64 and len(t) == 1000 and not t.any()


@pytest.mark.parametrize("n", [0, 1, 7, 12_345])
def test_exact_n(n: int) -> None:
    assert len(poisson_arrivals(5.0, rng(), n=n)) == n
    assert len(gamma_arrivals(5.0, 3.0, rng(), n=n)) == n
    assert len(mmpp_arrivals([1.0, 10.0], [3.0, 1.0], rng(), n=n)[0]) == n
    assert len(trace_arrivals([0.0, 1.0, 2.5], n=n)) == n


@pytest.mark.parametrize("duration", [0.01, 3.0, 1000.0])
def test_duration_bound(duration: float) -> None:
    for t in (
        poisson_arrivals(40.0, rng(5), duration_s=duration),
        gamma_arrivals(40.0, 4.0, rng(5), duration_s=duration),
        mmpp_arrivals([5.0, 100.0], [2.0, 0.5], rng(5), duration_s=duration)[0],
    ):
        assert t.dtype == np.float64
        assert np.all(np.diff(t) >= 0)
        assert len(t) == 0 or (t[0] >= 0 and t[-1] < duration)
    # the last arrival is close to the horizon: generation ran past it
    long = poisson_arrivals(40.0, rng(6), duration_s=1000.0)
    assert 1000.0 - long[-1] < 1.0


def test_duration_gives_the_same_prefix_across_block_boundaries() -> None:
    # a horizon far beyond the first block must still be a single sorted process
    t = gamma_arrivals(1000.0, 10.0, rng(7), duration_s=60.0)
    assert np.all(np.diff(t) >= 0) and t[-1] < 60.0
    assert abs(len(t) / 60_000 - 1) < 0.25  # cv 10: the count is very noisy


def test_horizon_arguments_checked() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        poisson_arrivals(1.0, rng())
    with pytest.raises(ValueError, match="exactly one"):
        poisson_arrivals(1.0, rng(), n=3, duration_s=1.0)
    with pytest.raises(ValueError):
        poisson_arrivals(0.0, rng(), n=3)


def test_trace_arrivals_scale_cycle_and_duration() -> None:
    ts = np.array([10.0, 11.0, 13.0])  # span 3 s, mean gap 1.5 s
    np.testing.assert_allclose(trace_arrivals(ts, 0.5, n=3), [0.0, 0.5, 1.5])
    # cycling: period = span · rows / (rows − 1) = 4.5 s
    np.testing.assert_allclose(trace_arrivals(ts, 1.0, n=7), [0, 1, 3, 4.5, 5.5, 7.5, 9])
    # a duration stops at the horizon or at the trace end
    np.testing.assert_allclose(trace_arrivals(ts, 1.0, duration_s=2.0), [0.0, 1.0])
    assert len(trace_arrivals(ts, 1.0, duration_s=1e6)) == 3


# --------------------------------------------------------------------------- lengths


def test_fixed_and_uniform() -> None:
    f = fixed_lengths(128, 10)
    assert f.dtype == np.int64 and np.all(f == 128)
    u = uniform_lengths(3, 7, 20_000, rng(8))
    assert u.dtype == np.int64 and u.min() == 3 and u.max() == 7
    assert set(np.unique(u)) == {3, 4, 5, 6, 7}  # both ends inclusive
    assert abs(u.mean() - 5.0) < 0.05


def test_lognormal_median_and_clipping() -> None:
    x = lognormal_lengths(1024, 0.8, 100_000, rng(9), low=1, high=8192)
    assert x.dtype == np.int64
    assert abs(np.median(x) / 1024 - 1) < 0.03
    assert x.min() >= 1 and x.max() == 8192  # upper tail clipped onto the bound
    y = lognormal_lengths(2.0, 2.0, 50_000, rng(10))
    assert y.min() == 1  # never below 1 token
    z = lognormal_lengths(100, 0.0, 10, rng(11), low=1)
    assert np.all(z == 100)
    with pytest.raises(ValueError):
        lognormal_lengths(100, 1.0, 10, rng(), low=50, high=10)


def test_empirical_frequencies() -> None:
    x = empirical_lengths([10, 20, 30], [0.5, 0.3, 0.2], 100_000, rng(12))
    assert x.dtype == np.int64 and set(np.unique(x)) == {10, 20, 30}
    for v, p in ((10, 0.5), (20, 0.3), (30, 0.2)):
        assert abs((x == v).mean() - p) < 0.01
    u = empirical_lengths([5, 6], None, 20_000, rng(13))
    assert abs((u == 5).mean() - 0.5) < 0.02


def test_sample_lengths_dispatch() -> None:
    spec = LognormalLength(dist="lognormal", median=64, sigma=1.0, min=8, max=1024)
    x = sample_lengths(spec, 10_000, rng(14))
    assert x.min() >= 8 and x.max() <= 1024
    e = sample_lengths(EmpiricalLength(dist="empirical", values=[7]), 5, rng())
    assert e.tolist() == [7] * 5


# --------------------------------------------------------------------------- traces


def test_read_real_conv_trace() -> None:
    tr = read_azure_trace(CONV)
    assert len(tr) == 19_366
    assert tr.timestamps_s[0] == 0.0 and np.all(np.diff(tr.timestamps_s) >= 0)
    assert 3000 < tr.span_s < 4000  # about one hour
    assert abs(tr.timestamps_s[1] - 4.314579) < 1e-6  # 18:15:50.9951690 − 18:15:46.6805900
    assert tr.prompt_tokens[:3].tolist() == [374, 396, 879]
    assert tr.output_tokens[:3].tolist() == [44, 109, 55]
    assert tr.prompt_tokens.min() >= 1 and tr.output_tokens.min() >= 1
    assert tr.prompt_tokens.dtype == np.int64 and tr.timestamps_s.dtype == np.float64
    assert not tr.prompt_tokens.flags.writeable  # cached arrays are read-only


def test_read_real_code_trace() -> None:
    assert len(read_azure_trace(CODE)) == 8_819


def test_trace_clipping_and_sorting(tmp_path: Path) -> None:
    p = write_csv(
        tmp_path / "t.csv",
        "TIMESTAMP,ContextTokens,GeneratedTokens,Extra\n"
        "2023-11-16 18:00:01.5000000,10,0,x\n"
        "2023-11-16 18:00:00.2500000,0,5,y\n"
        "2023-11-16 18:00:03.0000000,30,7,z\n",
    )
    tr = read_azure_trace(p)
    np.testing.assert_allclose(tr.timestamps_s, [0.0, 1.25, 2.75])
    assert tr.prompt_tokens.tolist() == [1, 10, 30]
    assert tr.output_tokens.tolist() == [5, 1, 7]


def test_trace_iso_timestamps_fallback(tmp_path: Path) -> None:
    p = write_csv(
        tmp_path / "iso.csv",
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2024-05-10 00:00:00+00:00,100,10\n"
        "2024-05-10 00:00:02.5+00:00,200,20\n",
    )
    np.testing.assert_allclose(read_azure_trace(p).timestamps_s, [0.0, 2.5])


HEADER = "TIMESTAMP,ContextTokens,GeneratedTokens\n"
STAMP = "2023-11-16 18:00:00.0"


@pytest.mark.parametrize(
    ("body", "column"),
    [
        (f"TIMESTAMP,ContextTokens\n{STAMP},5\n", "GeneratedTokens"),
        (f"{HEADER}yesterday,5,6\n", "TIMESTAMP"),
        (f"{HEADER}{STAMP},five,6\n", "ContextTokens"),
        (f"{HEADER}{STAMP},5,6.5\n", "GeneratedTokens"),
        (f"{HEADER}{STAMP},5,\n", "GeneratedTokens"),
        (f"{HEADER},5,6\n", "TIMESTAMP"),
    ],
)
def test_trace_errors_name_file_and_column(tmp_path: Path, body: str, column: str) -> None:
    p = write_csv(tmp_path / "bad.csv", body)
    with pytest.raises(ValueError) as err:
        read_azure_trace(p)
    assert "bad.csv" in str(err.value) and repr(column) in str(err.value)


def test_trace_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="Azure/AzurePublicDataset"):
        read_azure_trace(tmp_path / "nope.csv")


# --------------------------------------------------------------------------- generate_requests


def test_generate_open_loop_request_horizon() -> None:
    rs = gen(workload({"process": "poisson", "rate_rps": 10}), requests=5000)
    assert len(rs) == 5000 and rs.concurrency is None and rs.phases is None
    assert np.all(np.diff(rs.arrival_s) >= 0)
    assert rs.prompt_tokens.min() >= 1 and rs.prompt_tokens.max() <= 8192
    assert rs.output_tokens.min() >= 1 and rs.output_tokens.max() <= 2048
    assert not rs.arrival_s.flags.writeable


def test_generate_duration_horizon_and_mmpp_phases() -> None:
    spec = workload({"process": "mmpp", "rates_rps": [20, 200], "mean_dwell_s": [20, 2]})
    rs = gen(spec, duration_s=120.0)
    assert rs.arrival_s[-1] < 120.0
    assert rs.phases is not None and rs.phases.state[0] == 0
    assert len(rs.prompt_tokens) == len(rs.output_tokens) == len(rs)


def test_generate_is_deterministic() -> None:
    spec = workload({"process": "gamma", "rate_rps": 30, "cv": 2.0})
    a, b = gen(spec, seed=5, requests=2000), gen(spec, seed=5, requests=2000)
    for field in ("arrival_s", "prompt_tokens", "output_tokens"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    c = gen(spec, seed=6, requests=2000)
    assert not np.array_equal(a.arrival_s, c.arrival_s)
    # arrivals and lengths come from independent streams
    corr = np.corrcoef(np.diff(a.arrival_s), a.prompt_tokens[1:])[0, 1]
    assert abs(corr) < 0.1


def test_generate_burst() -> None:
    rs = gen(workload({"process": "burst"}), requests=300)
    assert len(rs) == 300 and not rs.arrival_s.any()
    with pytest.raises(ValueError, match=r"horizon\.requests"):
        gen(workload({"process": "burst"}), duration_s=10.0)


def test_generate_closed_loop() -> None:
    spec = workload({"process": "closed", "concurrency": 8})
    rs = gen(spec, requests=100)
    assert len(rs) == 100 and rs.concurrency == 8 and np.isnan(rs.arrival_s).all()
    # duration horizon: enough requests that no sequence could outrun them
    fixed = WorkloadSpec.model_validate(
        {
            "arrival": {"process": "closed", "concurrency": 4},
            "prompt_tokens": {"dist": "fixed", "value": 100},
            "output_tokens": {"dist": "fixed", "value": 50},
        }
    )
    rs = gen(fixed, duration_s=10.0)
    budget = 4 * 10.0 / CLOSED_LOOP_MIN_TOKEN_S  # output tokens
    assert len(rs) == int(np.ceil(budget / 50)) + 4
    assert rs.output_tokens.sum() >= budget


def test_generate_trace_replay() -> None:
    trace = {"path": str(CONV), "time_scale": 0.5}
    spec = WorkloadSpec.model_validate({"arrival": {"process": "trace"}, "trace": trace})
    tr = read_azure_trace(CONV)
    rs = gen(spec, requests=100)
    np.testing.assert_allclose(rs.arrival_s, tr.timestamps_s[:100] * 0.5)
    np.testing.assert_array_equal(rs.prompt_tokens, tr.prompt_tokens[:100])
    # duration past the trace end stops at the trace end (scaled span ≈ 1750 s)
    assert len(gen(spec, duration_s=10_000.0)) == len(tr)
    assert gen(spec, duration_s=60.0).arrival_s[-1] < 60.0
    # more requests than rows: the trace cycles, arrivals stay sorted
    big = gen(spec, requests=len(tr) + 10)
    assert np.all(np.diff(big.arrival_s) > 0)
    np.testing.assert_array_equal(big.output_tokens[-10:], tr.output_tokens[:10])


def test_generate_trace_lengths_with_synthetic_arrivals_and_vice_versa() -> None:
    tr = read_azure_trace(CONV)
    lengths_only = WorkloadSpec.model_validate(
        {"arrival": {"process": "poisson", "rate_rps": 5}, "trace": {"path": str(CONV)}}
    )
    rs = gen(lengths_only, requests=50)
    np.testing.assert_array_equal(rs.output_tokens, tr.output_tokens[:50])
    times_only = WorkloadSpec.model_validate(
        {
            "arrival": {"process": "trace"},
            "trace": {"path": str(CONV), "use_lengths": False},
            "prompt_tokens": {"dist": "fixed", "value": 7},
            "output_tokens": {"dist": "fixed", "value": 3},
        }
    )
    rs = gen(times_only, requests=50)
    assert np.all(rs.prompt_tokens == 7) and np.all(rs.output_tokens == 3)
    np.testing.assert_allclose(rs.arrival_s, tr.timestamps_s[:50])


# --------------------------------------------------------------------------- example files


EXAMPLE_WORKLOADS = sorted((REPO / "workloads").glob("*.yaml")) + sorted(
    (REPO / "src" / "clustersim" / "catalog" / "workloads").glob("*.yaml")
)


@pytest.mark.parametrize("path", EXAMPLE_WORKLOADS, ids=lambda p: p.name)
def test_example_workloads(path: Path) -> None:
    spec = WorkloadSpec.model_validate(yaml.safe_load(path.read_text()))
    assert spec.name == path.stem
    rs = gen(spec, base_dir=path.parent, duration_s=30.0)
    assert len(rs) > 0
