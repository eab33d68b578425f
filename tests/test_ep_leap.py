"""The DP-attention group's leap prices its exchanges for all its steps at once
(moe/ep_leap.py): the same bytes per pair and the same coflow demands, bit for bit, as the
step-by-step code (tests/test_leap_equivalence.py runs whole DP-attention experiments both
ways)."""

from __future__ import annotations

import numpy as np
import pytest

from clustersim.catalog.hardware import get_hardware
from clustersim.catalog.topologies import get_topology
from clustersim.network.all_to_all import AllToAllPlan
from clustersim.topology.graph import build_cluster


def _plan(topology: str, ranks: int) -> AllToAllPlan:
    cluster = build_cluster(get_topology(topology), get_hardware("h100-sxm"))
    gpus = [f"n{g // 8}.g{g % 8}" for g in range(ranks)]
    return AllToAllPlan(cluster, gpus, 58)


@pytest.mark.parametrize(("topology", "ranks"), [("dgx_h100_x1", 8), ("h100x16_ib", 16)])
@pytest.mark.parametrize("reverse", [False, True])
def test_exchanges_of_many_steps_equal_one_step_at_a_time(
    topology: str, ranks: int, reverse: bool
) -> None:
    a2a = _plan(topology, ranks)
    rng = np.random.default_rng(ranks)
    tokens = rng.integers(0, 9, size=ranks).astype(np.float64)
    tokens[0] = 0.0  # an idle rank sends nothing
    share = tokens / tokens.sum()
    sampled = rng.gamma(0.6, 40.0, size=(12, ranks))
    sampled[3] = 0.0  # a step routing nothing anywhere
    sampled[5, : ranks // 2] = 0.0
    pairs, many = a2a.low_latency_transfer(share, sampled, 7168.0, reverse)
    demands = pairs.demands(many)
    for step in range(len(sampled)):
        one_pairs, one = a2a.low_latency_transfer(share, sampled[step], 7168.0, reverse)
        assert one_pairs is pairs
        assert np.array_equal(one, many[step])
        assert pairs.demand(one) == demands[step]
    assert demands[3] == (None, 0.0)
