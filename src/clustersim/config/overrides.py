"""Overrides: ``--set key.path=value`` strings parsed into `Override`s, and how they meet the
`sweep:` block (entries set by --set, limits read before expansion, conflicts refused)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from clustersim.config.errors import ConfigError, KeyPath, show_value
from clustersim.config.sweep import SWEEP_KEY, parse_key_path
from clustersim.config.yaml_files import parse_yaml

SET_FILE = "--set"  # stands in for the file name of command-line overrides
# Top-level keys written by `resolved_config` and accepted (then replaced) on reload.
GENERATED_KEYS = ("clustersim_version", "base_dir")


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
    if path[0] in GENERATED_KEYS:
        raise ConfigError(
            SET_FILE, key, "written by clustersim into resolved configs; cannot be set"
        )
    try:
        value = parse_yaml(value_text)
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


def split_overrides(
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


def max_sweep_points(raw: Mapping[str, Any], rest: Sequence[Override]) -> int | None:
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


def check_sweep_conflicts(rest: Sequence[Override], sweep_keys: Sequence[str]) -> None:
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
