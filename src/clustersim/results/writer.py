"""Run directories and their files (DESIGN.md §2 "Results"; columns in docs/results.md).

- A run directory is `root/<name>/<UTC stamp YYYYmmddTHHMMSSZ>-<8 hex of the config hash>`,
  created with exist_ok=False; if that name is taken, `-2`, `-3`, ... is appended. An existing
  directory is never reused.
- Every file is written to a hidden temporary name in the same directory, fsynced, then
  os.replace'd onto its final name, so a reader sees either the whole file or none.
- summary.json is written last: its presence marks a complete run directory.
- Same tables ⇒ byte-identical parquet files: no pandas index or pandas metadata is stored,
  and nothing time-dependent goes into any file except summary.json's `sim.wall_s`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import yaml

from clustersim.collector import collector_paused
from clustersim.metrics.summary import RunTables, json_safe
from clustersim.metrics.table import Table
from clustersim.results.arrow_columns import arrow_table, dictionary_columns

if TYPE_CHECKING:
    import pandas as pd

FILE_MODE = 0o644  # permissions of written result files
HASH_CHARS = 8  # hex characters of the config hash in a run directory name
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._=,+-]+")

# summary.json entries copied into each sweep.csv row: (column, key path)
SWEEP_COLUMNS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("gpus", ("gpus",)),
    ("requests_completed", ("requests_completed",)),
    ("requests_dropped", ("requests_dropped",)),
    ("input_tokens_per_s", ("throughput", "input_tokens_per_s")),
    ("output_tokens_per_s", ("throughput", "output_tokens_per_s")),
    ("output_tokens_per_s_per_gpu", ("throughput", "output_tokens_per_s_per_gpu")),
    ("ttft_p50_s", ("ttft_s", "p50")),
    ("ttft_p99_s", ("ttft_s", "p99")),
    ("tpot_p50_s", ("tpot_s", "p50")),
    ("tpot_p99_s", ("tpot_s", "p99")),
    ("e2e_p99_s", ("e2e_s", "p99")),
    ("slo_attainment", ("slo", "attainment")),
    ("goodput_rps", ("slo", "goodput_rps")),
    ("link_max_utilisation", ("links", "max_utilisation")),
    ("expert_imbalance", ("experts", "imbalance")),
    ("worst_window_attainment", ("slo", "worst_window_attainment")),
    ("windows_violating", ("slo", "windows_violating")),
    ("stable", ("stability", "stable")),
)
# Columns only for points whose summary has them (disaggregated runs): a sweep of co-located
# runs gets none of them, a mixed sweep leaves them empty for its co-located points.
OPTIONAL_SWEEP_COLUMNS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("prefill_input_tokens_per_s_per_node", ("pools", "prefill", "input_tokens_per_s_per_node")),
    ("decode_output_tokens_per_s_per_node", ("pools", "decode", "output_tokens_per_s_per_node")),
    ("kv_transfer_p99_s", ("kv_transfer", "p99_s")),
)


# --------------------------------------------------------------------------- directories


def config_hash(config: Mapping[str, Any]) -> str:
    """Short hex digest of a plain config dict (key order does not matter)."""
    text = json.dumps(config, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:HASH_CHARS]


def utc_stamp(now: datetime | None = None) -> str:
    """UTC time as YYYYmmddTHHMMSSZ."""
    return (now or datetime.now(timezone.utc)).astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def new_run_dir(
    root: Path, name: str, resolved: Mapping[str, Any], now: datetime | None = None
) -> Path:
    """Create and return root/<name>/<stamp>-<hash>[-N], a directory that did not exist."""
    parent = Path(root) / safe_name(name)
    return make_unique_dir(parent, f"{utc_stamp(now)}-{config_hash(resolved)}")


def new_point_dir(sweep_dir: Path, label: str) -> Path:
    """Create and return sweep_dir/<label>[-N] for one sweep point (label made path-safe)."""
    return make_unique_dir(Path(sweep_dir), safe_name(label))


def make_unique_dir(parent: Path, base: str) -> Path:
    """mkdir parent/base, else parent/base-2, -3, ...; never an existing directory."""
    parent.mkdir(parents=True, exist_ok=True)
    suffix = 1
    while True:
        path = parent / (base if suffix == 1 else f"{base}-{suffix}")
        try:
            path.mkdir(exist_ok=False)
        except FileExistsError:
            suffix += 1
            continue
        return path


def safe_name(text: str) -> str:
    """One path component: runs of characters outside [A-Za-z0-9._=,+-] become '_'."""
    name = _UNSAFE_NAME.sub("_", text).strip(".")
    return name or "_"


# --------------------------------------------------------------------------- atomic writes


def atomic_write(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    """Write `path` via a temporary file in the same directory, fsync, os.replace.

    On any error the temporary file is removed and the final name is left untouched.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), FILE_MODE)  # mkstemp creates 0o600
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    """Persist the directory entry of a rename (POSIX; a no-op where unsupported)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_text(path: Path, text: str) -> None:
    """Atomically write UTF-8 text."""
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def write_parquet(path: Path, df: Table | pd.DataFrame) -> None:
    """Atomically write a table as parquet (snappy), without index or pandas metadata."""
    import pyarrow.parquet as pq

    table = arrow_table(df)
    dictionary = dictionary_columns(table)
    atomic_write(
        path, lambda f: pq.write_table(table, f, compression="snappy", use_dictionary=dictionary)
    )


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    """Atomically write JSON: sorted keys, indent 2, NaN written as null."""
    text = json.dumps(json_safe(data), sort_keys=True, indent=2, allow_nan=False)
    write_text(path, text + "\n")


# --------------------------------------------------------------------------- run files


# Present in a run directory from its creation until its last file (plots included) is written:
# a run interrupted by Ctrl-C / SIGTERM, a crash or a power cut keeps it, and `report` /
# `compare` name the directory as incomplete.
INCOMPLETE_MARKER = "INCOMPLETE"


def mark_incomplete(run_dir: Path) -> None:
    write_text(
        Path(run_dir) / INCOMPLETE_MARKER,
        "clustersim was interrupted before this run directory was complete; its files may be "
        "missing or partial. Run the experiment again.\n",
    )


def mark_complete(run_dir: Path) -> None:
    (Path(run_dir) / INCOMPLETE_MARKER).unlink(missing_ok=True)
    _fsync_dir(Path(run_dir))


def is_incomplete(run_dir: Path) -> bool:
    return (Path(run_dir) / INCOMPLETE_MARKER).exists()


def resolved_yaml(resolved: Mapping[str, Any]) -> str:
    """config.resolved.yaml's text: `yaml.safe_dump` (key order kept, unicode as is) through
    libyaml's emitter where PyYAML has it (≈ 4× less CPU; the same text, tests/test_writer.py)."""
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    return yaml.dump(dict(resolved), Dumper=dumper, sort_keys=False, allow_unicode=True)


def write_run(
    run_dir: Path,
    resolved: Mapping[str, Any],
    out: RunTables,
    summary: Mapping[str, Any],
    timeline: Table | pd.DataFrame | None = None,
) -> None:
    """Write one run's files into an existing (fresh) run directory; summary.json last.

    `timeline`: the per-window table of clustersim.metrics.timeline (timeline.parquet).
    """
    with collector_paused():  # (collector.py: arrow and numpy work, few cycles)
        _write_run_files(Path(run_dir), resolved, out, summary, timeline)


def _write_run_files(
    run_dir: Path,
    resolved: Mapping[str, Any],
    out: RunTables,
    summary: Mapping[str, Any],
    timeline: Table | pd.DataFrame | None,
) -> None:
    write_text(run_dir / "config.resolved.yaml", resolved_yaml(resolved))
    write_parquet(run_dir / "requests.parquet", out.requests)
    if out.iterations is not None and len(out.iterations) > 0:
        write_parquet(run_dir / "iterations.parquet", out.iterations)
    write_parquet(run_dir / "links.parquet", out.links)
    if out.experts is not None:
        write_parquet(run_dir / "experts.parquet", out.experts)
    eplb = getattr(out, "eplb", None)  # MoE runs with experts.eplb: one row per rebalance
    if eplb is not None:
        write_parquet(run_dir / "eplb.parquet", eplb)
    faults = getattr(out, "faults", None)  # runs with `faults:`: one row per fault
    if faults is not None:
        write_parquet(run_dir / "faults.parquet", faults)
    if timeline is not None:
        write_parquet(run_dir / "timeline.parquet", timeline)
    write_json(run_dir / "summary.json", summary)


# --------------------------------------------------------------------------- sweeps


def sweep_row(
    label: str, overrides: Mapping[str, Any], run_dir: Path, summary: Mapping[str, Any]
) -> dict[str, Any]:
    """One sweep.csv row: label, the swept key paths' values, run_dir, headline numbers."""
    row: dict[str, Any] = {"label": label}
    row.update({key: _cell(value) for key, value in overrides.items()})
    row["run_dir"] = str(run_dir)
    for column, keys in SWEEP_COLUMNS:
        row[column] = json_safe(_lookup(summary, keys))
    for column, keys in OPTIONAL_SWEEP_COLUMNS:
        if keys[0] in summary:
            row[column] = json_safe(_lookup(summary, keys))
    row.update(interval_columns(summary))
    return row


def interval_columns(summary: Mapping[str, Any]) -> dict[str, Any]:
    """Replicated points only: `replicates`, and for each SWEEP_COLUMNS key with an interval
    `<column>_mean`, `<column>_ci_lo`, `<column>_ci_hi` (summary `replicates.<key>`)."""
    block = summary.get("replicates")
    if not isinstance(block, Mapping) or int(block.get("n") or 1) < 2:
        return {}
    cells: dict[str, Any] = {"replicates": int(block["n"])}
    for column, keys in SWEEP_COLUMNS:
        stats = _lookup(block, keys)
        if not isinstance(stats, Mapping):
            continue
        ci = stats.get("ci95") or (None, None)
        cells[f"{column}_mean"] = json_safe(stats.get("mean"))
        cells[f"{column}_ci_lo"], cells[f"{column}_ci_hi"] = json_safe(ci[0]), json_safe(ci[1])
    return cells


def write_sweep_table(
    sweep_dir: Path, rows: Sequence[Mapping[str, Any]], stem: str = "sweep"
) -> None:
    """Atomically (re)write sweep_dir/<stem>.csv and <stem>.parquet, one row per point."""
    import pandas as pd

    df = pd.DataFrame([dict(r) for r in rows])
    for column in df.columns:
        df[column] = _uniform(df[column].tolist())
    csv = df.to_csv(index=False, lineterminator="\n")
    write_text(Path(sweep_dir) / f"{stem}.csv", csv)
    write_parquet(Path(sweep_dir) / f"{stem}.parquet", df)


def _lookup(data: Mapping[str, Any], keys: tuple[str, ...]) -> Any:
    """data[k0][k1]...; None where a level is missing."""
    value: Any = data
    for key in keys:
        if not isinstance(value, Mapping) or key not in value:
            return None
        value = value[key]
    return value


def _cell(value: Any) -> Any:
    """A swept value as a table cell: scalars as they are, anything else as compact JSON."""
    value = json_safe(value)
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _uniform(values: list[Any]) -> list[Any]:
    """A column parquet can store: mixed kinds (e.g. 1 and "a") become strings."""
    kinds = {_kind(v) for v in values if v is not None}
    if len(kinds) <= 1:
        return values
    return [None if v is None else str(v) for v in values]


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    return type(value).__name__
