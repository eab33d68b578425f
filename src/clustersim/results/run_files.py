"""Reading a run or sweep directory back from its files (docs/results.md): RunFiles, the
sweep table and its points, and ReportError for a directory that is not one."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow
import yaml

from clustersim.config.schema import SLOSpec
from clustersim.metrics.timeline import timeline_table
from clustersim.results.plots import Bounds
from clustersim.results.writer import INCOMPLETE_MARKER, is_incomplete

if TYPE_CHECKING:
    import pandas as pd

# what reading one file of a run or sweep directory can raise
READ_ERRORS = (OSError, ValueError, pyarrow.ArrowException, yaml.YAMLError)


# what report / compare read of a run: requests.parquet's columns, the config's sections
REQUEST_COLUMNS = ("arrival_s", "first_token_s", "finish_s", "ttft_s", "tpot_s", "e2e_s")
CONFIG_SECTIONS = ("model", "hardware", "topology", "layout", "workload", "serving", "slo")


class ReportError(ValueError):
    """A directory that is not a (complete, readable) run or sweep directory: one line."""


@dataclass(frozen=True)
class RunFiles:
    """The tables and settings of one run directory, as its files hold them."""

    run_dir: Path
    config: dict[str, Any]  # config.resolved.yaml
    summary: dict[str, Any]  # summary.json
    requests: pd.DataFrame
    iterations: pd.DataFrame | None
    links: pd.DataFrame
    experts: pd.DataFrame | None
    timeline: pd.DataFrame
    bin_s: float  # window / link-bin width (s), output.time_bin_s
    faults: pd.DataFrame | None = None  # faults.parquet (runs with a `faults:` block)

    @property
    def name(self) -> str:
        return str(self.config.get("name", self.run_dir.name))

    @property
    def slo(self) -> SLOSpec:
        raw = self.config.get("slo") or {}
        return SLOSpec(**{k: raw.get(k) for k in ("ttft_p99_s", "tpot_p99_s", "e2e_p99_s")})

    @property
    def warmup_s(self) -> float:
        return float((self.config.get("horizon") or {}).get("warmup_s") or 0.0)

    @property
    def bounds(self) -> Bounds:
        slo = self.slo
        return Bounds(slo.ttft_p99_s, slo.tpot_p99_s, self.warmup_s)


def _read_parquet(path: Path, required: bool) -> pd.DataFrame | None:
    import pandas as pd

    if not path.exists():
        if required:
            raise ReportError(f"{path}: missing (not a complete run directory)")
        return None
    try:
        return pd.read_parquet(path)
    except READ_ERRORS as err:
        raise ReportError(f"{path}: cannot read: {err}") from err


def _read_mapping(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except READ_ERRORS as err:
        raise ReportError(f"{path}: cannot read: {err}") from err
    if not isinstance(data, dict):
        raise ReportError(f"{path}: expected a mapping")
    return data


def check_run_dir(run_dir: Path, writing: bool = False) -> Path:
    """`run_dir` if it is a complete run directory (summary.json present, no INCOMPLETE
    marker unless `writing`: the run itself drawing its plots), else ReportError."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ReportError(f"{run_dir}: no such directory")
    if is_incomplete(run_dir) and not writing:
        raise ReportError(
            f"{run_dir}: incomplete run directory (the run was interrupted; "
            f"{INCOMPLETE_MARKER} is present): run the experiment again"
        )
    if not (run_dir / "summary.json").is_file():
        hint = " (a sweep directory: pass one of its points)" if is_sweep_dir(run_dir) else ""
        raise ReportError(f"{run_dir}: not a complete run directory (no summary.json){hint}")
    return run_dir


def is_sweep_dir(path: Path) -> bool:
    """True if `path` holds a sweep.csv."""
    return (Path(path) / "sweep.csv").is_file()


def load_run(run_dir: Path, writing: bool = False) -> RunFiles:
    """Read a run directory; the timeline is recomputed when timeline.parquet is absent."""
    import pandas as pd

    run_dir = check_run_dir(run_dir, writing)
    config = _read_mapping(run_dir / "config.resolved.yaml")
    summary = _read_mapping(run_dir / "summary.json")
    for section in CONFIG_SECTIONS:
        if not isinstance(config.get(section, {}), dict):
            raise ReportError(
                f"{run_dir / 'config.resolved.yaml'}: {section}: expected a mapping "
                "(not a run's resolved configuration)"
            )
    requests = _read_parquet(run_dir / "requests.parquet", required=True)
    assert requests is not None
    missing = [c for c in REQUEST_COLUMNS if c not in requests.columns]
    if missing:
        raise ReportError(
            f"{run_dir / 'requests.parquet'}: missing column(s) {', '.join(missing)} "
            "(not a run's requests table)"
        )
    links = _read_parquet(run_dir / "links.parquet", required=False)
    iterations = _read_parquet(run_dir / "iterations.parquet", required=False)
    experts = _read_parquet(run_dir / "experts.parquet", required=False)
    if links is None:
        links = pd.DataFrame(columns=["link", "kind", "bin_start_s", "bytes", "utilisation"])
    bin_s = float((config.get("output") or {}).get("time_bin_s") or 1.0)
    files = RunFiles(
        run_dir, config, summary, requests, iterations, links, experts, pd.DataFrame(), bin_s
    )
    timeline = _read_parquet(run_dir / "timeline.parquet", required=False)
    if timeline is None:
        try:
            timeline = timeline_table(
                requests, iterations, links, bin_s, files.slo, files.warmup_s
            ).to_frame()
        except (KeyError, ValueError) as err:
            raise ReportError(f"{run_dir}: cannot compute the timeline: {err}") from err
    faults = _read_parquet(run_dir / "faults.parquet", required=False)
    return RunFiles(
        run_dir, config, summary, requests, iterations, links, experts, timeline, bin_s, faults
    )


# --------------------------------------------------------------------------- a sweep


def sweep_keys(table: pd.DataFrame) -> list[str]:
    """The swept key-path columns of a sweep table: those between `label` and `run_dir`."""
    cols = list(table.columns)
    if "label" not in cols or "run_dir" not in cols:
        return []
    return cols[cols.index("label") + 1 : cols.index("run_dir")]


def load_sweep_table(sweep_dir: Path) -> pd.DataFrame:
    import pandas as pd

    sweep_dir = Path(sweep_dir)
    if not is_sweep_dir(sweep_dir):
        raise ReportError(f"{sweep_dir}: not a sweep directory (no sweep.csv)")
    try:
        return pd.read_csv(sweep_dir / "sweep.csv")
    except READ_ERRORS as err:
        raise ReportError(f"{sweep_dir / 'sweep.csv'}: cannot read: {err}") from err


def point_dir(sweep_dir: Path, row: Mapping[Any, Any]) -> Path:
    """A sweep point's run directory: sweep_dir/<label> (so a moved or copied sweep finds its
    own points), else the run_dir recorded in sweep.csv."""
    inside = Path(sweep_dir) / str(row["label"])
    return inside if inside.is_dir() else Path(str(row.get("run_dir", "")))
