"""Prefix-cache numbers of a run (docs/prefix_caching.md): summary.json's `prefix_cache`
block and the timeline's per-window columns, from requests.parquet's `cached_tokens` column
and the per-lane cache counters (RunOutput.prefix_cache). Absent without prefix caching."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from clustersim.metrics.table import Table
from clustersim.metrics.time_bins import fraction, window_index

if TYPE_CHECKING:
    import pandas as pd


def _token_hit_rate(cached: float, prompt: float) -> float | None:
    return cached / prompt if prompt > 0 else None


def prefix_cache_summary(requests: pd.DataFrame, lanes: pd.DataFrame) -> dict[str, Any]:
    """Tokens prefill skipped (first admissions of requests that were not dropped), the hit
    rates, the caches' counters, and the same per replica (keys are replica indices)."""
    served = ~requests["dropped"].fillna(False).to_numpy(dtype=bool)
    req = requests.loc[served]
    cached = float(req["cached_tokens"].sum())
    prompt = float(req["prompt_tokens"].sum())
    looked = float(lanes[["hit_blocks", "host_hit_blocks", "miss_blocks"]].to_numpy().sum())
    hits = float(lanes[["hit_blocks", "host_hit_blocks"]].to_numpy().sum())
    per_replica: dict[str, dict[str, Any]] = {}
    by_replica = req.groupby("replica")[["cached_tokens", "prompt_tokens"]].sum()
    for r, row in by_replica.iterrows():
        per_replica[str(int(r))] = {
            "requests": int((req["replica"] == r).sum()),
            "cached_tokens": int(row["cached_tokens"]),
            "prompt_tokens": int(row["prompt_tokens"]),
            "hit_rate": _token_hit_rate(float(row["cached_tokens"]), float(row["prompt_tokens"])),
        }
    return {
        "hit_rate": _token_hit_rate(cached, prompt),  # share of prompt tokens not prefilled
        "block_hit_rate": hits / looked if looked > 0 else None,  # of reusable full blocks
        "saved_prefill_tokens": int(cached),
        "prompt_tokens": int(prompt),
        "evicted_blocks": int(lanes["evicted_blocks"].sum()),
        "host_hit_blocks": int(lanes["host_hit_blocks"].sum()),
        "host_reload_bytes": int(lanes["reload_bytes"].sum()),
        "per_replica": per_replica,
    }


def add_prefix_cache_columns(timeline: Table, requests: pd.DataFrame, bin_s: float) -> None:
    """Per window of arrivals: prompt tokens prefill skipped (`saved_prefill_tokens`) and
    their share of the window's prompt tokens (`prefix_hit_rate`, NaN without arrivals)."""
    n = len(timeline)
    idx = window_index(requests["arrival_s"], bin_s)
    keep = (idx >= 0) & (idx < n) & ~requests["dropped"].fillna(False).to_numpy(dtype=bool)
    cached = np.bincount(idx[keep], requests["cached_tokens"].to_numpy()[keep], minlength=n)[:n]
    prompt = np.bincount(idx[keep], requests["prompt_tokens"].to_numpy()[keep], minlength=n)[:n]
    timeline["saved_prefill_tokens"] = cached.astype(np.int64)
    timeline["prefix_hit_rate"] = fraction(cached, prompt.astype(np.int64))
