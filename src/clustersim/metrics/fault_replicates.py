"""summary.json `faults` of a replicated run: the replicates' fault blocks pooled, and their
95 % intervals (metrics/replicates.py pools every other key the same way).

Pooled block (the keys of a single run's, metrics/fault_summary.py):
- counts (`events`, `requests_retried`, `retries`, `requests_failed`, `requests_inside`,
  `requests_outside`): summed over replicates;
- `slo_attainment_inside` / `_outside`: the pooled fraction — measured arrivals meeting every
  SLO bound inside (outside) a fault window over all replicates, over those arrivals;
- `baseline_ttft_p99_s`, `recovery_threshold_ttft_p99_s`: the mean over replicates;
- `recovery`: every replicate's entries in replicate order, each with its `replicate` index
  (random failures differ between replicates, so events are not matched across them).
Intervals (`replicates.faults`, N >= 2 replicates only): {mean, ci95} over replicates of the
two attainments and the retried / failed counts; when every replicate has the same events
(scheduled faults only), `recover_s` per event as a list in event order (an unrecovered
replicate is left out of its event's interval, and counted in `unrecovered`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

COUNT_KEYS = (
    "events",
    "requests_retried",
    "retries",
    "requests_failed",
    "requests_inside",
    "requests_outside",
)
MEAN_KEYS = ("baseline_ttft_p99_s", "recovery_threshold_ttft_p99_s")
INTERVAL_KEYS = (
    "slo_attainment_inside",
    "slo_attainment_outside",
    "requests_retried",
    "retries",
    "requests_failed",
)
SIDES = (
    ("slo_attainment_inside", "requests_inside"),
    ("slo_attainment_outside", "requests_outside"),
)

Interval = Callable[[Sequence[float | None]], dict[str, Any]]


def fault_blocks(summaries: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]] | None:
    """Each replicate's `faults` block; None unless every replicate has one."""
    blocks = [s.get("faults") for s in summaries]
    if not blocks or any(not isinstance(b, Mapping) for b in blocks):
        return None
    return [b for b in blocks if isinstance(b, Mapping)]


def pooled_faults(blocks: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The replicates' fault blocks pooled (module docstring)."""
    pooled: dict[str, Any] = {k: int(sum(int(b.get(k) or 0) for b in blocks)) for k in COUNT_KEYS}
    for share, count in SIDES:
        meeting = sum(_meeting(b, share, count) for b in blocks)
        total = pooled[count]
        pooled[share] = meeting / total if total else None
    for key in MEAN_KEYS:
        values = [float(v) for v in (b.get(key) for b in blocks) if v is not None]
        pooled[key] = float(np.mean(values)) if values else None
    pooled["recovery"] = [
        {**entry, "replicate": k} for k, b in enumerate(blocks) for entry in b.get("recovery") or []
    ]
    return pooled


def fault_intervals(blocks: Sequence[Mapping[str, Any]], interval: Interval) -> dict[str, Any]:
    """`replicates.faults`: {mean, ci95} per INTERVAL_KEYS, and per common event `recover_s`."""
    out: dict[str, Any] = {key: interval([b.get(key) for b in blocks]) for key in INTERVAL_KEYS}
    events = [[_event(e) for e in b.get("recovery") or []] for b in blocks]
    if events and all(e == events[0] for e in events):
        out["recover_s"] = [
            {
                **interval([(b.get("recovery") or [])[i].get("recover_s") for b in blocks]),
                "unrecovered": sum(
                    (b.get("recovery") or [])[i].get("recover_s") is None for b in blocks
                ),
            }
            for i in range(len(events[0]))
        ]
    return out


def _meeting(block: Mapping[str, Any], share: str, count: str) -> int:
    """Arrivals of one replicate meeting the SLO on one side (its share × its count)."""
    value, n = block.get(share), int(block.get(count) or 0)
    return round(float(value) * n) if value is not None else 0


def _event(entry: Mapping[str, Any]) -> tuple[Any, ...]:
    return (entry.get("kind"), entry.get("target"), entry.get("start_s"), entry.get("end_s"))
