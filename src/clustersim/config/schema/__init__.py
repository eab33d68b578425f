"""Typed, frozen schema of every user-facing file (DESIGN.md §2).

These pydantic models are the contract between config loading and everything downstream:
build, simulate, metrics and results read only these objects. Units are in field names
(`_s` seconds, `_GBps` 1e9 bytes/s per direction, `_GiB` 2**30 bytes, `_us` microseconds).
Every model forbids unknown keys so a typo is reported, never ignored.

One module per section: base (strict base model, bounded types), model, hardware, topology,
serving (layout, precision, engine, experts, disaggregation pools), workload, experiment.
Import every name from `clustersim.config.schema`.

The schema modules do without `from __future__ import annotations`: pydantic would compile
and evaluate every field's annotation string when the classes are built (≈ 250 `compile`
calls, about 1.5 % of a run's import instructions); a validator returning its own class
names it in quotes.
"""

from clustersim.config.schema.base import (
    DTYPE_BYTES,
    MAX_COUNT,
    MAX_NAME_CHARS,
    DType,
    Fraction,
    NonNegFloat,
    NonNegInt,
    PosFloat,
    PosInt,
    Seed,
    Strict,
    keyed_error,
)
from clustersim.config.schema.experiment import (
    Experiment,
    HorizonSpec,
    LimitsSpec,
    OutputSpec,
    SLOSpec,
)
from clustersim.config.schema.faults import (
    FaultEventSpec,
    FaultsSpec,
    RandomFailureSpec,
    ReloadSpec,
)
from clustersim.config.schema.hardware import HardwareSpec
from clustersim.config.schema.model import ModelSpec
from clustersim.config.schema.serving import (
    DisaggregationSpec,
    EngineKnob,
    EngineName,
    EPLBSpec,
    ExpertsSpec,
    Layout,
    PoolServing,
    PoolSpec,
    Precision,
    PrefixCachingSpec,
    RouterName,
    RouterOptions,
    RoutingSpec,
    ServingSpec,
)
from clustersim.config.schema.speculative import SpeculativeSpec
from clustersim.config.schema.topology import NetworkSpec, NVLinkSpec, PCIeSpec, TopologySpec
from clustersim.config.schema.workload import (
    ArrivalSpec,
    BurstArrival,
    ClosedArrival,
    EmpiricalLength,
    FixedLength,
    GammaArrival,
    LengthSpec,
    LognormalLength,
    MMPPArrival,
    PoissonArrival,
    TraceArrival,
    TraceSpec,
    UniformLength,
    WorkloadSpec,
)

__all__ = [
    "DTYPE_BYTES",
    "MAX_COUNT",
    "MAX_NAME_CHARS",
    "ArrivalSpec",
    "BurstArrival",
    "ClosedArrival",
    "DType",
    "DisaggregationSpec",
    "EPLBSpec",
    "EmpiricalLength",
    "EngineKnob",
    "EngineName",
    "Experiment",
    "ExpertsSpec",
    "FaultEventSpec",
    "FaultsSpec",
    "FixedLength",
    "Fraction",
    "GammaArrival",
    "HardwareSpec",
    "HorizonSpec",
    "Layout",
    "LengthSpec",
    "LimitsSpec",
    "LognormalLength",
    "MMPPArrival",
    "ModelSpec",
    "NVLinkSpec",
    "NetworkSpec",
    "NonNegFloat",
    "NonNegInt",
    "OutputSpec",
    "PCIeSpec",
    "PoissonArrival",
    "PoolServing",
    "PoolSpec",
    "PosFloat",
    "PosInt",
    "Precision",
    "PrefixCachingSpec",
    "RandomFailureSpec",
    "ReloadSpec",
    "RouterName",
    "RouterOptions",
    "RoutingSpec",
    "SLOSpec",
    "Seed",
    "ServingSpec",
    "SpeculativeSpec",
    "Strict",
    "TopologySpec",
    "TraceArrival",
    "TraceSpec",
    "UniformLength",
    "WorkloadSpec",
    "keyed_error",
]
