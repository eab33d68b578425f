"""Markdown tables of a measure_operators.py profile: measured / roofline per family and row
band, run-to-run spread, and the whole-layer composition check (docs/calibration.md §4).

    python benchmarks/gpu/summarize_operator_profile.py \
        benchmarks/gpu/operators_h200_2026-12-04.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

Record = dict[str, Any]
BANDS = ((1, 16), (17, 128), (129, 1024), (1025, 8192))


def quantiles(values: list[float]) -> str:
    """median (p10–p90) of `values`."""
    v = sorted(values)
    pick = lambda q: v[min(len(v) - 1, int(q * len(v)))]  # noqa: E731
    return f"{statistics.median(v):.2f} ({pick(0.1):.2f}–{pick(0.9):.2f})"


def ratio(r: Record) -> float:
    return float(r["measured_us"]) / float(r["predicted_us"])


def table(header: str, rows: Iterable[tuple[str, ...]]) -> str:
    cols = header.count("|") - 1
    return "\n".join([header, "|" + "---|" * cols, *("| " + " | ".join(r) + " |" for r in rows)])


def gemm_bands(records: list[Record]) -> str:
    rows = []
    for family in ("gemm", "lm_head"):
        for dtype in ("bf16", "fp8"):
            for lo, hi in BANDS:
                sel = [
                    r
                    for r in records
                    if r["family"] == family
                    and r["dtype"] == dtype
                    and r["shape"]["batch"] == 1
                    and lo <= r["shape"]["m"] <= hi
                ]
                if sel:
                    rows.append(
                        (
                            family,
                            dtype,
                            f"{lo}–{hi}",
                            str(len(sel)),
                            quantiles([ratio(r) for r in sel]),
                        )
                    )
    head = "| family | dtype | rows | shapes | measured / roofline: median (p10–p90) |"
    return table(head, rows)


def by_weight_size(records: list[Record]) -> str:
    """GEMMs at ≤ 16 rows by the bytes of their weights: small GEMMs do not fill the GPU."""
    bands = ((0, 8), (8, 32), (32, 128), (128, 10**6))  # MiB
    rows = []
    for lo, hi in bands:
        sel = [
            r
            for r in records
            if r["family"] == "gemm"
            and r["shape"]["batch"] == 1
            and r["shape"]["m"] <= 16
            and lo <= weight_mib(r) < hi
        ]
        if sel:
            rows.append(
                (
                    f"{lo}–{hi if hi < 10**6 else '∞'}",
                    str(len(sel)),
                    quantiles([ratio(r) for r in sel]),
                    f"{statistics.median(r['measured_us'] for r in sel):.1f}",
                )
            )
    head = "| weights (MiB) | GEMM shapes × rows ≤ 16 | measured / roofline | median µs |"
    return table(head, rows)


def weight_mib(r: Record) -> float:
    s = r["shape"]
    return s["k"] * s["n"] * (1 if r["dtype"] == "fp8" else 2) / 2**20


def families(records: list[Record]) -> str:
    rows = []
    for family in dict.fromkeys(r["family"] for r in records):
        sel = [r for r in records if r["family"] == family and r["measured_us"]]
        spread = [
            max(r["notes"]["runs_us"]) / min(r["notes"]["runs_us"]) - 1
            for r in sel
            if len(r["notes"].get("runs_us", [])) > 1
        ]
        rows.append(
            (
                family,
                str(len(sel)),
                quantiles([ratio(r) for r in sel]),
                f"{100 * statistics.median(spread):.1f} %" if spread else "—",
            )
        )
    head = (
        "| family | records | measured / roofline: median (p10–p90) "
        "| run spread (median max/min − 1) |"
    )
    return table(head, rows)


def decode_attention(records: list[Record]) -> str:
    rows = []
    key: Callable[[Record], tuple[str, int]] = lambda r: (r["model"], r["shape"]["tp"])  # noqa: E731
    for model, tp in dict.fromkeys(key(r) for r in records if r["family"] == "decode_attention"):
        for batch in (1, 8, 32, 128, 512):
            sel = [
                r
                for r in records
                if r["family"] == "decode_attention"
                and key(r) == (model, tp)
                and r["shape"]["batch"] == batch
            ]
            if sel:
                cells = " / ".join(f"{ratio(r):.2f}" for r in sel)
                ctx = "/".join(str(r["shape"]["context"] // 1024 or "½") for r in sel)
                rows.append((f"{model} TP{tp}", str(batch), ctx + "k", cells))
    head = "| model | batch | contexts | measured / roofline per context |"
    return table(head, rows)


def layer_composition(records: list[Record]) -> str:
    rows = []
    for r in records:
        if r["family"] != "decode_layer":
            continue
        s = r["shape"]
        gemms = sum(
            g["measured_us"]
            for g in records
            if g["family"] == "gemm"
            and g["model"] == r["model"]
            and g["shape"]["tp"] == s["tp"]
            and g["dtype"] == "bf16"
            and g["shape"]["m"] == s["batch"]
        )
        rows.append(
            (
                f"{r['model']} TP{s['tp']}",
                str(s["batch"]),
                f"{r['measured_us']:.1f}",
                f"{gemms:.1f}",
                f"{r['predicted_us']:.1f}",
            )
        )
    head = (
        "| layer (bf16, 1,024-token contexts) | batch | whole layer µs | its 4 GEMMs µs "
        "| roofline layer µs |"
    )
    return table(head, rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("profile", type=Path)
    args = parser.parse_args(argv)
    records = [r for r in json.loads(args.profile.read_text())["records"] if r["measured_us"]]
    for title, text in (
        ("Families", families(records)),
        ("GEMMs and LM head by rows", gemm_bands(records)),
        ("GEMMs at ≤ 16 rows by weight size", by_weight_size(records)),
        ("Decode attention (PyTorch SDPA)", decode_attention(records)),
        ("Whole decode layer", layer_composition(records)),
    ):
        print(f"### {title}\n\n{text}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
