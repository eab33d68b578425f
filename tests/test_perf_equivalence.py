"""Speed-ups against their reference implementations: same outputs with each switched off.

These do not depend on the stored golden hashes (tests/test_golden.py): each runs a small
experiment twice, once as optimised and once with the optimisation replaced by the plain
reference code it stands for, and compares the tables.
"""

from __future__ import annotations

import sys
from array import array
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from clustersim.config.load import load_experiment
from clustersim.metrics.recorder import ITERATION_COLUMNS, Recorder
from clustersim.network import fabric as fabric_mod
from clustersim.network.routing import PairSet
from clustersim.serving import router as router_mod
from clustersim.sim.engine import RunOutput, run_experiment
from clustersim.topology.graph import build_cluster

sys.path.insert(0, str(Path(__file__).parent))
from golden.cases import CASES

TABLES = ("requests", "iterations", "links", "experts")


def run_case(name: str, tmp_path: Path) -> RunOutput:
    path = tmp_path / f"{name}.yaml"
    path.write_text(CASES[name])
    return run_experiment(load_experiment(path))


def assert_same(a: RunOutput, b: RunOutput, *, links_rtol: float = 0.0) -> None:
    for t in TABLES:
        x, y = getattr(a, t), getattr(b, t)
        if x is None or y is None:
            assert x is None and y is None, t
            continue
        if t == "links" and links_rtol:
            pd.testing.assert_frame_equal(x, y, check_exact=False, rtol=links_rtol, atol=0.0)
        else:
            pd.testing.assert_frame_equal(x, y, check_exact=True)


# ------------------------------------------------------------------ PairSet: sparse loads


def test_pairset_sparse_loads_equal_the_dense_product() -> None:
    from clustersim.catalog.hardware import get_hardware
    from clustersim.config.schema import NetworkSpec, NVLinkSpec, TopologySpec

    topo = TopologySpec(
        name="t",
        nodes=4,
        gpus_per_node=8,
        gpu="h100-sxm",
        nvlink=NVLinkSpec(domain="node", bandwidth_GBps=450, latency_us=2.0),
        network=NetworkSpec(),
    )
    cluster = build_cluster(topo, get_hardware("h100-sxm"))
    gpus = list(cluster.gpus)
    pairs = [(a, b) for a in gpus for b in gpus]  # same-GPU pairs included
    ps = PairSet(cluster, pairs)
    rng = np.random.default_rng(0)
    whole = rng.integers(0, 10**6, size=len(pairs)).astype(np.float64)
    assert np.array_equal(ps.loads(whole), ps.matrix @ whole)  # whole bytes: exact
    frac = rng.random(len(pairs)) * 1e6
    np.testing.assert_allclose(ps.loads(frac), ps.matrix @ frac, rtol=1e-13, atol=0.0)


def test_moe_run_with_sparse_pairset_matches_dense(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Requests, iterations and experts identical; link bytes within float rounding (the dense
    BLAS product sums in a kernel-dependent order, the sparse one sequentially)."""
    fast = run_case("moe_ep8", tmp_path)
    monkeypatch.setattr(PairSet, "loads", lambda self, x: self.matrix @ x)
    ref = run_case("moe_ep8", tmp_path)
    assert_same(fast, ref, links_rtol=1e-12)


# ------------------------------------------------------------------ PP hand-off routes


def test_cached_handoff_routes_match_plain_transfers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast = run_case("pp2", tmp_path)

    def plain(self, pairs, nbytes, latency_s=0.0):  # type: ignore[no-untyped-def]
        return self.transfer([(s, d, nbytes) for s, d in pairs], latency_s)

    monkeypatch.setattr(fabric_mod.Fabric, "transfer_same", plain)
    ref = run_case("pp2", tmp_path)
    assert_same(fast, ref)


# ------------------------------------------------------------------ routers


@pytest.mark.parametrize("case", ["dense_tp2", "disagg"])
def test_kv_fractions_skipped_unless_the_router_reads_them(
    case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast = run_case(case, tmp_path)
    monkeypatch.setattr(router_mod.Router, "uses_kv", True)  # refresh on every arrival
    ref = run_case(case, tmp_path)
    assert_same(fast, ref)


# ------------------------------------------------------------------ iteration table


def test_iterations_frame_matches_a_pandas_stable_sort() -> None:
    rng = np.random.default_rng(3)
    n = 5000
    rec = Recorder(0)
    rows = []
    for _ in range(n):  # many ties in start_s, replica, stage and lane
        row = (
            int(rng.integers(0, 4)),
            int(rng.integers(0, 3)),
            int(rng.integers(0, 2)),
            float(rng.integers(0, 50)) / 8,
            float(rng.random()),
            int(rng.integers(0, 99)),
            int(rng.integers(0, 99)),
            int(rng.integers(0, 9)),
            int(rng.integers(0, 99)),
            float(rng.random()),
            float(rng.random()),
            float(rng.random()),
            int(rng.integers(0, 999)),
            1000,
        )
        rows.append(row)
        rec.on_iteration(row)
    buf = array("d", rec.iterations)
    table = np.frombuffer(buf, dtype=np.float64).reshape(-1, len(ITERATION_COLUMNS))
    ints = set(ITERATION_COLUMNS) - {"start_s", "end_s", "compute_s", "comm_s", "bubble_s"}
    ref = pd.DataFrame(
        {
            c: table[:, i].astype(np.int64) if c in ints else table[:, i]
            for i, c in enumerate(ITERATION_COLUMNS)
        }
    )
    ref = ref.sort_values(["start_s", "replica", "stage", "lane"], kind="stable")
    ref = ref.reset_index(drop=True)
    got = rec.iterations_frame()
    pd.testing.assert_frame_equal(got, ref, check_exact=True)
    assert len(rec.iterations) == 0  # the buffer was freed
