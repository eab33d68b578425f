"""Run an experiment file through the CLI and read its run directory back as bytes: what the
equivalence tests (fast path vs general path, leap vs step) compare, file by file."""

from __future__ import annotations

import json
from pathlib import Path

from clustersim import cli


def run_files(path: Path, out: Path, name: str) -> dict[str, bytes]:
    """`clustersim run path --out out` (one replicate, no report) → {relative path: bytes};
    summary.json without its one wall-clock number (`sim.wall_s`), keys sorted."""
    argv = ["run", str(path), "--out", str(out), "--quiet", "--no-report", "--set", "replicates=1"]
    assert cli.main(argv) == 0
    (run_dir,) = (out / name).iterdir()
    files: dict[str, bytes] = {}
    for file in sorted(p for p in run_dir.rglob("*") if p.is_file()):
        data = file.read_bytes()
        if file.name == "summary.json":
            summary = json.loads(data)
            summary["sim"].pop("wall_s")
            data = json.dumps(summary, sort_keys=True).encode()
        files[file.relative_to(run_dir).as_posix()] = data
    return files
