"""The experiment's EPLB block in engine steps: the simulator rebalances every
`experts.eplb.rebalance_interval_s` seconds of simulated time (sim/moe_group.py: a new
placement fitted to the loads routed since the previous rebalance); the engines count forward
passes. `StepTime` is the launched layout's mean forward-pass time (the planner passes the
simulated one); `rebalance_of` converts and says how in one line, which every engine puts in
its config as a comment."""

from __future__ import annotations

from dataclasses import dataclass

from clustersim.config.schema import Experiment


@dataclass(frozen=True)
class StepTime:
    """Mean seconds of one engine step (forward pass) of a layout, and where it came from."""

    seconds: float
    source: str  # e.g. "simulated mean TPOT of tp8-pp1-dp4-ep32"


@dataclass(frozen=True)
class Rebalance:
    """EPLB of one launched layout: redundant experts and the rebalance interval."""

    redundant: int  # redundant experts (physical slots = experts + redundant)
    interval_s: float  # simulated rebalance interval; 0 = never rebalances
    steps: int | None  # interval in engine steps; None when never or not convertible
    conversion: str  # one line: how `steps` was obtained (or why there is none)


def rebalance_of(exp: Experiment, step: StepTime | None) -> Rebalance | None:
    """The EPLB settings of `exp`, None without an EPLB block or with ep = 1 (every GPU
    holds every expert: nothing to balance)."""
    eplb = exp.experts.eplb if exp.experts is not None else None
    if eplb is None or exp.layout.ep == 1 or not exp.model.is_moe:
        return None
    if eplb.redundant_experts == 0 and eplb.rebalance_interval_s == 0:
        return None
    interval = eplb.rebalance_interval_s
    if interval == 0:
        return Rebalance(
            eplb.redundant_experts,
            0.0,
            None,
            "EPLB: the simulation never rebalances "
            "(rebalance_interval_s = 0): a static placement with the redundant experts",
        )
    if step is None or not step.seconds > 0:
        return Rebalance(
            eplb.redundant_experts,
            interval,
            None,
            f"EPLB: rebalance interval {interval:g} s "
            "not converted to engine steps: no step time for this layout (engine default kept)",
        )
    steps = max(1, round(interval / step.seconds))
    return Rebalance(
        eplb.redundant_experts,
        interval,
        steps,
        f"EPLB: rebalance every {interval:g} s = {steps} steps at {step.seconds * 1e3:.2f} ms "
        f"per step ({step.source})",
    )
