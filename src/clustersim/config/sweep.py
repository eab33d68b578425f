"""The `sweep:` block of an experiment: key paths × value lists → one point per combination.

```yaml
sweep:
  layout.pp: [1, 2]                         # a key path and its values
  experts.routing.skew: [0.0, 1.2]
  layout: [{tp: 8, dp: 2}, {tp: 8, pp: 2}]  # or a whole section per value
```
Points are the cartesian product in declaration order (the first key varies slowest). Each
point carries the overrides to apply to the raw experiment and a filesystem-safe label such as
``pp=2_skew=1.2`` or ``layout=tp8-dp2``, unique within the sweep.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, get_args, get_origin

from clustersim.config.errors import (
    ConfigError,
    KeyPath,
    field_type,
    format_key,
    is_model,
    show_value,
    union_members,
    unwrap_type,
)
from clustersim.config.limits import sweep_excess
from clustersim.config.schema import Experiment, LimitsSpec

SWEEP_KEY = "sweep"
_LABEL_MAX_CHARS = 100  # longer labels are cut and suffixed with a short hash
_UNSAFE = re.compile(r"[^A-Za-z0-9._+=-]+")
# Experiment fields a user never writes (the loader sets them).
_LOADER_FIELDS = frozenset({"base_dir"})


@dataclass(frozen=True)
class SweepPoint:
    """One sweep point: `overrides` maps each sweep key path (as written) to this point's value."""

    label: str
    overrides: dict[str, Any] = field(default_factory=dict)


def parse_key_path(key: str) -> KeyPath:
    """``a.b.1`` → ('a', 'b', 1). Raises ValueError on an empty segment."""
    segments = key.split(".")
    if any(not s.strip() for s in segments):
        raise ValueError(f"empty segment in key path {key!r}")
    return tuple(int(s) if s.isdigit() else s.strip() for s in segments)


def schema_has_path(tp: Any, path: Sequence[str | int], top: bool = True) -> bool:
    """Whether `path` names a key (or a list item) somewhere inside schema type `tp`.

    A union accepts a path any of its members accepts (``workload.arrival.rate_rps`` is valid
    because the poisson arrival has it).
    """
    inner, _ = unwrap_type(tp)
    if not path:
        return True
    head, rest = path[0], path[1:]
    members = union_members(inner)
    if members is not None:
        return any(schema_has_path(m, path, top=False) for m in members)
    if is_model(inner):
        if top and inner is Experiment and head in _LOADER_FIELDS:
            return False
        found = field_type(inner, str(head))
        return found is not None and schema_has_path(found[0], rest, top=False)
    origin = get_origin(inner)
    if origin in (list, tuple):
        return isinstance(head, int) and schema_has_path(get_args(inner)[0], rest, top=False)
    if origin is dict:
        return schema_has_path(get_args(inner)[1], rest, top=False)
    return False


def _check_keys(block: Mapping[Any, Any], file: str) -> list[tuple[str, KeyPath, list[Any]]]:
    """Validated (key as written, parsed key path, values) in declaration order."""
    items: list[tuple[str, KeyPath, list[Any]]] = []
    for key, values in block.items():
        where = f"{SWEEP_KEY}.{key}"
        if not isinstance(key, str):
            raise ConfigError(file, where, "expected a key path such as layout.tp")
        try:
            path = parse_key_path(key)
        except ValueError:
            raise ConfigError(file, where, "expected a key path such as layout.tp") from None
        if not schema_has_path(Experiment, path):
            raise ConfigError(file, where, "not a key path of an experiment")
        if not isinstance(values, list) or not values:
            raise ConfigError(
                file, where, "expected a non-empty list of values", show_value(values)
            )
        for other_key, other, _ in items:
            n = min(len(path), len(other))
            if path[:n] == other[:n]:
                raise ConfigError(file, where, f"overlaps {SWEEP_KEY}.{other_key}")
        items.append((key, path, values))
    return items


def _short_names(paths: Sequence[KeyPath]) -> list[str]:
    """Shortest trailing part of each key path that is unique among the sweep's keys and does
    not start with a list index (``rates_rps.1``, not ``1``)."""
    names: list[str] = []
    for path in paths:
        for n in range(1, len(path) + 1):
            tail = path[-n:]
            if isinstance(tail[0], int) and n < len(path):
                continue
            if sum(1 for p in paths if p[-n:] == tail) == 1 or n == len(path):
                names.append(format_key(tail))
                break
    return names


_COMPOSITE_MAX_CHARS = 32  # a mapping / list value longer than this is labelled by position


def _value_text(value: Any) -> str:
    """A value as label text: 1.2, true, tp8-dp2 (mapping), 20-200 (list)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, float):
        short = format(value, "g")
        return short if float(short) == value else repr(value)
    if isinstance(value, Mapping):
        return "-".join(f"{k}{_value_text(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return "-".join(_value_text(v) for v in value)
    return str(value)


def _safe(text: str) -> str:
    """Filesystem-safe: unsafe runs become '-', never a leading dot (no hidden / '..')."""
    text = _UNSAFE.sub("-", text).strip("-")
    return text.lstrip(".") or "x"


def value_texts(values: Sequence[Any]) -> list[str]:
    """Label text of each value swept for one key.

    Scalars print as themselves. A section switched between absent and one mapping
    (`[null, {...}]`) reads `off` / `on`; other mappings or lists longer than
    _COMPOSITE_MAX_CHARS are named by their 1-based position, `v<n>`."""
    composite = [isinstance(v, (Mapping, list, tuple)) for v in values]
    if sum(composite) == 1 and all(c or v is None for c, v in zip(composite, values, strict=True)):
        return ["on" if c else "off" for c in composite]
    texts = []
    for i, (value, is_composite) in enumerate(zip(values, composite, strict=True)):
        text = _safe(_value_text(value))
        texts.append(f"v{i + 1}" if is_composite and len(text) > _COMPOSITE_MAX_CHARS else text)
    return texts


def _label(names: Sequence[str], texts: Sequence[str]) -> str:
    label = "_".join(f"{_safe(n)}={t}" for n, t in zip(names, texts, strict=True))
    if len(label) > _LABEL_MAX_CHARS:
        digest = hashlib.sha1(label.encode()).hexdigest()[:8]
        label = f"{label[: _LABEL_MAX_CHARS - 9]}-{digest}"
    return label


def _unique(labels: list[str]) -> list[str]:
    """Suffix repeats with -2, -3, … in order so every run directory differs."""
    seen: dict[str, int] = {}
    out: list[str] = []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        out.append(label if seen[label] == 1 else f"{label}-{seen[label]}")
    return out


def expand_points(
    raw: Mapping[str, Any], file: str = "<experiment>", max_points: int | None = None
) -> list[tuple[SweepPoint, tuple[int, ...]]]:
    """Like expand_sweep, also giving each point's value index per sweep key. More than
    `max_points` points (default: limits.max_sweep_points) is a ConfigError, before expanding."""
    block = raw.get(SWEEP_KEY)
    if block is None or (isinstance(block, Mapping) and not block):
        return [(SweepPoint(label="", overrides={}), ())]
    if not isinstance(block, Mapping):
        raise ConfigError(
            file, SWEEP_KEY, "expected a mapping of key paths to lists of values", show_value(block)
        )
    items = _check_keys(block, file)
    limit = LimitsSpec().max_sweep_points if max_points is None else max_points
    excess = sweep_excess([len(values) for _, _, values in items], limit)
    if excess is not None:
        raise ConfigError(file, SWEEP_KEY, excess.message())
    names = _short_names([path for _, path, _ in items])
    combos = list(itertools.product(*(range(len(values)) for _, _, values in items)))
    texts = [value_texts(values) for _, _, values in items]
    labels = _unique(
        [_label(names, [texts[k][i] for k, i in enumerate(combo)]) for combo in combos]
    )
    points: list[tuple[SweepPoint, tuple[int, ...]]] = []
    for label, combo in zip(labels, combos, strict=True):
        overrides = {items[k][0]: items[k][2][i] for k, i in enumerate(combo)}
        points.append((SweepPoint(label=label, overrides=overrides), tuple(combo)))
    return points


def _set_inside(value: Any, path: Sequence[str | int], new: Any) -> Any:
    """A copy of `value` with `new` at `path` inside it (mappings created where missing); the
    value unchanged when the path cannot be followed (the resolver reports that)."""
    if not path:
        return copy.deepcopy(new)
    head, rest = path[0], path[1:]
    if value is None and isinstance(head, str):
        value = {}
    if isinstance(value, Mapping) and isinstance(head, str):
        out = dict(value)
        out[head] = _set_inside(value.get(head), rest, new)
        return out
    if isinstance(value, list) and isinstance(head, int) and head < len(value):
        items = list(value)
        items[head] = _set_inside(items[head], rest, new)
        return items
    return value


def apply_inside(
    points: Sequence[SweepPoint], sets: Sequence[tuple[KeyPath, Any]]
) -> list[SweepPoint]:
    """The points as the runs see them when `--set` reaches inside a swept key (``layout.dp=1``
    while sweeping ``layout``): each swept value with those sets applied, and labels made from
    the values that actually run. Points are returned unchanged when no set reaches inside."""
    if not points or not points[0].overrides:
        return list(points)
    keys = list(points[0].overrides)
    inside = [
        (key, path[len(parse_key_path(key)) :], value)
        for path, value in sets
        for key in keys
        if len(path) > len(parse_key_path(key))
        and path[: len(parse_key_path(key))] == parse_key_path(key)
    ]
    if not inside:
        return list(points)
    values = []
    for point in points:
        current = dict(point.overrides)
        for key, sub, value in inside:
            current[key] = _set_inside(current[key], sub, value)
        values.append(current)
    names = _short_names([parse_key_path(k) for k in keys])
    texts: list[list[str]] = []
    for key in keys:
        distinct: list[Any] = []  # first appearance = declaration order of the sweep values
        for v in values:
            if v[key] not in distinct:
                distinct.append(v[key])
        # one value left (the set made them equal): its own text, not the off / on naming
        shown = value_texts(distinct) if len(distinct) > 1 else [_safe(_value_text(distinct[0]))]
        texts.append([shown[distinct.index(v[key])] for v in values])
    labels = _unique(
        [_label(names, [texts[j][i] for j in range(len(keys))]) for i in range(len(values))]
    )
    return [SweepPoint(label=lab, overrides=v) for lab, v in zip(labels, values, strict=True)]


def expand_sweep(raw: Mapping[str, Any], file: str = "<experiment>") -> list[SweepPoint]:
    """The sweep points of a raw experiment mapping, in declaration order.

    Without a `sweep:` block (or with an empty one) there is one point, label ''. `file` names
    the experiment in error messages; a bad block raises ConfigError on ``sweep.<key>``.
    """
    return [point for point, _ in expand_points(raw, file)]
