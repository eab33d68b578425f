"""Headline numbers of one run: RunOutput tables → the summary.json dict (pure, no I/O).

Definitions (docs/results.md is the user-facing copy; keep the two in step):

- *measured* requests: every request row with `arrival_s >= warmup_s` (a NaN arrival means
  the request never arrived within the simulation and is not measured).
- *completed*: measured, not dropped, with a finite `finish_s`. Latency statistics use the
  completed requests only; a request neither completed nor dropped (still in flight when the
  simulation stopped) is counted in neither count but fails the SLO.
- *measured window* (metrics/window.py): [warmup_s, end of arrivals]; the drain after the
  last arrival is simulated, its requests' latencies count, its time does not. Throughput is
  the tokens produced inside the window / its width; goodput the measured requests meeting the
  SLO / its width. A zero-width window (a burst) falls back to the makespan (first measured
  arrival → last completion). `throughput.harness_output_tokens_per_s` is always the
  makespan figure (trtllm-bench's max-throughput metric).
- time-binned tables (links, experts) use the bins with `bin_start_s >= warmup_s`.

Every float in the result is a Python float or None (NaN / ±inf become None), so the dict
is JSON-safe as is.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from clustersim.config.schema import SLOSpec
from clustersim.metrics.group_reduce import first_appearance_codes, group_sums
from clustersim.metrics.linear_percentile import linear_percentiles
from clustersim.metrics.pools import kv_transfer_summary, pools_summary
from clustersim.metrics.table import Table, as_frame, as_table, flags, floats
from clustersim.metrics.window import (
    BASIS_ARRIVALS,
    Window,
    makespan_s,
    measurement_window,
    tokens_in_window,
)

if TYPE_CHECKING:
    import pandas as pd

STAT_KEYS = ("mean", "p50", "p90", "p99")
# slo.* keys computed over time windows by clustersim.metrics.timeline.window_slo_summary
WINDOW_KEYS = ("worst_window_attainment", "worst_window_start_s", "windows_violating")
_PERCENTILES = {"p50": 50.0, "p90": 90.0, "p99": 99.0}


class RunTables(Protocol):
    """What summarize() reads from `clustersim.sim.engine.RunOutput` (read-only view); each
    table a `metrics.table.Table` or a DataFrame."""

    @property
    def requests(self) -> Table | pd.DataFrame: ...
    @property
    def iterations(self) -> Table | pd.DataFrame | None: ...
    @property
    def links(self) -> Table | pd.DataFrame: ...
    @property
    def experts(self) -> pd.DataFrame | None: ...
    @property
    def gpus(self) -> int: ...
    @property
    def sim(self) -> Mapping[str, Any]: ...


def summarize(
    out: RunTables,
    slo: SLOSpec,
    warmup_s: float,
    windows: Mapping[str, Any] | None = None,
    arrivals_end_s: float | None = None,
) -> dict[str, Any]:
    """The summary.json dict (nested; keys as DESIGN.md §2 plus `queue_s`, `preemptions`,
    `window`; a disaggregated run adds `pools` and `kv_transfer`: metrics/pools.py).

    `windows`: the per-window SLO keys (WINDOW_KEYS) from
    `clustersim.metrics.timeline.window_slo_summary`; without it they are null.
    `arrivals_end_s`: the end of arrivals (`metrics.window.arrivals_end_s`: the duration
    horizon); None: the last arrival.
    """
    requests = as_table(out.requests)
    req = measured_requests(requests, warmup_s)
    done = completed_mask(req)
    if arrivals_end_s is None:
        arrival = floats(requests, "arrival_s")
        finite = arrival[np.isfinite(arrival)]
        arrivals_end_s = float(finite.max()) if len(finite) else None
    window = measurement_window(req, done, warmup_s, arrivals_end_s)
    window_s = window.duration_s if window is not None else None
    meets = slo_mask(req, done, slo)
    in_tok, out_tok = window_tokens(requests, req, done, window)
    out_tok_s = rate(out_tok, window_s)
    per_gpu = None if out_tok_s is None or out.gpus <= 0 else out_tok_s / out.gpus
    in_tok_s = rate(in_tok, window_s)
    summary = {
        "requests_completed": int(done.sum()),
        "requests_dropped": int(dropped_mask(req).sum()),
        "gpus": int(out.gpus),
        "window": window_dict(window),
        "throughput": {
            "input_tokens_per_s": in_tok_s,
            "output_tokens_per_s": out_tok_s,
            "output_tokens_per_s_per_gpu": per_gpu,
            "harness_output_tokens_per_s": harness_output_tokens_per_s(req, done),
        },
        "ttft_s": latency_stats(values(req, "ttft_s", done)),
        "tpot_s": latency_stats(values(req, "tpot_s", done)),
        "e2e_s": latency_stats(values(req, "e2e_s", done)),
        "queue_s": latency_stats(values(req, "queue_s", done)),
        "preemptions": int(np.nansum(floats(req, "preemptions"))),
        "slo": {
            "attainment": float(meets.mean()) if len(req) else None,
            "goodput_rps": rate(meets.sum(), window_s),
            "ttft_p99_s": slo.ttft_p99_s,
            "tpot_p99_s": slo.tpot_p99_s,
            "e2e_p99_s": slo.e2e_p99_s,
            **{key: (windows or {}).get(key) for key in WINDOW_KEYS},
        },
        "links": link_summary(out.links, warmup_s),
        "experts": {"imbalance": expert_imbalance(out.experts, warmup_s)},
        "sim": {
            "events": int(out.sim.get("events", 0)),
            "wall_s": finite_or_none(out.sim.get("wall_s")),
            "simulated_s": finite_or_none(out.sim.get("simulated_s")),
        },
    }
    pools = getattr(out, "pools", None)  # disaggregated runs only: additive keys
    if pools:
        iterations = None if out.iterations is None else as_frame(out.iterations)
        summary["pools"] = pools_summary(pools, window, in_tok_s, out_tok_s, iterations)
        summary["kv_transfer"] = kv_transfer_summary(req, done)
    return summary


def window_tokens(
    requests: Table, req: Table, done: np.ndarray, window: Window | None
) -> tuple[float, float]:
    """(input, output) tokens counted for throughput: produced inside an arrivals window by
    any request; on the makespan basis, those of the completed measured requests."""
    if window is None:
        return 0.0, 0.0
    if window.basis == BASIS_ARRIVALS:
        return tokens_in_window(requests, window)
    return (
        float(values(req, "prompt_tokens", done).sum()),
        float(values(req, "output_tokens", done).sum()),
    )


def window_dict(window: Window | None) -> dict[str, Any]:
    """summary.json `window`: start_s, end_s, duration_s (s) and basis; nulls when undefined."""
    if window is None:
        return {"start_s": None, "end_s": None, "duration_s": None, "basis": None}
    return window.as_dict()


def harness_output_tokens_per_s(req: Table, done: np.ndarray) -> float | None:
    """Output tokens of the completed measured requests / (last completion − first measured
    arrival), tokens/s: what trtllm-bench reports for a max-throughput run."""
    span = makespan_s(req, done)
    tokens = float(values(req, "output_tokens", done).sum())
    return rate(tokens, None if span is None else span[1] - span[0])


def measured_requests(requests: Table | pd.DataFrame, warmup_s: float) -> Table:
    """Rows that arrived at or after `warmup_s` (seconds); NaN arrivals are left out."""
    table = as_table(requests)
    return table.select(floats(table, "arrival_s") >= warmup_s)


def dropped_mask(req: Table | pd.DataFrame) -> np.ndarray:
    """True where the request was dropped (a missing flag reads as not dropped)."""
    return flags(as_table(req), "dropped")


def completed_mask(req: Table | pd.DataFrame) -> np.ndarray:
    """Not dropped and finished (finite finish_s)."""
    table = as_table(req)
    return ~dropped_mask(table) & np.isfinite(floats(table, "finish_s"))


def values(req: Table, column: str, mask: np.ndarray) -> np.ndarray:
    """`column` of the rows where `mask` holds, as float64."""
    return floats(req, column)[mask]


def rate(count: float, window_s: float | None) -> float | None:
    """count / window_s (per second); 0.0 for a zero count, None if the window is undefined."""
    if count == 0:
        return 0.0
    if window_s is None or not window_s > 0:
        return None
    return float(count) / window_s


def slo_mask(req: Table | pd.DataFrame, done: np.ndarray, slo: SLOSpec) -> np.ndarray:
    """Per measured request: completed and within every bound `slo` sets.

    TTFT <= ttft_p99_s, TPOT <= tpot_p99_s (NaN TPOT of a 1-token output meets it),
    e2e <= e2e_p99_s; an unset bound is not checked. Dropped / unfinished requests fail.
    """
    table = as_table(req)
    ok = done.copy()
    if slo.ttft_p99_s is not None:
        ok &= floats(table, "ttft_s") <= slo.ttft_p99_s
    if slo.tpot_p99_s is not None:
        tpot = floats(table, "tpot_s")
        one_token = np.isnan(tpot) & (floats(table, "output_tokens") <= 1)
        ok &= (tpot <= slo.tpot_p99_s) | one_token
    if slo.e2e_p99_s is not None:
        ok &= floats(table, "e2e_s") <= slo.e2e_p99_s
    return ok


def latency_stats(samples: np.ndarray) -> dict[str, float | None]:
    """mean, p50, p90, p99 (numpy 'linear' percentiles) of the finite samples; None if none."""
    x = samples[np.isfinite(samples)]
    if len(x) == 0:
        return dict.fromkeys(STAT_KEYS)
    stats: dict[str, float | None] = {"mean": float(x.mean())}
    values = linear_percentiles(x, tuple(_PERCENTILES.values()))
    stats.update(zip(_PERCENTILES, values, strict=True))
    return stats


def link_summary(links: Table | pd.DataFrame | None, warmup_s: float) -> dict[str, Any]:
    """Peak per-bin utilisation of any link, and the link with the highest mean utilisation.

    `busiest` is the `link` value (as the links table names it) with the largest sum of
    per-bin utilisation over the measured bins (bins have equal width, so this ranks links
    by mean utilisation); ties go to the link listed first.
    """
    empty: dict[str, Any] = {"max_utilisation": None, "busiest": None}
    if links is None or len(links) == 0:
        return empty
    table = as_table(links)
    measured = floats(table, "bin_start_s") >= warmup_s
    util = floats(table, "utilisation")[measured]
    if len(util) == 0 or not np.isfinite(util).any():
        return empty
    names = table["link"][measured]
    codes, firsts = first_appearance_codes(names)
    finite = ~np.isnan(util)  # (pandas' sum skips NaN)
    per_link, _ = group_sums(codes[finite], util[finite], len(firsts), not finite.all())
    return {
        "max_utilisation": float(np.nanmax(util)),
        "busiest": json_safe(names[firsts[int(np.argmax(per_link))]]),
    }


def expert_imbalance(experts: pd.DataFrame | None, warmup_s: float) -> float | None:
    """Max-rank over mean-rank routed tokens, token-weighted, over the measured bins.

    With the simulator's columns `max_rank_tokens` / `mean_rank_tokens` (per bin and EP
    `group`: Σ over the bin's steps and MoE layers of the most loaded rank's and of the mean
    rank's routed tokens, repeated on each row of that bin and group): Σ max / Σ mean — the
    token-weighted mean over (step, MoE layer) of max/mean, which is what sets step time.
    Otherwise, from `bin_start_s`, `rank`, `tokens` (other columns summed over):
    Σ_bins max_rank tokens / Σ_bins mean_rank tokens; ranks are those present anywhere in the
    table, a rank missing from a bin counts as 0 tokens there. 1.0 = perfectly balanced EP
    ranks. None for dense models or when no token was routed.
    """
    if experts is None or len(experts) == 0:
        return None
    measured = experts.loc[experts["bin_start_s"].to_numpy(dtype=float) >= warmup_s]
    if "max_rank_tokens" in experts.columns and "mean_rank_tokens" in experts.columns:
        keys = ["bin_start_s", "group"] if "group" in experts.columns else ["bin_start_s"]
        per_bin = measured.drop_duplicates(subset=keys)
        mean_total = float(per_bin["mean_rank_tokens"].to_numpy(dtype=float).sum())
        if not mean_total > 0:
            return None
        return float(per_bin["max_rank_tokens"].to_numpy(dtype=float).sum()) / mean_total
    per_rank = measured.pivot_table(
        index="bin_start_s", columns="rank", values="tokens", aggfunc="sum", fill_value=0
    )
    per_rank = per_rank.reindex(columns=sorted(experts["rank"].unique()), fill_value=0)
    loads = per_rank.to_numpy(dtype=float)  # bins × ranks, tokens
    mean_sum = float(loads.mean(axis=1).sum()) if loads.size else 0.0
    if not mean_sum > 0:
        return None
    return float(loads.max(axis=1).sum()) / mean_sum


def finite_or_none(value: Any) -> float | None:
    """A finite float, or None for None / NaN / ±inf."""
    if value is None:
        return None
    x = float(value)
    return x if math.isfinite(x) else None


def json_safe(value: Any) -> Any:
    """Recursively: numpy scalars → Python, NaN / ±inf → None, tuples → lists."""
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return value
