"""A run's tables and facts: what `sim.engine.run_tables` / `run_experiment` return."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from clustersim.metrics.table import Table, as_frame

if TYPE_CHECKING:
    import pandas as pd

    from clustersim.disagg.pools import PoolInfo
    from clustersim.model.memory import MemoryPlan
    from clustersim.workload.arrivals import StateTimeline


@dataclass
class RunOutput:
    """A run's tables. `run_tables` gives requests, iterations and links as Tables (numpy
    columns: a plain run imports no pandas); `run_experiment`, and `with_frames`, as DataFrames."""

    requests: Table | pd.DataFrame
    iterations: Table | pd.DataFrame | None  # None: iteration rows not recorded
    links: Table | pd.DataFrame
    experts: pd.DataFrame | None
    gpus: int
    sim: dict[str, float] = field(default_factory=dict)
    memory: MemoryPlan | None = None
    phases: StateTimeline | None = None  # MMPP state timeline of the arrivals, else None
    eplb: pd.DataFrame | None = None  # MoE with experts.eplb: one row per rebalance
    pools: tuple[PoolInfo, ...] | None = None  # disaggregated: (prefill, decode) pool facts
    faults: pd.DataFrame | None = None  # with `faults:`: one row per fault (faults.parquet)
    prefix_cache: pd.DataFrame | None = None  # prefix caching: one row per lane's cache

    def with_frames(self) -> RunOutput:
        """The same output with requests, iterations and links as DataFrames."""
        return replace(
            self,
            requests=as_frame(self.requests),
            iterations=None if self.iterations is None else as_frame(self.iterations),
            links=as_frame(self.links),
        )
