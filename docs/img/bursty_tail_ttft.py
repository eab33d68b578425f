"""Redraw docs/img/bursty_tail_ttft.png from a run of experiments/bursty_tail.yaml.

python -m clustersim run experiments/bursty_tail.yaml
python docs/img/bursty_tail_ttft.py results/bursty_tail/<stamp>-<hash>/
"""

from __future__ import annotations

import sys
from pathlib import Path

from clustersim.results.plots import Series, plot_ttft_overview, save_png
from clustersim.results.report import load_run

OUT = Path(__file__).with_name("bursty_tail_ttft.png")
POINTS = {
    "arrival=processtrace": "Azure conv trace",
    "arrival=processpoisson-rate_rps11.06": "Poisson, same mean rate",
}  # sweep point label → legend label


def main(sweep_dir: Path) -> None:
    runs = [load_run(sweep_dir / label) for label in POINTS]
    series = [
        Series(name, run.requests, run.timeline)
        for name, run in zip(POINTS.values(), runs, strict=True)
    ]
    data = save_png(plot_ttft_overview(series, runs[0].bounds), OUT)
    print(f"{OUT} ({len(data) / 1024:.0f} KiB)")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
