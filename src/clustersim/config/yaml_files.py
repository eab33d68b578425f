"""Reading experiment files: strict YAML (no repeated keys, YAML 1.2 floats), one-line
errors naming the file, line and column."""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Hashable
from pathlib import Path
from typing import Any

import yaml

from clustersim.config.errors import ConfigError, show_value


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


# Values a document may expand to once its aliases are followed: anchors shared over a few
# levels (the "billion laughs") expand exponentially, and every walk over the tree (error
# messages, sweep labels, deep copies) would hang and exhaust memory.
MAX_EXPANDED_VALUES = 1_000_000


class YAMLTooLarge(yaml.YAMLError):
    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem


def expanded_values(data: Any) -> int:
    """Values in `data` counting each alias use again (shared containers counted once per
    use, computed once each)."""
    memo: dict[int, int] = {}

    def count(value: Any) -> int:
        if not isinstance(value, (dict, list)):
            return 1
        key = id(value)
        if key not in memo:
            items = value.items() if isinstance(value, dict) else enumerate(value)
            memo[key] = 1 + sum(count(v) for _, v in items)
        return memo[key]

    return count(data)


def parse_yaml(text: str) -> Any:
    data = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader subclass
    if expanded_values(data) > MAX_EXPANDED_VALUES:
        raise YAMLTooLarge(
            f"expands to more than {MAX_EXPANDED_VALUES:,} values through its aliases"
        )
    return data


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
            cache[path] = parse_yaml(text)
        except yaml.YAMLError as err:
            raise _yaml_error(label, err) from None
        except RecursionError:
            raise ConfigError(label, "", "invalid YAML: nested too deeply") from None
    return cache[path]


def read_mapping(path: Path, label: str, cache: dict[Path, Any]) -> dict[Any, Any]:
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
    return read_mapping(abs_path, label, {})
