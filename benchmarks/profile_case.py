"""Where one bench_scaling case spends its time: cProfile of a `clustersim run` (a script).

  python benchmarks/profile_case.py CASE [--top N] [--save FILE.prof]

Runs the case's experiment through the CLI under cProfile in this process and prints the top
functions by own time and by cumulative time, each with its calls per engine step (engine
steps = summary.json sim.events − requests). cProfile roughly doubles the run's CPU time and
inflates cheap, often-called functions most; read shares, not absolute times.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import json
import pstats
import sys
import tempfile
from pathlib import Path

from bench_scaling import yaml_for


def profile(case: str) -> tuple[pstats.Stats, dict[str, float]]:
    from clustersim.cli import main

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.yaml"
        path.write_text(yaml_for(case))
        argv = ["run", str(path), "--out", str(Path(tmp) / "out"), "--no-report", "--quiet"]
        prof = cProfile.Profile()
        with contextlib.redirect_stdout(io.StringIO()):
            prof.runcall(main, argv)
        summary = json.loads(next((Path(tmp) / "out").rglob("summary.json")).read_text())
    done = summary["requests_completed"] + summary["requests_dropped"]
    facts = {
        "requests": done,
        "engine_steps": summary["sim"]["events"] - done,
        "simulated_s": summary["sim"]["simulated_s"],
    }
    return pstats.Stats(prof), facts


def table(stats: pstats.Stats, key: str, top: int, steps: float) -> str:
    """Markdown rows: function, calls, calls a step, own s, cumulative s, shares of total."""
    raw = getattr(stats, "stats")  # noqa: B009 (pstats keeps these untyped)
    total: float = getattr(stats, "total_tt")  # noqa: B009
    index = 3 if key == "cumulative" else 2
    rows = sorted(raw.items(), key=lambda kv: kv[1][index], reverse=True)[:top]
    out = [
        "| function | calls | calls/step | own s | own % | cum s | cum % |",
        "|---|---|---|---|---|---|---|",
    ]
    for (file, line, name), (_cc, ncalls, tt, ct, _callers) in rows:
        where = f"{Path(file).parent.name}/{Path(file).name}:{line}:{name}"
        out.append(
            f"| {where} | {ncalls:,} | {ncalls / max(steps, 1):.2f} | {tt:.2f} "
            f"| {100 * tt / total:.1f} | {ct:.2f} | {100 * ct / total:.1f} |"
        )
    return "\n".join(out)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("case", help="a bench_scaling.py case, e.g. pp4_300")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--save", type=Path, help="also write the raw profile (pstats format)")
    args = ap.parse_args(argv)
    stats, facts = profile(args.case)
    if args.save:
        stats.dump_stats(args.save)
    steps = facts["engine_steps"]
    print(
        f"## {args.case}: {facts['requests']:,} requests, {steps:,.0f} engine steps, "
        f"{facts['simulated_s']:.1f} simulated s, profiled total "
        f"{getattr(stats, 'total_tt'):.2f} s"  # noqa: B009
    )
    print("\nby own time\n")
    print(table(stats, "tottime", args.top, steps))
    print("\nby cumulative time\n")
    print(table(stats, "cumulative", args.top, steps))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
