"""Experiment files → a resolved, validated `Experiment` (DESIGN.md §2).

Resolution of one experiment, in order:
1. read the experiment YAML into a raw mapping (`load_raw_experiment`);
2. apply overrides in order — a sweep point's values, then ``--set key.path=value`` strings.
   An override into model / hardware / topology / workload first replaces that section's
   reference (built-in name or file path) by the mapping it names, so
   ``--set workload.arrival.rate_rps=40`` works whatever `workload:` is;
3. replace every remaining reference by its mapping. Paths resolve against the experiment
   file's directory; a built-in name is a string without '/' that does not end in
   .yaml/.yml/.json; a model may be a HuggingFace config.json. Without `hardware:` the
   topology's `gpu` (a built-in hardware name) is used;
4. validate each section on its own (so an error inside a referenced file names that file and
   the key path inside it), then the experiment; relative trace / routing paths become
   absolute, `base_dir` is the experiment file's directory.

Every bad input raises `ConfigError` with one line ``FILE: key.path: expected ... (got X)``.
A value that came from an override is reported against ``--set`` (or the sweep entry that
set it), with the full key path. Only schema-level checks happen here; checks that need two
sections together (placement, memory fit) belong to the modules that own them.

This module orchestrates steps 2–4; step 1 is `yaml_files`, the parsing of overrides (and
how they meet a sweep) `overrides`, step 3 `references`, the provenance used for error
messages `sections`, and sweep expansion `sweep`.
"""

from __future__ import annotations

import copy
import importlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from clustersim import __version__
from clustersim.config.errors import (
    ConfigError,
    KeyPath,
    describe_validation_error,
    format_key,
    show_value,
)
from clustersim.config.limits import excesses
from clustersim.config.overrides import (
    GENERATED_KEYS,
    Override,
    check_sweep_conflicts,
    max_sweep_points,
    split_overrides,
)
from clustersim.config.references import check_draft_model, check_eagle_head, materialize
from clustersim.config.schema import Experiment, HardwareSpec, TraceSpec, WorkloadSpec
from clustersim.config.sections import SECTIONS, Context, locate, raise_at
from clustersim.config.sweep import (
    SWEEP_KEY,
    SweepPoint,
    apply_inside,
    expand_points,
    parse_key_path,
)
from clustersim.config.yaml_files import load_raw_experiment
from clustersim.workload.traces import TraceError, load_trace


def _child(node: Any, seg: str | int) -> tuple[Any, str | int]:
    """(child value or None, the key to use) of a mapping; list indices are checked by caller."""
    if isinstance(node, dict):
        key = seg if seg in node else str(seg)
        return node.get(key), key
    return node[seg], seg


def _apply(tree: dict[str, Any], ov: Override, ctx: Context) -> None:
    """Set one override's value in the raw tree, creating intermediate mappings."""
    path = ov.path
    if len(path) > 1 and path[0] in SECTIONS:
        materialize(tree, str(path[0]), ctx)
    node: Any = tree
    for i, seg in enumerate(path):
        if isinstance(node, list):
            if not isinstance(seg, int) or seg >= len(node):
                expected = f"no item {seg} in {format_key(path[:i])} ({len(node)} items)"
                raise ConfigError(ov.file, ov.key, expected)
        elif not isinstance(node, dict):
            expected = f"cannot set a key inside {format_key(path[:i])}: it is not a mapping"
            raise ConfigError(ov.file, ov.key, expected, show_value(node))
        child, key = _child(node, seg)
        if i == len(path) - 1:
            node[key] = copy.deepcopy(ov.value)
        elif child is None and isinstance(node, dict):
            node[key] = child = {}
        node = child
    if len(path) == 1 and path[0] in SECTIONS:
        ctx.origins.pop(str(path[0]), None)  # a new reference: resolve it afresh
    ctx.applied.append(ov)


def _validate(
    model: type[BaseModel],
    data: Any,
    at: KeyPath,
    ctx: Context,
    top_keys: Sequence[str] | None = None,
) -> Any:
    """`model.model_validate(data)`; a ValidationError becomes a ConfigError at its key path."""
    try:
        return model.model_validate(data)
    except ValidationError as err:
        detail = describe_validation_error(err, model, top_keys)
        raise raise_at(at + detail.path, ctx, detail.expected, detail.got) from None


def _absolute_file(value: str, base: Path, at: KeyPath, ctx: Context) -> str:
    """A relative path made absolute against `base`; the file must exist."""
    path = Path(os.path.abspath(base / os.path.expanduser(value)))
    if not path.is_file():
        raise raise_at(at, ctx, f"file not found: {path}")
    return str(path)


def _fix_workload_paths(spec: WorkloadSpec, ctx: Context) -> WorkloadSpec:
    if spec.trace is None:
        return spec
    origin = ctx.origins.get("workload")
    base = origin.base_dir if origin is not None else ctx.exp_dir
    at: KeyPath = ("workload", "trace", "path")
    path = _absolute_file(spec.trace.path, base, at, ctx)
    trace = spec.trace.model_copy(update={"path": path})
    _read_trace(trace, at, ctx)
    return spec.model_copy(update={"trace": trace})


def _read_trace(trace: TraceSpec, at: KeyPath, ctx: Context) -> None:
    """Read the trace now (cached for the run), so `validate` refuses what `run` would: a
    malformed trace is reported against its file, row and column."""
    try:
        load_trace(trace, "/")
    except TraceError as err:
        file, key, _ = locate(at, ctx)
        raise ConfigError(
            err.path, err.where, f"{err.problem} (the trace of {file} {key})"
        ) from None


def _fix_hardware_paths(spec: HardwareSpec, ctx: Context) -> HardwareSpec:
    """A file `operator_table` made absolute (against the file that set it) and read now, so
    `validate` refuses a malformed table as `run` would."""
    ref = spec.operator_table
    tables = importlib.import_module("clustersim.catalog.operator_tables")
    if ref is None or not tables.is_table_path(ref):
        return spec
    origin = ctx.origins.get("hardware")
    base = origin.base_dir if origin is not None else ctx.exp_dir
    at: KeyPath = ("hardware", "operator_table")
    path = _absolute_file(ref, base, at, ctx)
    try:
        tables.load_operator_table(path)
    except tables.OperatorTableError as err:
        file, key, _ = locate(at, ctx)
        raise ConfigError(
            str(err.path), err.where, f"{err.problem} (the operator table of {file} {key})"
        ) from None
    except (OSError, UnicodeDecodeError) as err:
        raise raise_at(at, ctx, f"unreadable operator table: {err}") from None
    return spec.model_copy(update={"operator_table": path})


def _trace_replay_span(exp: Experiment, ctx: Context) -> float | None:
    """Seconds a trace replayed for `horizon.requests` spans (cycles × its scaled span, for
    config/limits.py); None when no trace is replayed for a request count. A one-row trace
    cannot be cycled to more requests than it holds (no period to repeat)."""
    trace, n = exp.workload.trace, exp.horizon.requests
    if trace is None or n is None or exp.workload.arrival.process != "trace":
        return None
    table = load_trace(trace, "/")
    rows = len(table)
    if n > rows < 2:
        at: KeyPath = ("horizon", "requests")
        raise raise_at(at, ctx, f"at most {rows} (a one-row trace cannot be cycled)", str(n))
    period = table.span_s * trace.time_scale * (rows / (rows - 1) if rows > 1 else 1.0)
    return period * max(1.0, n / rows)


def _check_nvlink(hw: HardwareSpec, topology: Any, ctx: Context) -> None:
    """A topology with NVLink needs a GPU profile with NVLink bandwidth."""
    nvlink = getattr(topology, "nvlink", None)
    if nvlink is not None and hw.nvlink_bandwidth_GBps == 0:
        at: KeyPath = ("hardware", "nvlink_bandwidth_GBps")
        name = getattr(topology, "name", "")
        raise raise_at(at, ctx, f"> 0: topology {name} has NVLink", "0")


def _fix_experiment_paths(exp: Experiment, ctx: Context) -> Experiment:
    if exp.experts is None or exp.experts.routing.path is None:
        return exp
    routing = exp.experts.routing
    at: KeyPath = ("experts", "routing", "path")
    path = _absolute_file(routing.path or "", ctx.exp_dir, at, ctx)
    experts = exp.experts.model_copy(update={"routing": routing.model_copy(update={"path": path})})
    return exp.model_copy(update={"experts": experts})


def _top_keys() -> list[str]:
    return [k for k in Experiment.model_fields if k != "base_dir"] + [SWEEP_KEY]


def _resolve(raw: Mapping[str, Any], overrides: Sequence[Override], ctx: Context) -> Experiment:
    """Steps 2–4 of the module docstring on a copy of `raw`."""
    tree: dict[str, Any] = copy.deepcopy(dict(raw))
    tree.pop(SWEEP_KEY, None)
    for key in GENERATED_KEYS:
        tree.pop(key, None)
    for ov in overrides:
        _apply(tree, ov, ctx)
    if tree.get("hardware") is None and "topology" not in tree:
        raise raise_at(("topology",), ctx, "missing required key")
    for section in SECTIONS:
        materialize(tree, section, ctx)
    specs: dict[str, Any] = {}
    for section, model in SECTIONS.items():
        if isinstance(tree.get(section), dict):
            specs[section] = _validate(model, tree[section], (section,), ctx)
    if "workload" in specs:
        specs["workload"] = _fix_workload_paths(specs["workload"], ctx)
    if "hardware" in specs:
        specs["hardware"] = _fix_hardware_paths(specs["hardware"], ctx)
        _check_nvlink(specs["hardware"], specs.get("topology"), ctx)
    tree.setdefault("name", Path(ctx.exp_label).stem)
    data = {**tree, **specs, "base_dir": str(ctx.exp_dir)}
    exp: Experiment = _validate(Experiment, data, (), ctx, _top_keys())
    speculative = exp.serving.speculative
    if speculative is not None and speculative.method == "draft_model":
        check_draft_model(speculative.draft_model or "", ctx)
    if speculative is not None and speculative.method == "eagle":
        check_eagle_head(exp.model, speculative.draft_model, ctx)
    _check_limits(exp, ctx, _trace_replay_span(exp, ctx))
    return _fix_experiment_paths(exp, ctx)


def _new_context(path: str | os.PathLike[str], cache: dict[Path, Any]) -> Context:
    label = os.fspath(path)
    exp_dir = Path(os.path.abspath(os.path.expanduser(label))).parent
    return Context(exp_label=label, exp_dir=exp_dir, cache=cache)


def resolve_mapping(
    raw: Mapping[str, Any], path: str | os.PathLike[str], overrides: Sequence[Override] = ()
) -> Experiment:
    """Resolve an in-memory experiment mapping as if it had been read from `path`.

    References resolve against `path`'s directory and errors name `path`. For files that embed
    an experiment in a larger document (plan files)."""
    return _resolve(raw, overrides, _new_context(path, {}))


def load_experiment(path: str | os.PathLike[str], overrides: Sequence[str] = ()) -> Experiment:
    """Load, resolve and validate one experiment (a `sweep:` block is checked, not expanded).

    `overrides` are ``key.path=value`` strings applied before resolution. Raises ConfigError.
    """
    raw, rest = split_overrides(load_raw_experiment(path), overrides)
    expand_points(raw, os.fspath(path), max_sweep_points(raw, rest))  # checked even here
    return _resolve(raw, rest, _new_context(path, {}))


def _check_limits(exp: Experiment, ctx: Context, replay_span_s: float | None = None) -> None:
    """Refuse, with the numbers, a run whose estimated size is beyond `exp.limits`."""
    found = excesses(exp, replay_span_s)
    if found:
        raise raise_at(parse_key_path(found[0].key), ctx, found[0].message())


def load_sweep(
    path: str | os.PathLike[str], overrides: Sequence[str] = ()
) -> list[tuple[SweepPoint, Experiment]]:
    """Every point of the experiment's sweep, resolved; one point labelled '' without a sweep.

    Each point applies its sweep values first, then the --set overrides (which may reach
    inside a swept section, e.g. ``layout.ep=2`` while sweeping ``layout``, but may not
    overwrite a swept key). Referenced files are read once for all points.
    """
    label = os.fspath(path)
    raw, rest = split_overrides(load_raw_experiment(path), overrides)
    points = expand_points(raw, label, max_sweep_points(raw, rest))
    check_sweep_conflicts(rest, list(points[0][0].overrides))
    cache: dict[Path, Any] = {}
    out: list[tuple[SweepPoint, Experiment]] = []
    for point, indices in points:
        swept = [
            Override(parse_key_path(key), value, label, f"{SWEEP_KEY}.{key}.{index}")
            for (key, value), index in zip(point.overrides.items(), indices, strict=True)
        ]
        out.append((point, _resolve(raw, [*swept, *rest], _new_context(path, cache))))
    # labels (and sweep.csv values) say what runs when a --set reaches inside a swept key
    shown = apply_inside([p for p, _ in out], [(ov.path, ov.value) for ov in rest])
    return [(p, exp) for p, (_, exp) in zip(shown, out, strict=True)]


def resolved_config(exp: Experiment) -> dict[str, Any]:
    """The fully resolved experiment as plain JSON/YAML-safe data, plus `clustersim_version`.

    Loading the written file back with `load_experiment` gives the same experiment (every
    path in it is absolute; `clustersim_version` and `base_dir` are accepted and replaced).
    """
    data: dict[str, Any] = exp.model_dump(mode="json")
    if data.get("faults") is None:  # runs without faults keep their resolved file unchanged
        data.pop("faults", None)
    return {"clustersim_version": __version__, **data}
