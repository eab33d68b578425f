"""Typed, frozen schema of every user-facing file (DESIGN.md §2).

These pydantic models are the contract between config loading and everything downstream:
build, simulate, metrics and results read only these objects. Units are in field names
(`_s` seconds, `_GBps` 1e9 bytes/s per direction, `_GiB` 2**30 bytes, `_us` microseconds).
Every model forbids unknown keys so a typo is reported, never ignored.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

DType = Literal["bf16", "fp16", "fp8", "fp4"]
DTYPE_BYTES: dict[str, float] = {"bf16": 2.0, "fp16": 2.0, "fp8": 1.0, "fp4": 0.5}

# Counts (layers, tokens, sequences, GPUs, requests) above MAX_COUNT are typos, not inputs: they
# would overflow int64 arrays downstream. Seeds are the exception (any 64-bit value).
MAX_COUNT = 2**31 - 1
MAX_NAME_CHARS = 255  # an experiment's name becomes a directory name
PosInt = Annotated[int, Field(gt=0, le=MAX_COUNT)]
NonNegInt = Annotated[int, Field(ge=0, le=MAX_COUNT)]
Seed = Annotated[int, Field(ge=0, lt=2**63)]
PosFloat = Annotated[float, Field(gt=0)]
NonNegFloat = Annotated[float, Field(ge=0)]
Fraction = Annotated[float, Field(gt=0, le=1)]


def keyed_error(key: str, message: str) -> PydanticCustomError:
    """A cross-field error reported at `key` (dotted, relative to the model that raises it),
    so the one-line message names the key path, not just the section."""
    return PydanticCustomError(
        "keyed_value_error", message.replace("{", "(").replace("}", ")"), {"key": key}
    )


class Strict(BaseModel):
    """Base: unknown keys rejected, instances immutable, numbers finite (no inf / NaN), strict
    types (no `true` → 1, no `'7'` → 7; an int is accepted where a float is expected)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, strict=True)


# --------------------------------------------------------------------------- model


class ModelSpec(Strict):
    """Transformer architecture, HuggingFace-config compatible field meanings.

    Dense layers use `intermediate_size`; MoE layers use `num_experts` routed experts of
    `moe_intermediate_size` each (top `experts_per_token`) plus `num_shared_experts` shared
    experts of the same size. The first `first_dense_layers` layers are dense.
    MLA (DeepSeek) is on when `kv_lora_rank > 0`: the KV cache per token per layer is
    (kv_lora_rank + qk_rope_head_dim) elements instead of 2 × num_kv_heads × head_dim.
    """

    name: str
    hf_id: str = ""
    num_layers: PosInt
    hidden_size: PosInt
    num_attention_heads: PosInt
    num_kv_heads: PosInt
    head_dim: PosInt
    intermediate_size: PosInt
    vocab_size: PosInt
    tie_word_embeddings: bool = False
    max_context: PosInt = 131072
    # MoE
    num_experts: NonNegInt = 0
    experts_per_token: NonNegInt = 0
    num_shared_experts: NonNegInt = 0
    moe_intermediate_size: NonNegInt = 0
    first_dense_layers: NonNegInt = 0
    # MLA
    q_lora_rank: NonNegInt = 0
    kv_lora_rank: NonNegInt = 0
    qk_rope_head_dim: NonNegInt = 0
    qk_nope_head_dim: NonNegInt = 0
    v_head_dim: NonNegInt = 0

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0

    @property
    def uses_mla(self) -> bool:
        return self.kv_lora_rank > 0

    @property
    def num_moe_layers(self) -> int:
        return self.num_layers - self.first_dense_layers if self.is_moe else 0

    @model_validator(mode="after")
    def _check_moe_and_heads(self) -> ModelSpec:
        if self.num_attention_heads % self.num_kv_heads != 0:
            raise ValueError(
                f"num_attention_heads ({self.num_attention_heads}) must be a multiple of "
                f"num_kv_heads ({self.num_kv_heads})"
            )
        if self.is_moe:
            if not 0 < self.experts_per_token <= self.num_experts:
                raise ValueError(
                    f"experts_per_token must be in 1..num_experts ({self.num_experts}), "
                    f"got {self.experts_per_token}"
                )
            if self.moe_intermediate_size <= 0:
                raise ValueError("an MoE model needs moe_intermediate_size > 0")
            if self.first_dense_layers >= self.num_layers:
                raise ValueError("first_dense_layers must be below num_layers")
        return self


# --------------------------------------------------------------------------- hardware


class HardwareSpec(Strict):
    """One GPU: published peaks plus calibrated efficiencies (see docs/calibration.md).

    `peak_tflops` are dense (non-sparse) figures per dtype; a dtype missing from the map is not
    supported by the tensor cores and falls back to the next wider one.
    """

    name: str
    memory_GiB: PosFloat  # usable device memory as the driver reports it
    hbm_bandwidth_GBps: PosFloat
    peak_tflops: dict[DType, PosFloat]
    sm_count: PosInt = 132  # streaming multiprocessors (data sheet)
    nvls: bool = False  # NVSwitch with NVLink SHARP (in-switch all-reduce): Hopper and later
    nvlink_bandwidth_GBps: NonNegFloat = 0.0  # per direction per GPU; 0 = no NVLink
    pcie_bandwidth_GBps: PosFloat = 64.0  # per direction (Gen5 x16 ≈ 64)
    matmul_efficiency: Fraction = 0.7  # achieved / peak on large GEMMs
    # GEMM rows (tokens) at which matmul efficiency is half of matmul_efficiency:
    # eff(M) = matmul_efficiency · M / (M + matmul_half_tokens)
    matmul_half_tokens: NonNegFloat = 16.0
    attention_efficiency: Fraction = 0.5  # achieved / peak for prefill attention FLOPs
    hbm_efficiency: Fraction = 0.8  # achieved / peak HBM bandwidth on streaming reads
    # achieved / peak HBM bandwidth of MoE grouped GEMMs streaming expert weights
    grouped_gemm_hbm_efficiency: Fraction = 0.8
    # achieved / peak HBM bandwidth of the decode-attention KV read (None = hbm_efficiency)
    decode_attention_efficiency: Fraction | None = None
    # fixed GPU time per decoding sequence per layer, beyond its KV read (paged-KV append,
    # block-table walk, Q / output handling of the generation attention path)
    decode_seq_overhead_us: NonNegFloat = 0.0
    # GPU-side fixed time per engine step outside the layers' kernels: input copies, graph
    # replay start, the sampling tail (host time is the engine profile's, catalog/engines.py)
    step_overhead_us: NonNegFloat = 30.0
    # least GPU time of one kernel, back to back in a stream or graph (launch gap, prologue,
    # one wave, tail): a layer's kernel costs max(roofline, this) (docs/cost_model.md §6)
    kernel_floor_us: NonNegFloat = 3.0
    # FlashMLA-style absorbed MLA decode attention: achieved / peak tensor-core rate (its FLOPs
    # per KV byte are high enough that decode attention can be compute-bound)
    mla_decode_efficiency: Fraction = 0.6
    reserved_memory_GiB: NonNegFloat = 1.0  # CUDA context, NCCL buffers: never usable


# --------------------------------------------------------------------------- topology


class NVLinkSpec(Strict):
    domain: str = "node"  # "node" or "rack(N)": N GPUs share one NVSwitch fabric
    bandwidth_GBps: PosFloat = 450.0  # per direction per GPU
    latency_us: NonNegFloat = 2.0

    @model_validator(mode="after")
    def _check_domain(self) -> NVLinkSpec:
        d = self.domain
        ok = d == "node" or (
            d.startswith("rack(") and d.endswith(")") and d[5:-1].isdigit() and int(d[5:-1]) > 0
        )
        if not ok:
            raise ValueError(f"domain must be 'node' or 'rack(N)', got {d!r}")
        return self

    @property
    def rack_size(self) -> int | None:
        return int(self.domain[5:-1]) if self.domain.startswith("rack(") else None


class NetworkSpec(Strict):
    kind: Literal["infiniband", "roce", "ethernet"] = "infiniband"
    nics_per_node: PosInt = 8
    bandwidth_GBps: PosFloat = 50.0  # per NIC per direction
    latency_us: NonNegFloat = 5.0
    fabric: Literal["fat_tree"] = "fat_tree"
    oversubscription: Annotated[float, Field(ge=1.0)] = 1.0  # leaf down : up bandwidth
    nodes_per_leaf: PosInt = 4


class PCIeSpec(Strict):
    bandwidth_GBps: PosFloat = 32.0  # per direction per GPU to the host switch
    latency_us: NonNegFloat = 5.0


class TopologySpec(Strict):
    name: str
    nodes: PosInt
    gpus_per_node: PosInt
    gpu: str  # hardware profile name
    nvlink: NVLinkSpec | None = None  # None = PCIe-only hosts
    network: NetworkSpec | None = None  # None allowed only for nodes == 1
    pcie: PCIeSpec = PCIeSpec()

    @property
    def num_gpus(self) -> int:
        return self.nodes * self.gpus_per_node

    @model_validator(mode="after")
    def _check_network(self) -> TopologySpec:
        if self.nodes > 1 and self.network is None:
            raise ValueError(f"{self.nodes} nodes need a network: block")
        rack = self.nvlink.rack_size if self.nvlink else None
        if rack is not None and rack % self.gpus_per_node != 0:
            raise ValueError(
                f"nvlink rack({rack}) must be a multiple of gpus_per_node ({self.gpus_per_node})"
            )
        nics = self.network.nics_per_node if self.network is not None else 0
        if nics > self.gpus_per_node and nics % self.gpus_per_node != 0:
            # more NICs than GPUs are merged, k per GPU rail: k must be a whole number
            raise keyed_error(
                "network.nics_per_node",
                f"expected at most gpus_per_node ({self.gpus_per_node}) or a multiple of it "
                f"(got {nics})",
            )
        return self


# --------------------------------------------------------------------------- experiment


class Layout(Strict):
    tp: PosInt = 1
    pp: PosInt = 1
    dp: PosInt = 1
    ep: PosInt = 1  # 1 = dense / experts replicated per TP group
    cp: PosInt = 1
    moe_tp: PosInt | None = None  # TensorRT-LLM split: moe_tp × moe_ep == tp (issue 3)
    dp_attention: bool = False  # DeepSeek style: attention per DP rank, experts over EP

    @property
    def gpus(self) -> int:
        """GPUs used by the whole layout: TP × PP × CP per replica, DP replicas."""
        return self.tp * self.pp * self.cp * self.dp


class Precision(Strict):
    weights: DType = "bf16"
    activations: DType = "bf16"
    kv_cache: DType = "bf16"
    dispatch: DType = "fp8"
    combine: DType = "bf16"


RouterName = Literal["round_robin", "random", "least_outstanding", "least_kv", "power_of_two"]


EngineName = Literal["vllm", "sglang", "trtllm"]
# numeric fields of an engine profile (catalog/engines.py) an experiment may override
EngineKnob = Literal[
    "elementwise_kernels",
    "fp8_quant_kernels",
    "attention_kernels",
    "moe_kernels",
    "step_kernels",
    "graph_max_batch",
    "eager_launch_us",
    "host_step_us",
    "host_seq_us",
    "stream_step_us",
    "stream_seq_us",
    "frontend_ms",
    "oneshot_max_bytes",
    "twoshot_max_bytes",
]


class ServingSpec(Strict):
    # the serving engine whose kernel counts, CUDA graphs, host time and all-reduce choice the
    # cost model uses (catalog/engines.py); cuda_graphs: false runs every step eagerly
    engine: EngineName = "vllm"
    cuda_graphs: bool = True
    # what-if values for the engine profile's numbers, e.g. {host_seq_us: 5} (units in names)
    engine_overrides: dict[EngineKnob, NonNegFloat] = Field(default_factory=dict)
    # responses stream token by token to clients (online serving); false for offline batch
    # benchmarks (trtllm-bench, vLLM's benchmark_throughput), which skip the streaming path
    streaming: bool = True
    max_num_seqs: PosInt = 256
    max_num_batched_tokens: PosInt = 8192
    chunked_prefill: bool = True
    gpu_memory_utilization: Fraction = 0.90
    router: RouterName = "least_outstanding"
    block_size: PosInt = 16  # tokens per paged-KV block
    max_model_len: PosInt | None = None  # None = the model's max_context
    max_queue: PosInt | None = None  # per replica waiting queue; beyond it requests drop
    # TensorRT-LLM's kv_cache_free_gpu_mem_fraction: when set, the KV cache gets this share of
    # the memory FREE after weights, activations and reserved memory (per GPU), and
    # gpu_memory_utilization is not used. None = vLLM's rule (share of total memory).
    kv_cache_free_memory_fraction: Fraction | None = None
    # incremental: vLLM-style paged KV, blocks allocated as tokens are written, preemption by
    # recompute when full. reserve_full: TensorRT-LLM GUARANTEED_NO_EVICT, a request is
    # admitted only when blocks for prompt + output are free, reserved until it finishes.
    kv_admission: Literal["incremental", "reserve_full"] = "incremental"


class RoutingSpec(Strict):
    distribution: Literal["uniform", "zipf", "dirichlet", "trace"] = "uniform"
    skew: NonNegFloat = 0.0  # zipf exponent
    concentration: PosFloat = 1.0  # dirichlet alpha
    path: str | None = None  # per-layer popularity table for "trace"
    drift_interval_s: NonNegFloat = 0.0  # 0 = hot set fixed
    drift_on_phase_change: bool = False  # also redraw the hot set when the MMPP state changes


class EPLBSpec(Strict):
    redundant_experts: NonNegInt = 0
    rebalance_interval_s: NonNegFloat = 0.0  # 0 = never rebalance
    algorithm: Literal["greedy", "hierarchical"] = "greedy"
    # hierarchical only: expert groups packed whole onto nodes (DeepSeek-V3 n_group = 8);
    # None = one group per node of the EP group
    expert_groups: PosInt | None = None


class ExpertsSpec(Strict):
    routing: RoutingSpec = RoutingSpec()
    eplb: EPLBSpec | None = None
    two_batch_overlap: bool = False


class PoolServing(Strict):
    """A disaggregated pool's serving knobs: every key is optional and, when set, overrides
    the experiment's `serving` value for that pool (None = inherit). The same keys as
    ServingSpec (tests/test_disagg.py checks the two stay in step)."""

    engine: EngineName | None = None
    cuda_graphs: bool | None = None
    engine_overrides: dict[EngineKnob, NonNegFloat] | None = None
    streaming: bool | None = None
    max_num_seqs: PosInt | None = None
    max_num_batched_tokens: PosInt | None = None
    chunked_prefill: bool | None = None
    gpu_memory_utilization: Fraction | None = None
    router: RouterName | None = None
    block_size: PosInt | None = None
    max_model_len: PosInt | None = None
    max_queue: PosInt | None = None
    kv_cache_free_memory_fraction: Fraction | None = None
    kv_admission: Literal["incremental", "reserve_full"] | None = None


class PoolSpec(Strict):
    """One pool of a disaggregated deployment: its layout (replicas = layout.dp), serving
    overrides and, optionally, its own `experts` block (None = the experiment's)."""

    layout: Layout = Layout()
    serving: PoolServing = PoolServing()
    experts: ExpertsSpec | None = None


class DisaggregationSpec(Strict):
    """Prefill / decode disaggregation (docs/disaggregation.md): prompts are prefilled on the
    `prefill` pool, their KV cache moves over the fabric to the `decode` pool, which decodes.
    When set, the experiment's top-level `layout` is not used."""

    prefill: PoolSpec
    decode: PoolSpec


class PoissonArrival(Strict):
    process: Literal["poisson"]
    rate_rps: PosFloat


class GammaArrival(Strict):
    process: Literal["gamma"]
    rate_rps: PosFloat
    cv: PosFloat  # coefficient of variation of inter-arrival times; 1 = Poisson


class MMPPArrival(Strict):
    process: Literal["mmpp"]
    rates_rps: list[NonNegFloat] = Field(min_length=2)
    mean_dwell_s: list[PosFloat] = Field(min_length=2)

    @model_validator(mode="after")
    def _check_lengths(self) -> MMPPArrival:
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
    PoissonArrival | GammaArrival | MMPPArrival | BurstArrival | ClosedArrival | TraceArrival,
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
    def _check_range(self) -> UniformLength:
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
    def _check_range(self) -> LognormalLength:
        if self.max is not None and self.max < self.min:
            raise keyed_error("max", f"expected max >= min ({self.min}) (got {self.max})")
        return self


class EmpiricalLength(Strict):
    dist: Literal["empirical"]
    values: list[PosInt] = Field(min_length=1)
    weights: list[NonNegFloat] | None = None

    @model_validator(mode="after")
    def _check_weights(self) -> EmpiricalLength:
        if self.weights is not None:
            if len(self.weights) != len(self.values):
                raise ValueError("weights must have as many entries as values")
            if sum(self.weights) <= 0:
                raise ValueError("weights must not all be zero")
        return self


LengthSpec = Annotated[
    FixedLength | UniformLength | LognormalLength | EmpiricalLength,
    Field(discriminator="dist"),
]


class TraceSpec(Strict):
    path: str  # resolved relative to the workload file (or experiment, if inline)
    format: Literal["azure"] = "azure"
    time_scale: PosFloat = 1.0  # multiply inter-arrival gaps: 0.5 = twice the rate
    use_lengths: bool = True  # take prompt/output lengths from the trace


class WorkloadSpec(Strict):
    name: str = "workload"
    arrival: ArrivalSpec
    prompt_tokens: LengthSpec | None = None
    output_tokens: LengthSpec | None = None
    trace: TraceSpec | None = None

    @model_validator(mode="after")
    def _check_sources(self) -> WorkloadSpec:
        if self.arrival.process == "trace" and self.trace is None:
            raise ValueError("arrival process 'trace' needs a trace: block")
        lengths_from_trace = self.trace is not None and self.trace.use_lengths
        if not lengths_from_trace and (self.prompt_tokens is None or self.output_tokens is None):
            raise ValueError("prompt_tokens and output_tokens are required without a trace")
        return self


class HorizonSpec(Strict):
    duration_s: PosFloat | None = None
    requests: PosInt | None = None
    warmup_s: NonNegFloat = 0.0  # requests arriving before this are excluded from statistics

    @model_validator(mode="after")
    def _one_bound(self) -> HorizonSpec:
        if (self.duration_s is None) == (self.requests is None):
            raise ValueError("give exactly one of duration_s or requests")
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
    replicates: PosInt = 1  # independent seeds derived from `seed` (metrics/replicates.py)
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
    base_dir: str = "."  # directory relative paths in the experiment resolve against

    @model_validator(mode="after")
    def _check_cross_fields(self) -> Experiment:
        """Checks across sections, each reported at the key the user should change."""
        if self.workload.arrival.process == "burst" and self.horizon.duration_s is not None:
            raise keyed_error(
                "horizon.duration_s",
                "burst arrivals (all at t = 0) need horizon.requests, not a duration",
            )
        limit = self.serving.max_model_len
        if limit is not None and limit > self.model.max_context:
            raise keyed_error(
                "serving.max_model_len",
                f"expected at most the model's context ({self.model.max_context} tokens) "
                f"(got {limit})",
            )
        return self
