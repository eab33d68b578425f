"""Per-pool figures of a disaggregated run for summary.json (pure; docs/results.md).

    pools.prefill: gpus, replicas, nodes, input_tokens_per_s, input_tokens_per_s_per_node,
                   input_tokens_per_s_per_gpu, utilisation
    pools.decode:  gpus, replicas, nodes, output_tokens_per_s, output_tokens_per_s_per_node,
                   output_tokens_per_s_per_gpu, utilisation
    kv_transfer:   bytes, mean_s, p50_s, p99_s

Throughputs are `throughput.*` over the same measured window (metrics/window.py; every
prompt is prefilled by the prefill pool, every output token after the first is decoded by the
decode pool). `nodes` = pool GPUs / GPUs per node (fractional for a partial node).
`utilisation` = Σ over the pool's (replica, stage) of the seconds of its iterations rows with
batch_tokens > 0 inside the measured window, / (replicas × stages × window): the share of
time the pool's engines were stepping (None without iterations.parquet rows).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from clustersim.metrics.table import Table, floats
from clustersim.metrics.window import Window

if TYPE_CHECKING:
    import pandas as pd


class PoolFacts(Protocol):
    """What is read of a pool (clustersim.disagg.pools.PoolInfo)."""

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


# per pool: the key prefix (prefill: input tokens, decode: output tokens)
_POOL_PREFIX = {"prefill": "input", "decode": "output"}


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
    window: Window | None,
    input_tokens_per_s: float | None,
    output_tokens_per_s: float | None,
    iterations: pd.DataFrame | None,
) -> dict[str, Any]:
    """The `pools` block: the run's measured window and its `throughput.*` token rates."""
    t0, t1 = (window.start_s, window.end_s) if window is not None else (0.0, 0.0)
    rates = {"prefill": input_tokens_per_s, "decode": output_tokens_per_s}
    out: dict[str, Any] = {}
    for pool in pools:
        prefix = _POOL_PREFIX[pool.name]
        per_s = rates[pool.name]
        out[pool.name] = {
            "gpus": int(pool.gpus),
            "replicas": int(pool.replicas),
            "nodes": float(pool.nodes),
            f"{prefix}_tokens_per_s": per_s,
            f"{prefix}_tokens_per_s_per_node": _per(per_s, pool.nodes),
            f"{prefix}_tokens_per_s_per_gpu": _per(per_s, pool.gpus),
            "utilisation": busy_share(iterations, pool.name, pool.replicas * pool.stages, t0, t1),
        }
    return out


def kv_transfer_summary(req: Table, done: np.ndarray) -> dict[str, float | None]:
    """Total bytes and mean / p50 / p99 seconds of the completed requests' KV transfers."""
    seconds = floats(req, "kv_transfer_s")[done]
    nbytes = floats(req, "kv_transfer_bytes")[done]
    seconds = seconds[np.isfinite(seconds)]
    if len(seconds) == 0:
        return {"bytes": 0.0, "mean_s": None, "p50_s": None, "p99_s": None}
    return {
        "bytes": float(np.nansum(nbytes)),
        "mean_s": float(seconds.mean()),
        "p50_s": float(np.percentile(seconds, 50.0)),
        "p99_s": float(np.percentile(seconds, 99.0)),
    }
