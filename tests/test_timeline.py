"""Time-resolved metrics (clustersim.metrics.timeline): hand-made tables, then the simulator."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from clustersim.config.load import load_experiment
from clustersim.config.schema import SLOSpec
from clustersim.metrics.summary import summarize
from clustersim.metrics.time_bins import occupancy, window_count, window_index
from clustersim.metrics.timeline import (
    SLO_TARGET,
    TIMELINE_COLUMNS,
    timeline_table,
    window_slo_summary,
)
from clustersim.sim.engine import RunOutput, run_experiment
from clustersim.workload.arrivals import StateTimeline

NAN = math.nan
REQUEST_COLUMNS = [
    "id", "arrival_s", "first_token_s", "finish_s", "prompt_tokens", "output_tokens",
    "replica", "ttft_s", "tpot_s", "e2e_s", "queue_s", "preemptions", "dropped",
]  # fmt: skip


def requests_table(rows: list[tuple[float, float, float, int, float, bool]]) -> pd.DataFrame:
    """Rows of (arrival, ttft, tpot, output tokens, queue, dropped) → a requests table."""
    records = []
    for i, (arrival, ttft, tpot, out, queue, dropped) in enumerate(rows):
        first = arrival + ttft
        finish = first + (0.0 if out == 1 else tpot * (out - 1))
        if dropped:
            first = finish = ttft = tpot = queue = NAN
        records.append(
            (i, arrival, first, finish, 100, out, 0, ttft, tpot if out > 1 else NAN,
             finish - arrival, queue, 0, dropped)
        )  # fmt: skip
    return pd.DataFrame(records, columns=REQUEST_COLUMNS)


NO_LINKS = pd.DataFrame(columns=["link", "kind", "bin_start_s", "bytes", "utilisation"])


def timeline_of(req: pd.DataFrame, bin_s: float = 1.0, **kw: Any) -> pd.DataFrame:
    slo = kw.pop("slo", SLOSpec(ttft_p99_s=1.0, tpot_p99_s=0.1))
    return timeline_table(req, kw.pop("iterations", None), kw.pop("links", NO_LINKS), bin_s,
                          slo, **kw).to_frame()  # fmt: skip


# --------------------------------------------------------------------------- windows


def test_window_index_and_count() -> None:
    idx = window_index([0.0, 0.999, 1.0, 2.5, NAN, math.inf], 1.0)
    assert idx.tolist() == [0, 0, 1, 2, -1, -1]
    assert window_count(2.5, 1.0) == 3
    assert window_count(3.0, 1.0) == 4  # an event at exactly 3 s opens window 3
    assert window_count(-math.inf, 1.0) == 0


@pytest.mark.parametrize("bin_s", [0.1, 0.25, 1.0, 7.0])
def test_windows_partition_the_requests(bin_s: float) -> None:
    """Every arrived request is counted in exactly one window: k = floor(arrival / w)."""
    rng = np.random.default_rng(5)
    arrival = np.sort(np.concatenate((rng.uniform(0, 50, 400), np.arange(0, 50, bin_s)[:40])))
    rows = [(float(a), 0.2, 0.01, 5, 0.05, bool(i % 17 == 0)) for i, a in enumerate(arrival)]
    req = requests_table(rows)
    req.loc[3, "arrival_s"] = NAN  # never arrived: in no window
    tl = timeline_of(req, bin_s)
    assert list(tl.columns) == list(TIMELINE_COLUMNS)
    assert tl["arrivals"].sum() == len(req) - 1
    expected = np.bincount(np.floor(arrival[np.arange(len(arrival)) != 3] / bin_s).astype(int))
    assert tl["arrivals"].to_numpy()[: len(expected)].tolist() == expected.tolist()
    assert tl["bin_start_s"].to_numpy() == pytest.approx(np.arange(len(tl)) * bin_s)
    done = ~req["dropped"] & req["finish_s"].notna()
    assert tl["completions"].sum() == done.sum()  # each completion in one window too
    assert tl["dropped"].sum() == req["dropped"][req["arrival_s"].notna()].sum()
    # the last window holds the run's last event
    last = float(np.nanmax(req[["arrival_s", "finish_s"]].to_numpy()))
    assert tl["bin_start_s"].iloc[-1] <= last < tl["bin_start_s"].iloc[-1] + bin_s


def test_empty_run_has_no_windows() -> None:
    tl = timeline_of(requests_table([]))
    assert len(tl) == 0 and list(tl.columns) == list(TIMELINE_COLUMNS)
    assert window_slo_summary(tl) == {
        "worst_window_attainment": None, "worst_window_start_s": None, "windows_violating": 0
    }  # fmt: skip


# --------------------------------------------------------------------------- SLO burn


def test_burn_rate_arithmetic_by_hand() -> None:
    """Window 0: 4 arrivals, 1 misses TTFT; window 1: 2 arrivals, 1 dropped, 1 misses TPOT;
    window 2: 1 one-token request (NaN TPOT meets the bound); windows 3, 4: none arrive."""
    req = requests_table([
        (0.1, 0.2, 0.01, 11, 0.0, False),
        (0.2, 0.4, 0.02, 11, 0.1, False),
        (0.5, 1.5, 0.01, 11, 1.0, False),  # TTFT 1.5 > 1.0
        (0.9, 0.6, 0.05, 11, 0.2, False),
        (1.0, 0.3, 0.2, 11, 0.1, False),  # exactly at 1.0 → window 1; TPOT 0.2 > 0.1
        (1.5, 0.0, 0.0, 11, 0.0, True),  # dropped: misses every bound
        (2.2, 0.5, 0.0, 1, 0.0, False),  # one output token
    ])  # fmt: skip
    tl = timeline_of(req)
    att = tl["slo_attainment"].to_numpy()
    assert att[:3] == pytest.approx([0.75, 0.0, 1.0])
    assert np.isnan(att[3:]).all()  # no arrivals: undefined, not 0 or 1
    assert tl["slo_violation_frac"].to_numpy()[:3] == pytest.approx([0.25, 1.0, 0.0])
    burn = tl["slo_burn_rate"].to_numpy()[:3]
    assert burn == pytest.approx([0.25 / 0.01, 1.0 / 0.01, 0.0])
    assert tl["ttft_violation_frac"].to_numpy()[:3] == pytest.approx([0.25, 0.5, 0.0])
    assert tl["tpot_violation_frac"].to_numpy()[:3] == pytest.approx([0.0, 1.0, 0.0])
    assert tl["e2e_violation_frac"].isna().all()  # bound not set
    # percentiles of the completed arrivals, numpy 'linear'
    ttft0 = [0.2, 0.4, 1.5, 0.6]
    assert tl["ttft_p99_s"].iloc[0] == pytest.approx(np.percentile(ttft0, 99))
    assert tl["ttft_p50_s"].iloc[0] == pytest.approx(0.5)
    assert tl["ttft_p99_s"].iloc[1] == pytest.approx(0.3)  # the dropped one has no TTFT
    assert np.isnan(tl["tpot_p99_s"].iloc[2])  # 1-token output: no TPOT
    assert tl["arrival_rate_rps"].to_numpy()[:3] == pytest.approx([4.0, 2.0, 1.0])
    s = window_slo_summary(tl)
    assert s == {"worst_window_attainment": 0.0, "worst_window_start_s": 1.0,
                 "windows_violating": 2}  # fmt: skip


def test_window_summary_on_a_hand_made_timeline() -> None:
    """windows_violating counts measured windows with arrivals below 99 %; 0.99 itself is met."""
    tl = pd.DataFrame(
        {
            "bin_start_s": [0.0, 5.0, 10.0, 15.0, 20.0, 25.0, 30.0],
            "measured": [False, True, True, True, True, True, True],
            "arrivals": [10, 100, 200, 10, 0, 10, 400],
            "slo_attainment": [0.0, 0.99, 0.985, 0.5, NAN, 0.5, 1.0],
        }
    )
    s = window_slo_summary(tl)
    assert s["windows_violating"] == 3  # 0.985, 0.5, 0.5 — not the warm-up window's 0.0
    assert s["worst_window_attainment"] == 0.5
    assert s["worst_window_start_s"] == 15.0  # tie at 0.5: same arrivals → the earlier
    tl.loc[5, "arrivals"] = 11  # the later tie now has more requests missing
    assert window_slo_summary(tl)["worst_window_start_s"] == 25.0
    assert SLO_TARGET == 0.99
    assert window_slo_summary(None)["windows_violating"] is None


def test_summary_carries_the_window_keys() -> None:
    req = requests_table([(0.1, 0.2, 0.01, 11, 0.0, False), (1.2, 3.0, 0.01, 11, 2.0, False)])
    out = RunOutput(req, pd.DataFrame(), NO_LINKS, None, 1, {"events": 1.0})
    tl = timeline_of(req)
    s = summarize(out, SLOSpec(ttft_p99_s=1.0), 0.0, window_slo_summary(tl))
    assert s["slo"]["worst_window_attainment"] == 0.0
    assert s["slo"]["worst_window_start_s"] == 1.0
    assert s["slo"]["windows_violating"] == 1
    plain = summarize(out, SLOSpec(ttft_p99_s=1.0), 0.0)
    assert plain["slo"]["windows_violating"] is None


# --------------------------------------------------------------------------- time averages


def test_occupancy_matches_brute_force_integration() -> None:
    rng = np.random.default_rng(1)
    starts = rng.uniform(0, 9, 50)
    ends = starts + rng.exponential(1.0, 50)
    bin_s, n = 0.5, 22
    got = occupancy(starts, ends, n, bin_s)
    t = (np.arange(n * 2000) + 0.5) * (bin_s / 2000)  # midpoint rule, 2000 points per window
    count = ((starts[:, None] <= t) & (t < ends[:, None])).sum(axis=0)
    assert got == pytest.approx(count.reshape(n, 2000).mean(axis=1), abs=2e-3)


def test_queue_length_by_hand() -> None:
    req = requests_table([
        (0.5, 2.0, 0.01, 3, 1.0, False),  # queued [0.5, 1.5): 0.5 in window 0, 0.5 in 1
        (1.2, 0.1, 0.01, 3, 0.0, False),  # never waits
        (1.4, 0.0, 0.0, 3, 0.0, True),  # dropped: never queued
        (1.0, 3.0, 0.01, 3, 2.0, False),  # queued [1.0, 3.0): all of windows 1 and 2
    ])  # fmt: skip
    tl = timeline_of(req)
    assert tl["queue_len"].to_numpy()[:4] == pytest.approx([0.5, 1.5, 1.0, 0.0])


def test_step_columns_use_stage_zero_steps_ending_in_the_window() -> None:
    req = requests_table([(0.0, 0.1, 0.01, 3, 0.0, False)])
    it = pd.DataFrame(
        {
            "replica": [0, 0, 0, 1, 0],
            "stage": [0, 0, 1, 0, 0],
            "lane": [0, 0, 0, 0, 0],
            "start_s": [0.0, 0.5, 0.5, 0.6, 1.5],
            "end_s": [0.5, 0.9, 0.9, 1.1, 1.8],
            "num_seqs": [4, 8, 99, 6, 2],
            "kv_used_blocks": [10, 30, 999, 50, 0],
            "kv_capacity_blocks": [100, 100, 100, 100, 100],
        }
    )
    tl = timeline_of(req, iterations=it)
    assert tl["batch_seqs"].to_numpy()[:2] == pytest.approx([6.0, 4.0])  # stage 1 ignored
    assert tl["kv_usage"].to_numpy()[:2] == pytest.approx([0.2, 0.25])
    assert tl["kv_usage_max"].to_numpy()[:2] == pytest.approx([0.3, 0.5])
    bare = timeline_of(req, iterations=it[["replica", "start_s", "end_s"]])
    assert bare["batch_seqs"].isna().all() and bare["kv_usage"].isna().all()


def test_link_columns_peak_and_busiest_link() -> None:
    req = requests_table([(0.0, 0.1, 0.01, 3, 0.0, False), (3.5, 0.1, 0.01, 3, 0.0, False)])
    links = pd.DataFrame(
        {
            "link": ["a", "a", "b", "b", "b"],
            "kind": ["nvlink"] * 5,
            "bin_start_s": [0.0, 1.0, 0.0, 2.0, 3.0],
            "bytes": [1.0] * 5,
            "utilisation": [0.9, 0.1, 0.3, 0.4, 0.5],
        }
    )
    tl = timeline_of(req, links=links)  # busiest = b (Σ 1.2 > Σ 1.0)
    assert tl["link_max_utilisation"].to_numpy() == pytest.approx([0.9, 0.1, 0.4, 0.5])
    assert tl["busiest_link_utilisation"].to_numpy() == pytest.approx([0.3, 0.0, 0.4, 0.5])
    coarse = timeline_of(req, bin_s=2.0, links=links, link_bin_s=1.0)  # means over 2 bins
    assert coarse["link_max_utilisation"].to_numpy() == pytest.approx([0.5, 0.45])
    assert coarse["busiest_link_utilisation"].to_numpy() == pytest.approx([0.15, 0.45])
    assert timeline_of(req)["link_max_utilisation"].isna().all()  # no link rows at all


def test_burst_fraction_from_the_mmpp_state_timeline() -> None:
    req = requests_table([(9.5, 0.1, 0.01, 3, 0.0, False)])
    phases = StateTimeline(
        start_s=np.array([0.0, 3.0, 5.0]), state=np.array([0, 1, 0]), end_s=10.0,
        rates_rps=(1.0, 10.0),
    )  # fmt: skip
    tl = timeline_of(req, bin_s=2.0, phases=phases)
    assert tl["burst_fraction"].to_numpy() == pytest.approx([0.0, 0.5, 0.5, 0.0, 0.0])
    assert timeline_of(req, bin_s=2.0)["burst_fraction"].isna().all()


# --------------------------------------------------------------------------- simulated runs

EXPERIMENT = """\
name: windows
seed: 1
model: llama-3.1-8b
topology: dgx_h100_x1
layout: {{tp: 1}}
workload:
  arrival: {arrival}
  prompt_tokens: {{dist: uniform, min: 256, max: 1024}}
  output_tokens: {{dist: uniform, min: 32, max: 128}}
horizon: {{duration_s: 400, warmup_s: 10}}
slo: {{ttft_p99_s: 0.5, tpot_p99_s: 0.05}}
output: {{time_bin_s: 20}}
"""
# One H100 serving Llama-3.1-8B with these lengths saturates near 48 req/s; 30 req/s is ~60 %.
POISSON = "{process: poisson, rate_rps: 30}"
# Same long-run mean, (20·20 + 70·5) / 25 = 30 req/s, but 70 req/s bursts (above saturation).
MMPP = "{process: mmpp, rates_rps: [20, 70], mean_dwell_s: [20, 5]}"


def simulate(tmp_path: Path, arrival: str) -> tuple[pd.DataFrame, pd.DataFrame, float]:
    """(timeline, measured windows with arrivals, whole-run p99 TTFT in s)."""
    path = tmp_path / "windows.yaml"
    path.write_text(EXPERIMENT.format(arrival=arrival))
    exp = load_experiment(path)
    out = run_experiment(exp)
    tl = timeline_table(out.requests, out.iterations, out.links, exp.output.time_bin_s,
                        exp.slo, exp.horizon.warmup_s, out.phases).to_frame()  # fmt: skip
    req = out.requests
    whole = float(np.nanpercentile(req["ttft_s"][req["arrival_s"] >= exp.horizon.warmup_s], 99))
    return tl, tl.loc[tl["measured"] & (tl["arrivals"] > 0)], whole


def test_poisson_window_p99_stays_near_the_whole_run_p99(tmp_path: Path) -> None:
    """Stationary arrivals: every 20 s window (~600 requests) samples the same TTFT
    distribution, so its p99 (≈ its 6th-largest TTFT) stays near the whole-run p99.

    Tolerance: within a factor of 2 either way. The window p99 is an order statistic of a few
    hundred correlated samples (one long prompt delays the requests queued behind it); over
    20 seeds × 19 windows it ranged over 0.64–1.73 × the whole-run p99 in this setting."""
    tl, windows, whole = simulate(tmp_path, POISSON)
    assert windows["arrivals"].min() > 400
    ratio = windows["ttft_p99_s"].to_numpy() / whole
    assert ratio.min() > 0.5 and ratio.max() < 2.0, ratio
    assert window_slo_summary(tl)["worst_window_attainment"] >= SLO_TARGET


def test_mmpp_worst_window_is_measurably_worse(tmp_path: Path) -> None:
    """Same mean rate, but 5 s bursts at 70 req/s (above saturation) queue requests: the
    worst window's p99 TTFT is far above the Poisson run's (≥ 29× over 20 seeds; we ask 5×)
    and above the MMPP run's own median window (≥ 3.2× over 20 seeds; we ask 2×), and its
    attainment collapses."""
    _, _, poisson_whole = simulate(tmp_path, POISSON)
    tl, windows, _ = simulate(tmp_path, MMPP)
    worst_p99 = float(windows["ttft_p99_s"].max())
    assert worst_p99 > 5.0 * poisson_whole
    assert worst_p99 > 2.0 * float(windows["ttft_p99_s"].median())
    summary = window_slo_summary(tl)
    assert summary["worst_window_attainment"] < 0.5
    assert summary["windows_violating"] >= 1
    burst = tl["burst_fraction"].to_numpy()
    assert np.nanmax(burst) > 0.1 and np.nanmin(burst) == 0.0  # bursts recorded, not all time


def test_disaggregated_runs_get_per_pool_step_columns() -> None:

    iterations = pd.DataFrame(
        {
            "stage": [0, 0, 0, 0],
            "pool": ["prefill", "decode", "decode", "prefill"],
            "end_s": [0.2, 0.4, 0.6, 1.5],
            "num_seqs": [2, 30, 34, 4],
            "kv_used_blocks": [10, 500, 700, 20],
            "kv_capacity_blocks": [100, 1000, 1000, 100],
        }
    )
    requests = pd.DataFrame(
        {
            c: pd.Series(dtype="float64")
            for c in (
                "arrival_s",
                "first_token_s",
                "finish_s",
                "ttft_s",
                "tpot_s",
                "e2e_s",
                "queue_s",
            )
        }
    ).assign(dropped=pd.Series(dtype=bool))
    tl = timeline_table(requests, iterations, None, 1.0, SLOSpec(), 0.0, None).to_frame()
    assert tl.loc[0, "batch_seqs_decode"] == 32.0
    assert tl.loc[0, "batch_seqs_prefill"] == 2.0
    assert tl.loc[0, "kv_usage_decode"] == pytest.approx(0.6)
    assert tl.loc[0, "kv_usage_max_prefill"] == pytest.approx(0.1)
    assert tl.loc[1, "batch_seqs_prefill"] == 4.0
    assert tl.loc[0, "batch_seqs"] == pytest.approx(22.0)  # both pools' steps together
