"""Golden hashes of every experiment in experiments/, run at a small horizon.

Refactors (issue 13) and performance work must leave these byte-identical: for each run of
each experiment (every sweep point) the sha256 of requests.parquet and of summary.json with
the machine-dependent `wall_s` removed; for each plan, plan.json (wall-free, with the checkout's
absolute path written as `<repo>`), plan.csv and rejected.csv.
An intended change of the numbers regenerates them:

    python -m tests.golden.experiments        # rewrites tests/golden/experiment_hashes.json
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

from clustersim import cli

ROOT = Path(__file__).resolve().parents[2]
HASHES = Path(__file__).with_name("experiment_hashes.json")
EXPERIMENTS = ROOT / "experiments"
WALL_KEYS = frozenset({"wall_s"})  # machine-dependent
RUN_FILES = ("requests.parquet",)
PLAN_FILES = ("plan.json", "plan.csv", "rejected.csv")

# simulated seconds per run (None: the experiment's own horizon); the MoE sweep is the
# expensive one, long_context_cp already stops after 4 requests
HORIZON_S: dict[str, float | None] = {
    "ep_imbalance": 1.0,
    "long_context_cp": None,
    "prefix_cache_routing": 120.0,  # long enough for the routers to differ
}
DEFAULT_HORIZON_S = 2.0


def experiment_names() -> list[str]:
    return sorted(p.stem for p in EXPERIMENTS.glob("*.yaml"))


def _strip(data: object) -> object:
    if isinstance(data, dict):
        return {k: _strip(v) for k, v in data.items() if k not in WALL_KEYS}
    if isinstance(data, list):
        return [_strip(v) for v in data]
    return data


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _json_sha(path: Path) -> str:
    """sha256 of the JSON without wall times; the checkout's path (plan.json names the
    experiment file and its directory) is written as `<repo>` so any clone gives one hash."""
    text = path.read_text().replace(json.dumps(str(ROOT))[1:-1], "<repo>")
    stripped = _strip(json.loads(text))
    return _sha(json.dumps(stripped, sort_keys=True).encode())


def _overrides(name: str) -> list[str]:
    horizon = HORIZON_S.get(name, DEFAULT_HORIZON_S)
    args = []
    if horizon is not None:
        args = ["--set", f"horizon.duration_s={horizon}", "--set", "horizon.warmup_s=0"]
    if not name.startswith("plan_"):
        args += ["--set", "replicates=1", "--no-report"]
    return args


def run_hashes(name: str, root: Path) -> dict[str, str]:
    """Run experiment `name` under `root`; 'point/file' → sha256 (summary.json wall-free)."""
    command = "plan" if name.startswith("plan_") else "run"
    path = EXPERIMENTS / f"{name}.yaml"
    out = root / "results"
    argv = [command, str(path), "--out", str(out), "--quiet", *_overrides(name)]
    assert cli.main(argv) == 0
    (run_dir,) = (out / name).iterdir()
    hashes: dict[str, str] = {}
    names = PLAN_FILES if command == "plan" else (*RUN_FILES, "summary.json")
    for file in sorted(p for p in run_dir.rglob("*") if p.name in names):
        key = file.relative_to(run_dir).as_posix()
        hashes[key] = _json_sha(file) if file.suffix == ".json" else _sha(file.read_bytes())
    assert hashes, f"{name}: no result files under {run_dir}"
    return hashes


def write_hashes(hashes: dict[str, dict[str, str]]) -> None:
    HASHES.write_text(json.dumps(hashes, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        result = {}
        for name in experiment_names():
            (Path(tmp) / name).mkdir()
            result[name] = run_hashes(name, Path(tmp) / name)
            print(f"{name}: {len(result[name])} files", file=sys.stderr)
        write_hashes(result)
    print(f"wrote {HASHES}", file=sys.stderr)
