"""Section references → mappings: an inline mapping, a file path (YAML, or a HuggingFace
config.json for a model) or a built-in catalog name; without `hardware:` the topology's `gpu`."""

from __future__ import annotations

import copy
import importlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from pydantic import BaseModel, ValidationError

from clustersim.config.errors import (
    ConfigError,
    KeyPath,
    describe_validation_error,
    format_key,
    show_value,
)
from clustersim.config.schema import ModelSpec
from clustersim.config.sections import Context, Origin, raise_at
from clustersim.config.yaml_files import read_mapping

_REF_SUFFIXES = (".yaml", ".yml", ".json")
# section → (catalog module, lookup function, names function). A lookup returns a spec or
# the Path of a YAML file and raises KeyError for an unknown name.
_CATALOG: dict[str, tuple[str, str, str]] = {
    "model": ("clustersim.catalog.models", "get_model", "model_names"),
    "hardware": ("clustersim.catalog.hardware", "get_hardware", "hardware_names"),
    "topology": ("clustersim.catalog.topologies", "builtin_topology_path", "topology_names"),
    "workload": ("clustersim.catalog.workloads", "builtin_workload_path", "workload_names"),
}


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


def _builtin(section: str, name: str, where: KeyPath, ctx: Context, kind: str) -> _Loaded:
    """A built-in section by name; unknown names raise ConfigError at `where`."""
    module_name, lookup, _ = _CATALOG[section]
    module = _import_catalog(module_name)
    if module is None:
        raise raise_at(where, ctx, _unknown_builtin(section, kind, name, None))
    try:
        found = getattr(module, lookup)(name)
    except KeyError:
        found = None
    if found is None:
        raise raise_at(where, ctx, _unknown_builtin(section, kind, name, module))
    if isinstance(found, BaseModel):
        origin = Origin(f"built-in {kind} {name!r}", (), ctx.exp_dir)
        return _Loaded(found.model_dump(), origin)
    path = Path(found)
    return _Loaded(read_mapping(path, str(path), ctx.cache), Origin(str(path), (), path.parent))


def check_draft_model(name: str, ctx: Context) -> None:
    """`serving.speculative.draft_model` must name a built-in model (its cost is simulated)."""
    where: KeyPath = ("serving", "speculative", "draft_model")
    module = _import_catalog(_CATALOG["model"][0])
    found = None
    if module is not None:
        try:
            found = module.get_model(name)
        except KeyError:
            found = None
    if found is None:
        raise raise_at(where, ctx, _unknown_builtin("model", "draft model", name, module))


def check_eagle_head(model: ModelSpec, checkpoint: str | None, ctx: Context) -> None:
    """Method eagle needs a head: `serving.speculative.draft_model` (a checkpoint) or the
    catalog's published head for the model (catalog/eagle_heads.py)."""
    if checkpoint is not None:
        return
    module = _import_catalog("clustersim.catalog.eagle_heads")
    if module is not None and module.eagle_head_for(model) is None:
        where: KeyPath = ("serving", "speculative", "draft_model")
        raise raise_at(where, ctx, module.missing_head_message(model))


@dataclass(frozen=True)
class _Loaded:
    mapping: dict[Any, Any]
    origin: Origin


def _load_hf_model(path: Path, label: str, where: KeyPath, ctx: Context) -> dict[Any, Any]:
    module = _import_catalog(_CATALOG["model"][0])
    if module is None:
        raise raise_at(where, ctx, "HuggingFace config.json models need clustersim.catalog")
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


def _load_ref(section: str, ref: Any, ctx: Context) -> _Loaded:
    """The mapping a section's value names: inline mapping, file path or built-in name."""
    where: KeyPath = (section,)
    if isinstance(ref, Mapping):
        return _Loaded(copy.deepcopy(dict(ref)), Origin(ctx.exp_label, where, ctx.exp_dir))
    if not isinstance(ref, str) or not ref.strip():
        raise raise_at(
            where, ctx, "expected a built-in name, a file path or a mapping", show_value(ref)
        )
    if not _is_path_ref(ref):
        return _builtin(section, ref, where, ctx, section)
    expanded = os.path.expanduser(ref)
    abs_path = Path(os.path.abspath(ctx.exp_dir / expanded))
    label = os.path.normpath(os.path.join(os.path.dirname(ctx.exp_label), expanded))
    if not abs_path.is_file():
        raise raise_at(where, ctx, f"file not found: {abs_path}")
    origin = Origin(label, (), abs_path.parent)
    if section == "model" and abs_path.suffix.lower() == ".json":
        return _Loaded(_load_hf_model(abs_path, label, where, ctx), origin)
    return _Loaded(read_mapping(abs_path, label, ctx.cache), origin)


def materialize(tree: dict[str, Any], section: str, ctx: Context) -> None:
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


def _hardware_from_topology(tree: dict[str, Any], ctx: Context) -> None:
    """No `hardware:`: the built-in profile the topology's `gpu` names."""
    materialize(tree, "topology", ctx)
    topology = tree.get("topology")
    gpu = topology.get("gpu") if isinstance(topology, dict) else None
    if not isinstance(gpu, str):
        return  # topology validation reports it
    loaded = _builtin("hardware", gpu, ("topology", "gpu"), ctx, "hardware")
    tree["hardware"] = loaded.mapping
    ctx.origins["hardware"] = loaded.origin
