"""Faults in the simulation (issue 11): theory tests for slow GPUs and degraded / down links,
GPU and node loss with retry or failure, conservation under random faults, and the config."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import simpy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clustersim.catalog.hardware import get_hardware
from clustersim.catalog.topologies import get_topology
from clustersim.config.errors import ConfigError
from clustersim.config.schema import Experiment
from clustersim.deployment.degraded import DegradedCosts, degraded_hardware
from clustersim.faults import FaultEvent, FaultSchedule
from clustersim.model.stage_cost import StageCostModel
from clustersim.network.fabric import Fabric
from clustersim.sim.engine import BuildError, RunOutput, build, run_experiment
from clustersim.topology.graph import Cluster, build_cluster
from conftest import MakeExperiment, write_yaml

BASE = """
name: faults_test
seed: 3
model: llama-3.1-8b
topology: h100x16_ib
layout: {{tp: 2, dp: {dp}}}
serving: {{router: {router}}}
workload:
  arrival: {{process: poisson, rate_rps: {rate}}}
  prompt_tokens: {{dist: fixed, value: 512}}
  output_tokens: {{dist: fixed, value: 32}}
horizon: {{duration_s: {duration}}}
slo: {{ttft_p99_s: 0.5}}
"""


def experiment(
    make: MakeExperiment,
    faults: str,
    *,
    dp: int = 8,
    rate: float = 40.0,
    duration: float = 20.0,
    router: str = "least_outstanding",
    overrides: tuple[str, ...] | list[str] = (),
) -> Experiment:
    text = BASE.format(dp=dp, rate=rate, duration=duration, router=router)
    return make(text + faults, overrides)


def conserved(out: RunOutput) -> None:
    """completed + dropped + failed = generated; each request in exactly one class."""
    req = out.requests
    done = np.isfinite(req["finish_s"].to_numpy(dtype=float))
    dropped = req["dropped"].to_numpy(dtype=bool)
    failed = req["failed"].to_numpy(dtype=bool) if "failed" in req else np.zeros(len(req), bool)
    assert not (done & failed).any() and not (done & dropped).any() and not (dropped & failed).any()
    assert int(done.sum() + dropped.sum() + failed.sum()) == len(req)


# ---------------------------------------------------------------------- theory: slow GPU


@pytest.mark.parametrize("factor", [0.5, 0.7])
def test_slow_gpu_scales_compute_bound_step_by_inverse_factor(factor: float) -> None:
    """A GPU at `factor` of its tensor-core speed: the FLOP-bound kernels of a long prefill
    (prefill attention) take exactly 1/factor as long; the memory-bound elementwise kernels
    do not change. Throttled clocks on both (compute and HBM at `factor`) scale every layer
    kernel of the step by 1/factor."""
    from clustersim.catalog.models import get_model
    from clustersim.config.schema import Precision

    model, hw = get_model("llama-3.1-70b"), get_hardware("h100-sxm")
    tokens = 8192
    step = (tokens, tokens * (tokens + 1) / 2, 0, 0, 1)

    def parts(compute: float, hbm: float) -> dict[str, float]:
        gpu = degraded_hardware(hw, compute, hbm)
        cost = StageCostModel(model, gpu, Precision(), 8, model.num_layers, True, True)
        return cost.breakdown(*step)

    nominal, slow, throttled = parts(1.0, 1.0), parts(factor, 1.0), parts(factor, factor)
    assert slow["attn_prefill"] == pytest.approx(nominal["attn_prefill"] / factor, rel=1e-9)
    assert nominal["linear"] < slow["linear"] < nominal["linear"] / factor
    layers = ("linear", "attn_prefill")
    assert sum(throttled[k] for k in layers) == pytest.approx(
        sum(nominal[k] for k in layers) / factor, rel=1e-9
    )


def test_slow_gpu_in_tp_group_slows_the_group_in_simulation(
    make_experiment: MakeExperiment,
) -> None:
    """One GPU of a TP2 group at 0.5× tensor-core speed: that replica's prefill steps take
    close to 2× the time (their GEMMs and attention are FLOP-bound); the other replica's
    steps are unchanged (a group runs at the pace of its slowest member)."""
    faults = """faults:
  events: [{kind: gpu_slowdown, target: n0.g1, compute_factor: 0.5}]
"""
    long_prompts = ["workload.output_tokens.value=1", "workload.prompt_tokens.value=4096"]
    slow = experiment(
        make_experiment, faults, dp=2, rate=2.0, duration=10.0, overrides=long_prompts
    )
    base = experiment(make_experiment, "", dp=2, rate=2.0, duration=10.0, overrides=long_prompts)
    it_slow, it_base = run_experiment(slow).iterations, run_experiment(base).iterations

    def per_token(it: pd.DataFrame, replica: int) -> float:
        rows = it[(it["replica"] == replica) & (it["prefill_tokens"] == 4096)]
        assert len(rows) > 3
        return float(rows["compute_s"].median())

    assert per_token(it_slow, 1) == pytest.approx(per_token(it_base, 1), rel=1e-9)
    assert 1.8 < per_token(it_slow, 0) / per_token(it_base, 0) < 2.0


def test_degraded_costs_keep_nominal_at_full_speed(make_experiment: MakeExperiment) -> None:
    exp = experiment(make_experiment, "", dp=2)
    built = build(exp)
    costs = DegradedCosts(exp, built)
    nominal = object()
    assert costs.stage_cost(nominal, 0, 1.0, 1.0) is nominal  # type: ignore[arg-type]


# ---------------------------------------------------------------------- theory: links


@pytest.fixture(scope="module")
def cluster() -> Cluster:
    spec = get_topology("h100x16_ib")
    return build_cluster(spec, get_hardware(spec.gpu))


def transfer_time(
    cluster: Cluster, events: list[FaultEvent], nbytes: float
) -> tuple[float, Fabric]:
    """Seconds one n0.g0 → n1.g0 transfer takes with `events` active from t = 0."""
    env = simpy.Environment()
    fabric = Fabric(env, cluster, 1.0)
    sched = FaultSchedule.build(cluster, events)
    factor, latency, down = sched.link_state(0.0)
    assert not fabric.set_link_faults(factor, latency, down)
    ev = fabric.send("n0.g0", "n1.g0", nbytes)
    env.run(until=ev)
    return env.now, fabric


def test_bandwidth_factor_on_only_path_scales_transfer_by_inverse(cluster: Cluster) -> None:
    nbytes = 4e9
    lat = cluster.path_latency_s("n0.g0", "n1.g0")
    nic = cluster.nic_of("n0.g0")
    base, _ = transfer_time(cluster, [], nbytes)
    for f in (0.5, 0.25):
        ev = FaultEvent("link_degrade", f"{nic}<->leaf0", 0.0, bandwidth_factor=f)
        t, _ = transfer_time(cluster, [ev], nbytes)
        assert (t - lat) == pytest.approx((base - lat) / f, rel=1e-9)
    extra = FaultEvent("link_degrade", f"{nic}<->leaf0", 0.0, extra_latency_s=1e-3)
    t, _ = transfer_time(cluster, [extra], nbytes)
    assert t == pytest.approx(base + 1e-3, rel=1e-9)


def test_link_down_with_alternative_moves_bytes_there(cluster: Cluster) -> None:
    """The GPU's own NIC uplink is down: its bytes go to the leaf through the node's PCIe
    switch and another NIC; nothing stalls, the down link carries nothing."""
    nbytes = 2e9
    nic = cluster.nic_of("n0.g0")
    down = cluster.link_id(nic, "leaf0")
    t, fabric = transfer_time(cluster, [FaultEvent("link_down", f"{nic}->leaf0", 0.0)], nbytes)
    assert math.isfinite(t)
    totals = fabric.link_totals().set_index("link")["bytes"]
    names = {lk.id: lk.name for lk in cluster.links}
    assert totals.get(names[down], 0.0) == 0.0
    to_leaf = [lk.name for lk in cluster.links if lk.dst == "leaf0" and lk.src.startswith("n0.nic")]
    assert sum(totals.get(name, 0.0) for name in to_leaf) == pytest.approx(nbytes)


def test_link_down_mid_transfer_reroutes_in_flight(cluster: Cluster) -> None:
    env = simpy.Environment()
    fabric = Fabric(env, cluster, 1.0)
    nbytes = 5e9
    ev = fabric.send("n0.g0", "n1.g0", nbytes)
    nic = cluster.nic_of("n0.g0")
    sched = FaultSchedule.build(cluster, [FaultEvent("link_down", f"{nic}->leaf0", 0.01)])

    def cut() -> simpy.events.ProcessGenerator:
        yield env.timeout(0.01)
        fabric.set_link_faults(*sched.link_state(0.01))

    env.process(cut())
    env.run(until=ev)
    totals = fabric.link_totals().set_index("link")["bytes"]
    assert totals[f"{nic}->leaf0"] < nbytes
    assert totals["n0.g0->n0.pcie"] == pytest.approx(nbytes)


# ---------------------------------------------------------------------- GPU and node loss


def test_node_down_retries_lost_requests(make_experiment: MakeExperiment) -> None:
    faults = """faults:
  detect_s: 1.0
  events: [{kind: node_down, target: n1, at_s: 5, duration_s: 5}]
"""
    out = run_experiment(experiment(make_experiment, faults))
    conserved(out)
    req = out.requests
    assert req["retries"].sum() > 0 and not req["failed"].any()
    assert out.faults is not None
    row = out.faults.iloc[0]
    assert row["replicas_affected"] == "4,5,6,7" and row["requests_retried"] == req["retries"].sum()
    # no new work on the lost replicas between detection and repair + reload
    it = out.iterations
    lost = it[(it["replica"] >= 4) & (it["start_s"] > 6.1) & (it["start_s"] < 10.0)]
    assert lost.empty


def test_gpu_down_fails_requests_with_on_failure_fail(make_experiment: MakeExperiment) -> None:
    faults = """faults:
  detect_s: 0.5
  on_failure: fail
  events: [{kind: gpu_down, target: n0.g0, at_s: 4}]
"""
    out = run_experiment(experiment(make_experiment, faults))
    conserved(out)
    req = out.requests
    assert req["failed"].sum() > 0 and req["retries"].sum() == 0
    assert (req.loc[req["arrival_s"] > 6, "replica"] != 0).all()  # routed around after detection


def test_every_replica_down_holds_requests_until_repair(make_experiment: MakeExperiment) -> None:
    faults = """faults:
  detect_s: 0.2
  reload: {source: storage, bandwidth_GBps: 50}
  events: [{kind: node_down, target: n0, at_s: 2, duration_s: 3}]
"""
    out = run_experiment(experiment(make_experiment, faults, dp=2, rate=5.0, duration=8.0))
    conserved(out)
    req = out.requests
    assert np.isfinite(req["finish_s"]).all()
    held = req[(req["arrival_s"] > 2.3) & (req["arrival_s"] < 5.0)]
    assert (held["first_token_s"] > 5.0).all()


def test_fabric_reload_takes_weights_over_the_network(make_experiment: MakeExperiment) -> None:
    faults = """faults:
  detect_s: 0.5
  reload: {source: fabric}
  events: [{kind: node_down, target: n1, at_s: 2, duration_s: 2}]
"""
    out = run_experiment(experiment(make_experiment, faults, rate=10.0, duration=8.0))
    conserved(out)
    weights = build(experiment(make_experiment, faults)).memory.weights_per_gpu_bytes
    links = out.links.groupby("link")["bytes"].sum()
    assert links[
        [n for n in links.index if n.endswith("->leaf0") and n.startswith("n0.")]
    ].sum() >= (8 * weights * 0.99)


# ---------------------------------------------------------------------- property: conservation


EVENT = st.tuples(
    st.sampled_from(["gpu_down", "node_down", "gpu_slowdown", "link_degrade", "link_down"]),
    st.integers(0, 15),
    st.floats(0.0, 6.0),
    st.one_of(st.none(), st.floats(0.1, 4.0)),
)


def event_yaml(kind: str, n: int, at: float, duration: float | None) -> str:
    target = {
        "gpu_down": f"n{n % 2}.g{n % 8}",
        "gpu_slowdown": f"n{n % 2}.g{n % 8}",
        "node_down": f"n{n % 2}",
        "link_degrade": f"n{n % 2}.nic{n % 8}",
        "link_down": f"n{n % 2}.nic{n % 8}->leaf0",
    }[kind]
    extra = {"gpu_slowdown": ", compute_factor: 0.6", "link_degrade": ", bandwidth_factor: 0.3"}
    dur = "" if duration is None else f", duration_s: {duration:.3f}"
    return f"    - {{kind: {kind}, target: {target}, at_s: {at:.3f}{dur}{extra.get(kind, '')}}}\n"


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    events=st.lists(EVENT, min_size=1, max_size=4),
    fail=st.booleans(),
    detect=st.floats(0.0, 1.0),
    router=st.sampled_from(["round_robin", "least_outstanding", "power_of_two", "random"]),
)
def test_conservation_under_random_faults(
    make_experiment: MakeExperiment,
    events: list[tuple[str, int, float, float | None]],
    fail: bool,
    detect: float,
    router: str,
) -> None:
    faults = (
        f"faults:\n  detect_s: {detect:.3f}\n  on_failure: {'fail' if fail else 'retry'}\n"
        "  reload: {bandwidth_GBps: 100}\n  events:\n" + "".join(event_yaml(*e) for e in events)
    )
    exp = experiment(make_experiment, faults, dp=4, rate=20.0, duration=6.0, router=router)
    out = run_experiment(exp)  # ReplicaHealth raises if a request finishes twice
    conserved(out)
    req = out.requests
    if fail:
        assert req["retries"].sum() == 0
    elif req["failed"].any():  # retried requests fail only when no replica ever returns
        forever = [e for e in events if e[0] in ("gpu_down", "node_down") and e[3] is None]
        assert forever


def test_random_failures_draw_from_the_faults_stream(make_experiment: MakeExperiment) -> None:
    faults = """faults:
  detect_s: 0.5
  random: [{component: gpu, mtbf_s: 40, repair_mean_s: 2}]
"""
    exp = experiment(make_experiment, faults, dp=8, rate=20.0, duration=10.0)
    a, b = build(exp).faults, build(exp).faults
    assert a is not None and b is not None and len(a) > 0
    assert [f.event for f in a.faults] == [f.event for f in b.faults]
    assert all(f.event.source == "random" for f in a.faults)
    out = run_experiment(exp)
    conserved(out)


# ---------------------------------------------------------------------- configuration


def test_unknown_target_is_a_build_error_naming_the_key(make_experiment: MakeExperiment) -> None:
    faults = """faults:
  events:
    - {kind: gpu_slowdown, target: n0.g1, compute_factor: 0.5}
    - {kind: node_down, target: n7, at_s: 3}
"""
    exp = experiment(make_experiment, faults)
    with pytest.raises(BuildError, match=r"^faults\.events\.1\.target: no node 'n7'"):
        build(exp)


@pytest.mark.parametrize(
    ("event", "key"),
    [
        ("{kind: gpu_down, target: n0.g1, compute_factor: 0.5}", "compute_factor"),
        ("{kind: gpu_slowdown, target: n0.g1}", "compute_factor"),
        ("{kind: link_down, target: leaf0, bandwidth_factor: 0.5}", "bandwidth_factor"),
        ("{kind: link_degrade, target: leaf0, bandwidth_factor: 1.5}", "bandwidth_factor"),
        ("{kind: gpu_down, target: n0.g1, duration_s: 0}", "duration_s"),
    ],
)
def test_bad_events_are_keyed_config_errors(
    make_experiment: MakeExperiment, event: str, key: str
) -> None:
    with pytest.raises(ConfigError) as err:
        experiment(make_experiment, f"faults:\n  events: [{event}]\n")
    assert f"faults.events.0.{key}" in str(err.value)


def test_random_law_needs_exactly_one_mtbf(make_experiment: MakeExperiment) -> None:
    with pytest.raises(ConfigError, match=r"faults\.random\.0\.mtbf_s"):
        experiment(
            make_experiment, "faults:\n  random: [{component: node, mtbf_s: 5, mtbf_h: 1}]\n"
        )


def test_validate_reports_bad_target_with_exit_2(tmp_path: Path) -> None:
    import subprocess
    import sys

    text = BASE.format(dp=8, rate=1.0, duration=1.0, router="round_robin")
    path = write_yaml(tmp_path, text + "faults:\n  events: [{kind: gpu_down, target: n0.g9}]\n")
    proc = subprocess.run(
        [sys.executable, "-m", "clustersim", "validate", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert str(path) in last and "faults.events.0.target: no GPU 'n0.g9'" in last


def test_runs_without_faults_have_no_fault_columns(make_experiment: MakeExperiment) -> None:
    out = run_experiment(experiment(make_experiment, "", dp=2, rate=5.0, duration=2.0))
    assert "retries" not in out.requests and out.faults is None


def test_run_directory_has_faults_outputs(tmp_path: Path) -> None:
    """`clustersim run` writes faults.parquet, summary.json faults.* and a Faults section."""
    import json
    import subprocess
    import sys

    text = BASE.format(dp=4, rate=10.0, duration=6.0, router="least_outstanding")
    faults = """faults:
  detect_s: 0.5
  events:
    - {kind: node_down, target: n0, at_s: 2, duration_s: 1.5}
    - {kind: link_degrade, target: n1.nic0, at_s: 1, bandwidth_factor: 0.5}
"""
    path = write_yaml(tmp_path, text + faults)
    out = tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, "-m", "clustersim", "run", str(path), "--out", str(out)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    (run_dir,) = list((out / "faults_test").iterdir())
    table = pd.read_parquet(run_dir / "faults.parquet")
    assert table["kind"].tolist() == ["link_degrade", "node_down"]
    assert math.isinf(table["end_s"].iloc[0]) and table["replicas_affected"].iloc[1] == "0,1,2,3"
    summary = json.loads((run_dir / "summary.json").read_text())
    block = summary["faults"]
    assert block["events"] == 2 and block["retries"] == int(table["requests_retried"].sum())
    assert len(block["recovery"]) == 2
    requests = pd.read_parquet(run_dir / "requests.parquet")
    assert {"retries", "failed"} <= set(requests.columns)
    html = (run_dir / "report.html").read_text()
    assert "<h2>Faults</h2>" in html and "recover p99 s" in html
