"""The engines by name, and what the planner asks of them: a verdict on a layout (co-located,
one pool, or both pools of a disaggregated deployment) and its launch config."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from clustersim.config.schema import Experiment, Layout, ModelSpec
from clustersim.model.memory import MemoryPlan
from clustersim.planner.engines.base import (
    DECODE_PORT,
    PREFILL_PORT,
    Engine,
    LaunchConfig,
    Pools,
    PoolSite,
    Verdict,
)
from clustersim.planner.engines.common import common_notes
from clustersim.planner.engines.eplb import StepTime
from clustersim.planner.engines.nearest import describe, nearest_layout
from clustersim.planner.engines.sglang import SGLang
from clustersim.planner.engines.trtllm import TensorRTLLM
from clustersim.planner.engines.vllm import VLLM

ENGINES: dict[str, Engine] = {e.name: e for e in (VLLM(), SGLang(), TensorRTLLM())}


def verdict(engine: str, layout: Layout, model: ModelSpec, a2a_backend: str = "auto") -> Verdict:
    """Can `engine` express `layout` for `model` as one server launch?"""
    return ENGINES[engine].verdict(layout, model, a2a_backend)


def verdicts(
    engines: Sequence[str], layout: Layout, model: ModelSpec, a2a: str = "auto"
) -> dict[str, Verdict]:
    return {e: verdict(e, layout, model, a2a) for e in engines}


def pool_verdict(
    engine: str, role: str, layout: Layout, model: ModelSpec, a2a_backend: str = "auto"
) -> Verdict:
    """Can `engine` serve one pool (`role` prefill | decode) of a disaggregated deployment?
    As a co-located server (`verdict`) unless the engine runs pools differently."""
    return ENGINES[engine].pool_verdict(layout, model, a2a_backend)


def disagg_verdict(
    engine: str, prefill: Layout, decode: Layout, model: ModelSpec, a2a_backend: str = "auto"
) -> Verdict:
    """Both pools must be expressible: the first pool rule broken, prefixed with the pool."""
    for role, layout in (("prefill", prefill), ("decode", decode)):
        v = pool_verdict(engine, role, layout, model, a2a_backend)
        if not v.ok:
            return Verdict(engine, False, f"{role} pool: {v.rule}", v.workaround)
    return Verdict(engine, True)


def launch_config(
    engine: str,
    exp: Experiment,
    memory: MemoryPlan,
    label: str,
    a2a_backend: str = "auto",
    step: StepTime | None = None,
) -> LaunchConfig:
    """The launch config of `exp` (its layout) for `engine`, or the rule that prevents it and
    the nearest layout the engine can express. `step`: the layout's mean step time, which
    converts the EPLB rebalance interval to engine steps."""
    eng = ENGINES[engine]
    v = eng.verdict(exp.layout, exp.model, a2a_backend)
    if not v.ok:
        alt = nearest_layout(
            exp.layout,
            exp.model,
            lambda lay: eng.verdict(lay, exp.model, a2a_backend).ok,
            exp.topology.gpus_per_node,
        )
        return LaunchConfig(engine, label, False, v.rule, v.workaround, nearest=_offer(alt))
    argv, files, notes = eng.server(exp, memory, label, a2a_backend, step)
    notes = [*notes, *common_notes(exp, engine)]
    return LaunchConfig(engine, label, True, argv=tuple(argv), files=files, notes=tuple(notes))


def disaggregated_launch(
    engine: str, label: str, pools: Pools, a2a_backend: str = "auto"
) -> LaunchConfig:
    """Launch config of a disaggregated deployment for `engine`: both pools' servers and the
    router, or the rule one pool breaks and the nearest pool layout the engine can express."""
    (pf, _), (dc, _) = pools.views
    v = disagg_verdict(engine, pf.layout, dc.layout, pf.model, a2a_backend)
    if not v.ok:
        return LaunchConfig(
            engine,
            label,
            False,
            v.rule,
            v.workaround,
            nearest=_nearest_pool(engine, pools, a2a_backend),
        )
    shared = pf.layout.gpus + dc.layout.gpus <= pf.topology.gpus_per_node
    commands, files, notes = ENGINES[engine].disaggregated(
        pools, _pool_sites(pf.layout.gpus, shared), a2a_backend
    )
    if not shared:
        notes.append(
            "replace <prefill-host> / <decode-host> with the address of each pool's first "
            "node (prefill pool on the first GPUs of the topology, decode pool after it)"
        )
    notes += common_notes(pf, engine)
    return LaunchConfig(
        engine, label, True, files=files, notes=tuple(notes), commands=tuple(commands)
    )


def _offer(layout: Layout | None) -> str:
    if layout is None:
        return ""
    return f"{describe(layout)} (same {layout.gpus} GPUs; engine rules only, not simulated)"


def _nearest_pool(engine: str, pools: Pools, a2a: str) -> str:
    """The nearest layout of the first pool the engine cannot serve, named with its pool."""
    eng = ENGINES[engine]
    for role, (exp, _) in zip(("prefill", "decode"), pools.views, strict=True):
        if eng.pool_verdict(exp.layout, exp.model, a2a).ok:
            continue
        alt = nearest_layout(
            exp.layout, exp.model, _pool_accepts(eng, exp.model, a2a), exp.topology.gpus_per_node
        )
        return f"{role} pool {_offer(alt)}" if alt is not None else ""
    return ""


def _pool_accepts(eng: Engine, model: ModelSpec, a2a: str) -> Callable[[Layout], bool]:
    return lambda lay: eng.pool_verdict(lay, model, a2a).ok


def _pool_sites(prefill_gpus: int, shared: bool) -> tuple[PoolSite, PoolSite]:
    """Where each pool listens. Placement: prefill on the first GPUs, then decode; `shared`:
    both pools fit on one node (localhost, the decode pool's GPUs after the prefill pool's)."""
    if shared:
        return (
            PoolSite("prefill", "127.0.0.1", PREFILL_PORT, 0),
            PoolSite("decode", "127.0.0.1", DECODE_PORT, prefill_gpus),
        )
    return (
        PoolSite("prefill", "<prefill-host>", PREFILL_PORT, None),
        PoolSite("decode", "<decode-host>", DECODE_PORT, None),
    )
