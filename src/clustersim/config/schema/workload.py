"""The offered load: arrival processes, length distributions and traces (`workload:`)."""

import math
from typing import Annotated, Any, Literal

from pydantic import Field, SerializerFunctionWrapHandler, model_serializer, model_validator

from clustersim.config.schema.base import (
    NonNegFloat,
    PosFloat,
    PosInt,
    Strict,
    keyed_error,
    omit_when,
)
from clustersim.config.schema.sessions import SessionsArrival, SessionsSpec

# Generous physical ranges: outside them a value is a typo, and the arrival generators would
# divide by zero, overflow numpy's Poisson sampler, or loop over billions of periods.
MAX_RATE_RPS = 1e7  # requests per second
Rate = Annotated[float, Field(gt=0, le=MAX_RATE_RPS)]
Dwell = Annotated[float, Field(ge=1e-3, le=1e7)]  # seconds in one MMPP state, on average
CV = Annotated[float, Field(ge=0.01, le=100)]  # of inter-arrival gaps


class PoissonArrival(Strict):
    process: Literal["poisson"]
    rate_rps: Rate


class GammaArrival(Strict):
    process: Literal["gamma"]
    rate_rps: Rate
    cv: CV  # coefficient of variation of inter-arrival times; 1 = Poisson


class MMPPArrival(Strict):
    process: Literal["mmpp"]
    rates_rps: list[Annotated[float, Field(ge=0, le=MAX_RATE_RPS)]] = Field(min_length=2)
    mean_dwell_s: list[Dwell] = Field(min_length=2)

    @model_validator(mode="after")
    def _check_lengths(self) -> "MMPPArrival":
        if len(self.rates_rps) != len(self.mean_dwell_s):
            raise ValueError("rates_rps and mean_dwell_s must have the same length")
        if max(self.rates_rps) <= 0:
            raise ValueError("at least one of rates_rps must be > 0")
        return self


class BurstArrival(Strict):
    process: Literal["burst"]  # every request arrives at t = 0


class ClosedArrival(Strict):
    process: Literal["closed"]
    concurrency: PosInt  # requests in flight; a new one starts as one ends


class TraceArrival(Strict):
    process: Literal["trace"]  # arrival times come from workload.trace


ArrivalSpec = Annotated[
    PoissonArrival
    | GammaArrival
    | MMPPArrival
    | BurstArrival
    | ClosedArrival
    | TraceArrival
    | SessionsArrival,
    Field(discriminator="process"),
]


class FixedLength(Strict):
    dist: Literal["fixed"]
    value: PosInt


class UniformLength(Strict):
    dist: Literal["uniform"]
    min: PosInt
    max: PosInt

    @model_validator(mode="after")
    def _check_range(self) -> "UniformLength":
        if self.max < self.min:
            raise ValueError(f"max ({self.max}) must be >= min ({self.min})")
        return self


class LognormalLength(Strict):
    dist: Literal["lognormal"]
    median: PosFloat
    sigma: NonNegFloat
    min: PosInt = 1
    max: PosInt | None = None

    @model_validator(mode="after")
    def _check_range(self) -> "LognormalLength":
        if self.max is not None and self.max < self.min:
            raise keyed_error("max", f"expected max >= min ({self.min}) (got {self.max})")
        return self


class EmpiricalLength(Strict):
    dist: Literal["empirical"]
    values: list[PosInt] = Field(min_length=1)
    weights: list[NonNegFloat] | None = None

    @model_validator(mode="after")
    def _check_weights(self) -> "EmpiricalLength":
        if self.weights is not None:
            if len(self.weights) != len(self.values):
                raise ValueError("weights must have as many entries as values")
            if sum(self.weights) <= 0:
                raise ValueError("weights must not all be zero")
            if not math.isfinite(sum(self.weights)):
                raise ValueError("weights must sum to a finite number (they are relative)")
        return self


LengthSpec = Annotated[
    FixedLength | UniformLength | LognormalLength | EmpiricalLength,
    Field(discriminator="dist"),
]


class TraceSpec(Strict):
    path: str  # resolved relative to the workload file (or experiment, if inline)
    format: Literal["azure", "mooncake"] = "azure"  # mooncake: JSON lines with hash_ids
    time_scale: PosFloat = 1.0  # multiply inter-arrival gaps: 0.5 = twice the rate
    use_lengths: bool = True  # take prompt/output lengths from the trace


class WorkloadSpec(Strict):
    name: str = "workload"
    arrival: ArrivalSpec
    prompt_tokens: LengthSpec | None = None
    output_tokens: LengthSpec | None = None
    trace: TraceSpec | None = None
    sessions: SessionsSpec | None = None  # with arrival process `sessions`

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return omit_when(handler(self), sessions=None)

    @model_validator(mode="after")
    def _check_sources(self) -> "WorkloadSpec":
        if self.arrival.process == "trace" and self.trace is None:
            raise ValueError("arrival process 'trace' needs a trace: block")
        if (self.arrival.process == "sessions") != (self.sessions is not None):
            raise keyed_error(
                "sessions", "arrival process 'sessions' and a sessions: block go together"
            )
        if self.sessions is not None:
            return self  # sessions draw their own lengths
        lengths_from_trace = self.trace is not None and self.trace.use_lengths
        if not lengths_from_trace and (self.prompt_tokens is None or self.output_tokens is None):
            raise ValueError("prompt_tokens and output_tokens are required without a trace")
        return self
