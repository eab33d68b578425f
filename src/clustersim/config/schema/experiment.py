"""A whole experiment: its sections plus horizon, SLO, output and limits."""

from typing import Annotated, Any

from pydantic import Field, SerializerFunctionWrapHandler, model_serializer, model_validator

from clustersim.config.schema.base import (
    MAX_NAME_CHARS,
    NonNegFloat,
    PosFloat,
    PosInt,
    Seed,
    Strict,
    keyed_error,
)
from clustersim.config.schema.faults import FaultsSpec
from clustersim.config.schema.hardware import HardwareSpec
from clustersim.config.schema.model import ModelSpec
from clustersim.config.schema.serving import (
    DisaggregationSpec,
    ExpertsSpec,
    Layout,
    Precision,
    ServingSpec,
)
from clustersim.config.schema.speculative import SpeculativeSpec
from clustersim.config.schema.topology import TopologySpec
from clustersim.config.schema.workload import WorkloadSpec

MAX_REPLICATES = 1000  # runs of one point; beyond is a typo (hours of runs at least)


class HorizonSpec(Strict):
    duration_s: PosFloat | None = None
    requests: PosInt | None = None
    warmup_s: NonNegFloat = 0.0  # requests arriving before this are excluded from statistics

    @model_validator(mode="after")
    def _one_bound(self) -> "HorizonSpec":
        if (self.duration_s is None) == (self.requests is None):
            raise ValueError("give exactly one of duration_s or requests")
        if self.duration_s is not None and self.warmup_s >= self.duration_s:
            raise keyed_error(
                "warmup_s",
                f"expected less than duration_s ({self.duration_s:g} s): nothing would be "
                f"measured (got {self.warmup_s:g})",
            )
        return self


class SLOSpec(Strict):
    ttft_p99_s: PosFloat | None = None  # a request meets the SLO if its TTFT <= this
    tpot_p99_s: PosFloat | None = None  # ... and its TPOT <= this
    e2e_p99_s: PosFloat | None = None
    # aggregate bounds on means (s), checked by `clustersim capacity` (docs/capacity.md)
    ttft_mean_s: PosFloat | None = None
    queue_mean_s: PosFloat | None = None  # mean wait before first scheduled


class OutputSpec(Strict):
    time_bin_s: PosFloat = 1.0  # link-utilisation / timeline bin width
    iterations: bool = True  # write iterations.parquet


class LimitsSpec(Strict):
    """What one run may cost before it is refused at load (config/limits.py); raise a limit
    with ``--set limits.<key>=N`` when the machine can take it."""

    max_requests: PosInt = 10_000_000  # requests one run generates (~1 KiB of state each)
    max_gpus: PosInt = 16_384  # GPUs in the topology graph
    max_time_bins: PosInt = 2_000_000  # horizon.duration_s / output.time_bin_s, per link
    max_sweep_points: PosInt = 10_000  # points of one sweep: block


class Experiment(Strict):
    """A fully resolved experiment: every reference replaced by its spec."""

    name: Annotated[str, Field(min_length=1, max_length=MAX_NAME_CHARS)]
    seed: Seed = 0
    # independent seeds derived from `seed` (metrics/replicates.py); each is a whole run
    replicates: Annotated[int, Field(gt=0, le=MAX_REPLICATES)] = 1
    model: ModelSpec
    hardware: HardwareSpec
    topology: TopologySpec
    layout: Layout = Layout()
    # prefill / decode pools on disjoint GPUs; when set, `layout` is ignored (None: co-located)
    disaggregation: DisaggregationSpec | None = None
    precision: Precision = Precision()
    serving: ServingSpec = ServingSpec()
    experts: ExpertsSpec | None = None
    workload: WorkloadSpec
    horizon: HorizonSpec
    slo: SLOSpec = SLOSpec()
    output: OutputSpec = OutputSpec()
    limits: LimitsSpec = LimitsSpec()
    faults: FaultsSpec | None = None  # degraded / failed hardware (docs/faults.md)
    base_dir: str = "."  # directory relative paths in the experiment resolve against

    @model_validator(mode="after")
    def _check_cross_fields(self) -> "Experiment":
        """Checks across sections, each reported at the key the user should change."""
        if self.workload.arrival.process == "burst" and self.horizon.duration_s is not None:
            raise keyed_error(
                "horizon.duration_s",
                "burst arrivals (all at t = 0) need horizon.requests, not a duration",
            )
        limits = [("serving.max_model_len", self.serving.max_model_len)]
        if self.disaggregation is not None:
            limits += [
                (f"disaggregation.{role}.serving.max_model_len", pool.serving.max_model_len)
                for role, pool in (
                    ("prefill", self.disaggregation.prefill),
                    ("decode", self.disaggregation.decode),
                )
            ]
        for key, limit in limits:
            if limit is not None and limit > self.model.max_context:
                raise keyed_error(
                    key,
                    f"expected at most the model's context ({self.model.max_context} tokens) "
                    f"(got {limit})",
                )
        self._check_speculative()
        return self

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """The MTP layer count is written only when speculative decoding uses it: without
        it a model runs and is written exactly as before the field existed."""
        data: dict[str, Any] = handler(self)
        model = data.get("model")
        if self.serving.speculative is None and isinstance(model, dict):
            model.pop("num_nextn_predict_layers", None)
        return data

    def _check_speculative(self) -> None:
        """serving.speculative (and each disaggregated pool's) against the model and the
        layout it runs on, each error at the key to change."""
        for spec_key, spec, layout_key, layout in self._speculative_uses():
            if spec.method == "mtp" and self.model.num_nextn_predict_layers < 1:
                raise keyed_error(
                    f"{spec_key}.method",
                    f"mtp needs a model with MTP layers (model {self.model.name} has "
                    "num_nextn_predict_layers: 0); use eagle or draft_model",
                )
            if layout.cp > 1:
                raise keyed_error(
                    f"{layout_key}.cp",
                    "serving.speculative is not simulated with context parallelism yet "
                    "(remove one)",
                )

    def _speculative_uses(self) -> list[tuple[str, SpeculativeSpec, str, Layout]]:
        """(key of the speculative spec, spec, key of the layout, layout) of each deployment
        that runs speculative decoding: the experiment, or each disaggregated pool (its own
        `serving.speculative`, else the experiment's)."""
        pools = self.disaggregation
        if pools is None:
            spec = self.serving.speculative
            return [] if spec is None else [("serving.speculative", spec, "layout", self.layout)]
        uses = []
        for role, pool in (("prefill", pools.prefill), ("decode", pools.decode)):
            own = pool.serving.speculative
            spec = own if own is not None else self.serving.speculative
            if spec is None:
                continue
            spec_key = (
                f"disaggregation.{role}.serving.speculative"
                if own is not None
                else "serving.speculative"
            )
            uses.append((spec_key, spec, f"disaggregation.{role}.layout", pool.layout))
        return uses
