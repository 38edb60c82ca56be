"""Load `manifold.yaml` and `virtual_servers/*.yaml` into validated models, or explain every problem.

Order of work, per file: parse YAML (keeping each node's line), resolve `${ENV_NAME}` references in string
values, validate with the pydantic models, then check what no single model can see: references between
upstreams, groups and virtual servers, virtual-server ids, and the names aliases produce. Problems from
all files are collected and raised together as one `ConfigError`, so a user fixes everything in one pass.

Secrets: `${...}` values are never put into a `Problem`. Each Problem is built from the file, the field path
and a reason written here or by a validator; as a last guard any resolved value (4+ characters) that
still appears in a reason is replaced by its `${NAME}` reference. `LoadedConfig.env_sourced` records which
fields came from the environment, so later code can treat them as secret.
"""

from __future__ import annotations

import difflib
import fnmatch
import os
import re
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from manifold.config.models import (
    SLUG,
    SLUG_RE,
    GatewayConfig,
    GatewaySettings,
    MemberConfig,
    UpstreamConfig,
    VirtualServerConfig,
)
from manifold.naming import NameTable, candidate_name, expose_name, is_valid_name

Loc = tuple[str | int, ...]

_ENV_REF = re.compile(r"\$\$\{|\$\{([^}]*)\}")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_GLOB_CHARS = re.compile(r"[*?\[]")
_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_MIN_REDACT = 4  # shorter values are not secrets, and scrubbing them would garble every message


# ---- problems -----------------------------------------------------------------------------------


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


def _read_yaml(f: SourceFile) -> Any:
    """The file's data, or None after recording a problem. An empty file is an empty mapping."""
    try:
        text = f.path.read_text(encoding="utf-8")
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
        f.add((), f"YAML syntax error{pos}: {what}")
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


# ---- pydantic errors ----------------------------------------------------------------------------


def report_validation(f: SourceFile, model: type[BaseModel], error: ValidationError, prefix: Loc = ()) -> None:
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
        else:
            f.add(loc, _tidy(e["msg"]))


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
    close = difflib.get_close_matches(key, allowed, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else f"; allowed: {', '.join(allowed)}"
    return f"unknown key '{key}'{hint}"


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


# ---- the loaded configuration -------------------------------------------------------------------


@dataclass(frozen=True)
class LoadedConfig:
    path: Path  # the config file, absolute
    base_dir: Path  # its folder: relative paths in the config are relative to it
    gateway: GatewayConfig
    state_dir: Path  # absolute
    virtual_servers_dir: Path  # absolute
    virtual_servers: dict[str, VirtualServerConfig]  # from files, by id, sorted by id
    virtual_server_files: dict[str, Path] = field(default_factory=dict)  # id -> file
    # (file as shown in problems, dotted field path) of every value that came from ${...}: treat as secret.
    env_sourced: frozenset[tuple[str, str]] = frozenset()

    @property
    def settings(self) -> GatewaySettings:
        return self.gateway.gateway

    @property
    def upstreams(self) -> dict[str, UpstreamConfig]:
        return self.gateway.upstreams

    @property
    def database_url(self) -> str:
        return self.settings.database_url or f"sqlite+aiosqlite:///{self.state_dir / 'manifold.db'}"

    def separator_for(self, server: VirtualServerConfig) -> str:
        return server.separator or self.settings.namespace_separator

    def stdio_cwd(self, upstream_id: str) -> Path:
        """Where a stdio upstream runs: its `cwd` (relative to the config file's folder), else that folder.
        A relative `command` such as `.venv/bin/python` is therefore found relative to the same folder."""
        cwd = self.upstreams[upstream_id].cwd
        return self.base_dir if cwd is None else _resolve_dir(self.base_dir, cwd)

    def is_env_sourced(self, file: str, field_path: str) -> bool:
        return (file, field_path) in self.env_sourced

    def upstream_as_virtual_server(self, upstream_id: str) -> VirtualServerConfig:
        if upstream_id not in self.upstreams:
            raise KeyError(upstream_id)
        return upstream_as_virtual_server(upstream_id, description=self.upstreams[upstream_id].description)

    def served_servers(self) -> dict[str, VirtualServerConfig]:
        return served_servers(self)


def upstream_as_virtual_server(upstream_id: str, *, description: str | None = None) -> VirtualServerConfig:
    """The one-member virtual server under which every upstream is also served: all its tools, resources
    and prompts, under their own names (namespace off)."""
    return VirtualServerConfig(
        id=upstream_id,
        description=description,
        namespace=False,
        members=[MemberConfig(upstream=upstream_id)],
    )


def served_servers(config: LoadedConfig) -> dict[str, VirtualServerConfig]:
    """Every server the gateway serves at /mcp/{id}: the virtual servers from files (sorted by id), then
    one per upstream in config order. Ids never clash: the loader refuses a file id equal to an upstream id."""
    served = dict(config.virtual_servers)
    for upstream_id in config.upstreams:
        served[upstream_id] = config.upstream_as_virtual_server(upstream_id)
    return served


def _resolve_dir(base: Path, p: Path) -> Path:
    p = p.expanduser()
    return p if p.is_absolute() else base / p


def _display(base: Path, p: Path) -> str:
    try:
        return p.relative_to(base).as_posix()
    except ValueError:
        return str(p)


# ---- loading ------------------------------------------------------------------------------------


# Top-level sections that may be present with everything under them commented out (YAML null).
NULLABLE_SECTIONS = ("gateway", "upstreams", "groups", "identity", "users", "teams", "service_accounts", "grants")


def load_config(path: Path, *, env: Mapping[str, str] | None = None) -> LoadedConfig:
    """Load and check the whole configuration; raise `ConfigError` listing every problem found."""
    env = os.environ if env is None else env
    path = Path(path).expanduser().absolute()
    base = path.parent
    problems: list[Problem] = []
    used: dict[str, str] = {}
    env_sourced: set[tuple[str, str]] = set()

    main = SourceFile(path, path.name, problems)
    raw = _read_yaml(main)
    gateway: GatewayConfig | None = None
    settings = GatewaySettings()
    raw_settings: Any = {}
    upstream_ids: list[str] = []
    if raw is not None:
        # `groups:` with everything under it commented out is YAML null: read it as "none".
        raw = {k: v for k, v in raw.items() if not (k in NULLABLE_SECTIONS and v is None)}
        raw = resolve_env(main, raw, (), env, used)
        try:
            gateway = GatewayConfig.model_validate(raw)
        except ValidationError as e:
            report_validation(main, GatewayConfig, e)
        settings, raw_settings, upstream_ids = _best_effort(raw, gateway)
        _check_groups(main, raw.get("groups"), upstream_ids)
        if gateway is not None:
            _check_identity(main, gateway)
    env_sourced |= {(main.display, p) for p in main.env_sourced}

    state_dir = _resolve_dir(base, settings.state_dir)
    vs_dir = _resolve_dir(base, settings.virtual_servers_dir)
    servers: dict[str, VirtualServerConfig] = {}
    files: dict[str, Path] = {}
    if vs_dir.is_dir():
        servers, files = _load_virtual_servers(base, vs_dir, settings, upstream_ids, env, used, problems, env_sourced)
    elif isinstance(raw_settings, dict) and "virtual_servers_dir" in raw_settings:
        # The default folder may be absent (no virtual servers); a folder someone named must exist.
        main.add(("gateway", "virtual_servers_dir"), f"folder '{_display(base, vs_dir)}' does not exist")

    if problems or gateway is None:
        raise ConfigError(redact_secrets(_in_file_order(problems), used))
    return LoadedConfig(
        path=path,
        base_dir=base,
        gateway=gateway,
        state_dir=state_dir,
        virtual_servers_dir=vs_dir,
        virtual_servers=dict(sorted(servers.items())),
        virtual_server_files=files,
        env_sourced=frozenset(env_sourced),
    )


def _best_effort(raw: dict, gateway: GatewayConfig | None) -> tuple[GatewaySettings, Any, list[str]]:
    """Settings and upstream ids to check the virtual servers against, even when manifold.yaml has
    problems (those are already reported): the valid gateway settings or defaults, and the upstream keys."""
    raw_settings = raw.get("gateway", {})
    if gateway is not None:
        return gateway.gateway, raw_settings, list(gateway.upstreams)
    usable: dict[str, Any] = {}
    if isinstance(raw_settings, dict):
        for key in ("state_dir", "virtual_servers_dir", "namespace_separator"):
            if key in raw_settings:
                try:
                    GatewaySettings.model_validate({key: raw_settings[key]})
                    usable[key] = raw_settings[key]
                except ValidationError:
                    pass
    settings = GatewaySettings.model_validate(usable)
    raw_upstreams = raw.get("upstreams")
    ids = [str(k) for k in raw_upstreams] if isinstance(raw_upstreams, dict) else []
    return settings, raw_settings, ids


def _check_groups(f: SourceFile, raw_groups: Any, upstream_ids: list[str]) -> None:
    """Group members must be upstreams. Works on the raw data so it runs even when validation failed;
    entries of the wrong type are left to the validator's report."""
    if not isinstance(raw_groups, dict):
        return
    for group_id, members in raw_groups.items():
        if not isinstance(members, list):
            continue
        seen: set[str] = set()
        for i, upstream_id in enumerate(members):
            if not isinstance(upstream_id, str):
                continue
            if upstream_id not in upstream_ids:
                f.add(("groups", str(group_id), i), unknown_upstream_reason(upstream_id, upstream_ids))
            elif upstream_id in seen:
                f.add(("groups", group_id, i), f"upstream '{upstream_id}' is listed twice")
            seen.add(upstream_id)


def _field_loc(field_path: str) -> Loc:
    """`what[1]` → ("what", 1); `claims.groups` → ("claims", "groups")."""
    loc: list[str | int] = []
    for part in re.split(r"\.", field_path):
        m = re.fullmatch(r"([^\[]*)((?:\[\d+\])*)", part)
        if m is None:
            loc.append(part)
            continue
        if m.group(1):
            loc.append(m.group(1))
        loc.extend(int(i) for i in re.findall(r"\[(\d+)\]", m.group(2)))
    return tuple(loc)


def _check_identity(f: SourceFile, gateway: GatewayConfig) -> None:
    """Grants and admin selectors parse (policy/grants.py decides the grammar); no two IdPs share an issuer
    (a token could not be routed to one of them)."""
    from manifold.policy.grants import GrantError, grant_from_config, parse_who

    for i, grant in enumerate(gateway.grants):
        try:
            grant_from_config(grant, i)
        except GrantError as exc:
            f.add(("grants", i, *_field_loc(exc.field)), exc.problem)
    for i, selector in enumerate(gateway.identity.admins):
        try:
            parse_who(selector)
        except GrantError as exc:
            f.add(("identity", "admins", i), exc.problem)
    issuers: dict[str, str] = {}
    for idp_id, idp in gateway.identity.idps.items():
        issuer = idp.issuer.rstrip("/")
        if issuer in issuers:
            f.add(("identity", "idps", idp_id, "issuer"), f"same issuer as IdP '{issuers[issuer]}'")
        issuers.setdefault(issuer, idp_id)


def unknown_upstream_reason(upstream_id: str, known: list[str]) -> str:
    close = difflib.get_close_matches(upstream_id, known, n=1)
    if close:
        return f"unknown upstream '{upstream_id}'; did you mean '{close[0]}'?"
    return f"unknown upstream '{upstream_id}' (known: {', '.join(known) or 'none'})"


def _load_virtual_servers(
    base: Path,
    vs_dir: Path,
    settings: GatewaySettings,
    upstream_ids: list[str],
    env: Mapping[str, str],
    used: dict[str, str],
    problems: list[Problem],
    env_sourced: set[tuple[str, str]],
) -> tuple[dict[str, VirtualServerConfig], dict[str, Path]]:
    servers: dict[str, VirtualServerConfig] = {}
    files: dict[str, Path] = {}
    paths = sorted(
        p for p in vs_dir.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file() and not p.name.startswith(".")
    )
    for p in paths:
        f = SourceFile(p, _display(base, p), problems)
        raw = _read_yaml(f)
        if raw is None:
            continue
        raw = resolve_env(f, raw, (), env, used)
        env_sourced |= {(f.display, x) for x in f.env_sourced}
        try:
            server = VirtualServerConfig.model_validate(raw)
        except ValidationError as e:
            report_validation(f, VirtualServerConfig, e)
            check_raw_upstream_refs(f, raw.get("members"), upstream_ids)
            continue
        server_id = _check_server_id(f, p.stem, server, upstream_ids)
        if server_id is None:
            continue
        if server_id in files:
            f.add(
                ("id",) if server.id else (),
                f"virtual server id '{server_id}' is also defined in {_display(base, files[server_id])}",
            )
            continue
        check_members(f, server, upstream_ids, server.separator or settings.namespace_separator)
        if server.id is None:
            server = server.model_copy(update={"id": server_id})
        servers[server_id] = server
        files[server_id] = p
    return servers, files


def _check_server_id(f: SourceFile, stem: str, server: VirtualServerConfig, upstream_ids: list[str]) -> str | None:
    """The server's id (the file name without extension), or None after reporting why it cannot be used."""
    loc: Loc = ("id",) if server.id is not None else ()
    if server.id is not None and server.id != stem:
        f.add(loc, f"id '{server.id}' does not match the file name '{stem}'; rename the file or remove 'id'")
        return None
    origin = "" if server.id is not None else " (the file name)"
    if not SLUG_RE.match(stem):
        f.add(loc, f"virtual server id '{stem}'{origin} must match {SLUG} (lowercase letters, digits, '-')")
        return None
    if stem in upstream_ids:
        f.add(
            loc,
            f"virtual server id '{stem}'{origin} is also an upstream id; every upstream is served alone under "
            "its own id, so choose another name",
        )
        return None
    return stem


def check_members(f: SourceFile, server: VirtualServerConfig, upstream_ids: list[str], sep: str) -> None:
    """Upstream references, and every exposed name the file alone determines: aliases and exact tool names."""
    table = NameTable("tool")
    for i, member in enumerate(server.members):
        if member.upstream not in upstream_ids:
            f.add(("members", i, "upstream"), unknown_upstream_reason(member.upstream, upstream_ids))
        dead = _check_overrides(f, i, member, "aliases")
        _check_overrides(f, i, member, "descriptions")
        for name, alias in member.aliases.items():
            loc: Loc = ("members", i, "aliases", name)
            if name in dead:
                continue
            if not is_valid_name(alias):
                f.add(loc, f"alias '{alias}' is not a valid tool name (1-64 characters of A-Z a-z 0-9 _ -)")
                continue
            candidate = candidate_name(member.member_id, name, sep=sep, namespace=server.namespace, alias=alias)
            if not is_valid_name(candidate):
                f.add(loc, f"alias '{alias}' gives the tool name '{candidate}', longer than 64 characters")
                continue
            collision = table.try_add(member.member_id, name, candidate)
            if collision is not None:
                f.add(loc, str(collision))
        for j, name in enumerate(member.tools):
            if _GLOB_CHARS.search(name) or name in member.aliases or _matches(name, member.hide):
                continue
            exposed = expose_name(member.member_id, name, sep=sep, namespace=server.namespace)
            collision = table.try_add(member.member_id, name, exposed)
            if collision is not None:
                f.add(("members", i, "tools", j), str(collision))


def check_raw_upstream_refs(f: SourceFile, raw_members: Any, upstream_ids: list[str]) -> None:
    """The upstream references of a file that failed validation, so one pass shows those problems too."""
    if not isinstance(raw_members, list):
        return
    for i, m in enumerate(raw_members):
        if isinstance(m, dict) and isinstance(m.get("upstream"), str) and m["upstream"] not in upstream_ids:
            f.add(("members", i, "upstream"), unknown_upstream_reason(m["upstream"], upstream_ids))


def _check_overrides(f: SourceFile, i: int, member: MemberConfig, key: str) -> set[str]:
    """An alias or description for a tool the member does not expose is a mistake that would do nothing.
    Returns those tool names."""
    overrides: dict[str, str] = getattr(member, key)
    what = "alias" if key == "aliases" else "description"
    dead: set[str] = set()
    for name in overrides:
        loc: Loc = ("members", i, key, name)
        if not _matches(name, member.tools):
            f.add(loc, f"tool '{name}' is not selected by 'tools', so this {what} does nothing")
            dead.add(name)
        elif _matches(name, member.hide):
            f.add(loc, f"tool '{name}' is removed by 'hide', so this {what} does nothing")
            dead.add(name)
    return dead


def _matches(name: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def _in_file_order(problems: list[Problem]) -> list[Problem]:
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
