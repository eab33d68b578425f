"""Serving-engine rules and launch configs: vLLM, SGLang, TensorRT-LLM (docs/planner.md §5).

`verdict(engine, layout, model, a2a)` says whether one engine can run a layout as ONE server
launch, and if not, which rule it breaks (one line, with the numbers). `launch_config` writes
the command line (and TensorRT-LLM's extra_llm_api_options YAML) for a layout an engine can
express; `disaggregated_launch` writes both pools' servers and the router (KV over NIXL in
every engine).

One module per engine (vllm, sglang, trtllm), each an `Engine` (base.py): its rules, its
server command, its disaggregated deployment; its docstring lists the flags it emits and
where they are documented. common.py holds what the engines derive the same way; launch.py
the registry and the functions the planner calls. A new engine is one module with an
`Engine` subclass, registered in launch.ENGINES.
"""

from clustersim.planner.engines.base import Engine, LaunchConfig, Pools, Verdict, format_command
from clustersim.planner.engines.common import is_dp_attention, moe_tp_of
from clustersim.planner.engines.eplb import StepTime
from clustersim.planner.engines.launch import (
    ENGINES,
    disagg_verdict,
    disaggregated_launch,
    launch_config,
    pool_verdict,
    verdict,
    verdicts,
)

__all__ = [
    "ENGINES",
    "Engine",
    "LaunchConfig",
    "Pools",
    "StepTime",
    "Verdict",
    "disagg_verdict",
    "disaggregated_launch",
    "format_command",
    "is_dp_attention",
    "launch_config",
    "moe_tp_of",
    "pool_verdict",
    "verdict",
    "verdicts",
]
