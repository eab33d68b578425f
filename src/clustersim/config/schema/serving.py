"""How the model is deployed: parallel layout, precision, serving engine knobs, MoE expert
routing and EPLB, and prefill / decode disaggregation pools."""

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    Field,
    SerializerFunctionWrapHandler,
    model_serializer,
    model_validator,
)

from clustersim.config.schema.base import (
    BandwidthGBps,
    DType,
    Fraction,
    NonNegFloat,
    NonNegInt,
    PosFloat,
    PosInt,
    Strict,
    keyed_error,
    omit_when,
)
from clustersim.config.schema.speculative import SpeculativeSpec


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


RouterName = Literal[
    "round_robin",
    "random",
    "least_outstanding",
    "least_kv",
    "power_of_two",
    "cache_aware",
    "session_affinity",
    "kv_aware",
]


class RouterOptions(Strict):
    """Knobs of the prefix-aware routers (docs/prefix_caching.md), named as the engines do.

    cache_aware (SGLang router): the load is imbalanced when max − min outstanding >
    balance_abs_threshold and max > balance_rel_threshold · min (then the least loaded wins);
    otherwise the longest prefix match wins if it covers more than cache_threshold of the
    request, else the replica with the smallest cache. kv_aware (Dynamo KV router): cost =
    overlap_score_weight · prefill blocks still to compute + active KV blocks, lowest wins."""

    cache_threshold: Annotated[float, Field(ge=0, le=1)] = 0.5
    balance_abs_threshold: NonNegInt = 32
    balance_rel_threshold: PosFloat = 1.0001
    overlap_score_weight: NonNegFloat = 1.0


class PrefixCachingSpec(Strict):
    """Prefix caching (docs/prefix_caching.md): a radix/LRU cache of full prompt blocks inside
    each lane's paged KV pool; prefill computes only the uncached suffix. Optional host tier:
    evicted blocks move to `host_memory_GB` of host memory per GPU (1e9 bytes) and are copied
    back at `host_bandwidth_GBps` (per GPU, PCIe) before the prefill that reuses them."""

    enabled: bool = True
    host_memory_GB: Annotated[float, Field(ge=0, le=1e6)] = 0.0
    host_bandwidth_GBps: BandwidthGBps = 50.0


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


# Largest what-if value of an engine knob: bytes thresholds up to 1 TB, everything else
# (kernel counts, a graph batch, µs, ms) up to 10⁶; beyond is a typo that would make a step
# outlast any horizon.
MAX_KNOB = {"oneshot_max_bytes": 1e12, "twoshot_max_bytes": 1e12}
MAX_KNOB_DEFAULT = 1e6


def _check_knobs(knobs: dict[str, float]) -> dict[str, float]:
    for name, value in knobs.items():
        limit = MAX_KNOB.get(name, MAX_KNOB_DEFAULT)
        if value > limit:
            raise ValueError(f"{name}: expected a number <= {limit:g} (got {value:g})")
    return knobs


EngineOverrides = Annotated[dict[EngineKnob, NonNegFloat], AfterValidator(_check_knobs)]


class ServingSpec(Strict):
    # the serving engine whose kernel counts, CUDA graphs, host time and all-reduce choice the
    # cost model uses (catalog/engines.py); cuda_graphs: false runs every step eagerly
    engine: EngineName = "vllm"
    cuda_graphs: bool = True
    # what-if values for the engine profile's numbers, e.g. {host_seq_us: 5} (units in names)
    engine_overrides: EngineOverrides = Field(default_factory=dict)
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
    # speculative decoding / MTP (config/schema/speculative.py); None: one token per step
    speculative: SpeculativeSpec | None = None
    # prefix-aware routers' knobs (None: their defaults) and prefix caching (None: off)
    router_options: RouterOptions | None = None
    prefix_caching: PrefixCachingSpec | None = None

    @property
    def prefix_caching_on(self) -> bool:
        return self.prefix_caching is not None and self.prefix_caching.enabled

    @model_validator(mode="after")
    def _check_prefix_caching(self) -> "ServingSpec":
        if self.router in ("cache_aware", "kv_aware") and not self.prefix_caching_on:
            raise keyed_error(
                "router",
                f"router {self.router} routes by the replicas' prefix caches: set "
                f"serving.prefix_caching: {{enabled: true}}",
            )
        return self

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return omit_when(handler(self), speculative=None, router_options=None, prefix_caching=None)


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
    engine_overrides: EngineOverrides | None = None
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
    speculative: SpeculativeSpec | None = None
    router_options: RouterOptions | None = None
    prefix_caching: PrefixCachingSpec | None = None

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return omit_when(handler(self), speculative=None, router_options=None, prefix_caching=None)


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
