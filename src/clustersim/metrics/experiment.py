"""One experiment's run → (summary.json dict, timeline table): the steps every caller shares
(`run`, the planner, capacity probes, replicates)."""

from __future__ import annotations

from typing import Any

from clustersim.collector import collector_paused
from clustersim.config.schema import Experiment
from clustersim.metrics.fault_summary import faults_summary
from clustersim.metrics.prefix_cache import add_prefix_cache_columns, prefix_cache_summary
from clustersim.metrics.replicates import replicates_block
from clustersim.metrics.stability import stability_summary
from clustersim.metrics.summary import RunTables, summarize
from clustersim.metrics.table import Table, as_frame
from clustersim.metrics.timeline import timeline_table, window_slo_summary
from clustersim.metrics.window import BASIS_ARRIVALS


def summarize_experiment(exp: Experiment, out: RunTables) -> tuple[dict[str, Any], Table]:
    """The run's timeline and its summary, measured over [warmup, end of arrivals].

    Pandas is imported only for a run with prefix caching or faults (their summaries). The
    cyclic collector waits until it is done (collector.py: numpy work, few cycles)."""
    with collector_paused():
        return _summary_and_timeline(exp, out)


def _summary_and_timeline(exp: Experiment, out: RunTables) -> tuple[dict[str, Any], Table]:
    warmup_s = exp.horizon.warmup_s
    timeline = timeline_table(
        out.requests,
        out.iterations,
        out.links,
        exp.output.time_bin_s,
        exp.slo,
        warmup_s,
        getattr(out, "phases", None),
    )
    summary = summarize(
        out, exp.slo, warmup_s, window_slo_summary(timeline), exp.horizon.duration_s
    )
    lanes = getattr(out, "prefix_cache", None)  # prefix caching only: additive keys
    if lanes is not None:
        requests = as_frame(out.requests)
        add_prefix_cache_columns(timeline, requests, exp.output.time_bin_s)
        summary["prefix_cache"] = prefix_cache_summary(requests, lanes)
    window = summary["window"]
    arrivals = window["basis"] == BASIS_ARRIVALS  # a burst's makespan has no steady state
    summary["stability"] = stability_summary(
        timeline,
        window["start_s"] if arrivals else None,
        window["end_s"] if arrivals else None,
        exp.output.time_bin_s,
    )
    faults = getattr(out, "faults", None)
    if faults is not None:  # a run with a `faults:` block (docs/faults.md)
        summary["faults"] = faults_summary(
            as_frame(out.requests), faults, as_frame(timeline), exp.slo, warmup_s
        )
    # one run: the block says so (ci95 null); a replicated run replaces it (cli)
    summary["replicates"] = replicates_block([summary], [exp.seed])
    return summary, timeline
