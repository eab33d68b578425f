"""Expert-parallel load balancing (EPLB): where each layer's physical expert slots go.

Pure functions on numpy arrays (no simpy), vectorised over layers. A placement gives, per MoE
layer, the logical expert held by each of P = E + R physical slots (R redundant experts); slot j
lives on EP rank j // (P / ranks), so every rank holds the same number of slots. A pair routed
to an expert with n replicas goes to each replica with probability 1/n (its load is split
evenly), so a rank's load is Σ over its slots of load[expert] / replicas[expert].

Algorithms (the policies of DeepSeek's open-source EPLB, github.com/deepseek-ai/EPLB, README;
re-implemented from its description):
- greedy (DeepSeek's "global" policy): give each expert one slot, then the R spare slots one
  by one to the expert with the highest load per replica; pack the physical experts onto ranks
  heaviest first, each to the least-loaded rank that still has a free slot.
- hierarchical: pack expert groups (`groups` contiguous blocks of E/groups experts) onto nodes
  with the same balanced packing, then replicate within each node to its P/nodes slots, then
  pack each node's physical experts onto its GPUs. Used when nodes divide the groups (DeepSeek:
  prefill, whose group-limited routing keeps a token's experts on few nodes); otherwise the
  greedy policy is used, as DeepSeek does.

`rebalance` keeps the current placement when the new one is not better on the loads it was
fitted to, so a rebalance never increases max/mean on those loads.

Rank speeds (a slow EP rank, docs/faults.md): given each rank's speed s_r (1 = nominal; 0.5 =
its expert GEMMs take twice as long), a rank's time is load_r / s_r. The packing then sends
each item, heaviest first, to the bin with room where (load_b + w) / s_b is least (LPT for
machines of different speeds), the bin numbering is kept within ranks of equal speed, and
imbalance is Σ_layers max_r(load_r / s_r) / Σ_layers (Σ_r load_r / Σ_r s_r) — 1.0 when every
rank finishes together. Without speeds (None) every function is the uniform policy above.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

# A new placement replaces the current one only if it lowers max/mean by more than this
# (relative), so float noise never moves weights.
MIN_IMPROVEMENT = 1e-9


@dataclass(frozen=True, eq=False)
class ExpertPlacement:
    """`logical[l, j]`: logical expert in physical slot j of MoE layer l; slot j is on rank
    j // slots_per_rank. Every expert has at least one slot in every layer."""

    logical: I64  # (layers, slots)
    ranks: int
    num_experts: int

    def __post_init__(self) -> None:
        slots = self.logical.shape[1]
        if self.ranks < 1 or slots % self.ranks != 0:
            raise ValueError(f"{slots} slots cannot be split evenly over {self.ranks} ranks")
        if slots < self.num_experts:
            raise ValueError(f"{slots} slots cannot hold {self.num_experts} experts")
        counts = self.replicas()
        if (counts < 1).any():
            raise ValueError("every expert needs at least one slot in every layer")

    @property
    def layers(self) -> int:
        return int(self.logical.shape[0])

    @property
    def slots(self) -> int:
        return int(self.logical.shape[1])

    @property
    def slots_per_rank(self) -> int:
        return self.slots // self.ranks

    def slot_rank(self) -> I64:
        """Rank of each slot, (slots,)."""
        out: I64 = np.arange(self.slots, dtype=np.int64) // self.slots_per_rank
        return out

    def replicas(self) -> I64:
        """Replicas of each logical expert per layer, (layers, experts)."""
        e = self.num_experts
        offsets = np.arange(self.layers, dtype=np.int64)[:, None] * e
        flat = np.bincount((self.logical + offsets).ravel(), minlength=self.layers * e)
        out: I64 = flat.reshape(self.layers, e).astype(np.int64)
        return out

    def slot_loads(self, loads: F64) -> F64:
        """Each slot's share of `loads` (layers, experts): load / replicas, (layers, slots)."""
        per_replica = loads / self.replicas()
        out: F64 = np.take_along_axis(per_replica, self.logical, axis=1)
        return out


def linear_placement(layers: int, num_experts: int, ranks: int, slots: int) -> ExpertPlacement:
    """Slot j holds expert j mod E in every layer (contiguous blocks of experts per rank;
    spare slots repeat experts 0, 1, ... — vLLM's default 'linear' expert placement)."""
    row = np.arange(slots, dtype=np.int64) % num_experts
    return ExpertPlacement(np.tile(row, (layers, 1)), ranks, num_experts)


# ------------------------------------------------------------------ building blocks


def balanced_packing(weights: F64, bins: int, speed: F64 | None = None) -> I64:
    """Bin of each item, (rows, items): items / bins items per bin; per row, items go heaviest
    first to the least-loaded bin that still has room (ties: lowest bin, then item order).
    With `speed` ((bins,) or (rows, bins)), to the bin with room whose time
    (load + item) / speed would be least."""
    rows, items = weights.shape
    if bins < 1 or items % bins != 0:
        raise ValueError(f"{items} items cannot be packed evenly into {bins} bins")
    cap = items // bins
    order = np.argsort(-weights, axis=1, kind="stable")
    load = np.zeros((rows, bins))
    count = np.zeros((rows, bins), dtype=np.int64)
    out = np.empty((rows, items), dtype=np.int64)
    r = np.arange(rows)
    for i in range(items):
        item = order[:, i]
        if speed is None:
            b = np.argmin(np.where(count < cap, load, np.inf), axis=1)
        else:
            after = (load + weights[r, item][:, None]) / speed
            b = np.argmin(np.where(count < cap, after, np.inf), axis=1)
        out[r, item] = b
        load[r, b] += weights[r, item]
        count[r, b] += 1
    return out


def replicate(loads: F64, slots: int) -> I64:
    """Replicas per expert, (rows, experts): one each, then each of the slots − E spare slots
    to the expert with the highest load per replica (ties: lowest expert id)."""
    rows, e = loads.shape
    if slots < e:
        raise ValueError(f"{slots} slots cannot hold {e} experts")
    counts = np.ones((rows, e), dtype=np.int64)
    r = np.arange(rows)
    for _ in range(slots - e):
        idx = np.argmax(loads / counts, axis=1)
        counts[r, idx] += 1
    return counts


def _expand(loads: F64, counts: I64) -> tuple[I64, F64]:
    """Physical experts of each row: (logical id, load per replica), (rows, Σ counts)."""
    rows, e = loads.shape
    slots = int(counts[0].sum())
    ids = np.tile(np.arange(e, dtype=np.int64), rows)
    logical = np.repeat(ids, counts.ravel()).reshape(rows, slots)
    per_replica = np.take_along_axis(loads / counts, logical, axis=1)
    return logical, per_replica


def _pack_rows(logical: I64, weights: F64, bins: int, speed: F64 | None = None) -> I64:
    """Reorder each row's physical experts so bin b's come in positions [b·n/bins, ...)."""
    where = balanced_packing(weights, bins, speed)
    order = np.argsort(where, axis=1, kind="stable")
    out: I64 = np.take_along_axis(logical, order, axis=1)
    return out


def _uneven(speed: F64 | None) -> F64 | None:
    """`speed` if its ranks differ in speed, else None (equal speeds: the uniform policy)."""
    if speed is None or bool((speed == speed.flat[0]).all()):
        return None
    return speed


# ------------------------------------------------------------------ policies


def greedy_placement(
    loads: F64, ranks: int, slots: int, speed: F64 | None = None
) -> ExpertPlacement:
    """DeepSeek's global policy: replicate hot experts, pack replicas onto ranks (weighted by
    rank `speed`, (ranks,), when given)."""
    e = loads.shape[1]
    counts = replicate(loads, slots)
    logical, per_replica = _expand(loads, counts)
    return ExpertPlacement(_pack_rows(logical, per_replica, ranks, _uneven(speed)), ranks, e)


def hierarchical_placement(
    loads: F64, ranks: int, slots: int, nodes: int, groups: int, speed: F64 | None = None
) -> ExpertPlacement:
    """DeepSeek's hierarchical policy (module docstring); needs nodes | groups, groups | E,
    nodes | slots and nodes | ranks — otherwise falls back to greedy_placement. Ranks are
    node-major: rank r is on node r // (ranks / nodes). With rank `speed`, groups are packed
    onto nodes by node speed (Σ of its ranks') and experts onto a node's ranks by rank speed."""
    layers, e = loads.shape
    speed = _uneven(speed)
    ok = (
        nodes >= 1
        and groups % nodes == 0
        and e % groups == 0
        and slots % nodes == 0
        and ranks % nodes == 0
        and (slots // nodes) % (ranks // nodes) == 0
    )
    if not ok or nodes == 1:
        return greedy_placement(loads, ranks, slots, speed)
    gsize, per_node_groups = e // groups, groups // nodes
    group_loads = loads.reshape(layers, groups, gsize).sum(axis=2)
    node_speed = None if speed is None else speed.reshape(nodes, -1).sum(axis=1)
    group_node = balanced_packing(group_loads, nodes, node_speed)  # (layers, groups)
    group_order = np.argsort(group_node, axis=1, kind="stable")  # node-major group list
    experts = (group_order[:, :, None] * gsize + np.arange(gsize)[None, None, :]).reshape(
        layers * nodes, per_node_groups * gsize
    )  # (layers · nodes, E / nodes): node n of layer l is row l · nodes + n
    node_loads = np.take_along_axis(np.repeat(loads, nodes, axis=0), experts, axis=1)
    counts = replicate(node_loads, slots // nodes)
    local, per_replica = _expand(node_loads, counts)
    # row l · nodes + n packs onto node n's ranks
    local_speed = None if speed is None else np.tile(speed.reshape(nodes, -1), (layers, 1))
    local = _pack_rows(local, per_replica, ranks // nodes, local_speed)
    logical = np.take_along_axis(experts, local, axis=1).reshape(layers, slots)
    return ExpertPlacement(logical, ranks, e)


def rank_loads(loads: F64, placement: ExpertPlacement) -> F64:
    """Load per (layer, rank) of `loads` (layers, experts) under `placement`."""
    per_slot = placement.slot_loads(loads)
    out: F64 = per_slot.reshape(placement.layers, placement.ranks, -1).sum(axis=2)
    return out


def imbalance(per_rank: F64, speed: F64 | None = None) -> float:
    """Σ_layers max-rank load / Σ_layers mean-rank load (1.0 = balanced; 1.0 if no load).
    With rank `speed`: Σ_layers max-rank time / Σ_layers the time were every rank to finish
    together (module docstring)."""
    if speed is not None:
        ideal = float(per_rank.sum()) / float(speed.sum())
        if not ideal > 0:
            return 1.0
        return float((per_rank / speed).max(axis=1).sum()) / ideal
    mean = float(per_rank.mean(axis=1).sum())
    if not mean > 0:
        return 1.0
    return float(per_rank.max(axis=1).sum()) / mean


def moved_experts(old: ExpertPlacement, new: ExpertPlacement, rank_node: I64) -> I64:
    """Expert copies to move, (ranks, ranks): [src, dst] = weights of (layer, expert) that rank
    dst holds under `new` but not under `old`, fetched from a rank that held the expert under
    `old` — one on dst's node if any (rank_node[r] = node of rank r), else the first."""
    ranks, s_old, s_new = old.ranks, old.slots_per_rank, new.slots_per_rank
    out = np.zeros((ranks, ranks), dtype=np.int64)
    node = [int(x) for x in rank_node]
    for layer in range(old.layers):
        old_row = old.logical[layer].tolist()
        new_row = new.logical[layer].tolist()
        held = [set(old_row[r * s_old : (r + 1) * s_old]) for r in range(ranks)]
        holders: dict[int, list[int]] = {}
        for r in range(ranks):
            for expert in sorted(held[r]):
                holders.setdefault(expert, []).append(r)
        for dst in range(ranks):
            wanted = dict.fromkeys(new_row[dst * s_new : (dst + 1) * s_new])
            for expert in wanted:
                if expert in held[dst]:
                    continue
                src_list = holders[expert]
                near = [r for r in src_list if node[r] == node[dst]]
                out[(near or src_list)[0], dst] += 1
    return out


def align_ranks(
    old: ExpertPlacement,
    new: ExpertPlacement,
    rank_node: I64,
    within_node: bool,
    speed: F64 | None = None,
) -> ExpertPlacement:
    """`new` with its ranks renumbered, per layer, to keep experts where `old` has them.

    The policies' rank (bin) numbering is arbitrary — any permutation of ranks (within a node
    for the hierarchical policy) balances the same — so each new bin is given the old rank
    sharing most experts with it (greedy on the overlap, largest first), which cuts the weight
    copies a rebalance moves (vLLM's EPLB avoids such copies likewise). With rank `speed`, a
    bin goes only to a rank of its own speed (it was packed for that speed).
    """
    ranks, e = new.ranks, new.num_experts
    s_new, s_old = new.slots_per_rank, old.slots_per_rank
    rows = np.arange(ranks)
    out = new.logical.copy()
    node = np.asarray(rank_node)
    allowed = node[:, None] == node[None, :] if within_node else np.ones((ranks, ranks), bool)
    if speed is not None:
        allowed = allowed & (speed[:, None] == speed[None, :])
    for layer in range(new.layers):
        new_cnt = np.zeros((ranks, e), dtype=np.int64)
        old_cnt = np.zeros((ranks, e), dtype=np.int64)
        np.add.at(new_cnt, (np.repeat(rows, s_new), new.logical[layer]), 1)
        np.add.at(old_cnt, (np.repeat(rows, s_old), old.logical[layer]), 1)
        overlap = np.minimum(new_cnt[:, None, :], old_cnt[None, :, :]).sum(axis=2)
        overlap = np.where(allowed, overlap, -1)
        order = np.argsort(-overlap, axis=None, kind="stable").tolist()
        take = np.full(ranks, -1, dtype=np.int64)  # old rank → new bin
        used_bin = [False] * ranks
        left = ranks
        for flat in order:
            b, r = divmod(flat, ranks)
            if used_bin[b] or take[r] >= 0 or overlap[b, r] < 0:
                continue
            take[r] = b
            used_bin[b] = True
            left -= 1
            if not left:
                break
        if left:  # cannot happen: the identity is always allowed
            return new
        blocks = new.logical[layer].reshape(ranks, s_new)
        out[layer] = blocks[take].ravel()
    return ExpertPlacement(out, ranks, e)


@dataclass(frozen=True, eq=False)
class Rebalance:
    """Outcome of one rebalance on loads (layers, experts)."""

    placement: ExpertPlacement  # the placement to use from now on (maybe the old one)
    imbalance_before: float  # max/mean of the fitted loads under the old placement
    imbalance_after: float  # ... under the returned placement
    moves: I64  # (ranks, ranks) expert copies moved src → dst (zeros if unchanged)

    @property
    def changed(self) -> bool:
        return bool(self.moves.any())


def rebalance(
    loads: F64,
    current: ExpertPlacement,
    algorithm: str,
    rank_node: I64,
    groups: int | None = None,
    speed: F64 | None = None,
) -> Rebalance:
    """Fit a new placement to `loads` with `algorithm` ('greedy' | 'hierarchical'); keep the
    current one unless the new one lowers max/mean on `loads` (so it never increases it).

    rank_node: node of each rank (node-major, equal ranks per node for the hierarchical
    policy); groups: expert groups for the hierarchical policy (None: one per node);
    speed: each rank's speed (None: all equal), for a speed-weighted placement and imbalance.
    """
    ranks, slots = current.ranks, current.slots
    nodes = len(np.unique(rank_node))
    if algorithm == "hierarchical":
        node_major = bool((np.diff(rank_node) >= 0).all())
        new = (
            hierarchical_placement(loads, ranks, slots, nodes, groups or nodes, speed)
            if node_major
            else greedy_placement(loads, ranks, slots, speed)
        )
    elif algorithm == "greedy":
        new = greedy_placement(loads, ranks, slots, speed)
    else:
        raise ValueError(f"unknown EPLB algorithm {algorithm!r}")
    new = align_ranks(current, new, rank_node, algorithm == "hierarchical", speed)
    before = imbalance(rank_loads(loads, current), speed)
    after = imbalance(rank_loads(loads, new), speed)
    if not after < before * (1.0 - MIN_IMPROVEMENT):
        return Rebalance(current, before, before, np.zeros((ranks, ranks), dtype=np.int64))
    return Rebalance(new, before, after, moved_experts(current, new, rank_node))
