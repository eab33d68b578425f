"""Faults and degraded hardware (`faults:`): scheduled events, random failures, recovery.

Targets are named as in the topology graph (GPU `n0.g3`, node `n1`, link `a->b`, cable
`a<->b`, vertex `n0.nic0` / `leaf0` / `spine1`); they are resolved against the cluster at
build time (faults/targets.py), so `validate` reports a target that does not exist.
"""

from typing import Annotated, Literal

from pydantic import Field, model_validator

from clustersim.config.schema.base import (
    BandwidthGBps,
    Micros,
    NonNegFloat,
    PosFloat,
    Strict,
    keyed_error,
)

FaultKindName = Literal["gpu_slowdown", "link_degrade", "link_down", "gpu_down", "node_down"]
ComponentName = Literal["gpu", "node", "nic", "leaf", "spine"]
RepairDistName = Literal["exponential", "fixed", "lognormal"]


SpeedFactor = Annotated[float, Field(ge=1e-3, le=1)]


class FaultEventSpec(Strict):
    """One fault on [at_s, at_s + duration_s); duration_s absent: until the end of the run.

    compute_factor / hbm_factor (gpu_slowdown): the GPU's tensor-core and HBM speed, as a
    fraction of nominal; bandwidth_factor / extra_latency_us (link_degrade): the link's
    remaining bandwidth fraction and latency added to every transfer crossing it."""

    kind: FaultKindName
    target: str
    at_s: NonNegFloat = 0.0
    duration_s: PosFloat | None = None
    # at least 0.1 % of nominal (a slower part is a lost one: gpu_loss / link_down)
    compute_factor: SpeedFactor = 1.0
    hbm_factor: SpeedFactor = 1.0
    bandwidth_factor: SpeedFactor = 1.0
    extra_latency_us: Micros = 0.0

    @model_validator(mode="after")
    def _factors_match_kind(self) -> "FaultEventSpec":
        gpu_factors = self.compute_factor != 1.0 or self.hbm_factor != 1.0
        link_factors = self.bandwidth_factor != 1.0 or self.extra_latency_us != 0.0
        if gpu_factors and self.kind != "gpu_slowdown":
            raise keyed_error("compute_factor", f"only gpu_slowdown takes it (kind: {self.kind})")
        if link_factors and self.kind != "link_degrade":
            raise keyed_error("bandwidth_factor", f"only link_degrade takes it (kind: {self.kind})")
        if self.kind == "gpu_slowdown" and not gpu_factors:
            raise keyed_error(
                "compute_factor", "gpu_slowdown needs compute_factor or hbm_factor < 1"
            )
        if self.kind == "link_degrade" and not link_factors:
            raise keyed_error(
                "bandwidth_factor", "link_degrade needs bandwidth_factor < 1 or extra_latency_us"
            )
        return self


class RandomFailureSpec(Strict):
    """Failures of every instance of one component class: up-time ~ Exp(MTBF), down-time
    from the repair law (mean repair_mean_s). Give exactly one of mtbf_s or mtbf_h."""

    component: ComponentName
    # at least one second: a shorter mean time between failures is a typo (and a run of
    # nothing but failures)
    mtbf_s: Annotated[float, Field(ge=1)] | None = None
    mtbf_h: Annotated[float, Field(ge=1 / 3600)] | None = None
    repair_mean_s: PosFloat = 600.0
    dist: RepairDistName = "exponential"
    sigma: NonNegFloat = 0.5  # lognormal repair: sigma of log(repair time)

    @model_validator(mode="after")
    def _one_mtbf(self) -> "RandomFailureSpec":
        if (self.mtbf_s is None) == (self.mtbf_h is None):
            raise keyed_error("mtbf_s", "give exactly one of mtbf_s or mtbf_h")
        return self

    @property
    def mtbf_seconds(self) -> float:
        return self.mtbf_s if self.mtbf_s is not None else float(self.mtbf_h or 0.0) * 3600.0


class ReloadSpec(Strict):
    """How a repaired replica gets its weights back: from storage at `bandwidth_GBps` per
    GPU, or over the fabric from a healthy replica (flows at the links' rates)."""

    source: Literal["storage", "fabric"] = "storage"
    bandwidth_GBps: BandwidthGBps = 5.0  # storage read per GPU (1e9 bytes/s)


class FaultsSpec(Strict):
    events: list[FaultEventSpec] = Field(default_factory=list)
    random: list[RandomFailureSpec] = Field(default_factory=list)
    detect_s: NonNegFloat = 5.0  # health-check delay before the router routes around a loss
    on_failure: Literal["retry", "fail"] = "retry"
    reload: ReloadSpec = ReloadSpec()

    @model_validator(mode="after")
    def _something(self) -> "FaultsSpec":
        if not self.events and not self.random:
            raise keyed_error("events", "a faults: block needs events or random failures")
        return self
