"""Plan files: an experiment without a layout, plus a `plan:` block (docs/planner.md §1).

A plan file holds every key of an experiment file (model, hardware, topology, precision,
serving, experts, workload, horizon, slo, output, name, seed) — resolved by the experiment
loader exactly as `clustersim run` resolves them, so built-in names, paths and inline mappings
all work — except `layout:` (the planner chooses it) and `sweep:`. The `plan:` block says what
to search and what to emit:

```yaml
plan:
  engines: [vllm, sglang, trtllm]   # launch configs to emit; a layout no target engine can
                                    # express is rejected
  max_gpus: 16                      # default: every GPU of the topology
  allow_tp_across_nodes: false      # TP groups stay inside one NVLink domain
  candidates: {tp: [4, 8], pp: [1]} # optional filters (any axis; or layouts: [...])
  emit: best                        # best | all | [labels]
  disaggregation: auto              # off | also | only | auto (docs/planner.md §2b)
  pool_serving: {prefill: {max_num_batched_tokens: 16384}}   # per-pool serving overrides
```

Errors are ConfigErrors naming the plan file (or ``--set``) and the key path, one line.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, field_validator

from clustersim.config.errors import ConfigError, describe_validation_error, format_key, show_value
from clustersim.config.overrides import SET_FILE, Override, parse_override
from clustersim.config.schema import Experiment, Fraction, Layout, PoolServing, PosInt, Strict
from clustersim.config.yaml_files import load_raw_experiment

PLAN_KEY = "plan"
EngineName = Literal["vllm", "sglang", "trtllm"]
ENGINES: tuple[EngineName, ...] = ("vllm", "sglang", "trtllm")
A2ABackend = Literal["auto", "none", "deepep", "mooncake", "nixl"]
# off: co-located layouts only; also: co-located and disaggregated prefill / decode pools;
# only: disaggregated only; auto: `also` for an MoE model or a mean prompt ≥
# plan.disagg_prompt_tokens, else `off` (docs/planner.md §2b)
DisaggMode = Literal["auto", "off", "also", "only"]
_FORBIDDEN_KEYS = {
    "layout": "the planner chooses the layout; remove it (pin candidates with "
    "plan.candidates.layouts)",
    "sweep": "a plan file has no sweep: block (the planner searches layouts itself)",
    "disaggregation": "the planner chooses disaggregated prefill / decode pools itself "
    "(plan.disaggregation: also | only, plan.pool_serving); remove the disaggregation: block",
}


class CandidateFilter(Strict):
    """Optional filters on the enumerated layouts: a layout is kept when every given axis list
    contains its value. `layouts` (when given) replaces enumeration by exactly these layouts
    (each still checked against the model, topology, engines and memory)."""

    tp: list[PosInt] | None = None
    pp: list[PosInt] | None = None
    dp: list[PosInt] | None = None
    ep: list[PosInt] | None = None
    cp: list[PosInt] | None = None
    dp_attention: list[bool] | None = None
    gpus: list[PosInt] | None = None
    layouts: list[Layout] | None = None


class PoolServingOptions(Strict):
    """Serving overrides of the disaggregated pools (as `disaggregation.<pool>.serving` in an
    experiment: each key set overrides the experiment's `serving` value for that pool)."""

    prefill: PoolServing = PoolServing()
    decode: PoolServing = PoolServing()


class PlanOptions(Strict):
    """The `plan:` block."""

    engines: Annotated[list[EngineName], Field(min_length=1)] = Field(
        default_factory=lambda: list(ENGINES)
    )
    max_gpus: PosInt | None = None  # default: the topology's GPU count
    min_gpus: PosInt = 1
    allow_tp_across_nodes: bool = False  # allow TP groups that span NVLink domains / nodes
    candidates: CandidateFilter = CandidateFilter()
    emit: Literal["best", "all"] | list[str] = "best"
    prune: bool = True  # skip layouts an analytic bound rules out (docs/planner.md §3)
    # fewest_gpus: once a layout of G GPUs meets the SLO, layouts of more GPUs cannot be the
    # best and are not simulated; exhaustive: simulate every layout the bounds leave
    search: Literal["fewest_gpus", "exhaustive"] = "fewest_gpus"
    # prune on an analytic ESTIMATE only when it misses by more than this factor: offered load
    # > capacity × (1 + m), or loaded TPOT > the TPOT bound × (1 + m); bounds need no margin
    estimate_margin: Annotated[float, Field(ge=0.0)] = 0.5
    # rule of thumb: replicas for offered load ≤ target_utilisation × analytic capacity
    target_utilisation: Fraction = 0.8
    workers: PosInt | None = None  # parallel simulations (default: CPU count)
    keep_runs: bool = False  # write each candidate's run directory under the plan directory
    # SGLang MoE all-to-all backend: auto = deepep when ep_size == tp_size, else none
    sglang_moe_a2a_backend: A2ABackend = "auto"
    long_prompt_tokens: PosInt = 100_000  # CP is enumerated when p99 prompt ≥ this (tokens)
    disaggregation: DisaggMode = "auto"
    # mean prompt (tokens) from which prompts count as long for disaggregation: `auto` turns
    # disaggregated candidates on, and the rule of thumb may disaggregate (docs/planner.md §4)
    disagg_prompt_tokens: PosInt = 2048
    pool_serving: PoolServingOptions = Field(default_factory=lambda: PoolServingOptions())
    # disaggregated candidates combine, per pool role and GPU count, the pool layouts with the
    # highest analytic capacity among those whose bound passes: at most this many of each
    pool_layouts: PosInt = 2
    # with `replicates: N >= 2`: add replicates (up to max_replicates) until the 95 % interval
    # of each bounded p99 is within ± this share of its mean (docs/planner.md §4); None: N only
    ci_rel_target: Annotated[float, Field(ge=0.001, le=1)] | None = None
    max_replicates: Annotated[int, Field(gt=0, le=1000)] = 10
    # n_plus_1: the pick must also meet the SLO with its worst single node down, simulated
    # (planner/resilience.py); every GPU count is then simulated (no fewest_gpus cut-off)
    resilience: Literal["none", "n_plus_1"] = "none"

    @field_validator("engines")
    @classmethod
    def _unique_engines(cls, engines: list[EngineName]) -> list[EngineName]:
        if len(set(engines)) != len(engines):
            raise ValueError("expected each engine at most once")
        return engines


@dataclass(frozen=True)
class PlanSpec:
    """A resolved plan: the base experiment (layout unset) and the plan options."""

    path: str  # the plan file as the user named it
    name: str
    base: Experiment
    options: PlanOptions
    set_keys: tuple[str, ...] = ()  # plan.* key paths given with --set

    @property
    def max_gpus(self) -> int:
        return self.options.max_gpus or self.base.topology.num_gpus

    def source(self, key: str) -> str:
        """Where the user wrote plan key path `key`: ``--set`` or the plan file."""
        for k in self.set_keys:
            if key == k or key.startswith(k + ".") or k.startswith(key + "."):
                return SET_FILE
        return self.path


def load_plan(path: str | os.PathLike[str], overrides: Sequence[str] = ()) -> PlanSpec:
    """Load, resolve and validate a plan file; `overrides` are ``key.path=value`` strings
    (``plan.max_gpus=8`` sets a plan option). Raises ConfigError (one line)."""
    label = os.fspath(path)
    raw = load_raw_experiment(path)
    parsed = [parse_override(text) for text in overrides]
    plan_ovs = [ov for ov in parsed if ov.path[0] == PLAN_KEY]
    exp_ovs = [ov for ov in parsed if ov.path[0] != PLAN_KEY]
    for ov in exp_ovs:
        if ov.path[0] in _FORBIDDEN_KEYS:
            raise ConfigError(SET_FILE, ov.key, _FORBIDDEN_KEYS[str(ov.path[0])])
    for key, why in _FORBIDDEN_KEYS.items():
        if key in raw:
            raise ConfigError(label, key, why)
    block = raw.pop(PLAN_KEY, None)
    options = _plan_options(block, plan_ovs, label)
    base = resolve_base(raw, exp_ovs, label)
    if base.slo.ttft_p99_s is None and base.slo.tpot_p99_s is None:
        raise ConfigError(
            label, "slo", "the planner needs an SLO bound: ttft_p99_s and/or tpot_p99_s"
        )
    spec = PlanSpec(label, base.name, base, options, tuple(ov.key for ov in plan_ovs))
    if options.min_gpus > spec.max_gpus:
        raise ConfigError(
            spec.source("plan.min_gpus"),
            "plan.min_gpus",
            f"expected at most max_gpus = {spec.max_gpus}",
            str(options.min_gpus),
        )
    max_gpus = options.max_gpus
    if max_gpus is not None and max_gpus > base.topology.num_gpus:
        raise ConfigError(
            spec.source("plan.max_gpus"),
            "plan.max_gpus",
            f"expected at most the topology's {base.topology.num_gpus} GPUs ({base.topology.name})",
            str(max_gpus),
        )
    return spec


def resolve_base(raw: dict[str, Any], overrides: Sequence[Override], label: str) -> Experiment:
    """The plan's experiment keys resolved by the experiment loader (same rules, same errors).

    Uses the loader's resolution step on the in-memory mapping: references resolve against the
    plan file's directory and errors name the plan file, as for an experiment file.
    """
    from clustersim.config.load import resolve_mapping

    return resolve_mapping(raw, label, list(overrides))


def _plan_options(block: Any, overrides: Sequence[Override], label: str) -> PlanOptions:
    """The `plan:` block (plus ``--set plan.*`` values) validated; errors name file + key."""
    if block is None:
        block = {}
    if not isinstance(block, dict):
        raise ConfigError(label, PLAN_KEY, "expected a mapping", show_value(block))
    data: dict[Any, Any] = dict(block)
    set_paths: list[tuple[tuple[str | int, ...], str]] = []
    for ov in overrides:
        rest = ov.path[1:]
        if not rest:
            if not isinstance(ov.value, dict):
                raise ConfigError(SET_FILE, ov.key, "expected a mapping", show_value(ov.value))
            data = dict(ov.value)
        else:
            _set_in(data, rest, ov.value, ov.key)
        set_paths.append((rest, ov.key))
    try:
        return PlanOptions.model_validate(data)
    except ValidationError as err:
        detail = describe_validation_error(err, PlanOptions)
        for rest, key in set_paths:
            if tuple(detail.path[: len(rest)]) == rest:
                tail = format_key(detail.path[len(rest) :])
                raise ConfigError(
                    SET_FILE, ".".join(filter(None, [key, tail])), detail.expected, detail.got
                ) from None
        where = format_key((PLAN_KEY, *detail.path))
        raise ConfigError(label, where, detail.expected, detail.got) from None


def _set_in(data: dict[Any, Any], path: Sequence[str | int], value: Any, key: str) -> None:
    node: Any = data
    for seg in path[:-1]:
        child = node.get(seg) if isinstance(node, dict) else None
        if child is None:
            child = node[seg] = {}
        if not isinstance(child, dict):
            raise ConfigError(SET_FILE, key, f"cannot set a key inside {seg}: not a mapping")
        node = child
    node[path[-1]] = value


def plan_dir_identity(spec: PlanSpec) -> dict[str, Any]:
    """What the plan directory's hash is taken over: the base experiment and the options."""
    plan = spec.options.model_dump(mode="json")
    if plan.get("resilience") == "none":  # plans without it keep their directory hash
        plan.pop("resilience")
    base = spec.base.model_dump(mode="json")
    if base.get("faults") is None:
        base.pop("faults", None)
    return {"base": base, "plan": plan}
