"""summarize(): hand-made RunOutput tables, every number checked by hand."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from typing import Any

import pandas as pd
import pytest

from clustersim.config.schema import SLOSpec
from clustersim.metrics.summary import json_safe, summarize
from clustersim.sim.engine import RunOutput

NAN = math.nan


# id, arrival, first token, finish, prompt, output, ttft, tpot, e2e, queue, preemptions, dropped
ROWS = [
    (0, 0.5, 1.0, 2.0, 100, 11, 0.5, 0.1, 1.5, 0.1, 1, False),  # in the warm-up
    (1, 1.0, 1.2, 2.2, 10, 11, 0.2, 0.1, 1.2, 0.0, 0, False),
    (2, 2.0, 2.5, 3.5, 20, 6, 0.5, 0.2, 1.5, 0.1, 2, False),
    (3, 3.0, NAN, NAN, 30, 5, NAN, NAN, NAN, NAN, 0, True),  # dropped
    (4, 4.0, 4.1, 4.1, 40, 1, 0.1, NAN, 0.1, 0.05, 0, False),  # 1-token output
    (5, 5.0, 8.0, 9.0, 50, 3, 3.0, 0.5, 4.0, 2.0, 1, False),
    (6, NAN, NAN, NAN, 60, 7, NAN, NAN, NAN, NAN, 0, False),  # never arrived
]
COLUMNS = [
    "id", "arrival_s", "first_token_s", "finish_s", "prompt_tokens", "output_tokens",
    "ttft_s", "tpot_s", "e2e_s", "queue_s", "preemptions", "dropped",
]  # fmt: skip
WARMUP_S = 1.0


def requests_table(rows: list[tuple[Any, ...]] = ROWS) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=COLUMNS)
    df.insert(6, "replica", 0)
    return df


def links_table() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "link": ["a", "b", "a", "b", "a", "b"],
            "kind": ["nvlink"] * 6,
            "bin_start_s": [0.0, 0.0, 1.0, 1.0, 2.0, 2.0],
            "bytes": [9.0, 1.0, 2.0, 6.0, 3.0, 1.0],
            "utilisation": [0.9, 0.1, 0.2, 0.6, 0.3, 0.1],
        }
    )


def experts_table() -> pd.DataFrame:
    # bin 0 (warm-up) is wildly imbalanced; bin 3 has no row for rank 1 (= 0 tokens)
    return pd.DataFrame(
        {
            "bin_start_s": [0.0, 0.0, 1.0, 1.0, 1.0, 2.0, 2.0, 3.0],
            "rank": [0, 1, 0, 0, 1, 0, 1, 0],
            "expert": [0, 1, 0, 2, 1, 0, 1, 0],
            "tokens": [1000, 0, 10, 20, 10, 20, 20, 40],
        }
    )


def output(**kw: Any) -> RunOutput:
    args: dict[str, Any] = {
        "requests": requests_table(),
        "iterations": pd.DataFrame(),
        "links": links_table(),
        "experts": None,
        "gpus": 4,
        "sim": {"events": 123.0, "wall_s": 0.5, "simulated_s": 10.0},
    }
    args.update(kw)
    return RunOutput(**args)


def test_keys_are_exactly_the_design_keys() -> None:
    s = summarize(output(experts=experts_table()), SLOSpec(), WARMUP_S)
    stats = {"mean", "p50", "p90", "p99"}
    assert set(s) == {
        "requests_completed", "requests_dropped", "gpus", "throughput", "ttft_s", "tpot_s",
        "e2e_s", "queue_s", "preemptions", "slo", "links", "experts", "sim", "window",
    }  # fmt: skip
    assert set(s["throughput"]) == {
        "input_tokens_per_s",
        "output_tokens_per_s",
        "output_tokens_per_s_per_gpu",
        "harness_output_tokens_per_s",
    }
    assert set(s["window"]) == {"start_s", "end_s", "duration_s", "basis"}
    for key in ("ttft_s", "tpot_s", "e2e_s", "queue_s"):
        assert set(s[key]) == stats
    assert set(s["slo"]) == {
        "attainment", "goodput_rps", "ttft_p99_s", "tpot_p99_s", "e2e_p99_s",
        "worst_window_attainment", "worst_window_start_s", "windows_violating",
    }  # fmt: skip
    assert set(s["links"]) == {"max_utilisation", "busiest"}
    assert set(s["experts"]) == {"imbalance"}
    assert set(s["sim"]) == {"events", "wall_s", "simulated_s"}


def test_counts_throughput_and_warmup_exclusion() -> None:
    s = summarize(output(), SLOSpec(), WARMUP_S)
    assert s["requests_completed"] == 4  # ids 1, 2, 4, 5
    assert s["requests_dropped"] == 1
    assert s["gpus"] == 4
    assert s["preemptions"] == 3  # id 0's preemption is in the warm-up
    # window = [warm-up 1.0, last arrival 5.0] = 4 s; tokens produced inside it:
    # id 0 (warm-up arrival): prefill 0.6–1.0 ends at the start (0 input), first token at 1.0
    # and its 10 decode tokens in (1, 2] → 11 output; ids 1, 2, 4 wholly inside (10 + 20 + 40
    # input; 11 + 6 + 1 output); id 5 runs 7–9, in the drain (not counted)
    assert s["window"] == {"start_s": 1.0, "end_s": 5.0, "duration_s": 4.0, "basis": "arrivals"}
    assert s["throughput"]["input_tokens_per_s"] == pytest.approx((10 + 20 + 40) / 4)
    assert s["throughput"]["output_tokens_per_s"] == pytest.approx((11 + 11 + 6 + 1) / 4)
    assert s["throughput"]["output_tokens_per_s_per_gpu"] == pytest.approx(29 / 4 / 4)
    # harness: completed measured output tokens / (last finish 9.0 − first arrival 1.0)
    assert s["throughput"]["harness_output_tokens_per_s"] == pytest.approx((11 + 6 + 1 + 3) / 8)
    assert s["sim"] == {"events": 123, "wall_s": 0.5, "simulated_s": 10.0}


def test_duration_horizon_ends_the_window_and_splits_decode() -> None:
    # end of arrivals 8.5: id 5's first token (8.0) and half of its decode (8, 9] are inside
    s = summarize(output(), SLOSpec(), WARMUP_S, arrivals_end_s=8.5)
    assert s["window"]["duration_s"] == pytest.approx(7.5)
    # id 5's prefill 7.0–8.0 is inside: 50 input tokens
    assert s["throughput"]["input_tokens_per_s"] == pytest.approx((70 + 50) / 7.5)
    assert s["throughput"]["output_tokens_per_s"] == pytest.approx((29 + 1 + 2 * 0.5) / 7.5)


def test_burst_window_falls_back_to_the_makespan() -> None:
    rows = [
        (0, 0.0, 1.0, 2.0, 10, 5, 1.0, 0.25, 2.0, 0.0, 0, False),
        (1, 0.0, 1.0, 4.0, 10, 7, 1.0, 0.5, 4.0, 0.0, 0, False),
    ]
    s = summarize(output(requests=requests_table(rows)), SLOSpec(), 0.0)
    assert s["window"] == {"start_s": 0.0, "end_s": 4.0, "duration_s": 4.0, "basis": "makespan"}
    assert s["throughput"]["output_tokens_per_s"] == pytest.approx(12 / 4)
    assert s["throughput"]["harness_output_tokens_per_s"] == pytest.approx(12 / 4)
    assert s["slo"]["goodput_rps"] == pytest.approx(2 / 4)


def test_latency_percentiles_linear_and_nan_safe() -> None:
    s = summarize(output(), SLOSpec(), WARMUP_S)
    # TTFT of completed measured requests, sorted: 0.1, 0.2, 0.5, 3.0
    assert s["ttft_s"]["mean"] == pytest.approx(0.95)
    assert s["ttft_s"]["p50"] == pytest.approx(0.35)
    assert s["ttft_s"]["p90"] == pytest.approx(0.5 + 0.7 * 2.5)  # rank 2.7
    assert s["ttft_s"]["p99"] == pytest.approx(0.5 + 0.97 * 2.5)  # rank 2.97
    # TPOT skips the 1-token NaN: 0.1, 0.2, 0.5
    assert s["tpot_s"]["mean"] == pytest.approx(0.8 / 3)
    assert s["tpot_s"]["p50"] == pytest.approx(0.2)
    assert s["e2e_s"]["p50"] == pytest.approx((1.2 + 1.5) / 2)
    assert s["queue_s"]["mean"] == pytest.approx((0.0 + 0.1 + 0.05 + 2.0) / 4)


def test_slo_attainment_and_goodput() -> None:
    slo = SLOSpec(ttft_p99_s=1.0, tpot_p99_s=0.15)
    s = summarize(output(), slo, WARMUP_S)
    # meets: id 1 (0.2 s, 0.1 s) and id 4 (1 token: NaN TPOT meets); fails: 2 (TPOT), 3
    # (dropped), 5 (TTFT) → 2 of 5 measured
    assert s["slo"]["attainment"] == pytest.approx(0.4)
    assert s["slo"]["goodput_rps"] == pytest.approx(2 / 4)  # per second of the 4 s window
    assert s["slo"]["ttft_p99_s"] == 1.0
    assert s["slo"]["tpot_p99_s"] == 0.15
    assert s["slo"]["e2e_p99_s"] is None


def test_slo_e2e_bound_and_no_bounds() -> None:
    tight = summarize(output(), SLOSpec(e2e_p99_s=1.0), WARMUP_S)
    assert tight["slo"]["attainment"] == pytest.approx(1 / 5)  # only id 4 (0.1 s)
    unbounded = summarize(output(), SLOSpec(), WARMUP_S)
    # every completed request meets no bounds; the dropped one still fails
    assert unbounded["slo"]["attainment"] == pytest.approx(4 / 5)
    assert unbounded["slo"]["goodput_rps"] == pytest.approx(4 / 4)


def test_warmup_zero_includes_first_request() -> None:
    s = summarize(output(), SLOSpec(), 0.0)
    assert s["requests_completed"] == 5
    assert s["preemptions"] == 4
    # window = [0, 5]: id 0's prefill (0.6–1.0, 100 tokens) is now inside
    assert s["throughput"]["input_tokens_per_s"] == pytest.approx(170 / 5)


def test_links_use_measured_bins() -> None:
    s = summarize(output(), SLOSpec(), WARMUP_S)
    assert s["links"] == {"max_utilisation": pytest.approx(0.6), "busiest": "b"}
    with_warmup = summarize(output(), SLOSpec(), 0.0)
    assert with_warmup["links"]["max_utilisation"] == pytest.approx(0.9)
    assert with_warmup["links"]["busiest"] == "a"  # 1.4 vs 0.8 summed utilisation


def test_expert_imbalance_sums_experts_and_fills_missing_ranks() -> None:
    s = summarize(output(experts=experts_table()), SLOSpec(), WARMUP_S)
    # per bin (rank 0, rank 1): (30, 10), (20, 20), (40, 0) → Σmax 90 / Σmean 60
    assert s["experts"]["imbalance"] == pytest.approx(1.5)
    assert summarize(output(), SLOSpec(), WARMUP_S)["experts"]["imbalance"] is None


def test_all_dropped_is_json_safe() -> None:
    rows = [(i, 1.0 + i, NAN, NAN, 10, 5, NAN, NAN, NAN, NAN, 0, True) for i in range(3)]
    empty_links = links_table().iloc[0:0]
    out = output(requests=requests_table(rows), links=empty_links)
    out = replace(out, sim={"events": 0.0, "wall_s": NAN, "simulated_s": 3.0})
    s = summarize(out, SLOSpec(ttft_p99_s=1.0), 0.0)
    assert s["requests_completed"] == 0
    assert s["requests_dropped"] == 3
    assert s["slo"]["attainment"] == 0.0
    assert s["slo"]["goodput_rps"] == 0.0
    assert s["throughput"]["output_tokens_per_s"] == 0.0
    assert s["ttft_s"] == {"mean": None, "p50": None, "p90": None, "p99": None}
    assert s["links"] == {"max_utilisation": None, "busiest": None}
    assert s["sim"]["wall_s"] is None
    json.dumps(s, allow_nan=False)  # raises on any NaN / inf left


def test_json_safe_converts_numpy_and_nan() -> None:
    import numpy as np

    data = {"a": np.float64(NAN), "b": (np.int64(3), math.inf), "c": {1: np.bool_(True)}}
    assert json_safe(data) == {"a": None, "b": [3, None], "c": {"1": True}}
