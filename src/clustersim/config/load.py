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
"""

from __future__ import annotations

import copy
import importlib
import os
import re
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml
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
from clustersim.config.schema import (
    Experiment,
    HardwareSpec,
    ModelSpec,
    TopologySpec,
    TraceSpec,
    WorkloadSpec,
)
from clustersim.config.sweep import (
    SWEEP_KEY,
    SweepPoint,
    apply_inside,
    expand_points,
    parse_key_path,
)
from clustersim.workload.traces import TraceError, load_trace

SET_FILE = "--set"  # stands in for the file name of command-line overrides
_REF_SUFFIXES = (".yaml", ".yml", ".json")
# Sections that may be a built-in name, a file path or an inline mapping; resolution order.
_SECTIONS: dict[str, type[BaseModel]] = {
    "model": ModelSpec,
    "topology": TopologySpec,
    "hardware": HardwareSpec,
    "workload": WorkloadSpec,
}
# section → (catalog module, lookup function, names function). A lookup returns a spec or
# the Path of a YAML file and raises KeyError for an unknown name.
_CATALOG: dict[str, tuple[str, str, str]] = {
    "model": ("clustersim.catalog.models", "get_model", "model_names"),
    "hardware": ("clustersim.catalog.hardware", "get_hardware", "hardware_names"),
    "topology": ("clustersim.catalog.topologies", "builtin_topology_path", "topology_names"),
    "workload": ("clustersim.catalog.workloads", "builtin_workload_path", "workload_names"),
}
# Top-level keys written by `resolved_config` and accepted (then replaced) on reload.
_GENERATED_KEYS = ("clustersim_version", "base_dir")


# --------------------------------------------------------------------------- YAML reading


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects a key repeated in one mapping (PyYAML keeps the last silently)."""


def _construct_unique_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if isinstance(key, Hashable):
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
    return loader.construct_mapping(node, deep=True)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping
)
# YAML 1.2 floats: `1e3` and `2.5E-4` are numbers (PyYAML's YAML 1.1 rules need a dot and a
# signed exponent, and the strict schema would then reject the string).
_UniqueKeyLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _parse_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader subclass


def _yaml_error(label: str, err: yaml.YAMLError) -> ConfigError:
    """One line: the file, the line/column and the parser's complaint."""
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or str(err)
    where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return ConfigError(label, where, f"invalid YAML: {problem}")


def _read_yaml(path: Path, label: str, cache: dict[Path, Any]) -> Any:
    """Parsed content of a YAML (or JSON) file; the cache holds parsed files, never mutate."""
    if path not in cache:
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise ConfigError(label, "", "expected a UTF-8 text file") from None
        except OSError as err:
            raise ConfigError(label, "", f"cannot read {path}: {err.strerror}") from None
        try:
            cache[path] = _parse_yaml(text)
        except yaml.YAMLError as err:
            raise _yaml_error(label, err) from None
        except RecursionError:
            raise ConfigError(label, "", "invalid YAML: nested too deeply") from None
    return cache[path]


def _read_mapping(path: Path, label: str, cache: dict[Path, Any]) -> dict[Any, Any]:
    """A file whose top level must be a mapping; returns a private (deep) copy."""
    data = _read_yaml(path, label, cache)
    if not isinstance(data, dict):
        got = "an empty file" if data is None else show_value(data)
        raise ConfigError(label, "", "expected a mapping at the top level", got)
    return copy.deepcopy(data)


def load_raw_experiment(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The experiment file as a plain mapping (references unresolved, sweep included)."""
    label = os.fspath(path)
    abs_path = Path(os.path.abspath(os.path.expanduser(label)))
    if not abs_path.is_file():
        raise ConfigError(label, "", f"file not found: {abs_path}")
    return _read_mapping(abs_path, label, {})


# --------------------------------------------------------------------------- overrides


@dataclass(frozen=True)
class Override:
    """One value to set at a key path of the raw experiment.

    `file` and `key` say where the user wrote it, for error messages: ``--set`` and the key
    path, or the experiment file and ``sweep.<key>.<index>``.
    """

    path: KeyPath
    value: Any
    file: str = SET_FILE
    key: str = ""

    @property
    def where(self) -> str:
        return f"{SET_FILE} {self.key}" if self.file == SET_FILE else self.key


def parse_override(text: str) -> Override:
    """``key.path=value`` → Override; the value is parsed as YAML (``40``, ``[1,2]``, ``{tp: 2}``).

    ``sweep.<key path>=[...]`` replaces one sweep entry (the key path after ``sweep.`` is one
    key of the sweep block).
    """
    key, sep, value_text = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(SET_FILE, text, "expected key.path=value")
    try:
        if key.startswith(SWEEP_KEY + ".") and key[len(SWEEP_KEY) + 1 :]:
            path: KeyPath = (SWEEP_KEY, key[len(SWEEP_KEY) + 1 :])
        else:
            path = parse_key_path(key)
    except ValueError:
        raise ConfigError(SET_FILE, key, "expected key.path=value with non-empty keys") from None
    if path[0] in _GENERATED_KEYS:
        raise ConfigError(
            SET_FILE, key, "written by clustersim into resolved configs; cannot be set"
        )
    try:
        value = _parse_yaml(value_text)
    except RecursionError:
        raise ConfigError(SET_FILE, key, "value is nested too deeply") from None
    except yaml.YAMLError as err:
        problem = getattr(err, "problem", None) or "cannot parse"
        raise ConfigError(
            SET_FILE, key, f"value is not valid YAML: {problem}", show_value(value_text)
        ) from None
    return Override(path=path, value=_non_finite(value), file=SET_FILE, key=key)


_NON_FINITE_WORDS = frozenset({"inf", "+inf", "-inf", "infinity", "+infinity", "-infinity", "nan"})


def _non_finite(value: Any) -> Any:
    """``inf`` / ``nan`` typed on the command line mean the float (strict schema types would
    otherwise call them strings), so the schema can reject them as non-finite numbers."""
    if isinstance(value, str) and value.strip().lower() in _NON_FINITE_WORDS:
        return float(value)
    return value


# --------------------------------------------------------------------------- resolution


@dataclass(frozen=True)
class _Origin:
    """Where a section's content lives: file shown to the user, key path of the section inside
    it (() for a file of its own), and the directory its relative paths resolve against."""

    file: str
    prefix: KeyPath
    base_dir: Path


@dataclass
class _Context:
    exp_label: str  # the experiment path as the user gave it
    exp_dir: Path  # absolute
    cache: dict[Path, Any]
    applied: list[Override] = field(default_factory=list)
    origins: dict[str, _Origin] = field(default_factory=dict)


def _locate(full: KeyPath, ctx: _Context) -> tuple[str, str, str]:
    """(file, key path, note) to report a problem at `full` (key path from the experiment root).

    A value set by an override is reported against the override; a section's content against
    its file. The note names an override that changed something below the reported key.
    """
    best: Override | None = None
    for ov in ctx.applied:
        n = len(ov.path)
        names_file = n == 1 and ov.path[0] in _SECTIONS and isinstance(ov.value, str)
        covers = full[:n] == ov.path and not (names_file and len(full) > 1)
        if covers and (best is None or n >= len(best.path)):
            best = ov
    if best is not None:
        rest = full[len(best.path) :]
        return best.file, ".".join(filter(None, [best.key, format_key(rest)])), ""
    note = next((f" (with {ov.where})" for ov in ctx.applied if ov.path[: len(full)] == full), "")
    origin = ctx.origins.get(str(full[0])) if full else None
    if origin is not None:
        return origin.file, format_key(origin.prefix + full[1:]), note
    return ctx.exp_label, format_key(full), note


def _raise_at(full: KeyPath, ctx: _Context, expected: str, got: str | None = None) -> ConfigError:
    file, key, note = _locate(full, ctx)
    return ConfigError(file, key, expected + note, got)


def _is_path_ref(ref: str) -> bool:
    return "/" in ref or "\\" in ref or ref.lower().endswith(_REF_SUFFIXES)


def _import_catalog(module: str) -> ModuleType | None:
    """The catalog module, or None while it does not exist (another module's bug propagates)."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:
        if err.name is not None and module.startswith(err.name):
            return None
        raise


def _unknown_builtin(section: str, kind: str, name: str, module: ModuleType | None) -> str:
    names: list[str] = []
    if module is not None:
        names = [str(n) for n in getattr(module, _CATALOG[section][2])()]
    alt = " or a path" if kind == section else ""
    if not names:
        return f"unknown {kind} {name!r} (no built-in {kind}s{'; expected a path' if alt else ''})"
    return f"unknown {kind} {name!r} (expected a built-in name: {', '.join(names)}{alt})"


def _builtin(section: str, name: str, where: KeyPath, ctx: _Context, kind: str) -> _Loaded:
    """A built-in section by name; unknown names raise ConfigError at `where`."""
    module_name, lookup, _ = _CATALOG[section]
    module = _import_catalog(module_name)
    if module is None:
        raise _raise_at(where, ctx, _unknown_builtin(section, kind, name, None))
    try:
        found = getattr(module, lookup)(name)
    except KeyError:
        found = None
    if found is None:
        raise _raise_at(where, ctx, _unknown_builtin(section, kind, name, module))
    if isinstance(found, BaseModel):
        origin = _Origin(f"built-in {kind} {name!r}", (), ctx.exp_dir)
        return _Loaded(found.model_dump(), origin)
    path = Path(found)
    return _Loaded(_read_mapping(path, str(path), ctx.cache), _Origin(str(path), (), path.parent))


@dataclass(frozen=True)
class _Loaded:
    mapping: dict[Any, Any]
    origin: _Origin


def _load_hf_model(path: Path, label: str, where: KeyPath, ctx: _Context) -> dict[Any, Any]:
    module = _import_catalog(_CATALOG["model"][0])
    if module is None:
        raise _raise_at(where, ctx, "HuggingFace config.json models need clustersim.catalog")
    try:
        spec = module.load_hf_config(path)
    except ConfigError:
        raise
    except ValidationError as err:
        detail = describe_validation_error(err, ModelSpec)
        raise ConfigError(label, format_key(detail.path), detail.expected, detail.got) from None
    except module.HFConfigError as err:
        raise ConfigError(label, err.key, err.problem) from None
    except (KeyError, ValueError, TypeError, OSError) as err:
        reason = str(err).removeprefix(f"{path}: ")  # the catalog prefixes the absolute path
        raise ConfigError(label, "", f"not a usable HuggingFace config.json: {reason}") from None
    dumped: dict[Any, Any] = spec.model_dump()
    return dumped


def _load_ref(section: str, ref: Any, ctx: _Context) -> _Loaded:
    """The mapping a section's value names: inline mapping, file path or built-in name."""
    where: KeyPath = (section,)
    if isinstance(ref, Mapping):
        return _Loaded(copy.deepcopy(dict(ref)), _Origin(ctx.exp_label, where, ctx.exp_dir))
    if not isinstance(ref, str) or not ref.strip():
        raise _raise_at(
            where, ctx, "expected a built-in name, a file path or a mapping", show_value(ref)
        )
    if not _is_path_ref(ref):
        return _builtin(section, ref, where, ctx, section)
    expanded = os.path.expanduser(ref)
    abs_path = Path(os.path.abspath(ctx.exp_dir / expanded))
    label = os.path.normpath(os.path.join(os.path.dirname(ctx.exp_label), expanded))
    if not abs_path.is_file():
        raise _raise_at(where, ctx, f"file not found: {abs_path}")
    origin = _Origin(label, (), abs_path.parent)
    if section == "model" and abs_path.suffix.lower() == ".json":
        return _Loaded(_load_hf_model(abs_path, label, where, ctx), origin)
    return _Loaded(_read_mapping(abs_path, label, ctx.cache), origin)


def _materialize(tree: dict[str, Any], section: str, ctx: _Context) -> None:
    """Replace `tree[section]` (a reference) by the mapping it names, once."""
    if section in ctx.origins:
        return
    value = tree.get(section)
    if section == "hardware" and value is None:
        _hardware_from_topology(tree, ctx)
        return
    if section not in tree:
        return  # missing: reported by validation
    loaded = _load_ref(section, value, ctx)
    tree[section] = loaded.mapping
    ctx.origins[section] = loaded.origin


def _hardware_from_topology(tree: dict[str, Any], ctx: _Context) -> None:
    """No `hardware:`: the built-in profile the topology's `gpu` names."""
    _materialize(tree, "topology", ctx)
    topology = tree.get("topology")
    gpu = topology.get("gpu") if isinstance(topology, dict) else None
    if not isinstance(gpu, str):
        return  # topology validation reports it
    loaded = _builtin("hardware", gpu, ("topology", "gpu"), ctx, "hardware")
    tree["hardware"] = loaded.mapping
    ctx.origins["hardware"] = loaded.origin


def _child(node: Any, seg: str | int) -> tuple[Any, str | int]:
    """(child value or None, the key to use) of a mapping; list indices are checked by caller."""
    if isinstance(node, dict):
        key = seg if seg in node else str(seg)
        return node.get(key), key
    return node[seg], seg


def _apply(tree: dict[str, Any], ov: Override, ctx: _Context) -> None:
    """Set one override's value in the raw tree, creating intermediate mappings."""
    path = ov.path
    if len(path) > 1 and path[0] in _SECTIONS:
        _materialize(tree, str(path[0]), ctx)
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
    if len(path) == 1 and path[0] in _SECTIONS:
        ctx.origins.pop(str(path[0]), None)  # a new reference: resolve it afresh
    ctx.applied.append(ov)


def _validate(
    model: type[BaseModel],
    data: Any,
    at: KeyPath,
    ctx: _Context,
    top_keys: Sequence[str] | None = None,
) -> Any:
    """`model.model_validate(data)`; a ValidationError becomes a ConfigError at its key path."""
    try:
        return model.model_validate(data)
    except ValidationError as err:
        detail = describe_validation_error(err, model, top_keys)
        raise _raise_at(at + detail.path, ctx, detail.expected, detail.got) from None


def _absolute_file(value: str, base: Path, at: KeyPath, ctx: _Context) -> str:
    """A relative path made absolute against `base`; the file must exist."""
    path = Path(os.path.abspath(base / os.path.expanduser(value)))
    if not path.is_file():
        raise _raise_at(at, ctx, f"file not found: {path}")
    return str(path)


def _fix_workload_paths(spec: WorkloadSpec, ctx: _Context) -> WorkloadSpec:
    if spec.trace is None:
        return spec
    origin = ctx.origins.get("workload")
    base = origin.base_dir if origin is not None else ctx.exp_dir
    at: KeyPath = ("workload", "trace", "path")
    path = _absolute_file(spec.trace.path, base, at, ctx)
    trace = spec.trace.model_copy(update={"path": path})
    _read_trace(trace, at, ctx)
    return spec.model_copy(update={"trace": trace})


def _read_trace(trace: TraceSpec, at: KeyPath, ctx: _Context) -> None:
    """Read the trace now (cached for the run), so `validate` refuses what `run` would: a
    malformed trace is reported against its file, row and column."""
    try:
        load_trace(trace, "/")
    except TraceError as err:
        file, key, _ = _locate(at, ctx)
        raise ConfigError(
            err.path, err.where, f"{err.problem} (the trace of {file} {key})"
        ) from None


def _fix_experiment_paths(exp: Experiment, ctx: _Context) -> Experiment:
    if exp.experts is None or exp.experts.routing.path is None:
        return exp
    routing = exp.experts.routing
    at: KeyPath = ("experts", "routing", "path")
    path = _absolute_file(routing.path or "", ctx.exp_dir, at, ctx)
    experts = exp.experts.model_copy(update={"routing": routing.model_copy(update={"path": path})})
    return exp.model_copy(update={"experts": experts})


def _top_keys() -> list[str]:
    return [k for k in Experiment.model_fields if k != "base_dir"] + [SWEEP_KEY]


def _resolve(raw: Mapping[str, Any], overrides: Sequence[Override], ctx: _Context) -> Experiment:
    """Steps 2–4 of the module docstring on a copy of `raw`."""
    tree: dict[str, Any] = copy.deepcopy(dict(raw))
    tree.pop(SWEEP_KEY, None)
    for key in _GENERATED_KEYS:
        tree.pop(key, None)
    for ov in overrides:
        _apply(tree, ov, ctx)
    if tree.get("hardware") is None and "topology" not in tree:
        raise _raise_at(("topology",), ctx, "missing required key")
    for section in _SECTIONS:
        _materialize(tree, section, ctx)
    specs: dict[str, Any] = {}
    for section, model in _SECTIONS.items():
        if isinstance(tree.get(section), dict):
            specs[section] = _validate(model, tree[section], (section,), ctx)
    if "workload" in specs:
        specs["workload"] = _fix_workload_paths(specs["workload"], ctx)
    tree.setdefault("name", Path(ctx.exp_label).stem)
    data = {**tree, **specs, "base_dir": str(ctx.exp_dir)}
    exp: Experiment = _validate(Experiment, data, (), ctx, _top_keys())
    _check_limits(exp, ctx)
    return _fix_experiment_paths(exp, ctx)


def _new_context(path: str | os.PathLike[str], cache: dict[Path, Any]) -> _Context:
    label = os.fspath(path)
    exp_dir = Path(os.path.abspath(os.path.expanduser(label))).parent
    return _Context(exp_label=label, exp_dir=exp_dir, cache=cache)


def _split_overrides(
    raw: dict[str, Any], overrides: Sequence[str]
) -> tuple[dict[str, Any], list[Override]]:
    """Parse --set strings; apply the ones into the sweep block to `raw`, return the rest."""
    parsed = [parse_override(text) for text in overrides]
    rest: list[Override] = []
    for ov in parsed:
        if ov.path[0] != SWEEP_KEY:
            rest.append(ov)
        elif len(ov.path) == 1:
            raw[SWEEP_KEY] = ov.value
        else:
            block = raw.get(SWEEP_KEY)
            if not isinstance(block, dict):
                raw[SWEEP_KEY] = block = {}
            block[ov.path[1]] = ov.value
    return raw, rest


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
    raw, rest = _split_overrides(load_raw_experiment(path), overrides)
    expand_points(raw, os.fspath(path), _max_sweep_points(raw, rest))  # checked even here
    return _resolve(raw, rest, _new_context(path, {}))


def _max_sweep_points(raw: Mapping[str, Any], rest: Sequence[Override]) -> int | None:
    """limits.max_sweep_points as the file or a --set gives it (None: the default; a bad
    value is reported when the experiment itself is validated)."""
    value: Any = None
    block = raw.get("limits")
    if isinstance(block, dict):
        value = block.get("max_sweep_points")
    for ov in rest:
        if ov.path == ("limits", "max_sweep_points"):
            value = ov.value
        elif ov.path == ("limits",) and isinstance(ov.value, dict):
            value = ov.value.get("max_sweep_points", value)
    ok = isinstance(value, int) and not isinstance(value, bool) and value > 0
    return value if ok else None


def _check_limits(exp: Experiment, ctx: _Context) -> None:
    """Refuse, with the numbers, a run whose estimated size is beyond `exp.limits`."""
    found = excesses(exp)
    if found:
        raise _raise_at(parse_key_path(found[0].key), ctx, found[0].message())


def _check_sweep_conflicts(rest: Sequence[Override], sweep_keys: Sequence[str]) -> None:
    """A --set that would overwrite a swept value (same key or a section above it) is refused."""
    for ov in rest:
        for key in sweep_keys:
            swept = parse_key_path(key)
            if swept[: len(ov.path)] == ov.path:
                raise ConfigError(
                    SET_FILE,
                    ov.key,
                    f"also swept by {SWEEP_KEY}.{key}; set {SWEEP_KEY}.{key}=[...] instead",
                )


def load_sweep(
    path: str | os.PathLike[str], overrides: Sequence[str] = ()
) -> list[tuple[SweepPoint, Experiment]]:
    """Every point of the experiment's sweep, resolved; one point labelled '' without a sweep.

    Each point applies its sweep values first, then the --set overrides (which may reach
    inside a swept section, e.g. ``layout.ep=2`` while sweeping ``layout``, but may not
    overwrite a swept key). Referenced files are read once for all points.
    """
    label = os.fspath(path)
    raw, rest = _split_overrides(load_raw_experiment(path), overrides)
    points = expand_points(raw, label, _max_sweep_points(raw, rest))
    _check_sweep_conflicts(rest, list(points[0][0].overrides))
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
    return {"clustersim_version": __version__, **data}
