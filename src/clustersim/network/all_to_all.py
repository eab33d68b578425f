"""MoE dispatch / combine all-to-all of one EP group as fabric flows (docs/moe.md §4).

One step's dispatch is ONE coflow for all its MoE layers (and its combine another: the same
flows reversed, with precision.combine bytes per token copy). Two traffic patterns, after
DeepEP's two kernel families (SGLang `--deepep-mode auto` picks normal kernels for batches
with prefill, low-latency kernels for decode-only batches):

- low-latency (decode-only steps): one message per (token, expert) pair. EP rank i sends
      bytes[i, j] = share_i · pairs_j · token_bytes
  where pairs_j = Σ_layers pairs routed to rank j in the step (sampled) and share_i the
  fraction of the step's tokens dispatched from GPU i (its DP rank's tokens split evenly over
  that DP rank's TP GPUs). Pairs whose expert sits on the sending GPU move nothing. Every
  other pair goes through the NICs (RDMA), same-node pairs too, as DeepEP's low-latency
  kernels do (its pure-RDMA latency figures); only a cluster without a network keeps them
  on NVLink / PCIe.
- normal (steps with prefill tokens): a token goes once to every *node* holding one of its
  experts (RDMA, to the GPU with the same local index — its rail peer), which forwards it
  over NVLink once to every local GPU holding one of its experts; inside the sender's own
  node it goes once to every such GPU. Per layer, with P_r = P(a token picks an expert on
  rank r) and P_n = 1 − Π_{r on n} (1 − P_r), Σ over layers:
      sender i → rail peer on node n ≠ node(i):  T_i · Σ_l P_n
      sender i → GPU r on its own node:          T_i · Σ_l P_r
      rail peer g on node n → GPU r ≠ g on n:    (tokens of node-n-external senders with g's
                                                  local index) · Σ_l P_r
  P_r comes from the routing probabilities (expected, not sampled), scaled by the step's
  sampled / expected pairs of rank r (node: of its ranks). All of it is one coflow: DeepEP
  pipelines the RDMA and NVLink legs. Groups with unequal GPUs per node use low-latency flows.

η is the share of a link's nominal bandwidth the all-to-all kernels achieve, applied by
carrying bytes / η on the fabric (the links are busy as long as the real transfer keeps them):
- NVLink: A2A_NVLINK_EFFICIENCY = 0.70 — DeepEP's intranode EP8 kernels reach 153 / 158 GB/s
  on H800 counting a rank's own tokens, i.e. 134–138 GB/s of real NVLink traffic (7/8 of it
  crosses NVLink) = 0.67–0.69 of the 200 GB/s nominal per direction (DeepEP quotes ~160 GB/s
  as the maximum); benchmarks/calibrate_deepep.py.
- network: A2A_NETWORK_EFFICIENCY = 0.92 — 46 of 50 GB/s per ConnectX-7 400G NIC in NCCL
  (nccl-tests #290, data/calibration/README.md).

Latency: each MoE layer's all-to-all pays the group's longest path latency plus
A2A_KERNEL_OVERHEAD_S (launch, signalling, layout), per direction and per micro-batch. The
fabric adds the path latency once per transfer; `extra_latency_s` supplies the rest.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from clustersim.network.routing import FlowSpec, PairSet
from clustersim.topology.graph import Cluster

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

A2A_NVLINK_EFFICIENCY = 0.70  # achieved / nominal NVLink bandwidth (DeepEP EP8 on H800)
A2A_NETWORK_EFFICIENCY = 0.92  # achieved / nominal NIC bandwidth (NCCL on CX-7 400G)
# Fixed cost of one all-to-all kernel beyond wire time and path latency (s), fitted to DeepEP's
# low-latency kernels (128 tokens, EP8…EP256) in benchmarks/calibrate_deepep.py.
A2A_KERNEL_OVERHEAD_S = 9e-6
# SMs DeepEP's normal (prefill) kernels occupy while they run: Buffer.num_sms default 20 in
# deepseek-ai/DeepEP (DeepSeek-V3 report §3.2.2: 20 of 132 SMs for communication); the
# low-latency (decode) kernels receive through a hook and occupy none.
A2A_NORMAL_SMS = 20


class AllToAllPlan:
    """Dispatch / combine flows of one EP group whose rank i is GPU `gpus[i]`."""

    def __init__(self, cluster: Cluster, gpus: Sequence[str], moe_layers: int) -> None:
        self.gpus = tuple(gpus)
        self._cluster = cluster
        self._pair_sets: dict[tuple[bool, bool], PairSet] = {}
        n = len(self.gpus)
        if n < 1 or moe_layers < 0:
            raise ValueError(f"bad all-to-all group: {n} ranks, {moe_layers} MoE layers")
        self.moe_layers = moe_layers
        pairs = [(i, j) for i in range(n) for j in range(n) if i != j]
        self._rows = np.asarray([i for i, _ in pairs], dtype=np.int64)
        self._cols = np.asarray([j for _, j in pairs], dtype=np.int64)
        self._src = [self.gpus[i] for i, _ in pairs]
        self._dst = [self.gpus[j] for _, j in pairs]
        inv = np.ones((n, n))
        path_latency = 0.0
        for i, j in pairs:
            a, b = self.gpus[i], self.gpus[j]
            kinds = set(cluster.path_kinds(a, b))
            eff = A2A_NETWORK_EFFICIENCY if "network" in kinds else A2A_NVLINK_EFFICIENCY
            if "nvlink" not in kinds and "network" not in kinds:
                eff = 1.0  # PCIe-only hosts: no calibrated figure, nominal bandwidth
            inv[i, j] = 1.0 / eff
            path_latency = max(path_latency, cluster.path_latency_s(a, b))
        self._inv_eta = inv
        # DeepEP's low-latency kernels send every pair through the NIC (RDMA), same node too
        self._ll_rdma = all(cluster.nic_of(g) is not None for g in self.gpus) and n > 1
        if self._ll_rdma:
            self._ll_inv_eta = np.full((n, n), 1.0 / A2A_NETWORK_EFFICIENCY)
            path_latency = max(
                path_latency,
                max(
                    sum(
                        cluster.links[k].latency_s
                        for k in cluster.rdma_path(self.gpus[i], self.gpus[j])
                    )
                    for i, j in pairs
                ),
            )
        else:
            self._ll_inv_eta = inv
        self.path_latency_s = path_latency  # longest path in the group (s)
        # 1/η of each sending pair (rows, cols), dispatch and combine direction
        self._ll_inv_pairs = (
            self._ll_inv_eta[self._rows, self._cols],
            self._ll_inv_eta.T[self._rows, self._cols],
        )
        self._init_nodes(cluster)

    def _init_nodes(self, cluster: Cluster) -> None:
        """Node of each rank, its local index, and the normal-kernel flow index arrays."""
        nodes: dict[int, list[int]] = {}
        for i, g in enumerate(self.gpus):
            nodes.setdefault(cluster.node_of(g), []).append(i)
        members = list(nodes.values())
        self.num_nodes = len(members)
        self.rank_node: I64 = np.empty(len(self.gpus), dtype=np.int64)
        local = np.empty(len(self.gpus), dtype=np.int64)
        for n, ranks in enumerate(members):
            for j, r in enumerate(ranks):
                self.rank_node[r] = n
                local[r] = j
        self._node_onehot = np.zeros((len(self.gpus), self.num_nodes))
        self._node_onehot[np.arange(len(self.gpus)), self.rank_node] = 1.0
        self.node_aware = len({len(m) for m in members}) == 1
        if not self.node_aware:
            return
        m = len(members[0])
        peer = np.asarray(members, dtype=np.int64)  # peer[n, j]: local index j on node n
        direct = [
            (i, r) for i in range(len(self.gpus)) for r in members[self.rank_node[i]] if r != i
        ]
        rdma = [
            (i, n)
            for i in range(len(self.gpus))
            for n in range(self.num_nodes)
            if n != self.rank_node[i]
        ]
        fwd = [
            (n, j, r)
            for n in range(self.num_nodes)
            for j in range(m)
            for r in members[n]
            if r != peer[n, j]
        ]
        self._direct = np.asarray(direct, dtype=np.int64).reshape(-1, 2)
        self._rdma = np.asarray(rdma, dtype=np.int64).reshape(-1, 2)
        self._rdma_dst = peer[self._rdma[:, 1], local[self._rdma[:, 0]]]
        self._fwd = np.asarray(fwd, dtype=np.int64).reshape(-1, 3)
        self._fwd_src = peer[self._fwd[:, 0], self._fwd[:, 1]]
        self._peer, self._local = peer, local
        src = np.concatenate([self._direct[:, 0], self._rdma[:, 0], self._fwd_src])
        dst = np.concatenate([self._direct[:, 1], self._rdma_dst, self._fwd[:, 2]])
        self._n_src = [self.gpus[i] for i in src.tolist()]
        self._n_dst = [self.gpus[j] for j in dst.tolist()]
        self._n_inv = self._inv_eta[src, dst]
        self._n_inv_rev = self._inv_eta[dst, src]

    def inverse_efficiency(self) -> F64:
        """(ranks, ranks) 1/η of each pair's path: fabric bytes per payload byte."""
        return self._inv_eta.copy()

    def layer_latency_s(self) -> float:
        """Fixed time of one MoE layer's all-to-all in one direction (s)."""
        return self.path_latency_s + A2A_KERNEL_OVERHEAD_S

    def extra_latency_s(self, micro_batches: int = 1) -> float:
        """Latency to add to one aggregated transfer (the fabric adds one path latency)."""
        total = self.moe_layers * micro_batches * self.layer_latency_s()
        return max(total - self.path_latency_s, 0.0)

    # ------------------------------------------------------------------ low-latency pattern

    def flows(
        self, src_share: F64, dst_pairs: F64, bytes_per_pair: float, reverse: bool = False
    ) -> list[FlowSpec]:
        """Low-latency flows of one direction (module docstring); `reverse` = combine."""
        return _as_flows(*self.low_latency_transfer(src_share, dst_pairs, bytes_per_pair, reverse))

    def low_latency_transfer(
        self, src_share: F64, dst_pairs: F64, bytes_per_pair: float, reverse: bool = False
    ) -> tuple[PairSet, F64]:
        """`flows` as (routed pairs, bytes per pair) for Fabric.transfer_pairs. `dst_pairs`
        (steps, ranks) gives several steps' bytes at once, (steps, pairs): each row the
        products of that step alone (a decode leap's: moe/ep_leap.py)."""
        # the entries (i, j) of outer(src_share, dst_pairs) * inv * bytes_per_pair, i ≠ j:
        # the same products in the same order, without the (ranks, ranks) matrix
        inv = self._ll_inv_pairs[1 if reverse else 0]
        share = np.asarray(src_share, dtype=np.float64)[self._rows]
        pairs = np.asarray(dst_pairs, dtype=np.float64)[..., self._cols]
        vals = share * pairs * inv * bytes_per_pair
        return self.pair_set(normal=False, reverse=reverse), vals

    def pair_set(self, normal: bool, reverse: bool) -> PairSet:
        """The routed (src, dst) pairs of a pattern and direction, built once."""
        key = (normal, reverse)
        cached = self._pair_sets.get(key)
        if cached is None:
            src, dst = (self._n_src, self._n_dst) if normal else (self._src, self._dst)
            pairs = list(zip(dst, src, strict=True) if reverse else zip(src, dst, strict=True))
            rdma = self._ll_rdma and not normal
            cached = self._pair_sets[key] = PairSet(self._cluster, pairs, via_network=rdma)
        return cached

    # ------------------------------------------------------------------ normal pattern

    def node_copies(self, rank_miss_log: F64) -> tuple[F64, F64]:
        """(Σ_l P_r per rank, Σ_l P_n per node) from per-(layer, rank) Σ log(1 − π_slot)."""
        rank = 1.0 - np.exp(rank_miss_log)  # (layers, ranks)
        node = 1.0 - np.exp(rank_miss_log @ self._node_onehot)  # (layers, nodes)
        return rank.sum(axis=0), node.sum(axis=0)

    def normal_flows(
        self,
        tokens: F64,
        rank_copies: F64,
        node_copies: F64,
        bytes_per_token: float,
        reverse: bool = False,
    ) -> list[FlowSpec]:
        """Normal-kernel flows (module docstring). tokens: tokens dispatched from each rank;
        rank_copies / node_copies: Σ over layers of token copies each rank / node receives
        per dispatched token. Falls back to low-latency-style direct flows (one copy per rank)
        when GPUs per node differ."""
        return _as_flows(
            *self.normal_transfer(tokens, rank_copies, node_copies, bytes_per_token, reverse)
        )

    def normal_transfer(
        self,
        tokens: F64,
        rank_copies: F64,
        node_copies: F64,
        bytes_per_token: float,
        reverse: bool = False,
    ) -> tuple[PairSet, F64]:
        """`normal_flows` as (routed pairs, bytes per pair) for Fabric.transfer_pairs."""
        if not self.node_aware:
            total = float(tokens.sum())
            share = tokens / total if total > 0 else tokens
            return self.low_latency_transfer(share, rank_copies * total, bytes_per_token, reverse)
        peer, local = self._peer, self._local
        node_tokens = np.zeros_like(peer, dtype=np.float64)  # (nodes, local index)
        np.add.at(node_tokens, (self.rank_node, local), tokens)
        per_local = node_tokens.sum(axis=0)  # tokens of all senders with local index j
        direct = tokens[self._direct[:, 0]] * rank_copies[self._direct[:, 1]]
        rdma = tokens[self._rdma[:, 0]] * node_copies[self._rdma[:, 1]]
        n_idx, j_idx = self._fwd[:, 0], self._fwd[:, 1]
        outside = per_local[j_idx] - node_tokens[n_idx, j_idx]  # senders not on node n
        fwd = outside * rank_copies[self._fwd[:, 2]]
        inv = self._n_inv_rev if reverse else self._n_inv
        vals = np.asarray(np.concatenate([direct, rdma, fwd]) * inv * bytes_per_token)
        return self.pair_set(normal=True, reverse=reverse), vals


def _as_flows(pairs: PairSet, nbytes: F64) -> list[FlowSpec]:
    """(src, dst, bytes) flows of a routed pair set."""
    return [(src, dst, b) for (src, dst), b in zip(pairs.pairs, nbytes.tolist(), strict=True)]
