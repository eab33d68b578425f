"""Redraw docs/img/prefix_cache_routing.png from a run of experiments/prefix_cache_routing.yaml.

python -m clustersim run experiments/prefix_cache_routing.yaml
python docs/img/prefix_cache_routing.py results/prefix_cache_routing/<stamp>-<hash>/

Panels: prefix-cache hit rate (share of prompt tokens not prefilled) per router, TTFT p50 /
p99 per router, and the hit rate per 10-minute window over the replay.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from clustersim.results.plots import save_png
from clustersim.results.run_files import load_run, point_dir

OUT = Path(__file__).with_name("prefix_cache_routing.png")
WINDOW_S = 600.0  # hit-rate timeline window (s)


def main(sweep_dir: Path) -> None:
    rows = pd.read_csv(sweep_dir / "sweep.csv").to_dict("records")
    fig = Figure(figsize=(13, 4.2))
    hit_ax, ttft_ax, time_ax = fig.subplots(1, 3)
    names, hits, p50, p99 = [], [], [], []
    for row in rows:
        run = load_run(point_dir(sweep_dir, row))
        name = str(row["serving.router"])
        req = run.requests
        names.append(name)
        hits.append(req["cached_tokens"].sum() / req["prompt_tokens"].sum())
        p50.append(float(row["ttft_p50_s"]))
        p99.append(float(row["ttft_p99_s"]))
        w = np.floor(req["arrival_s"] / WINDOW_S)
        by = req.groupby(w)[["cached_tokens", "prompt_tokens"]].sum()
        t = (by.index.to_numpy() + 0.5) * WINDOW_S / 60.0
        time_ax.plot(t, by["cached_tokens"] / by["prompt_tokens"], marker="o", label=name)
    x = np.arange(len(names))
    hit_ax.bar(x, hits, color="tab:green")
    hit_ax.set_xticks(x, names, rotation=20)
    hit_ax.set_ylabel("prompt tokens served from cache")
    hit_ax.set_title("prefix-cache hit rate")
    ttft_ax.bar(x - 0.2, p50, 0.4, label="p50")
    ttft_ax.bar(x + 0.2, p99, 0.4, label="p99")
    ttft_ax.set_xticks(x, names, rotation=20)
    ttft_ax.set_ylabel("TTFT (s)")
    ttft_ax.set_title("time to first token")
    ttft_ax.legend()
    time_ax.set_xlabel("arrival time (min)")
    time_ax.set_ylabel("hit rate per 10 min")
    time_ax.set_title("hit rate over the replay")
    time_ax.legend(fontsize=8)
    fig.suptitle("Mooncake conversation trace, Llama-3.1-70B TP4×DP4 on 16 H100")
    fig.tight_layout()
    save_png(fig, OUT)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
