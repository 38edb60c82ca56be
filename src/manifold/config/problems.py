"""Configuration problems and how they are shown: one `Problem` per mistake, all raised together.

Every problem names its file, the dotted field path and (when known) the line, so a user fixes everything
in one pass. Pydantic's errors are rewritten into the same form (`report_validation`): locations as the file
spells them, unknown keys with a suggestion. Secrets: a problem is built from the file, the field path and a
reason written by us or a validator; `redact_secrets` is the last guard that no resolved `${...}` value
appears in a reason.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import BaseModel, ValidationError

Loc = tuple[str | int, ...]  # a field's location: keys and list indexes

_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_MIN_REDACT = 4  # shorter values are not secrets, and scrubbing them would garble every message


@dataclass(frozen=True)
class Problem:
    file: str  # as shown to the user: relative to the config file's folder when inside it
    field_path: str  # dotted, with list indexes: "upstreams.github.url", "members[0].upstream"; "" = whole file
    reason: str
    line: int | None = None  # 1-based line of the field (or its nearest enclosing field), when known

    def __str__(self) -> str:
        where = f"{self.file}: {self.field_path}: " if self.field_path else f"{self.file}: "
        at = f" (line {self.line})" if self.line else ""
        return f"{where}{self.reason}{at}"


class ConfigError(Exception):
    """The configuration cannot be used. `problems` lists every problem found, in file order."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


def render_path(loc: Iterable[str | int]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _PLAIN_KEY.match(part):
            out += f".{part}" if out else part
        else:
            out += f'["{part}"]'
    return out


class ProblemSink(Protocol):
    """Where problems of one file (or request body) are recorded, located by field (sources.SourceFile)."""

    def add(self, loc: Loc, reason: str) -> None: ...


# ---- pydantic errors ----------------------------------------------------------------------------


def report_validation(f: ProblemSink, model: type[BaseModel], error: ValidationError, prefix: Loc = ()) -> None:
    for e in error.errors(include_url=False, include_input=False):
        loc: Loc = prefix + _without_tags(model, tuple(e["loc"]))
        if loc and loc[-1] == "[key]":  # pydantic's marker for "the key itself is wrong"
            loc = loc[:-1]
        kind = e["type"]
        if kind == "extra_forbidden":
            f.add(loc, _unknown_key_reason(model, tuple(e["loc"])))
        elif kind == "missing":
            f.add(loc, "field required")
        elif kind == "union_tag_invalid":
            ctx = e.get("ctx") or {}
            tags = ", ".join(re.findall(r"'([^']+)'", str(ctx.get("expected_tags", ""))))
            field = str(ctx.get("discriminator", "mode")).strip("'")
            f.add(loc + (field,), f"unknown value '{ctx.get('tag')}'; one of: {tags}")
        elif kind in ("dict_type", "model_type") and (slip := _key_as_entry(model, tuple(e["loc"]))):
            f.add(loc, slip)
        else:
            f.add(loc, _tidy(e["msg"]))


def _key_as_entry(model: type[BaseModel], loc: Loc) -> str | None:
    """`upstreams.command: python3` (a line dedented by one level): an entry of a mapping of models named like
    a field of that model is most likely that field, written one level too far left."""
    if len(loc) < 2 or not isinstance(loc[-1], str):
        return None
    mapping = _type_at(model, loc[:-1])
    args = typing.get_args(_strip_annotated(mapping)) if typing.get_origin(_strip_annotated(mapping)) is dict else ()
    item = _strip_annotated(args[1]) if len(args) == 2 else None
    fields = item.model_fields if isinstance(item, type) and issubclass(item, BaseModel) else {}
    if loc[-1] not in fields:
        return None
    return f"'{loc[-1]}' is a key of each entry here, not an entry: check its indentation"


def _without_tags(model: type[BaseModel], loc: Loc) -> Loc:
    """Pydantic puts a tagged union's tag into the error location (`auth.forwarded.allow`); the file has
    no such key (`auth.allow`), so it is dropped."""
    out: list[str | int] = []
    for i, part in enumerate(loc):
        if i and _union_models(_type_at(model, loc[:i])) and isinstance(part, str):
            if any(_tag_of(m) == part for m in _union_models(_type_at(model, loc[:i]))):
                continue
        out.append(part)
    return tuple(out)


def _union_models(tp: Any) -> list[type[BaseModel]]:
    tp = _strip_annotated(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if isinstance(a, type) and issubclass(a, BaseModel)]
        if len(args) > 1:
            return args
    return []


def _tag_of(m: type[BaseModel]) -> str | None:
    """The `mode` a member of a tagged union is selected by (its Literal)."""
    field = m.model_fields.get("mode")
    args = typing.get_args(field.annotation) if field is not None else ()
    tag = args[0] if args else None
    return getattr(tag, "value", tag)


def _strip_annotated(tp: Any) -> Any:
    return typing.get_args(tp)[0] if typing.get_origin(tp) is typing.Annotated else tp


def _tidy(msg: str) -> str:
    msg = msg.removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if len(msg) > 1 and msg[0].isupper() and msg[1].islower():
        msg = msg[0].lower() + msg[1:]
    return msg


def _unknown_key_reason(model: type[BaseModel], loc: Loc) -> str:
    key = str(loc[-1]) if loc else ""
    parent = _model_at(model, loc[:-1])
    if parent is None:
        return "unknown key"
    allowed = list(parent.model_fields)
    home = _nested_home(parent, key)
    if home is not None:  # a key of the level below, written at this one: an indentation slip, not a typo
        return f"unknown key '{key}' here; it belongs inside '{home}' (check its indentation)"
    close = difflib.get_close_matches(key, allowed, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else f"; allowed: {', '.join(allowed)}"
    return f"unknown key '{key}'{hint}"


def _nested_home(parent: type[BaseModel], key: str) -> str | None:
    """The field of `parent` whose model (or list item's model) has a field named `key`, if any."""
    for name, field in parent.model_fields.items():
        tp = _strip_annotated(field.annotation)
        candidates = [tp, *typing.get_args(tp)]
        for candidate in candidates:
            if isinstance(candidate, type) and issubclass(candidate, BaseModel) and key in candidate.model_fields:
                return name
    return None


def _model_at(model: type[BaseModel], loc: Loc) -> type[BaseModel] | None:
    """The model class found at `loc` inside `model`, following fields, dict values and list items."""
    tp = _strip_optional(_type_at(model, loc))
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


def _type_at(model: type[BaseModel], loc: Loc) -> Any:
    """The annotation found at `loc` inside `model` (a tagged union's tag in `loc` picks its member)."""
    tp: Any = model
    for part in loc:
        tp = _strip_optional(_strip_annotated(tp))
        members = _union_models(tp)
        if members:
            chosen = [m for m in members if _tag_of(m) == part]
            if not chosen:
                return None
            tp = chosen[0]
            continue
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            info = tp.model_fields.get(str(part))
            if info is None:
                return None
            tp = info.annotation
        elif typing.get_origin(tp) in (dict, list):
            tp = typing.get_args(tp)[-1]
        else:
            return None
    return tp


def _strip_optional(tp: Any) -> Any:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


# ---- order and secrets --------------------------------------------------------------------------


def in_file_order(problems: list[Problem]) -> list[Problem]:
    """Files in the order they were read; within a file, by line (whole-file problems first)."""
    first_seen: dict[str, int] = {}
    for p in problems:
        first_seen.setdefault(p.file, len(first_seen))
    return sorted(problems, key=lambda p: (first_seen[p.file], p.line or 0))


def redact_secrets(problems: list[Problem], used: dict[str, str]) -> list[Problem]:
    """Last guard: no resolved ${...} value appears in any problem (validators may quote their input)."""
    secrets = sorted(((v, k) for k, v in used.items() if len(v) >= _MIN_REDACT), key=lambda x: -len(x[0]))
    if not secrets:
        return problems
    out = []
    for p in problems:
        reason = p.reason
        for value, name in secrets:
            reason = reason.replace(value, f"${{{name}}}")
        out.append(Problem(p.file, p.field_path, reason, p.line) if reason != p.reason else p)
    return out
