"""ConfigError and the translation of pydantic ValidationErrors into one user-facing line.

Every bad input a user can write is reported as exactly one line
``FILE: key.path: what was expected (got X)`` — the CLI prints it and exits 2. The key path is
the path the user wrote (mapping keys and list indices joined by dots), never pydantic's
internal location: union tags such as ``poisson`` or ``function-after[..., ModelSpec]`` and the
``[key]`` marker of dict-key errors are removed by walking the schema alongside the location.

The small type-walking helpers here are shared with ``sweep.py`` (sweep keys are checked
against the schema with the same rules).
"""

from __future__ import annotations

import json
import re
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

KeyPath = tuple[str | int, ...]

_GOT_MAX_CHARS = 60  # a longer "got" value is cut with an ellipsis
_NONE_TYPE = type(None)


class ConfigError(Exception):
    """A bad user input: the message is one line naming the file, the key path and the problem.

    `file` is how the file is shown to the user (or ``--set`` for a command-line override),
    `key` the dotted key path inside it ('' when the problem is the file as a whole),
    `expected` what was expected, `got` the offending value as the user would write it.
    """

    def __init__(self, file: str, key: str, expected: str, got: str | None = None) -> None:
        self.file = file
        self.key = key
        self.expected = expected
        self.got = got
        super().__init__(self._line())

    def _line(self) -> str:
        parts = [self.file, self.key] if self.key else [self.file]
        text = ": ".join([*parts, self.expected])
        if self.got is not None:
            text += f" (got {self.got})"
        return " ".join(text.split())  # invariant: one line, no runs of whitespace

    def __str__(self) -> str:
        return self._line()

    def __reduce__(self) -> tuple[type[ConfigError], tuple[str, str, str, str | None]]:
        """Picklable (errors cross process boundaries in parallel sweeps / plans)."""
        return (ConfigError, (self.file, self.key, self.expected, self.got))


def format_key(path: Sequence[str | int]) -> str:
    """Dotted key path as the user writes it: ``workload.arrival.rates_rps.1``."""
    return ".".join(str(p) for p in path)


def show_value(value: Any) -> str:
    """A value as the user would write it in YAML, on one line, at most ~60 characters."""
    if value is None:
        text = "null"
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, (int, float, str)):
        text = repr(value)
    else:
        try:
            text = json.dumps(value, default=str, ensure_ascii=False)
        except (TypeError, ValueError):
            text = repr(value)
    text = " ".join(text.split())
    if len(text) > _GOT_MAX_CHARS:
        text = text[: _GOT_MAX_CHARS - 1] + "…"
    return text


# --------------------------------------------------------------------------- type walking


def unwrap_type(tp: Any) -> tuple[Any, str | None]:
    """Strip Annotated and Optional wrappers; returns (type, discriminator field or None)."""
    discriminator: str | None = None
    while True:
        origin = get_origin(tp)
        if origin is Annotated:
            args = get_args(tp)
            for meta in args[1:]:
                disc = getattr(meta, "discriminator", None)
                if isinstance(disc, str):
                    discriminator = disc
            tp = args[0]
            continue
        if origin is Union or origin is types.UnionType:
            members = [a for a in get_args(tp) if a is not _NONE_TYPE]
            if len(members) == 1:
                tp = members[0]
                continue
        return tp, discriminator


def union_members(tp: Any) -> list[Any] | None:
    """Non-None members of a union of two or more types, else None."""
    origin = get_origin(tp)
    if origin is Union or origin is types.UnionType:
        members = [a for a in get_args(tp) if a is not _NONE_TYPE]
        if len(members) > 1:
            return members
    return None


def is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def field_type(model: type[BaseModel], name: str) -> tuple[Any, str | None] | None:
    """(annotation, discriminator) of a model field, or None when it has no such field."""
    info = model.model_fields.get(name)
    if info is None:
        return None
    return info.annotation, info.discriminator if isinstance(info.discriminator, str) else None


def tag_values(member: Any, discriminator: str) -> list[str]:
    """Literal values a union member accepts for its discriminator field."""
    if not is_model(member):
        return []
    found = field_type(member, discriminator)
    if found is None:
        return []
    inner, _ = unwrap_type(found[0])
    return [str(v) for v in get_args(inner)] if get_origin(inner) is Literal else []


def _pick_member(members: list[Any], tag: str, discriminator: str | None) -> Any:
    """The union member a pydantic location tag names, or None when it cannot be told."""
    for m in members:
        if discriminator is not None and tag in tag_values(m, discriminator):
            return m
        name = getattr(m, "__name__", None)
        if name and (tag == name or re.search(rf"\b{re.escape(name)}\]$", tag)):
            return m
    return None


def _looks_like_tag(seg: str) -> bool:
    """A pydantic-internal location segment of a type we could not follow ('constrained-int')."""
    return "[" in seg or "(" in seg or seg.startswith("constrained-") or seg in _BASIC_TAGS


_BASIC_TAGS = frozenset({"int", "float", "str", "bool", "list", "dict", "none", "tuple"})


@dataclass
class _Walk:
    path: list[str | int]  # the user's key path
    parent: Any = None  # the model type holding the last path segment (None if unknown)
    end: Any = None  # the (unwrapped) type at the end of the location
    end_discriminator: str | None = None
    key_error: bool = False  # the error is about a dict key itself, not its value


def walk_location(root: type[BaseModel], loc: Sequence[str | int]) -> _Walk:
    """Map a pydantic error location to the user's key path by walking the schema."""
    walk = _Walk(path=[])
    cur: Any = root
    disc: str | None = None
    segments = list(loc)
    for i, seg in enumerate(segments):
        if seg == "[key]":
            continue  # consumed with the key before it
        tp, inner_disc = unwrap_type(cur) if cur is not None else (None, None)
        disc = inner_disc or disc
        members = union_members(tp) if tp is not None else None
        if members is not None:  # this segment is a union tag: follow the member it names
            cur, disc = _pick_member(members, str(seg), disc), None
            continue
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            walk.path.append(seg)
            walk.parent = tp
            found = field_type(tp, str(seg))
            cur, disc = found if found is not None else (None, None)
        elif get_origin(tp) in (list, tuple):
            walk.path.append(seg)
            cur, disc = get_args(tp)[0], None
        elif get_origin(tp) is dict:
            walk.path.append(seg)
            walk.key_error = segments[i + 1 : i + 2] == ["[key]"]  # the key itself is bad
            cur, disc = get_args(tp)[0 if walk.key_error else 1], None
        else:  # schema unknown here: keep what looks like a user key
            if isinstance(seg, int) or not _looks_like_tag(seg):
                walk.path.append(seg)
            walk.key_error = segments[i + 1 : i + 2] == ["[key]"]
            cur, disc = None, None
    if cur is not None:
        walk.end, inner_disc = unwrap_type(cur)
        walk.end_discriminator = inner_disc or disc
    return walk


def model_keys(model: type[BaseModel]) -> list[str]:
    """Keys a user may write in a mapping of this model, in declaration order."""
    return list(model.model_fields)


# --------------------------------------------------------------------------- messages


@dataclass(frozen=True)
class ErrorDetail:
    """One validation problem in user terms: key path, what was expected, what was given."""

    path: KeyPath
    expected: str
    got: str | None


_BOUND_KEYS = {
    "greater_than": "gt",
    "greater_than_equal": "ge",
    "less_than": "lt",
    "less_than_equal": "le",
}
_BOUND_WORDS = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}
_TYPE_WORDS = {
    "int": "an integer",
    "float": "a number",
    "bool": "true or false",
    "string": "a string",
    "list": "a list",
    "tuple": "a list",
    "dict": "a mapping",
    "model": "a mapping",
    "model_attributes": "a mapping",
    "dataclass": "a mapping",
}


def _literal_choices(walk: _Walk, ctx: Mapping[str, Any]) -> str:
    end = walk.end
    if get_origin(end) is Literal:
        return ", ".join(str(v) for v in get_args(end))
    return str(ctx.get("expected", "")).replace("'", "")


def _union_choices(walk: _Walk) -> str:
    members = union_members(walk.end) or []
    disc = walk.end_discriminator
    tags = [t for m in members for t in (tag_values(m, disc) if disc else [])]
    return ", ".join(tags)


def _type_word(err_type: str) -> str | None:
    for suffix in ("_type", "_parsing"):
        if err_type.endswith(suffix):
            return _TYPE_WORDS.get(err_type[: -len(suffix)])
    return None


def _describe(err: ErrorDetails, walk: _Walk, top_keys: Sequence[str] | None) -> ErrorDetail:
    """The wording of one pydantic error (see ConfigError for the line it becomes)."""
    kind = err["type"]
    ctx: Mapping[str, Any] = err.get("ctx") or {}
    value = err.get("input")
    got: str | None = show_value(value)
    path: KeyPath = tuple(walk.path)
    if kind == "missing":
        return ErrorDetail(path, "missing required key", None)
    if kind == "extra_forbidden":
        allowed = list(top_keys) if top_keys is not None else []
        if top_keys is None and walk.parent is not None:
            allowed = model_keys(walk.parent)
        hint = f" (expected one of: {', '.join(allowed)})" if allowed else ""
        return ErrorDetail(path, f"unknown key{hint}", None)
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        disc = walk.end_discriminator or str(ctx.get("discriminator", "")).strip("'")
        choices = _union_choices(walk) or str(ctx.get("expected_tags", "")).replace("'", "")
        key = (*path, disc) if disc else path
        if kind == "union_tag_not_found":
            return ErrorDetail(key, f"missing required key (expected one of: {choices})", None)
        return ErrorDetail(key, f"expected one of: {choices}", show_value(ctx.get("tag")))
    if kind == "literal_error":
        what = "invalid key: expected one of" if walk.key_error else "expected one of"
        return ErrorDetail(path, f"{what}: {_literal_choices(walk, ctx)}", got)
    bound = _BOUND_KEYS.get(kind)
    if bound is not None and bound in ctx:
        limit = ctx[bound]
        shown = format(limit, "g") if isinstance(limit, float) else str(limit)  # 1.0 → 1
        return ErrorDetail(path, f"expected a number {_BOUND_WORDS[bound]} {shown}", got)
    if kind == "too_short":
        return ErrorDetail(path, f"expected at least {ctx.get('min_length')} items", got)
    if kind == "too_long":
        return ErrorDetail(path, f"expected at most {ctx.get('max_length')} items", got)
    if kind == "int_from_float":
        return ErrorDetail(path, "expected a whole number", got)
    if kind == "finite_number":
        return ErrorDetail(path, "expected a finite number", got)
    word = _type_word(kind)
    if word is not None:
        return ErrorDetail(path, f"expected {word}", got)
    msg = str(err.get("msg", kind))
    if kind == "keyed_value_error":  # schema.keyed_error: the message names its own key
        return ErrorDetail((*path, *str(ctx.get("key", "")).split(".")), msg, None)
    if kind in ("value_error", "assertion_error"):
        msg = re.sub(r"^(Value|Assertion) error, ", "", msg)
        if isinstance(value, (Mapping, list)):
            got = None  # the whole section: the message itself carries the numbers
    else:
        msg = msg[:1].lower() + msg[1:]
    return ErrorDetail(path, msg, got)


def _pick_error(errors: list[ErrorDetails], walks: list[_Walk]) -> int:
    """Index of the error to report: the first, except that an unknown key next to a missing
    one is the likelier cause (a typo), so it wins."""
    first = errors[0]
    if first["type"] == "missing":
        parent = tuple(walks[0].path[:-1])
        for i, err in enumerate(errors):
            if err["type"] == "extra_forbidden" and tuple(walks[i].path[:-1]) == parent:
                return i
    return 0


def describe_validation_error(
    err: ValidationError, model: type[BaseModel], top_keys: Sequence[str] | None = None
) -> ErrorDetail:
    """The first problem of a ValidationError raised by `model.model_validate`, in user terms.

    `top_keys`, when given, are the keys the loader accepts at the top level of `model` (listed
    in the "unknown key" hint there instead of the model's own fields).
    """
    errors = err.errors()
    walks = [walk_location(model, e["loc"]) for e in errors]
    i = _pick_error(errors, walks)
    top = top_keys if walks[i].parent is model and len(walks[i].path) == 1 else None
    return _describe(errors[i], walks[i], top)
