"""Expert-parallel layout semantics: which EP layouts are valid and which GPUs form each EP
group and each EP rank (pure; no simpy). docs/moe.md §1.

For an MoE model with E routed experts, R redundant (EPLB) slots, P = E + R slots per layer:

- ep = 1 ("replicated"): every GPU of a TP group holds every expert, split tp ways.
- ep = tp ("tp"; TensorRT-LLM: moe_tp × ep = tp when layout.moe_tp is given): experts are
  sharded over the TP group of each replica (and pipeline stage): each replica is its own EP
  group. Tokens are already on every TP rank after attention's all-reduce; the MLP all-reduce
  combines the experts' outputs — no all-to-all.
- ep = tp × dp with dp > 1 ("dp_attention"; vLLM `--enable-expert-parallel` with DP, SGLang
  `--enable-dp-attention`): attention and dense layers are replicated per DP rank (each DP
  rank a TP group of tp GPUs with its own scheduler and KV cache; the router sees dp ranks),
  the experts are sharded over all ep GPUs, and every rank runs each step in lock-step (an
  idle rank runs a dummy step). Dispatch / combine are all-to-alls over the ep GPUs.
  **ep = tp × dp with dp > 1 implies DP-attention** (there is no other way to shard experts over
  several replicas); `layout.dp_attention: true` states it and is then required to match.

Rejected, with the numbers: ep matching none of these; moe_tp × ep ≠ tp; P not divisible by ep;
redundant experts or an eplb block with ep = 1; DP-attention with pp > 1; EP on a dense model;
a routing table whose shape does not fit the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from clustersim.config.schema import Experiment, ExpertsSpec
from clustersim.moe.experts import PopularityTableError, load_popularity_table
from clustersim.topology.placement import Placement, PlacementError

F64 = npt.NDArray[np.float64]
EPMode = Literal["replicated", "tp", "dp_attention"]


class EPLayoutError(ValueError):
    """An EP layout the simulator cannot run; one line with the numbers."""


@dataclass(frozen=True)
class EPGroupSpec:
    """The GPUs of one EP group: `ranks[i]` are the GPUs holding EP rank i's experts (one GPU,
    or the moe_tp GPUs that split them). `replica` / `stage` locate a "tp"-mode group; a
    DP-attention group spans every replica (replica = -1)."""

    index: int
    replica: int
    stage: int
    ranks: tuple[tuple[str, ...], ...]


@dataclass(frozen=True, eq=False)
class EPLayout:
    mode: EPMode
    ep: int
    moe_tp: int  # ways each expert's matrices are split (GPUs per EP rank)
    redundant: int  # R: redundant expert slots per layer
    physical: int  # P = E + R slots per layer
    experts: ExpertsSpec
    groups: tuple[EPGroupSpec, ...]
    table: F64 | None  # routing popularity table (layers × experts) for distribution "trace"

    @property
    def dp_attention(self) -> bool:
        return self.mode == "dp_attention"


def ep_mode(exp: Experiment) -> tuple[EPMode, int]:
    """(mode, moe_tp) of an MoE experiment's layout; EPLayoutError if none applies."""
    lay, name = exp.layout, exp.model.name
    tp, dp, ep = lay.tp, lay.dp, lay.ep
    if lay.moe_tp is not None:
        if lay.dp_attention or (dp > 1 and ep == tp * dp and ep != tp):
            raise EPLayoutError(
                f"layout.moe_tp = {lay.moe_tp} cannot be combined with DP-attention + EP "
                f"(ep = tp × dp = {tp}×{dp}); moe_tp × ep = tp splits experts inside one TP group"
            )
        if lay.moe_tp * ep != tp:
            raise EPLayoutError(
                f"layout.moe_tp × ep = {lay.moe_tp} × {ep} = {lay.moe_tp * ep} must equal "
                f"tp = {tp} (TensorRT-LLM: moe_tensor_parallel_size × moe_expert_parallel_size "
                f"== tensor_parallel_size), model {name}"
            )
        return ("tp" if ep > 1 else "replicated"), lay.moe_tp
    if dp > 1 and ep == tp * dp:
        return "dp_attention", 1
    if lay.dp_attention and (dp > 1 or ep != tp):
        raise EPLayoutError(
            f"layout.dp_attention needs ep = tp × dp = {tp}×{dp} = {tp * dp} (experts over "
            f"every DP rank), got ep = {ep}"
        )
    if ep == tp and ep > 1:
        return "tp", 1
    if ep == 1:
        return "replicated", tp
    raise EPLayoutError(
        f"layout.ep = {ep} must be 1, tp = {tp} (experts sharded in each TP group; or "
        f"moe_tp × ep = tp), or tp × dp = {tp}×{dp} = {tp * dp} with dp > 1 (DP-attention + "
        f"EP), model {name}"
    )


def _check_dense(exp: Experiment) -> None:
    lay, name = exp.layout, exp.model.name
    if lay.ep > 1:
        raise EPLayoutError(f"layout.ep = {lay.ep}: model {name} has no experts (use ep: 1)")
    if lay.dp_attention:
        raise EPLayoutError(f"layout.dp_attention: model {name} has no experts")
    if lay.moe_tp is not None:
        raise EPLayoutError(f"layout.moe_tp = {lay.moe_tp}: model {name} has no experts")
    if exp.experts is not None:
        raise EPLayoutError(
            f"experts: model {name} has no routed experts; remove the experts block"
        )


def _groups(
    exp: Experiment, mode: EPMode, moe_tp: int, placement: Placement
) -> tuple[EPGroupSpec, ...]:
    lay = exp.layout
    if mode == "dp_attention":
        try:
            groups = placement.ep_groups(0)
        except PlacementError as err:
            raise EPLayoutError(str(err)) from err
        if len(groups) != 1 or len(groups[0]) != lay.ep:
            raise EPLayoutError(
                f"EP group of ep = {lay.ep} GPUs cannot be placed: the layout's "
                f"{sum(len(g) for g in groups)} stage GPUs form {len(groups)} groups"
            )
        return (EPGroupSpec(0, -1, 0, tuple((g,) for g in groups[0])),)
    out: list[EPGroupSpec] = []
    ep = lay.ep
    for rp in placement.replicas:
        for s, tp_group in enumerate(rp.stages):
            if mode == "replicated":
                ranks: tuple[tuple[str, ...], ...] = (tuple(tp_group),)
            else:  # TensorRT-LLM: moe_ep_rank = tp_rank mod ep, moe_tp_rank = tp_rank // ep
                ranks = tuple(
                    tuple(tp_group[j] for j in range(len(tp_group)) if j % ep == r)
                    for r in range(ep)
                )
            if any(len(r) != moe_tp for r in ranks):
                raise EPLayoutError(
                    f"EP group of replica {rp.index} stage {s} cannot be placed: "
                    f"{len(tp_group)} GPUs for ep = {ep} ranks × moe_tp = {moe_tp}"
                )
            out.append(EPGroupSpec(len(out), rp.index, s, ranks))
    return tuple(out)


def resolve_ep_layout(exp: Experiment, placement: Placement) -> EPLayout | None:
    """The EP layout of `exp` on `placement` (None for a dense model); EPLayoutError if bad."""
    model, lay = exp.model, exp.layout
    if not model.is_moe:
        _check_dense(exp)
        return None
    mode, moe_tp = ep_mode(exp)
    experts = exp.experts or ExpertsSpec()
    eplb = experts.eplb
    redundant = eplb.redundant_experts if eplb is not None else 0
    e, ep = model.num_experts, lay.ep
    if eplb is not None and ep == 1:
        raise EPLayoutError(
            f"experts.eplb (redundant_experts = {redundant}) needs ep > 1: with ep = 1 every "
            f"GPU holds every expert"
        )
    physical = e + redundant
    if physical % ep != 0:
        raise EPLayoutError(
            f"num_experts + redundant_experts = {e} + {redundant} = {physical} is not "
            f"divisible by ep = {ep} (model {model.name})"
        )
    if mode == "dp_attention" and lay.pp > 1:
        raise EPLayoutError(
            f"layout.pp = {lay.pp} with DP-attention + EP (ep = tp × dp = {ep}) is not "
            f"simulated (use pp: 1)"
        )
    table = None
    routing = experts.routing
    if routing.distribution == "trace":
        if routing.path is None:
            raise EPLayoutError(
                "experts.routing.distribution = trace needs experts.routing.path "
                "(a layers × experts popularity table, CSV or YAML)"
            )
        try:
            table = load_popularity_table(
                routing.path, model.num_moe_layers, e, model.experts_per_token
            )
        except PopularityTableError as err:
            raise EPLayoutError(f"experts.routing.path: {err}") from err
    groups = _groups(exp, mode, moe_tp, placement)
    return EPLayout(mode, ep, moe_tp, redundant, physical, experts, groups, table)
