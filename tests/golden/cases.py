"""Golden runs: a few small seeded experiments whose result files are pinned by sha256.

The hashes live in `tests/golden/hashes.json` (one clearly named fixture file). They pin the
simulator's numbers exactly, so any intended change of the cost model or the fabric changes
them; regenerate after such a change (and only then) with

    python -m tests.golden.cases            # rewrites tests/golden/hashes.json

or `CLUSTERSIM_UPDATE_GOLDEN=1 pytest tests/test_golden.py`.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

from clustersim import cli

HASHES = Path(__file__).with_name("hashes.json")
FILES = ("requests.parquet", "iterations.parquet", "links.parquet", "experts.parquet")
WALL_KEYS = frozenset({"wall_s"})  # summary.json keys that depend on the machine's speed

CASES: dict[str, str] = {
    # dense TP2 × DP2, mixed lengths, least_outstanding router, two nodes' worth of fabric
    "dense_tp2": """\
name: golden_dense_tp2
seed: 5
model: llama-3.1-8b
topology: h100x16_ib
layout: {tp: 2, dp: 2}
serving: {max_num_seqs: 64, max_num_batched_tokens: 1024, router: least_outstanding}
workload:
  arrival: {process: poisson, rate_rps: 40}
  prompt_tokens: {dist: lognormal, median: 400, sigma: 0.6, max: 2048}
  output_tokens: {dist: lognormal, median: 40, sigma: 0.6, max: 200}
horizon: {requests: 200}
output: {time_bin_s: 0.1}
""",
    # PP2 across two nodes (hand-offs over InfiniBand), TP4 stages, least_kv router over DP
    "pp2": """\
name: golden_pp2
seed: 6
model: llama-3.1-70b
topology: h100x16_ib
layout: {tp: 4, pp: 2, dp: 2}
serving: {max_num_seqs: 64, max_num_batched_tokens: 1024, router: least_kv}
workload:
  arrival: {process: poisson, rate_rps: 10}
  prompt_tokens: {dist: fixed, value: 512}
  output_tokens: {dist: fixed, value: 32}
horizon: {requests: 100}
output: {time_bin_s: 0.1}
""",
    # MoE DP-attention + EP8 (all-to-all through PairSet), zipf routing
    "moe_ep8": """\
name: golden_moe_ep8
seed: 11
model: mixtral-8x7b
topology: dgx_h100_x1
layout: {tp: 1, dp: 8, ep: 8, dp_attention: true}
precision: {weights: fp8, activations: fp8, kv_cache: fp8}
serving: {max_num_seqs: 64, max_num_batched_tokens: 1024}
experts:
  routing: {distribution: zipf, skew: 1.0}
workload:
  arrival: {process: poisson, rate_rps: 200}
  prompt_tokens: {dist: fixed, value: 128}
  output_tokens: {dist: fixed, value: 32}
horizon: {duration_s: 1}
output: {time_bin_s: 0.25}
""",
    # disaggregated prefill / decode pools with KV transfers
    "disagg": """\
name: golden_disagg
seed: 3
model: llama-3.1-8b
topology: dgx_h100_x1
disaggregation:
  prefill: {layout: {tp: 1, dp: 2}}
  decode: {layout: {tp: 2, dp: 3}, serving: {max_num_seqs: 64}}
workload:
  arrival: {process: poisson, rate_rps: 20}
  prompt_tokens: {dist: lognormal, median: 1024, sigma: 0.5, max: 4096}
  output_tokens: {dist: lognormal, median: 64, sigma: 0.5, max: 256}
horizon: {duration_s: 3}
slo: {ttft_p99_s: 1.0, tpot_p99_s: 0.05}
""",
}


def _strip(data: object) -> object:
    if isinstance(data, dict):
        return {k: _strip(v) for k, v in data.items() if k not in WALL_KEYS}
    return data


def run_hashes(name: str, root: Path) -> dict[str, str]:
    """Run case `name` through the CLI under `root`; file name → sha256 of its bytes."""
    path = root / f"{name}.yaml"
    path.write_text(CASES[name])
    out = root / "results"
    assert cli.main(["run", str(path), "--out", str(out), "--quiet", "--no-report"]) == 0
    (run_dir,) = (out / f"golden_{name}").iterdir()
    hashes = {
        f: hashlib.sha256((run_dir / f).read_bytes()).hexdigest()
        for f in FILES
        if (run_dir / f).exists()
    }
    summary = _strip(json.loads((run_dir / "summary.json").read_text()))
    hashes["summary.json"] = hashlib.sha256(
        json.dumps(summary, sort_keys=True).encode()
    ).hexdigest()
    return hashes


def all_hashes(root: Path) -> dict[str, dict[str, str]]:
    return {name: run_hashes(name, root / name) for name in CASES}


def write_hashes(hashes: dict[str, dict[str, str]]) -> None:
    HASHES.write_text(json.dumps(hashes, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name in CASES:
            (root / name).mkdir()
        write_hashes(all_hashes(root))
    print(f"wrote {HASHES}", file=sys.stderr)
