"""Write the cost model's measured operator table from a measure_operators.py profile.

    python benchmarks/gpu/export_operator_table.py benchmarks/gpu/operators_h200_2026-12-04.json \
        src/clustersim/catalog/operator_tables/h200.csv

The table holds the families the cost model prices from measurements (model/kernels.py,
model/stage_parts.py): projection GEMMs (`gemm`, keyed by dtype, k, n and batch: the
per-head batch of MLA's absorbed GEMMs, measured in bf16 only) and the LM head (`lm_head`,
bf16). One row per measured (shape, rows) point: `us` is the profile's measured µs per
call. The other families in the profile stand in for engine kernels with PyTorch ones
(attention, MoE) and stay comparisons (docs/calibration.md §4).
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
from pathlib import Path

TABLE_FAMILIES = ("gemm", "lm_head")
COLUMNS = ("family", "dtype", "k", "n", "batch", "m", "us")


def table_rows(profile: dict) -> list[tuple[str, str, int, int, int, int, float]]:
    """(family, dtype, k, n, batch, m, µs) of every measured GEMM / LM-head shape, sorted: the
    median of the records of that shape (models share shapes: llama-3.1-70b and llama-2-70b
    layers; batched GEMMs are bf16 whatever the record's dtype, as they were measured)."""
    times: dict[tuple[str, str, int, int, int, int], list[float]] = {}
    for r in profile["records"]:
        if r["family"] not in TABLE_FAMILIES or not r["measured_us"]:
            continue
        s = r["shape"]
        dtype = "bf16" if s["batch"] > 1 else r["dtype"]
        key = (r["family"], dtype, s["k"], s["n"], s["batch"], s["m"])
        times.setdefault(key, []).append(float(r["measured_us"]))
    return [(*key, round(statistics.median(us), 3)) for key, us in sorted(times.items())]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("profile", type=Path, help="measure_operators.py JSON")
    parser.add_argument("out", type=Path, help="CSV table (catalog/operator_tables/<gpu>.csv)")
    args = parser.parse_args(argv)
    profile = json.loads(args.profile.read_text())
    rows = table_rows(profile)
    with args.out.open("w", newline="") as f:
        device = profile["device"]
        f.write(f"# {profile['gpu']}: {device['name']}, torch {device['torch']}, ")
        f.write(f"CUDA {device['cuda']}, measured {profile['date']} ")
        f.write(f"(benchmarks/gpu/{args.profile.name})\n")
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(COLUMNS)
        writer.writerows(rows)
    print(f"{args.out}: {len(rows)} rows")
    return 0


if __name__ == "__main__":
    sys.exit(main())
