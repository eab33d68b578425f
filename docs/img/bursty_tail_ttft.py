"""Redraw docs/img/bursty_tail_ttft.png from a run of experiments/bursty_tail.yaml.

python -m clustersim run experiments/bursty_tail.yaml
python docs/img/bursty_tail_ttft.py results/bursty_tail/<stamp>-<hash>/
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from clustersim.results.plots import Series, plot_ttft_overview, save_png
from clustersim.results.run_files import load_run, point_dir

OUT = Path(__file__).with_name("bursty_tail_ttft.png")
NAMES = {"trace": "Azure conv trace", "poisson": "Poisson, same mean rate"}  # label word → legend


def main(sweep_dir: Path) -> None:
    rows = pd.read_csv(sweep_dir / "sweep.csv").to_dict("records")
    series, bounds = [], None
    for word, name in NAMES.items():  # the trace first: its missed windows are shaded
        (row,) = [r for r in rows if word in str(r["label"])]
        run = load_run(point_dir(sweep_dir, row))
        series.append(Series(name, run.requests, run.timeline))
        bounds = bounds or run.bounds
    assert bounds is not None
    data = save_png(plot_ttft_overview(series, bounds), OUT)
    print(f"{OUT} ({len(data) / 1024:.0f} KiB)")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
