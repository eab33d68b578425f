"""Per-pool figures of a disaggregated run for summary.json (pure; docs/results.md).

    pools.prefill: gpus, replicas, nodes, input_tokens_per_s, input_tokens_per_s_per_node,
                   input_tokens_per_s_per_gpu, utilisation
    pools.decode:  gpus, replicas, nodes, output_tokens_per_s, output_tokens_per_s_per_node,
                   output_tokens_per_s_per_gpu, utilisation
    kv_transfer:   bytes, mean_s, p50_s, p99_s

Throughputs use the same completed measured requests and window as `throughput.*` (every
prompt is prefilled by the prefill pool, every output token after the first is decoded by the
decode pool). `nodes` = pool GPUs / GPUs per node (fractional for a partial node).
`utilisation` = Σ over the pool's (replica, stage) of the seconds of its iterations rows with
batch_tokens > 0 inside the measured window, / (replicas × stages × window): the share of
time the pool's engines were stepping (None without iterations.parquet rows).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import pandas as pd


class PoolFacts(Protocol):
    """What is read of a pool (clustersim.sim.pools.PoolInfo)."""

    @property
    def name(self) -> str: ...
    @property
    def gpus(self) -> int: ...
    @property
    def replicas(self) -> int: ...
    @property
    def nodes(self) -> float: ...
    @property
    def stages(self) -> int: ...


# per pool: (token column of requests.parquet, the key prefix)
_POOL_TOKENS = {"prefill": ("prompt_tokens", "input"), "decode": ("output_tokens", "output")}


def _per(value: float | None, count: float) -> float | None:
    return None if value is None or count <= 0 else value / count


def busy_share(
    iterations: pd.DataFrame | None, pool: str, units: int, t0: float, t1: float
) -> float | None:
    """Share of [t0, t1] the pool's `units` engine (replica, stage) processes spent in steps
    that carried tokens; None without rows or a window."""
    if iterations is None or len(iterations) == 0 or "pool" not in iterations.columns:
        return None  # output.iterations: false, or a table from elsewhere
    if not t1 > t0 or units <= 0:
        return None
    rows = iterations.loc[
        (iterations["pool"] == pool) & (iterations["batch_tokens"].to_numpy() > 0)
    ]
    start = np.maximum(rows["start_s"].to_numpy(dtype=float), t0)
    end = np.minimum(rows["end_s"].to_numpy(dtype=float), t1)
    busy = float(np.clip(end - start, 0.0, None).sum())
    return busy / (units * (t1 - t0))


def pools_summary(
    pools: Sequence[PoolFacts],
    req: pd.DataFrame,
    done: np.ndarray,
    window_s: float | None,
    iterations: pd.DataFrame | None,
) -> dict[str, Any]:
    """The `pools` block: `req` the measured requests, `done` their completed mask."""
    t0 = float(req["arrival_s"].min()) if len(req) else 0.0
    t1 = t0 + window_s if window_s is not None else t0
    out: dict[str, Any] = {}
    for pool in pools:
        column, prefix = _POOL_TOKENS[pool.name]
        tokens = float(req[column].to_numpy(dtype=float)[done].sum())
        per_s = None if window_s is None or not window_s > 0 else tokens / window_s
        if tokens == 0:
            per_s = 0.0
        out[pool.name] = {
            "gpus": int(pool.gpus),
            "replicas": int(pool.replicas),
            "nodes": float(pool.nodes),
            f"{prefix}_tokens_per_s": per_s,
            f"{prefix}_tokens_per_s_per_node": _per(per_s, pool.nodes),
            f"{prefix}_tokens_per_s_per_gpu": _per(per_s, pool.gpus),
            "utilisation": busy_share(
                iterations, pool.name, pool.replicas * pool.stages, t0, t1
            ),
        }
    return out


def kv_transfer_summary(req: pd.DataFrame, done: np.ndarray) -> dict[str, float | None]:
    """Total bytes and mean / p50 / p99 seconds of the completed requests' KV transfers."""
    seconds = req["kv_transfer_s"].to_numpy(dtype=float)[done]
    nbytes = req["kv_transfer_bytes"].to_numpy(dtype=float)[done]
    seconds = seconds[np.isfinite(seconds)]
    if len(seconds) == 0:
        return {"bytes": 0.0, "mean_s": None, "p50_s": None, "p99_s": None}
    return {
        "bytes": float(np.nansum(nbytes)),
        "mean_s": float(seconds.mean()),
        "p50_s": float(np.percentile(seconds, 50.0)),
        "p99_s": float(np.percentile(seconds, 99.0)),
    }
