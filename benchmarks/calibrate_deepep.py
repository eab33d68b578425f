"""The fabric's all-to-all against DeepEP's published H800 figures.

Results: docs/calibration.md, section "MoE: DeepEP all-to-all".

    python benchmarks/calibrate_deepep.py          # print the tables (Markdown), ~20 s

Published figures (deepseek-ai/DeepEP README, V1 / legacy; data/calibration/README.md):
H800 (NVLink ~160 GB/s achievable), one ConnectX-7 400 Gb/s NIC per GPU (~50 GB/s).
- normal kernels: 4096 tokens per rank, hidden 7168, top-8 of 256 experts (internode: the
  experts grouped by node, top-min(nodes, 4) groups per token), FP8 dispatch / BF16 combine.
  "Bottleneck bandwidth" as DeepEP's tests compute it: intranode, bytes a rank receives
  (tokens × hidden × dtype, its own tokens included) / kernel time; internode, the tokens a
  rank sends to each *node* holding one of its experts (its own node included) × bytes /
  kernel time.
- low-latency kernels: 128 tokens per rank, top-8, pure RDMA (every peer, same node or not,
  through the NIC); one message of hidden + scales + 16 bytes (fp8) or 2 × hidden (bf16) per
  (token, expert); latency = kernel time.

What runs here is the simulator's own machinery: the fabric (clustersim.network.fabric) on
clustersim topologies, with the all-to-all efficiencies and per-layer latency of
clustersim.network.all_to_all. The traffic of each case is DeepEP's pattern built from routing
sampled the way DeepEP's tests draw it (random scores, group-limited top-k):
- normal: each token once to each node it needs (RDMA, to its rail peer), then over NVLink to
  each GPU it needs there; inside its own node straight to each GPU it needs; one coflow.
- low-latency: on a topology of N single-GPU nodes (so every pair crosses NICs, as DeepEP's
  pure-RDMA kernels do), one message per (token, expert).
Each case also shows what the simulator's own step model predicts for it
(AllToAllPlan.normal_flows from expected per-rank / per-node hit probabilities; the
low-latency pattern on h800x32_ib, where same-node pairs use NVLink).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import simpy
import yaml

from clustersim.catalog.hardware import get_hardware
from clustersim.catalog.topologies import builtin_topology_path
from clustersim.config.schema import NetworkSpec, NVLinkSpec, PCIeSpec, TopologySpec
from clustersim.network.all_to_all import (
    A2A_KERNEL_OVERHEAD_S,
    A2A_NETWORK_EFFICIENCY,
    AllToAllPlan,
)
from clustersim.network.fabric import Fabric
from clustersim.network.routing import FlowSpec
from clustersim.topology.graph import Cluster, build_cluster

HIDDEN, TOP_K, EXPERTS = 7168, 8, 256
FP8_TOKEN = HIDDEN * (1 + 4 / 128)  # DeepEP normal kernels: fp8 payload + fp32 scale per 128
BF16_TOKEN = HIDDEN * 2.0
LL_FP8_MSG = HIDDEN + HIDDEN / 128 * 4 + 16  # DeepEP low-latency message (its test's count)

# (EP, dispatch GB/s, combine GB/s) — normal kernels, bottleneck bandwidth
NORMAL = ((8, 153.0, 158.0), (16, 43.0, 43.0), (32, 58.0, 57.0), (64, 51.0, 50.0))
# (EP, dispatch µs, combine µs) — low-latency kernels
LOW_LATENCY = (
    (8, 163.0, 318.0),
    (16, 173.0, 329.0),
    (32, 182.0, 350.0),
    (64, 186.0, 353.0),
    (128, 192.0, 369.0),
    (256, 194.0, 360.0),
)
NORMAL_TOKENS, LL_TOKENS = 4096, 128


# ------------------------------------------------------------------ topologies


def h800_cluster(nodes: int, gpus_per_node: int = 8) -> Cluster:
    """H800 nodes as h800x32_ib (NVLink 200 GB/s per direction, one CX-7 per GPU), any size;
    one non-blocking leaf for up to 32 nodes."""
    hw = get_hardware("h800")
    if nodes == 4 and gpus_per_node == 8:
        path = builtin_topology_path("h800x32_ib")
        assert path is not None
        return build_cluster(TopologySpec.model_validate(yaml.safe_load(path.read_text())), hw)
    spec = TopologySpec(
        name=f"h800x{nodes * gpus_per_node}",
        nodes=nodes,
        gpus_per_node=gpus_per_node,
        gpu="h800",
        nvlink=NVLinkSpec(bandwidth_GBps=200.0, latency_us=2.0) if gpus_per_node > 1 else None,
        network=NetworkSpec(
            nics_per_node=gpus_per_node,
            bandwidth_GBps=50.0,
            latency_us=5.0,
            nodes_per_leaf=min(nodes, 32),
        ),
        pcie=PCIeSpec(bandwidth_GBps=64.0, latency_us=1.0),
    )
    return build_cluster(spec, hw)


def run_coflow(cluster: Cluster, flows: Sequence[FlowSpec], extra_latency_s: float) -> float:
    """Seconds one coflow takes on an idle fabric (its path latency and `extra` included)."""
    env = simpy.Environment()
    fabric = Fabric(env, cluster, bin_s=1.0)
    fabric.transfer(list(flows), extra_latency_s)
    env.run()
    return float(env.now)


# ------------------------------------------------------------------ routing (DeepEP tests)


def sample_topk(rng: np.random.Generator, tokens: int, nodes: int, groups: int) -> np.ndarray:
    """Expert ids (tokens, TOP_K) as DeepEP's tests draw them: scores |N(0,1)| + 1; internode,
    experts grouped by node and only the top `groups` groups (by max score) allowed."""
    scores = np.abs(rng.standard_normal((tokens, EXPERTS), dtype=np.float32)) + 1.0
    if groups < nodes:
        group_max = scores.reshape(tokens, nodes, -1).max(axis=2)
        keep = np.argpartition(-group_max, groups - 1, axis=1)[:, :groups]
        mask = np.zeros((tokens, nodes), dtype=bool)
        np.put_along_axis(mask, keep, True, axis=1)
        scores = np.where(np.repeat(mask, EXPERTS // nodes, axis=1), scores, 0.0)
    out: np.ndarray = np.argpartition(-scores, TOP_K - 1, axis=1)[:, :TOP_K]
    return out


@dataclass
class NormalTraffic:
    flows: list[FlowSpec]
    logical_bytes: float  # DeepEP's bytes per rank for its bandwidth figure (mean over ranks)
    rank_hit: np.ndarray  # P(a token hits rank r), mean over senders
    node_hit: np.ndarray  # P(a token hits node n)


def normal_traffic(
    cluster: Cluster, gpus: Sequence[str], nodes: int, token_bytes: float, seed: int
) -> NormalTraffic:
    """DeepEP normal-kernel traffic from sampled routing (module docstring)."""
    rng = np.random.default_rng(seed)
    ep = len(gpus)
    per_node = ep // nodes
    experts_per_rank = EXPERTS // ep
    flows: dict[tuple[int, int], float] = {}
    logical = np.zeros(ep)
    rank_hits = np.zeros(ep)
    node_hits = np.zeros(nodes)
    internode = nodes > 1
    for i in range(ep):
        topk = sample_topk(rng, NORMAL_TOKENS, nodes, min(nodes, 4) if internode else nodes)
        hit_rank = np.zeros((NORMAL_TOKENS, ep), dtype=bool)
        np.put_along_axis(hit_rank, topk // experts_per_rank, True, axis=1)
        hit_node = hit_rank.reshape(NORMAL_TOKENS, nodes, per_node).any(axis=2)
        rank_count = hit_rank.sum(axis=0).astype(float)
        node_count = hit_node.sum(axis=0).astype(float)
        rank_hits += rank_count / NORMAL_TOKENS / ep
        node_hits += node_count / NORMAL_TOKENS / ep
        a, j = divmod(i, per_node)
        for r in range(a * per_node, (a + 1) * per_node):  # own node: direct over NVLink
            if r != i:
                flows[(i, r)] = flows.get((i, r), 0.0) + rank_count[r]
        for n in range(nodes):
            if n == a:
                continue
            peer = n * per_node + j
            flows[(i, peer)] = flows.get((i, peer), 0.0) + node_count[n]  # RDMA
            for r in range(n * per_node, (n + 1) * per_node):  # forward over NVLink
                if r != peer:
                    flows[(peer, r)] = flows.get((peer, r), 0.0) + rank_count[r]
        if internode:
            logical[i] = node_count.sum() * token_bytes  # num_rdma_token_sent, own node too
        else:
            logical += rank_count * token_bytes  # what each rank receives, own tokens too
    plan = AllToAllPlan(cluster, gpus, moe_layers=1)
    inv = plan.inverse_efficiency()  # the simulator's per-pair 1/η
    out = [(gpus[s], gpus[d], count * token_bytes * inv[s, d]) for (s, d), count in flows.items()]
    return NormalTraffic(out, float(logical.mean()), rank_hits, node_hits)


def model_normal_flows(
    plan: AllToAllPlan, traffic: NormalTraffic, token_bytes: float, reverse: bool = False
) -> list[FlowSpec]:
    """The simulator's step model: expected copies from per-rank / per-node hit rates."""
    tokens = np.full(len(plan.gpus), float(NORMAL_TOKENS))
    return plan.normal_flows(tokens, traffic.rank_hit, traffic.node_hit, token_bytes, reverse)


def reverse(flows: Sequence[FlowSpec], scale: float) -> list[FlowSpec]:
    return [(d, s, b * scale) for s, d, b in flows]


# ------------------------------------------------------------------ cases


def normal_rows() -> list[tuple[int, float, float, float, float, float, float, str]]:
    rows = []
    for ep, pub_d, pub_c in NORMAL:
        nodes = max(1, ep // 8)
        cluster = h800_cluster(max(nodes, 1) if ep > 8 else 4)
        gpus = cluster.gpus[:ep]
        traffic = normal_traffic(cluster, gpus, nodes, FP8_TOKEN, seed=ep)
        plan = AllToAllPlan(cluster, gpus, moe_layers=1)
        lat = plan.extra_latency_s(1)
        t_d = run_coflow(cluster, traffic.flows, lat)
        t_c = run_coflow(cluster, reverse(traffic.flows, BF16_TOKEN / FP8_TOKEN), lat)
        bw_d = traffic.logical_bytes / t_d / 1e9
        bw_c = traffic.logical_bytes * BF16_TOKEN / FP8_TOKEN / t_c / 1e9
        m_d = run_coflow(cluster, model_normal_flows(plan, traffic, FP8_TOKEN), lat)
        sim_bw = traffic.logical_bytes / m_d / 1e9
        link = "NVLink" if nodes == 1 else "RDMA"
        rows.append((ep, pub_d, bw_d, pub_c, bw_c, t_d * 1e6, sim_bw, link))
    return rows


def ll_rows(
    seed: int = 0, overhead_s: float = A2A_KERNEL_OVERHEAD_S
) -> list[tuple[int, float, float, float, float, float, float]]:
    rows = []
    rng = np.random.default_rng(seed)
    for ep, pub_d, pub_c in LOW_LATENCY:
        cluster = h800_cluster(ep, gpus_per_node=1)  # pure RDMA: every peer behind a NIC
        gpus = cluster.gpus
        experts_per_rank = EXPERTS // ep
        counts = np.zeros((ep, ep))
        for i in range(ep):
            topk = sample_topk(rng, LL_TOKENS, 1, 1) // experts_per_rank
            counts[i] = np.bincount(topk.ravel(), minlength=ep)
        inv = 1.0 / A2A_NETWORK_EFFICIENCY
        lat = overhead_s
        disp = [
            (gpus[i], gpus[j], counts[i, j] * LL_FP8_MSG * inv)
            for i in range(ep)
            for j in range(ep)
            if i != j
        ]
        t_d = run_coflow(cluster, disp, lat)
        t_c = run_coflow(cluster, reverse(disp, BF16_TOKEN / LL_FP8_MSG), lat)
        sim = sim_ll_on_h800(ep)
        rows.append(
            (
                ep,
                pub_d,
                t_d * 1e6,
                pub_c,
                t_c * 1e6,
                LL_TOKENS * TOP_K * LL_FP8_MSG / t_d / 1e9,
                sim,
            )
        )
    return rows


def sim_ll_on_h800(ep: int) -> float:
    """µs of the simulator's low-latency dispatch pattern for one layer of 128 tokens per rank
    on 8-GPU H800 nodes (h800x32_ib and larger; same-node pairs over NVLink), uniform routing."""
    cluster = h800_cluster(max(4, ep // 8))
    gpus = cluster.gpus[:ep]
    plan = AllToAllPlan(cluster, gpus, moe_layers=1)
    share = np.full(ep, 1.0 / ep)
    pairs = np.full(ep, LL_TOKENS * TOP_K * ep / ep)
    flows = plan.flows(share, pairs, LL_FP8_MSG)
    return run_coflow(cluster, flows, plan.extra_latency_s(1)) * 1e6


def err(pred: float, pub: float) -> str:
    return f"{(pred / pub - 1) * 100:+.0f} %"


def main(argv: Sequence[str] | None = None) -> int:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args(argv)
    t0 = time.perf_counter()
    print("### Normal kernels (4096 tokens/rank, FP8 dispatch / BF16 combine)\n")
    print(
        "| EP | link | dispatch published | dispatch fabric | err | combine published | "
        "combine fabric | err | dispatch time | step model (expected hits) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for ep, pd_, bd, pc, bc, td, sim_bw, link in normal_rows():
        print(
            f"| {ep} | {link} | {pd_:.0f} GB/s | {bd:.0f} GB/s | {err(bd, pd_)} | "
            f"{pc:.0f} GB/s | {bc:.0f} GB/s | {err(bc, pc)} | {td:.0f} µs | "
            f"{sim_bw:.0f} GB/s ({err(sim_bw, pd_)}) |"
        )
    print("\n### Low-latency kernels (128 tokens/rank, pure RDMA)\n")
    print(
        "| EP | dispatch published | dispatch fabric | err | combine published | "
        "combine fabric | err | dispatch GB/s | step model, 8-GPU nodes |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for ep, pd_, td, pc, tc, bw, sim in ll_rows():
        sim_txt = f"{sim:.0f} µs ({err(sim, pd_)})"
        print(
            f"| {ep} | {pd_:.0f} µs | {td:.0f} µs | {err(td, pd_)} | {pc:.0f} µs | "
            f"{tc:.0f} µs | {err(tc, pc)} | {bw:.0f} | {sim_txt} |"
        )
    bare = ll_rows(overhead_s=0.0)
    gaps = [pub - t for _, pd_, td, pc, tc, _, _ in bare for pub, t in ((pd_, td), (pc, tc))]
    print(
        f"\nLeast-squares kernel overhead (additive, 12 low-latency figures): "
        f"{np.mean(gaps):.1f} µs; A2A_KERNEL_OVERHEAD_S = {A2A_KERNEL_OVERHEAD_S * 1e6:.0f} µs"
    )
    print(f"\n({time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
