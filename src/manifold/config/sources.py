"""Reading one config file: YAML with the line of every key and list item, and `${ENV}` references.

`SourceFile` is the file being loaded: its display name, where each field is, which fields came from the
environment (to be treated as secret) and the problems found so far.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import yaml

from manifold.config.problems import Loc, Problem, render_path

_ENV_REF = re.compile(r"\$\$\{|\$\{([^}]*)\}")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class SourceFile:
    """One config file being loaded: its display name, node lines, env-sourced fields and problems."""

    def __init__(self, path: Path, display: str, problems: list[Problem]) -> None:
        self.path = path
        self.display = display
        self.problems = problems
        self.lines: dict[tuple[str, ...], int] = {}
        self.env_sourced: set[str] = set()

    def line_of(self, loc: Loc) -> int | None:
        key = tuple(str(p) for p in loc)
        while True:
            if key in self.lines:
                return self.lines[key]
            if not key:
                return None
            key = key[:-1]

    def add(self, loc: Loc, reason: str) -> None:
        self.problems.append(Problem(self.display, render_path(loc), reason, self.line_of(loc)))


# ---- YAML ---------------------------------------------------------------------------------------


# Where a file's bytes come from while loading: the file itself, or (runtime/file_watch.py) the very bytes a
# change was seen in, so that what is applied is what settled, not a save caught half-way during the load.
FILE_BYTES: ContextVar[Mapping[str, bytes] | None] = ContextVar("manifold_config_file_bytes", default=None)


def _text_of(path: Path) -> str:
    seen = FILE_BYTES.get()
    if seen is not None and str(path) in seen:
        return seen[str(path)].decode("utf-8")
    return path.read_text(encoding="utf-8")


def read_yaml(f: SourceFile) -> Any:
    """The file's data, or None after recording a problem. An empty file is an empty mapping."""
    try:
        text = _text_of(f.path)
    except FileNotFoundError:
        f.add((), "file not found")
        return None
    except (OSError, UnicodeDecodeError) as e:
        f.add((), f"cannot read file: {type(e).__name__}")
        return None
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else {}
    except yaml.MarkedYAMLError as e:
        # Only the parser's own words and the position: the snippet could show a literal secret.
        mark = e.problem_mark or e.context_mark
        what = " ".join(x for x in (e.context, e.problem) if x) or "invalid YAML"
        pos = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        f.add((), f"YAML syntax error{pos}: {_plain(what)}")
        return None
    except yaml.YAMLError as e:
        f.add((), f"YAML error: {type(e).__name__}")
        return None
    finally:
        loader.dispose()
    if node is not None:
        _index_lines(f, node, ())
    if data is None:
        return {}
    if not isinstance(data, dict):
        f.add((), f"the top level must be a mapping of keys to values, not a {_yaml_type(data)}")
        return None
    return data


def _yaml_type(value: Any) -> str:
    return {list: "list", str: "string", int: "number", float: "number", bool: "boolean"}.get(type(value), "value")


def _index_lines(f: SourceFile, node: yaml.Node, path: tuple[str, ...]) -> None:
    """Record the line of every key and list item, and report duplicate keys (YAML keeps the last)."""
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.value == "<<":
                continue
            key = key_node.value
            line = key_node.start_mark.line + 1
            f.lines[path + (key,)] = line
            if key in seen:
                f.add(path + (key,), f"duplicate key '{key}' (first at line {seen[key]}); YAML keeps only the last")
            seen[key] = line
            _index_lines(f, value_node, path + (key,))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            f.lines[path + (str(i),)] = item.start_mark.line + 1
            _index_lines(f, item, path + (str(i),))


# ---- ${ENV} references --------------------------------------------------------------------------


def resolve_env(f: SourceFile, value: Any, loc: Loc, env: Mapping[str, str], used: dict[str, str]) -> Any:
    """`value` with every `${NAME}` in its strings replaced; `$${` stands for a literal `${`."""
    if isinstance(value, dict):
        return {k: resolve_env(f, v, loc + (str(k),), env, used) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve_env(f, v, loc + (i,), env, used) for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value

    substituted = False

    def replace(m: re.Match[str]) -> str:
        nonlocal substituted
        if m.group(1) is None:
            return "${"
        name = m.group(1)
        if not _ENV_NAME.match(name):
            f.add(
                loc, f"'${{{name}}}' is not a valid environment variable reference (write '$${{' for a literal '${{')"
            )
            return ""
        if name not in env:
            f.add(loc, f"environment variable {name} is not set")
            return ""
        substituted = True
        used[name] = env[name]
        return env[name]

    resolved = _ENV_REF.sub(replace, value)
    if substituted:
        f.env_sourced.add(render_path(loc))
    return resolved


# PyYAML's words for what is most often a line indented too far or not far enough, which it notices only on
# the line after (or at the next key).
_INDENTATION_MESSAGES = (
    "mapping values are not allowed here",
    "expected <block end>",
    "did not find expected key",
    "could not find expected ':'",
    "did not find expected '-' indicator",
)


def _plain(what: str) -> str:
    """PyYAML's message in a user's words: its token names spelled out, and a hint where it is about
    indentation."""
    what = what.replace("found '?'", "found another key").replace("found '<block mapping start>'", "found a new key")
    if any(m in what for m in _INDENTATION_MESSAGES):
        what += " (check the indentation of this line and of the line before it)"
    return what
