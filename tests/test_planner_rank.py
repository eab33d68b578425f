"""Ranking: what "meets the SLO" means, the fewest-GPUs order, its goodput tie-break."""

from __future__ import annotations

import math
from typing import Any

from clustersim.config.schema import Layout, SLOSpec
from clustersim.planner.rank import Row, best, judge, pareto_front, rank

SLO = SLOSpec(ttft_p99_s=2.0, tpot_p99_s=0.1)


def summary(
    ttft: float | None = 1.0,
    tpot: float | None = 0.05,
    goodput: float = 10.0,
    done: int = 100,
    dropped: int = 0,
) -> dict[str, Any]:
    return {
        "requests_completed": done,
        "requests_dropped": dropped,
        "ttft_s": {"p50": None if ttft is None else ttft / 2, "p99": ttft},
        "tpot_s": {"p50": None if tpot is None else tpot / 2, "p99": tpot},
        "e2e_s": {"p99": 5.0},
        "slo": {"goodput_rps": goodput},
    }


def row(label: str, gpus: int, s: dict[str, Any] | None, status: str = "simulated") -> Row:
    if s is None:
        return Row(label, Layout(tp=gpus), gpus, status)
    meets, misses, worst = judge(s, SLO)
    return Row(label, Layout(tp=gpus), gpus, status, s, (), meets, misses, worst)


def test_meets_means_p99s_within_bounds_and_nothing_dropped() -> None:
    assert judge(summary(), SLO)[0]
    assert judge(summary(ttft=2.0, tpot=0.1), SLO)[0]  # bounds are inclusive
    ok, misses, worst = judge(summary(ttft=2.5), SLO)
    assert not ok and misses == ("p99 TTFT 2.50 s > 2.00 s",) and worst == 1.25
    ok, misses, _ = judge(summary(dropped=3), SLO)
    assert not ok and misses == ("3 requests dropped",)
    ok, misses, worst = judge(summary(done=0, ttft=None, tpot=None), SLO)
    assert not ok and "no request completed" in misses and math.isinf(worst)
    # every output a single token: no TPOT, the TPOT bound holds
    assert judge(summary(tpot=None), SLO)[0]
    assert judge(summary(tpot=0.2), SLOSpec(ttft_p99_s=2.0))[0]  # unset bound unchecked


def test_fewest_gpus_first_then_goodput_per_gpu() -> None:
    rows = [
        row("a16", 16, summary(goodput=20.0)),  # 1.25 / GPU
        row("b12", 12, summary(goodput=12.0)),  # 1.0 / GPU
        row("c12", 12, summary(goodput=13.2)),  # 1.1 / GPU: the tie-break winner
        row("d8", 8, summary(tpot=0.3)),  # misses: ranked after every meeting row
        row("e8", 8, summary(tpot=0.15)),  # misses by less than d8
        row("f4", 4, None, status="pruned"),
        row("g4", 4, None, status="failed"),
    ]
    ranked = rank(rows)
    assert [r.label for r in ranked] == ["c12", "b12", "a16", "e8", "d8", "g4", "f4"]
    top = best(ranked)
    assert top is not None and top.label == "c12"
    assert top.goodput_per_gpu == 13.2 / 12


def test_equal_goodput_ties_go_to_the_label() -> None:
    ranked = rank([row("z", 8, summary()), row("a", 8, summary())])
    assert [r.label for r in ranked] == ["a", "z"]


def test_no_best_when_nothing_meets() -> None:
    ranked = rank([row("x", 8, summary(ttft=9.0)), row("y", 4, None, status="pruned")])
    assert best(ranked) is None


def test_pareto_front() -> None:
    pts = [("a", 1.0, 1.0), ("b", 2.0, 2.0), ("c", 2.0, 1.5), ("d", 0.5, 0.2), ("e", 3.0, 2.0)]
    assert pareto_front(pts) == ["a", "b", "d"]
