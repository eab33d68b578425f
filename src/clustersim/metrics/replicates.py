"""Replicates: N independent seeds of one experiment, pooled, with 95 % intervals (pure).

- Seeds: `replicate_seeds(seed, n)`. One replicate is the experiment's own seed (a plain run).
  N > 1 replicates use the N children of `numpy.random.SeedSequence(seed).spawn(N)`, each
  turned into one 63-bit integer seed (`generate_state`); the named streams of a run
  (sim/streams.py) use other spawn keys, so a replicate's streams never coincide with another's.
- Pooled figure (the summary.json keys of a single run): latency statistics over every
  replicate's completed measured requests together; counts summed; throughput / goodput the
  replicates' tokens or requests over the sum of their window widths; attainment the pooled
  fraction; worst window the worst of any replicate; other numbers the mean over replicates.
- Interval (`replicates.<key>.{mean, ci95}`): for each key in REPLICATE_KEYS, the mean of the N
  replicate values and the Student-t 95 % confidence interval of that mean,
  mean ± t(0.975, N − 1) · s / √N (s: the sample standard deviation over replicates). The
  replicates are independent, identically distributed runs, so this treats each replicate's
  figure (a p99, a goodput) as one observation; it needs no assumption about the correlation of
  requests inside a run. A single run has no interval: `ci95` is null.
- Faults (runs with a `faults:` block): `faults` pooled and `replicates.faults` intervals as
  metrics/fault_replicates.py describes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from clustersim.config.schema import SLOSpec
from clustersim.metrics.fault_replicates import fault_blocks, fault_intervals, pooled_faults
from clustersim.metrics.summary import (
    STAT_KEYS,
    completed_mask,
    latency_stats,
    measured_requests,
    slo_mask,
)
from clustersim.metrics.table import Table, floats

if TYPE_CHECKING:
    import pandas as pd

LATENCY_METRICS = ("ttft_s", "tpot_s", "e2e_s", "queue_s")
THROUGHPUT_KEYS = ("input_tokens_per_s", "output_tokens_per_s", "output_tokens_per_s_per_gpu")
# summary key paths given a mean and a 95 % interval over replicates
REPLICATE_KEYS: tuple[tuple[str, str], ...] = (
    *((m, s) for m in LATENCY_METRICS for s in STAT_KEYS),
    *(("throughput", k) for k in THROUGHPUT_KEYS),
    ("slo", "goodput_rps"),
    ("slo", "attainment"),
)
METHOD = "student-t 95% interval of the mean over independent replicates"
NO_INTERVAL = "single run: no interval (set replicates: N >= 2)"

# t quantile 0.975 for 1..30 degrees of freedom (scipy.stats.t.ppf, 9 decimals)
_T975 = (
    12.706204736, 4.30265273, 3.182446305, 2.776445105, 2.570581836, 2.446911851,
    2.364624252, 2.306004135, 2.262157163, 2.228138852, 2.20098516, 2.17881283,
    2.160368656, 2.144786688, 2.131449546, 2.119905299, 2.109815578, 2.10092204,
    2.093024054, 2.085963447, 2.079613845, 2.073873068, 2.06865761, 2.063898562,
    2.059538553, 2.055529439, 2.051830516, 2.048407142, 2.045229642, 2.042272456,
)  # fmt: skip
_Z975 = 1.959963984540054  # standard normal 0.975 quantile


def t975(df: int) -> float:
    """Student-t 0.975 quantile with `df` >= 1 degrees of freedom (table to 30, then the
    Cornish–Fisher expansion in 1/df, accurate to 1e-7 there)."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if df <= len(_T975):
        return _T975[df - 1]
    z = _Z975
    g1 = (z**3 + z) / 4
    g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96
    g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384
    g4 = (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160
    return z + g1 / df + g2 / df**2 + g3 / df**3 + g4 / df**4


def replicate_seeds(seed: int, n: int) -> list[int]:
    """The seeds of `n` replicates of an experiment with seed `seed` (see module doc)."""
    if n < 1:
        raise ValueError(f"replicates must be >= 1, got {n}")
    if n == 1:
        return [int(seed)]
    children = np.random.SeedSequence(int(seed)).spawn(n)
    return [int(c.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1)) for c in children]


def mean_ci95(values: Sequence[float | None]) -> dict[str, Any]:
    """{'mean', 'ci95': [lo, hi] or None} of the finite values (None mean when none)."""
    x = np.array([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if len(x) == 0:
        return {"mean": None, "ci95": None}
    mean = float(x.mean())
    if len(x) < 2:
        return {"mean": mean, "ci95": None}
    half = t975(len(x) - 1) * float(x.std(ddof=1)) / math.sqrt(len(x))
    return {"mean": mean, "ci95": [mean - half, mean + half]}


def lookup(summary: Mapping[str, Any], path: Sequence[str]) -> Any:
    """summary[path[0]][path[1]]…; None where a level is missing."""
    node: Any = summary
    for key in path:
        if not isinstance(node, Mapping):
            return None
        node = node.get(key)
    return node


def replicates_block(summaries: Sequence[Mapping[str, Any]], seeds: Sequence[int]) -> dict:
    """summary.json `replicates`: n, seeds, method, and {mean, ci95} per REPLICATE_KEYS."""
    block: dict[str, Any] = {
        "n": len(summaries),
        "seeds": [int(s) for s in seeds],
        "method": METHOD if len(summaries) > 1 else NO_INTERVAL,
    }
    for group, key in REPLICATE_KEYS:
        stats = mean_ci95([lookup(s, (group, key)) for s in summaries])
        block.setdefault(group, {})[key] = stats
    faults = fault_blocks(summaries)
    if faults is not None and len(summaries) > 1:  # a single run: its own `faults` block
        block["faults"] = fault_intervals(faults, mean_ci95)
    return block


@dataclass(frozen=True)
class ReplicateSample:
    """What pooling keeps of one replicate: its summary and its measured requests' latencies."""

    summary: dict[str, Any]
    latencies: dict[str, np.ndarray]  # metric → completed measured values (s)
    measured: int  # requests measured
    meeting: int  # of which met every SLO bound


def replicate_sample(
    summary: dict[str, Any], requests: Table | pd.DataFrame, slo: SLOSpec, warmup_s: float
) -> ReplicateSample:
    """Keep a replicate's summary and latency samples (the tables can then be freed)."""
    req = measured_requests(requests, warmup_s)
    done = completed_mask(req)
    latencies = {m: floats(req, m)[done] for m in LATENCY_METRICS}
    meets = slo_mask(req, done, slo)
    return ReplicateSample(summary, latencies, len(req), int(meets.sum()))


def _weighted_rate(samples: Sequence[ReplicateSample], group: str, key: str) -> float | None:
    """Σ rate·width / Σ width over replicates with both (tokens or requests per second)."""
    num = den = 0.0
    for s in samples:
        value = lookup(s.summary, (group, key))
        width = lookup(s.summary, ("window", "duration_s"))
        if value is None or width is None or not width > 0:
            continue
        num += value * width
        den += width
    return num / den if den > 0 else None


def _mean_leaves(nodes: Sequence[Any]) -> Any:
    """Mean of numeric leaves across equally shaped dicts; other leaves: the first's value."""
    first = nodes[0]
    if isinstance(first, Mapping):
        return {k: _mean_leaves([n.get(k) if isinstance(n, Mapping) else None for n in nodes])
                for k in first}  # fmt: skip
    numbers = [n for n in nodes if isinstance(n, int | float) and not isinstance(n, bool)]
    if numbers and len(numbers) == len([n for n in nodes if n is not None]):
        mean = float(np.mean(numbers))
        return int(mean) if all(isinstance(n, int) for n in numbers) and mean.is_integer() else mean
    return first


def _common(values: Sequence[Any]) -> Any:
    """The value every replicate shares, else None."""
    return values[0] if all(v == values[0] for v in values) else None


def pooled_summary(samples: Sequence[ReplicateSample]) -> dict[str, Any]:
    """The single-run summary keys computed over every replicate together (module doc)."""
    if not samples:
        raise ValueError("no replicates to pool")
    sums = [s.summary for s in samples]
    pooled: dict[str, Any] = _mean_leaves(sums)  # the fallback for keys not handled below
    for key in ("requests_completed", "requests_dropped", "preemptions"):
        pooled[key] = int(sum(int(s.get(key) or 0) for s in sums))
    widths = [lookup(s, ("window", "duration_s")) for s in sums]
    pooled["window"] = {
        "start_s": _common([lookup(s, ("window", "start_s")) for s in sums]),
        "end_s": _common([lookup(s, ("window", "end_s")) for s in sums]),
        "duration_s": float(sum(w for w in widths if w is not None)) if any(widths) else None,
        "basis": _common([lookup(s, ("window", "basis")) for s in sums]),
    }
    for key in (*THROUGHPUT_KEYS, "harness_output_tokens_per_s"):
        pooled["throughput"][key] = _weighted_rate(samples, "throughput", key)
    for metric in LATENCY_METRICS:
        pooled[metric] = latency_stats(np.concatenate([s.latencies[metric] for s in samples]))
    measured = sum(s.measured for s in samples)
    meeting = sum(s.meeting for s in samples)
    slo = pooled["slo"]
    slo["attainment"] = meeting / measured if measured else None
    slo["goodput_rps"] = _weighted_rate(samples, "slo", "goodput_rps")
    worst = [(lookup(s, ("slo", "worst_window_attainment")), s) for s in sums]
    worst = [(w, s) for w, s in worst if w is not None]
    if worst:
        value, where = min(worst, key=lambda pair: pair[0])
        slo["worst_window_attainment"] = value
        slo["worst_window_start_s"] = lookup(where, ("slo", "worst_window_start_s"))
    violating = [lookup(s, ("slo", "windows_violating")) for s in sums]
    if all(v is not None for v in violating):
        slo["windows_violating"] = int(sum(violating))
    links = [s.get("links") or {} for s in sums if (s.get("links") or {}).get("max_utilisation")]
    if links:
        pooled["links"] = dict(max(links, key=lambda link: link["max_utilisation"]))
    faults = fault_blocks(sums)
    if faults is not None:
        pooled["faults"] = pooled_faults(faults)
    # simulation effort: the replicates' total (events, wall-clock and simulated seconds)
    pooled["sim"] = {
        "events": int(sum(lookup(s, ("sim", "events")) or 0 for s in sums)),
        "wall_s": float(sum(lookup(s, ("sim", "wall_s")) or 0.0 for s in sums)),
        "simulated_s": float(sum(lookup(s, ("sim", "simulated_s")) or 0.0 for s in sums)),
    }
    return pooled
