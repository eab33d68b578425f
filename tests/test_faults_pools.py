"""Lost GPUs under disaggregated prefill / decode pools (sim/pool_health.py): a prefill-pool
loss re-routes its requests to another prefill unit (decode reservation kept), a decode-pool
loss re-prefills them on a new pair; retries are counted, nothing finishes twice, and every
request finishes once or is counted dropped or failed."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clustersim.config.schema import Experiment
from clustersim.sim.engine import run_experiment
from conftest import MakeExperiment
from test_faults_sim import conserved

# h100x16_ib: n0 and n1, 8 GPUs each. {prefill} / {decode}: the pools' layouts.
POOLS = """\
name: pool_loss
seed: 4
model: llama-3.1-8b
topology: h100x16_ib
disaggregation:
  prefill: {{layout: {prefill}}}
  decode: {{layout: {decode}}}
serving: {{router: {router}}}
workload:
  arrival: {{process: poisson, rate_rps: {rate}}}
  prompt_tokens: {{dist: fixed, value: 1024}}
  output_tokens: {{dist: fixed, value: 64}}
horizon: {{duration_s: {duration}}}
"""


def pools(
    make: MakeExperiment,
    faults: str,
    *,
    prefill: str = "{tp: 4, dp: 2}",
    decode: str = "{tp: 4, dp: 2}",
    rate: float = 30.0,
    duration: float = 6.0,
    router: str = "least_outstanding",
) -> Experiment:
    text = POOLS.format(prefill=prefill, decode=decode, rate=rate, duration=duration, router=router)
    return make(text + faults)


def test_prefill_pool_loss_reroutes_to_another_prefill_unit(
    make_experiment: MakeExperiment,
) -> None:
    """Prefill units 0 (n0.g0-3) and 1 (n0.g4-7), decode units 2 and 3 on n1. n0.g0 down from
    2 s for good: unit 0's requests are prefilled again on unit 1 (retries), none fails, and
    after detection every prefill runs on unit 1."""
    faults = "faults:\n  detect_s: 0.3\n  events: [{kind: gpu_down, target: n0.g0, at_s: 2}]\n"
    out = run_experiment(pools(make_experiment, faults))
    conserved(out)
    req = out.requests
    assert np.isfinite(req["finish_s"]).all() and not req["failed"].any()
    retried = req[req["retries"] > 0]
    assert len(retried) > 0 and (retried["replica"] == 1).all()
    assert (req.loc[req["arrival_s"] > 2.4, "replica"] == 1).all()
    assert out.faults is not None and out.faults.iloc[0]["replicas_affected"] == "0"
    assert out.faults.iloc[0]["requests_retried"] == req["retries"].sum()
    it = out.iterations
    assert it[(it["replica"] == 0) & (it["start_s"] > 2.0)].empty


def test_decode_pool_loss_reprefills_on_a_new_pair(make_experiment: MakeExperiment) -> None:
    """n1.g0 (decode unit 2) down 2 s → 4 s: its requests lose their KV and are prefilled
    again and decoded on unit 3 (retries counted); after repair and reload unit 2 serves
    again; nothing fails."""
    faults = (
        "faults:\n  detect_s: 0.3\n  reload: {bandwidth_GBps: 50}\n"
        "  events: [{kind: gpu_down, target: n1.g0, at_s: 2, duration_s: 2}]\n"
    )
    out = run_experiment(pools(make_experiment, faults))
    conserved(out)
    req = out.requests
    assert np.isfinite(req["finish_s"]).all() and not req["failed"].any()
    retried = req[req["retries"] > 0]
    assert len(retried) > 0 and (retried["decode_replica"] == 3).all()
    inside = req[(req["arrival_s"] > 2.4) & (req["arrival_s"] < 4.0)]
    assert (inside["decode_replica"] == 3).all()
    assert (req.loc[req["arrival_s"] > 5.0, "decode_replica"] == 2).any()  # back after reload
    # a retried request's first token is emitted by the decode unit after its KV landed
    assert (retried["finish_s"] > retried["first_token_s"]).all()


def test_pool_loss_with_on_failure_fail(make_experiment: MakeExperiment) -> None:
    faults = (
        "faults:\n  detect_s: 0.3\n  on_failure: fail\n"
        "  events: [{kind: gpu_down, target: n0.g0, at_s: 2},"
        " {kind: gpu_down, target: n1.g4, at_s: 3}]\n"
    )
    out = run_experiment(pools(make_experiment, faults))
    conserved(out)
    req = out.requests
    assert req["failed"].sum() > 0 and req["retries"].sum() == 0
    assert out.faults is not None
    assert out.faults["requests_failed"].sum() == req["failed"].sum()


def test_whole_pool_down_holds_requests_until_repair(make_experiment: MakeExperiment) -> None:
    """The only prefill unit (TP8 on n0) down 2 s → 3 s: requests arriving meanwhile are
    retried once the unit is detected out, wait for it, and get their first token after
    its reload; nothing fails."""
    faults = (
        "faults:\n  detect_s: 0.2\n  reload: {bandwidth_GBps: 50}\n"
        "  events: [{kind: node_down, target: n0, at_s: 2, duration_s: 1}]\n"
    )
    out = run_experiment(pools(make_experiment, faults, prefill="{tp: 8}", rate=10.0))
    conserved(out)
    req = out.requests
    assert np.isfinite(req["finish_s"]).all() and not req["failed"].any()
    held = req[(req["arrival_s"] > 2.0) & (req["arrival_s"] < 3.0)]
    assert len(held) > 0 and (held["first_token_s"] > 3.0).all()
    assert (held["retries"] == 1).all() and req["retries"].sum() == len(held)


EVENT = st.tuples(
    st.sampled_from(["gpu_down", "node_down", "gpu_slowdown"]),
    st.integers(0, 15),
    st.floats(0.0, 3.0),
    st.one_of(st.none(), st.floats(0.1, 2.0)),
)


def event_yaml(kind: str, n: int, at: float, duration: float | None) -> str:
    target = f"n{n % 2}" if kind == "node_down" else f"n{n % 2}.g{n % 8}"
    extra = ", compute_factor: 0.6" if kind == "gpu_slowdown" else ""
    dur = "" if duration is None else f", duration_s: {duration:.3f}"
    return f"    - {{kind: {kind}, target: {target}, at_s: {at:.3f}{dur}{extra}}}\n"


@settings(
    max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    events=st.lists(EVENT, min_size=1, max_size=3),
    fail=st.booleans(),
    detect=st.floats(0.0, 0.5),
    router=st.sampled_from(["round_robin", "least_outstanding", "random"]),
)
def test_conservation_under_random_pool_faults(
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
    exp = pools(make_experiment, faults, rate=15.0, duration=4.0, router=router)
    out = run_experiment(exp)  # PoolHealth raises if a request finishes twice
    conserved(out)
    req = out.requests
    if fail:
        assert req["retries"].sum() == 0
    elif req["failed"].any():  # retried requests fail only when a pool never comes back
        forever = [e for e in events if e[0] in ("gpu_down", "node_down") and e[3] is None]
        assert forever
