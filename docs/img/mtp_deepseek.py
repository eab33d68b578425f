"""Redraw docs/img/mtp_deepseek.png from a run of experiments/mtp_deepseek.yaml.

python -m clustersim run experiments/mtp_deepseek.yaml
python docs/img/mtp_deepseek.py results/mtp_deepseek/<stamp>-<hash>/

One row per layout (TP8 × EP8; DP-attention 8 × EP8). Left: mean TPOT against the decode batch
(closed-loop concurrency) without MTP and with MTP at k = 1 and k = 3 draft tokens. Right: the
TPOT speed-up over no MTP, with E[tokens per verify step] of each acceptance profile (the
speed-up a free verify step would give) dashed.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from clustersim.results.plots import save_png
from clustersim.serving.speculative import AcceptanceProfile

OUT = Path(__file__).with_name("mtp_deepseek.png")
WARMUP_S = 10.0  # the experiment's horizon.warmup_s


def point(run_dir: Path) -> dict[str, float]:
    cfg = yaml.safe_load((run_dir / "config.resolved.yaml").read_text())
    spec = cfg["serving"].get("speculative")
    req = pd.read_parquet(run_dir / "requests.parquet")
    req = req[(req["arrival_s"] >= WARMUP_S) & req["finish_s"].notna()]
    k = spec["num_tokens"] if spec else 0
    mean = AcceptanceProfile(np.asarray(spec["acceptance"])).mean_tokens_per_step if spec else 1
    layout = cfg["layout"]
    return {
        "layout": "DP-attention 8 · EP8" if layout.get("dp_attention") else "TP8 · EP8",
        "k": k,
        "concurrency": cfg["workload"]["arrival"]["concurrency"],
        "tpot_ms": float(req["tpot_s"].mean()) * 1e3,
        "tokens_per_step": float(mean),
    }


def draw(left: Axes, right: Axes, df: pd.DataFrame, layout: str) -> None:
    plain = df[df["k"] == 0].set_index("concurrency")["tpot_ms"]
    for i, (k, part) in enumerate(df.groupby("k")):
        part = part.sort_values("concurrency")
        name, color = ("no MTP" if k == 0 else f"MTP, k = {k}"), f"C{i}"
        left.plot(part["concurrency"], part["tpot_ms"], marker="o", label=name, color=color)
        if k:
            speedup = plain.loc[part["concurrency"]].to_numpy() / part["tpot_ms"].to_numpy()
            right.plot(part["concurrency"], speedup, marker="o", label=name, color=color)
            ideal = part["tokens_per_step"].iloc[0]
            right.axhline(ideal, ls="--", color=color, lw=1)
    for ax in (left, right):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrent requests (decode batch)")
        ax.grid(alpha=0.3)
        ax.legend()
    left.set_ylabel("mean TPOT (ms)")
    left.set_title(f"DeepSeek-V3, 8×H200 {layout}, fp8")
    right.set_ylabel("TPOT speed-up over no MTP")
    right.set_title("dashed: E[tokens per verify step]")
    right.axhline(1.0, color="grey", lw=0.8)


def main(sweep_dir: Path) -> None:
    rows = pd.read_csv(sweep_dir / "sweep.csv")
    df = pd.DataFrame([point(Path(d)) for d in rows["run_dir"]])
    layouts = sorted(df["layout"].unique(), reverse=True)  # TP8 first
    fig = Figure(figsize=(10, 4 * len(layouts)))
    axes = fig.subplots(len(layouts), 2, squeeze=False)
    for (left, right), layout in zip(axes, layouts, strict=True):
        draw(left, right, df[df["layout"] == layout], layout)
    fig.tight_layout()
    data = save_png(fig, OUT)
    print(f"{OUT} ({len(data) / 1024:.0f} KiB)")
    print(df.sort_values(["layout", "concurrency", "k"]).round(3).to_string(index=False))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
