"""The stage cost of a replica stage whose EP group is its own TP group (or ep = 1): the dense
part analytic (StageCostModel), the routed experts from sampled routing (moe/moe_group.py),
and its decode leaps' routing drawn ahead (moe/routed_leap.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import simpy

from clustersim.model.kernels import step_seqs
from clustersim.model.stage_cost import StageCostModel
from clustersim.moe.moe_group import MoEGroup
from clustersim.moe.routed_leap import RoutedLeap
from clustersim.network.fabric import Fabric
from clustersim.network.routing import FlowSpec, coflow_time_s


def idle_transfer_s(fabric: Fabric, flows: Sequence[FlowSpec]) -> float:
    """Seconds `flows` take as one coflow on an idle fabric, path latency included."""
    live = [f for f in flows if f[2] > 0 and f[0] != f[1]]
    if not live:
        return 0.0
    cluster = fabric.cluster
    latency = max(cluster.path_latency_s(s, d) for s, d, _ in live)
    return coflow_time_s(cluster, live) + latency


class SampledStageCost:
    """StageCost of one replica stage whose EP group is its own TP group (or ep = 1): the
    dense part from StageCostModel, the routed experts from sampled routing (MoEGroup).

    An EPLB rebalance is done inside the step that finds it due: its weight flows are put on
    the fabric (they show in links.parquet) and the step is lengthened by their idle-fabric
    time — the group serves nothing while its weights move (docs/moe.md §5).
    """

    def __init__(
        self,
        base: StageCostModel,
        group: MoEGroup,
        env: simpy.Environment,
        fabric: Fabric,
    ) -> None:
        self.base = base
        self.group = group
        self.env = env
        self.fabric = fabric
        self.allreduces_per_step = base.allreduces_per_step

    def compute_s(
        self,
        prefill_tokens: int,
        prefill_attn_pairs: float,
        decode_tokens: int,
        decode_ctx_tokens: int,
        prefill_seqs: int = 1,
    ) -> float:
        s = self.base.dense_part_s(
            prefill_tokens, prefill_attn_pairs, decode_tokens, decode_ctx_tokens, prefill_seqs
        )
        tokens = prefill_tokens + decode_tokens
        seqs = step_seqs(prefill_tokens, decode_tokens, prefill_seqs)
        if tokens <= 0:
            return self.base.with_host(s, seqs)
        now = self.env.now
        group = self.group
        if group.rebalance_due(now):
            event = group.rebalance(now)
            if event.flows:
                self.fabric.transfer(event.flows)
                event.duration_s = idle_transfer_s(self.fabric, event.flows)
                s += event.duration_s
        loads = group.route(now, tokens)
        return self.base.with_host(s + group.moe_s(loads, tokens), seqs)

    def leap_routing(self) -> RoutedLeap:
        """What this stage's decode leaps draw and book (serving/leap_pricing.py)."""
        return RoutedLeap(self.base, self.group)

    def allreduce_bytes(self, tokens: int) -> float:
        return self.base.allreduce_bytes(tokens)

    def handoff_bytes(self, tokens: int) -> float:
        return self.base.handoff_bytes(tokens)
