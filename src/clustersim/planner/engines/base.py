"""What every engine module implements (`Engine`) and what it returns: a `Verdict` on a
layout, a `LaunchConfig` (argv, config files, notes) rendered as a shell script or JSON."""

from __future__ import annotations

import shlex
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import ClassVar

from clustersim.config.schema import Experiment, Layout, ModelSpec
from clustersim.model.memory import MemoryPlan
from clustersim.planner.engines.eplb import StepTime

PREFILL_PORT = 30000  # first server port of the prefill pool (SGLang's docs' ports)
DECODE_PORT = 30001
ROUTER_PORT = 8000

Broken = tuple[str, str]  # (rule broken, workaround); ("", "") when the layout is fine
ServerParts = tuple[list[str], dict[str, str], list[str]]  # argv, files (name → text), notes
Commands = list[tuple[str, tuple[str, ...]]]  # (what it is, argv) per command, launch order
DisaggParts = tuple[Commands, dict[str, str], list[str]]
PoolView = tuple[Experiment, MemoryPlan]  # a pool as its servers see it: its view, its memory


@dataclass(frozen=True)
class Pools:
    """Both pools of a disaggregated deployment and each pool's step time (EPLB)."""

    views: tuple[PoolView, PoolView]  # prefill, decode
    steps: tuple[StepTime | None, StepTime | None] = (None, None)

    def each(self) -> Iterator[tuple[Experiment, MemoryPlan, StepTime | None]]:
        for (exp, memory), step in zip(self.views, self.steps, strict=True):
            yield exp, memory, step


@dataclass(frozen=True)
class Verdict:
    """Whether `engine` runs a layout as one server; `rule`: what it breaks (else '')."""

    engine: str
    ok: bool
    rule: str = ""
    workaround: str = ""


@dataclass(frozen=True)
class LaunchConfig:
    """One engine's launch config for one layout (or the rule that prevents it)."""

    engine: str
    label: str
    ok: bool
    rule: str = ""
    workaround: str = ""
    argv: tuple[str, ...] = ()  # the server command (empty when not ok or disaggregated)
    files: dict[str, str] = field(default_factory=dict)  # file name → content (YAML)
    notes: tuple[str, ...] = ()
    # disaggregated deployments: (what it is, argv) per command, in launch order
    commands: tuple[tuple[str, tuple[str, ...]], ...] = ()
    nearest: str = ""  # not ok: the nearest layout the engine can express ('' when none)

    def script(self) -> str:
        """A shell script: notes as comments, any config files as heredocs, the command(s)
        (a disaggregated deployment's commands each under a `# --- what` header, separated by
        blank lines)."""
        lines = ["#!/usr/bin/env bash", f"# {self.engine} launch config for layout {self.label}"]
        lines += [f"# note: {n}" for n in self.notes]
        if not self.ok:
            lines.append(f"# NOT EXPRESSIBLE: {self.rule}")
            if self.workaround:
                lines.append(f"# workaround: {self.workaround}")
            if self.nearest:
                lines.append(f"# nearest layout {self.engine} can express: {self.nearest}")
            return "\n".join(lines) + "\n"
        for name, text in self.files.items():
            lines += [f"cat > {shlex.quote(name)} <<'EOF'", text.rstrip("\n"), "EOF"]
        if self.argv:
            lines.append(format_command(self.argv))
        for what, argv in self.commands:
            lines += ["", f"# --- {what}", format_command(argv)]
        return "\n".join(lines) + "\n"

    def to_json(self) -> dict[str, object]:
        return {
            "engine": self.engine,
            "label": self.label,
            "ok": self.ok,
            "rule": self.rule,
            "workaround": self.workaround,
            "nearest": self.nearest,
            "command": format_command(self.argv) if self.ok else None,
            "argv": list(self.argv),
            "commands": [
                {"what": what, "command": format_command(argv), "argv": list(argv)}
                for what, argv in self.commands
            ],
            "files": dict(self.files),
            "notes": list(self.notes),
        }


def format_command(argv: tuple[str, ...]) -> str:
    """argv as one shell line, one `--flag value` per continuation line (leading
    `VAR=value` environment assignments and the program stay on the first line)."""
    if not argv:
        return ""
    parts: list[str] = []
    for tok in argv:
        if tok.startswith("--") or not parts:
            parts.append(shlex.quote(tok))
        else:
            parts[-1] += " " + shlex.quote(tok)
    return " \\\n    ".join(parts)


@dataclass(frozen=True)
class PoolSite:
    """Where a pool's servers listen, and the GPUs they use when both pools share a node."""

    role: str  # prefill | decode
    host: str
    port: int
    first_gpu: int | None  # first GPU index on the shared node; None: the pool has its nodes


def visible_devices(site: PoolSite, gpus: int) -> list[str]:
    """CUDA_VISIBLE_DEVICES=… when the pools share a node (the engine sees its pool only)."""
    if site.first_gpu is None:
        return []
    ids = ",".join(str(site.first_gpu + i) for i in range(gpus))
    return [f"CUDA_VISIBLE_DEVICES={ids}"]


def pool_notes(role: str, notes: list[str]) -> list[str]:
    return [f"{role} pool: {n}" for n in notes]


class Engine(ABC):
    """One serving engine: which layouts one server launch can express, and its commands.

    `verdict` checks context parallelism first (`cp_rule`), then the engine's other rules
    (`rule`); `pool_verdict` is the same for one pool of a disaggregated deployment unless
    the engine says otherwise."""

    name: ClassVar[str]  # vllm | sglang | trtllm (Verdict.engine, LaunchConfig.engine)

    def verdict(self, layout: Layout, model: ModelSpec, a2a: str) -> Verdict:
        if layout.cp > 1:
            rule, workaround = self.cp_rule(layout, model)
            if rule:
                return Verdict(self.name, False, rule, workaround)
        rule, workaround = self.rule(layout, model, a2a)
        return Verdict(self.name, not rule, rule, workaround)

    def pool_verdict(self, layout: Layout, model: ModelSpec, a2a: str) -> Verdict:
        return self.verdict(layout, model, a2a)

    @abstractmethod
    def cp_rule(self, layout: Layout, model: ModelSpec) -> Broken:
        """What context parallelism (layout.cp > 1) breaks ('' when it can run it)."""

    @abstractmethod
    def rule(self, layout: Layout, model: ModelSpec, a2a: str) -> Broken:
        """What the layout breaks besides context parallelism ('' when nothing)."""

    @abstractmethod
    def server(
        self, exp: Experiment, memory: MemoryPlan, label: str, a2a: str, step: StepTime | None
    ) -> ServerParts:
        """One server's command, config files and notes for a layout `verdict` accepts;
        `step` converts the EPLB interval to engine steps."""

    @abstractmethod
    def disaggregated(
        self, pools: Pools, sites: tuple[PoolSite, PoolSite], a2a: str
    ) -> DisaggParts:
        """Both pools' server commands and the router, for pools `pool_verdict` accepts."""
