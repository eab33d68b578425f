"""The referenceable sections of an experiment (model, topology, hardware, workload) and the
resolution context: where each section's content came from, and which overrides were applied,
so a problem is reported against the file and key path the user wrote."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from clustersim.config.errors import ConfigError, KeyPath, format_key
from clustersim.config.overrides import Override
from clustersim.config.schema import HardwareSpec, ModelSpec, TopologySpec, WorkloadSpec

# Sections that may be a built-in name, a file path or an inline mapping; resolution order.
SECTIONS: dict[str, type[BaseModel]] = {
    "model": ModelSpec,
    "topology": TopologySpec,
    "hardware": HardwareSpec,
    "workload": WorkloadSpec,
}


@dataclass(frozen=True)
class Origin:
    """Where a section's content lives: file shown to the user, key path of the section inside
    it (() for a file of its own), and the directory its relative paths resolve against."""

    file: str
    prefix: KeyPath
    base_dir: Path


@dataclass
class Context:
    """Resolving one experiment: its file, the parsed-file cache (shared by sweep points), the
    overrides applied so far and where each materialized section came from."""

    exp_label: str  # the experiment path as the user gave it
    exp_dir: Path  # absolute
    cache: dict[Path, Any]
    applied: list[Override] = field(default_factory=list)
    origins: dict[str, Origin] = field(default_factory=dict)


def locate(full: KeyPath, ctx: Context) -> tuple[str, str, str]:
    """(file, key path, note) to report a problem at `full` (key path from the experiment root).

    A value set by an override is reported against the override; a section's content against
    its file. The note names an override that changed something below the reported key.
    """
    best: Override | None = None
    for ov in ctx.applied:
        n = len(ov.path)
        names_file = n == 1 and ov.path[0] in SECTIONS and isinstance(ov.value, str)
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


def raise_at(full: KeyPath, ctx: Context, expected: str, got: str | None = None) -> ConfigError:
    file, key, note = locate(full, ctx)
    return ConfigError(file, key, expected + note, got)
