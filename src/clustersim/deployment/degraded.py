"""Stage cost models of a degraded GPU group: a TP / PP / EP group runs at the pace of its
slowest member, so a stage's kernels take the compute time of its slowest GPU's tensor cores
and the memory time of its slowest HBM (each kernel is max(compute, memory, floor): the
roofline of docs/cost_model.md with the peaks scaled)."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence

from clustersim.config.schema import Experiment, HardwareSpec
from clustersim.deployment.build import Build
from clustersim.deployment.units import stage_costs
from clustersim.model.speculative_cost import SpeculativeStageCost, speculative_stage_costs
from clustersim.model.stage_cost import StageCost, StageCostModel


def degraded_hardware(hw: HardwareSpec, compute_factor: float, hbm_factor: float) -> HardwareSpec:
    """The GPU with its tensor-core peaks × compute_factor and HBM bandwidth × hbm_factor."""
    return hw.model_copy(
        update={
            "peak_tflops": {k: v * compute_factor for k, v in hw.peak_tflops.items()},
            "hbm_bandwidth_GBps": hw.hbm_bandwidth_GBps * hbm_factor,
        }
    )


def group_pace(
    group: Sequence[str], compute: Mapping[str, float], hbm: Mapping[str, float]
) -> tuple[float, float]:
    """(compute factor, HBM factor) of a GPU group: the minimum over its members."""
    return (
        min((compute.get(g, 1.0) for g in group), default=1.0),
        min((hbm.get(g, 1.0) for g in group), default=1.0),
    )


class DegradedCosts:
    """Stage cost models per (stage, compute factor, HBM factor), built once each."""

    def __init__(self, exp: Experiment, built: Build) -> None:
        self.exp = exp
        self.built = built
        self._cache: dict[tuple[float, float], list[StageCostModel]] = {}
        self._speculative: dict[tuple[float, float], list[SpeculativeStageCost]] = {}

    def dense_cost(
        self, nominal: StageCostModel, stage: int, compute_factor: float, hbm_factor: float
    ) -> StageCostModel:
        """Stage `stage`'s analytic cost model on the degraded GPU (`nominal` at full speed):
        compute terms × 1/compute_factor, memory terms × 1/hbm_factor, floors unchanged."""
        if compute_factor == 1.0 and hbm_factor == 1.0:
            return nominal
        return self._costs(compute_factor, hbm_factor)[stage]

    def _costs(self, compute_factor: float, hbm_factor: float) -> list[StageCostModel]:
        key = (compute_factor, hbm_factor)
        costs = self._cache.get(key)
        if costs is None:
            hw = degraded_hardware(self.exp.hardware, compute_factor, hbm_factor)
            costs = stage_costs(self.exp, self.built, hw)
            self._cache[key] = costs
        return costs

    def stage_cost(
        self, nominal: StageCost, stage: int, compute_factor: float, hbm_factor: float
    ) -> StageCost:
        """`nominal` (the stage's cost at full speed) priced on the degraded GPU. A sampled
        MoE stage gets a degraded dense part; its expert GEMMs are paced per EP rank
        (sim/fault_injector.py `pace_ranks`). A speculative verify step gets its target, verify
        attention and drafter priced on the degraded GPU."""
        if compute_factor == 1.0 and hbm_factor == 1.0:
            return nominal
        key = (compute_factor, hbm_factor)
        hw = degraded_hardware(self.exp.hardware, compute_factor, hbm_factor)
        costs = self._costs(compute_factor, hbm_factor)
        if isinstance(nominal, StageCostModel):
            return costs[stage]
        if isinstance(nominal, SpeculativeStageCost):
            target = self.stage_cost(nominal.target, stage, compute_factor, hbm_factor)
            verify = self._speculative.get(key)
            if verify is None:
                slow_exp = self.exp.model_copy(update={"hardware": hw})
                verify = speculative_stage_costs(slow_exp, costs, costs)
                self._speculative[key] = verify
            template = verify[stage]
            return SpeculativeStageCost(target, costs[stage], template.attention, template.drafter)
        slowed = copy.copy(nominal)
        slowed.base = costs[stage]  # type: ignore[attr-defined]  # SampledStageCost
        return slowed
