"""Parameter counts, memory plan and roofline step-time model (docs/cost_model.md)."""

from clustersim.model.attention_cost import causal_pairs
from clustersim.model.kernels import (
    DEFAULT_MATMUL_HALF_TOKENS,
    attention_dtype,
    matmul_dtype,
    peak_flops,
)
from clustersim.model.memory import (
    MemoryPlan,
    StageMemory,
    plan_memory,
    stage_activation_bytes,
    stage_layer_counts,
    stage_layer_ranges,
    stage_weight_bytes,
)
from clustersim.model.moe_cost import MoECoefficients
from clustersim.model.params import (
    ExpertSharding,
    ParamCounts,
    active_params,
    expert_sharding,
    kv_bytes_per_token,
    kv_elements_per_token_per_layer,
    param_counts,
    residual_bytes,
    total_params,
    weight_bytes,
)
from clustersim.model.stage_cost import StageCostModel

__all__ = [
    "DEFAULT_MATMUL_HALF_TOKENS",
    "ExpertSharding",
    "MemoryPlan",
    "MoECoefficients",
    "ParamCounts",
    "StageCostModel",
    "StageMemory",
    "active_params",
    "attention_dtype",
    "causal_pairs",
    "expert_sharding",
    "kv_bytes_per_token",
    "kv_elements_per_token_per_layer",
    "matmul_dtype",
    "param_counts",
    "peak_flops",
    "plan_memory",
    "residual_bytes",
    "stage_activation_bytes",
    "stage_layer_counts",
    "stage_layer_ranges",
    "stage_weight_bytes",
    "total_params",
    "weight_bytes",
]
