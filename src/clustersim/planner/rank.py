"""Ranking of simulated layouts (pure; docs/planner.md §4).

A layout MEETS the SLO when its run completed at least one measured request, dropped none,
and every bound the SLO sets holds for the summary's p99s: p99 TTFT ≤ slo.ttft_p99_s,
p99 TPOT ≤ slo.tpot_p99_s, p99 e2e ≤ slo.e2e_p99_s (an unset bound is not checked; a run whose
outputs are all single tokens has no TPOT and passes that bound).

Order: layouts that meet the SLO first — with replicates, those meeting it at 95 % confidence
before the marginal ones (planner/confidence.py) — fewest GPUs, then higher goodput per GPU
(slo.goodput_rps / GPUs: requests per second that met every bound, per GPU), then label;
then simulated layouts that miss it — smallest worst ratio p99 / bound, then fewest GPUs,
then label; then failed runs and pruned layouts (fewest GPUs, then label). The best layout is
the first row when it meets the SLO; otherwise there is none.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from clustersim.config.schema import Layout, SLOSpec

STATUS_ORDER = {"simulated": 0, "failed": 1, "pruned": 2}


@dataclass(frozen=True)
class Row:
    """One candidate's line in the plan table."""

    label: str
    layout: Layout
    gpus: int
    status: str  # simulated | pruned | failed
    summary: Mapping[str, Any] | None = None
    notes: tuple[str, ...] = ()
    meets: bool = False
    misses: tuple[str, ...] = field(default=())  # which bounds failed, with the numbers
    worst_ratio: float = math.inf  # max over set bounds of p99 / bound (simulated rows)
    # disaggregated: (prefill, decode) pool layouts; `layout` is then the decode pool's
    pools: tuple[Layout, Layout] | None = None
    slo_class: str | None = None  # replicated runs: meets | marginal | misses (confidence.py)

    def metric(self, *keys: str) -> float | None:
        value: Any = self.summary
        for key in keys:
            if not isinstance(value, Mapping) or key not in value:
                return None
            value = value[key]
        return float(value) if isinstance(value, (int, float)) else None

    @property
    def goodput_per_gpu(self) -> float | None:
        good = self.metric("slo", "goodput_rps")
        return None if good is None or self.gpus <= 0 else good / self.gpus


def judge(summary: Mapping[str, Any], slo: SLOSpec) -> tuple[bool, tuple[str, ...], float]:
    """(meets, reasons it misses, worst p99 / bound ratio) — see the module docstring."""
    misses: list[str] = []
    ratios: list[float] = []
    completed = int(summary.get("requests_completed") or 0)
    dropped = int(summary.get("requests_dropped") or 0)
    if completed == 0:
        misses.append("no request completed")
    if dropped:
        misses.append(f"{dropped} requests dropped")
    for name, key, bound in (
        ("TTFT", "ttft_s", slo.ttft_p99_s),
        ("TPOT", "tpot_s", slo.tpot_p99_s),
        ("e2e", "e2e_s", slo.e2e_p99_s),
    ):
        if bound is None:
            continue
        p99 = (summary.get(key) or {}).get("p99")
        if p99 is None:
            if name != "TPOT":  # TPOT is undefined when every output is one token
                misses.append(f"no {name} measured")
                ratios.append(math.inf)
            continue
        ratios.append(float(p99) / bound)
        if p99 > bound:
            misses.append(f"p99 {name} {_fmt_s(float(p99))} > {_fmt_s(bound)}")
    worst = math.inf if completed == 0 else max(ratios, default=0.0)
    return not misses, tuple(misses), worst


def _fmt_s(x: float) -> str:
    return f"{x * 1e3:.1f} ms" if x < 1.0 else f"{x:.2f} s"


def rank(rows: Sequence[Row]) -> list[Row]:
    """The rows in plan order (module docstring)."""

    def key(r: Row) -> tuple[Any, ...]:
        if r.status == "simulated" and r.meets:
            marginal = 1 if r.slo_class == "marginal" else 0  # confident meets first
            return (0, marginal, r.gpus, -(r.goodput_per_gpu or 0.0), r.label)
        if r.status == "simulated":
            return (1, 0, r.worst_ratio, r.gpus, r.label)
        return (2 + STATUS_ORDER[r.status], 0, r.gpus, 0.0, r.label)

    return sorted(rows, key=key)


def best(ranked: Sequence[Row]) -> Row | None:
    """The first ranked row if it meets the SLO, else None."""
    if ranked and ranked[0].status == "simulated" and ranked[0].meets:
        return ranked[0]
    return None


def pareto_front(points: Sequence[tuple[str, float, float]]) -> list[str]:
    """Labels on the Pareto front of (label, latency: lower is better, goodput per GPU: higher
    is better): no other point is at least as good on both and better on one."""
    front: list[str] = []
    for label, lat, good in points:
        dominated = any(
            (lat2 <= lat and good2 >= good) and (lat2 < lat or good2 > good)
            for _, lat2, good2 in points
        )
        if not dominated:
            front.append(label)
    return front
