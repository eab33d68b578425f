"""A replicated run's directory (docs/results.md "Replicated runs").

<run dir>/                      a complete run directory: `report` and `compare` read it
  config.resolved.yaml          the experiment (`seed`, `replicates: N`)
  summary.json                  pooled keys + `replicates` (mean and ci95 per key)
  requests.parquet              every replicate's requests, with a `replicate` column
  timeline.parquet              per window, the mean over replicates of each column
  links.parquet                 empty (link tables are per replicate)
  replicates.csv / .parquet     one row per replicate: replicate, seed, run_dir, headline
  replicate-<k>/                replicate k's own complete run directory (its seed)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clustersim.results.writer import SWEEP_COLUMNS, _lookup, write_run, write_sweep_table

if TYPE_CHECKING:
    import pandas as pd

REPLICATE_DIR = "replicate-{k}"


def replicate_dir(run_dir: Path, k: int) -> Path:
    """run_dir/replicate-<k>, created (it must not exist)."""
    path = Path(run_dir) / REPLICATE_DIR.format(k=k)
    path.mkdir(exist_ok=False)
    return path


def pooled_requests(frames: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """Every replicate's requests table, `replicate` (int64) first; times are each
    replicate's own simulated seconds."""
    import pandas as pd

    parts = []
    for k, frame in enumerate(frames):
        part = frame.copy()
        part.insert(0, "replicate", k)
        part["replicate"] = part["replicate"].astype("int64")
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


def mean_timeline(timelines: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """Per window (`bin_start_s`), the mean over replicates of every numeric column (a
    replicate without that window, or a null value, is left out); `measured` as is."""
    import pandas as pd

    frames = [t for t in timelines if t is not None and len(t)]
    if not frames:
        return pd.DataFrame()
    both = pd.concat(frames, ignore_index=True)
    columns = list(frames[0].columns)
    numeric = [c for c in columns if c != "bin_start_s" and pd.api.types.is_numeric_dtype(both[c])
               and not pd.api.types.is_bool_dtype(both[c])]  # fmt: skip
    grouped = both.groupby("bin_start_s", sort=True)
    mean = grouped[numeric].mean().astype("float64")
    for column in columns:
        if column not in numeric and column != "bin_start_s":
            mean[column] = grouped[column].first()
    return mean.reset_index()[columns]


def replicate_row(k: int, seed: int, run_dir: Path, summary: Mapping[str, Any]) -> dict:
    """One replicates.csv row: replicate, seed, run_dir and the sweep.csv headline columns."""
    row: dict[str, Any] = {"replicate": k, "seed": int(seed), "run_dir": str(run_dir)}
    for column, keys in SWEEP_COLUMNS:
        row[column] = _lookup(summary, keys)
    return row


@dataclass(frozen=True)
class PooledTables:
    """The RunTables view write_run needs of a replicated run's top level."""

    requests: pd.DataFrame
    links: pd.DataFrame
    iterations: pd.DataFrame | None = None
    experts: pd.DataFrame | None = None
    gpus: int = 0
    sim: Mapping[str, Any] = field(default_factory=dict)


def write_replicated_run(
    run_dir: Path,
    resolved: Mapping[str, Any],
    requests: pd.DataFrame,
    timeline: pd.DataFrame,
    summary: Mapping[str, Any],
    rows: Sequence[Mapping[str, Any]],
) -> None:
    """The top level of a replicated run (the replicate-<k>/ directories are written first);
    summary.json last."""
    import pandas as pd

    links = pd.DataFrame(
        {
            "link": pd.Series([], dtype="object"),
            "kind": pd.Series([], dtype="object"),
            "bin_start_s": pd.Series([], dtype="float64"),
            "bytes": pd.Series([], dtype="float64"),
            "utilisation": pd.Series([], dtype="float64"),
        }
    )  # link tables are per replicate
    write_sweep_table(run_dir, rows, stem="replicates")
    write_run(run_dir, resolved, PooledTables(requests, links), summary, timeline)
