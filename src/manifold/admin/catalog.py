"""Upstreams, groups and virtual servers created at run time (admin API, CLI), next to those declared in files.

Two sources make one catalog (API objects can be created, replaced with `update` — PUT — and deleted):
- **file objects** — `manifold.yaml` (upstreams, groups) and `virtual_servers/*.yaml`, loaded at startup;
  read-only here (409 "declared in ...; change it there").
- **API objects** — rows of `catalog_objects`; the body is the file format's model as JSON, with `${ENV}`
  references kept as written (resolved in the gateway's environment when applied, so no secret is copied
  into the database through a reference).

`merge` builds the effective catalog: the file objects, then every API object that still checks out
against what is already in it (the same checks as the loader: slugs, id clashes, unknown upstreams, name
collisions). An API object that no longer does (say `manifold.yaml` gained an upstream of the same id) is
left out, logged, and listed with its `problem`; files always win, so a restart never fails because of a
row in the database.

Every write bumps the "catalog" revision in its transaction. A gateway applies the effective catalog
(runtime/catalog_swap.py) at startup, right after its own admin API wrote, and on the first request after
another process (the CLI) wrote: the served set, the pool's upstreams, the policy's groups and virtual
servers, and open notification streams are updated in place, without a restart.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, assert_never

from pydantic import ValidationError
from sqlalchemy import delete, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from manifold.admin.catalog_secrets import ENV_REFERENCE, HIDDEN, PREFIX, CatalogSecrets, owned
from manifold.admin.ops import BadRequest, Conflict, NotFound
from manifold.config.cross_references import check_members, check_raw_upstream_refs, unknown_upstream_reason
from manifold.config.loaded import LoadedConfig
from manifold.config.models import SLUG, SLUG_RE, Strict, UpstreamConfig, VirtualServerConfig
from manifold.config.problems import Problem, redact_secrets, report_validation
from manifold.config.sources import SourceFile, resolve_env
from manifold.store import revisions
from manifold.store.db import catalog_objects, too_long, write_transaction

log = logging.getLogger(__name__)
JSON = dict[str, Any]

API_SOURCE = "api"
# Fields whose values are credentials. GET shows such a value only when it is a reference: `${NAME}`
# (optionally after an auth scheme word, as in "Bearer ${TOKEN}") or `secret:NAME` (the encrypted store).
SECRET_FIELDS = frozenset({"headers", "env", "bearer", "client_secret"})
# A `secret:` name the catalog made for a typed value (admin/catalog_secrets.py) is shown as HIDDEN like the
# value it stands for: the admin typed a secret, not a reference.
CATALOG_PREFIX_RE = re.escape(PREFIX)
_SHOWABLE = re.compile(rf"{ENV_REFERENCE}|secret:(?!{CATALOG_PREFIX_RE})[A-Za-z0-9_.-]+")


class Kind(str, enum.Enum):
    UPSTREAM = "upstream"
    GROUP = "group"
    VSERVER = "vserver"

    @property
    def label(self) -> str:
        return "virtual server" if self is Kind.VSERVER else self.value


# The admin API's path segment for each kind.
KIND_PATHS = {"upstreams": Kind.UPSTREAM, "groups": Kind.GROUP, "virtual-servers": Kind.VSERVER}


class GroupBody(Strict):
    """A group as the API takes it. In `manifold.yaml` a group is `groups: {id: [upstream, ...]}`."""

    upstreams: list[str]


class InvalidBody(BadRequest):
    """The body does not describe a valid object: every problem found, each with its field path."""

    def __init__(self, kind: Kind, object_id: str, problems: list[Problem]) -> None:
        self.problems = problems
        self.title = f"invalid {kind.label}" + (f" '{object_id}'" if object_id else "")
        super().__init__(f"{self.title}: {'; '.join(_describe(p) for p in problems)}")

    def details(self) -> list[JSON]:
        return [{"field": p.field_path, "reason": p.reason} for p in self.problems]


def _describe(p: Problem) -> str:
    return f"{p.field_path}: {p.reason}" if p.field_path else p.reason


# ---- the effective catalog ------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One object as the API shows it."""

    kind: Kind
    id: str
    source: str  # "api", or the file that declares it
    body: JSON  # credentials hidden unless they are references (SECRET_FIELDS)
    problem: str | None = None  # an API object that is left out, and why

    def public(self) -> JSON:
        out: JSON = {"id": self.id, "source": self.source, "applied": self.problem is None, "body": self.body}
        if self.problem is not None:
            out["problem"] = self.problem
        return out


@dataclass
class Catalog:
    upstreams: dict[str, UpstreamConfig]  # resolved; file ones first, in config order
    groups: dict[str, list[str]]
    virtual_servers: dict[str, VirtualServerConfig]
    entries: dict[tuple[Kind, str], Entry]  # what is in force: file objects and applied API objects
    # API objects left out, by (kind, id). One may share its id with a file object (the file wins).
    left_out: dict[tuple[Kind, str], Entry] = dataclasses.field(default_factory=dict)

    def entry(self, kind: Kind, object_id: str) -> Entry | None:
        """The object in force under this id, else an API object left out."""
        return self.entries.get((kind, object_id)) or self.left_out.get((kind, object_id))

    def api_entry(self, kind: Kind, object_id: str) -> Entry | None:
        """The database's object under this id, applied or left out."""
        entry = self.entries.get((kind, object_id))
        if entry is not None and entry.source == API_SOURCE:
            return entry
        return self.left_out.get((kind, object_id))

    def listed(self, kind: Kind) -> list[Entry]:
        return [e for (k, _), e in [*self.entries.items(), *self.left_out.items()] if k is kind]

    def users_of(self, upstream_id: str) -> list[str]:
        """The virtual servers and groups that include an upstream, for "still used by ..." answers."""
        users = [f"virtual server '{sid}'" for sid, vs in self.virtual_servers.items() if _uses(vs, upstream_id)]
        users += [f"group '{gid}'" for gid, members in self.groups.items() if upstream_id in members]
        return users

    def effective_config(self, config: LoadedConfig) -> LoadedConfig:
        """`config` with this catalog's upstreams, groups and virtual servers: what `served_servers()`,
        `stdio_cwd()` and the policy read."""
        gateway = config.gateway.model_copy(update={"upstreams": dict(self.upstreams), "groups": dict(self.groups)})
        return dataclasses.replace(config, gateway=gateway, virtual_servers=dict(sorted(self.virtual_servers.items())))


def _uses(vs: VirtualServerConfig, upstream_id: str) -> bool:
    return any(m.upstream == upstream_id for m in vs.members)


def file_catalog(config: LoadedConfig) -> Catalog:
    main = config.path.name
    entries: dict[tuple[Kind, str], Entry] = {}
    for uid, u in config.upstreams.items():
        entries[(Kind.UPSTREAM, uid)] = Entry(Kind.UPSTREAM, uid, main, _shown_file_upstream(config, uid, u))
    for gid, members in config.gateway.groups.items():
        entries[(Kind.GROUP, gid)] = Entry(Kind.GROUP, gid, main, {"upstreams": list(members)})
    for sid, vs in config.virtual_servers.items():
        path = config.virtual_server_files.get(sid)
        source = _relative(config.base_dir, path) if path is not None else main
        entries[(Kind.VSERVER, sid)] = Entry(Kind.VSERVER, sid, source, vs.model_dump(mode="json", exclude_none=True))
    return Catalog(
        upstreams=dict(config.upstreams),
        groups={g: list(m) for g, m in config.gateway.groups.items()},
        virtual_servers=dict(config.virtual_servers),
        entries=entries,
    )


def merge(config: LoadedConfig, rows: list[tuple[Kind, str, JSON]], env: Mapping[str, str]) -> Catalog:
    """The file objects plus every API object (`rows`, any order) that checks out against them."""
    catalog = file_catalog(config)
    order = {Kind.UPSTREAM: 0, Kind.GROUP: 1, Kind.VSERVER: 2}  # what others refer to goes in first
    for kind, object_id, body in sorted(rows, key=lambda r: order[r[0]]):
        shown = _shown_api_body(kind, body)
        existing = catalog.entries.get((kind, object_id))
        if existing is not None:
            problem = f"{existing.source} also declares {kind.label} '{object_id}', and the file wins"
        else:
            model, problems = CHECKS[kind](config, catalog, object_id, body, env)
            if problems or model is None:
                problem = "; ".join(_describe(p) for p in problems) or "not valid"
            else:
                _add(catalog, kind, object_id, model)
                catalog.entries[(kind, object_id)] = Entry(kind, object_id, API_SOURCE, shown)
                continue
        catalog.left_out[(kind, object_id)] = Entry(kind, object_id, API_SOURCE, shown, problem)
    return catalog


def _add(catalog: Catalog, kind: Kind, object_id: str, model: Any) -> None:
    match kind:
        case Kind.UPSTREAM:
            catalog.upstreams[object_id] = model
        case Kind.GROUP:
            catalog.groups[object_id] = list(model.upstreams)
        case Kind.VSERVER:
            catalog.virtual_servers[object_id] = model
        case _:
            assert_never(kind)


# ---- checks: the loader's rules, for one object against the catalog it would join ----------------

Checked = tuple[Any, list[Problem]]


def _start(kind: Kind, object_id: str) -> tuple[SourceFile, list[Problem]]:
    problems: list[Problem] = []
    f = SourceFile(Path(f"<{kind.value}>"), "request body", problems)
    if not SLUG_RE.match(object_id):
        f.add(("id",), f"{kind.label} id '{object_id}' must match {SLUG} (lowercase letters, digits, '-')")
    elif (too_long_id := too_long(catalog_objects, {"id": object_id})) is not None:
        f.add(("id",), f"{kind.label} id: {too_long_id}")  # the database column's size
    return f, problems


def check_upstream(
    config: LoadedConfig, catalog: Catalog, upstream_id: str, body: JSON, env: Mapping[str, str]
) -> Checked:
    f, problems = _start(Kind.UPSTREAM, upstream_id)
    vs = catalog.entry(Kind.VSERVER, upstream_id)
    if vs is not None:
        f.add(
            ("id",),
            f"'{upstream_id}' is already a virtual server id ({vs.source}); every upstream is also served alone "
            "under its own id, so choose another name",
        )
    used: dict[str, str] = {}
    resolved = resolve_env(f, body, (), env, used)
    model = None
    try:
        model = UpstreamConfig.model_validate(resolved)
    except ValidationError as exc:
        report_validation(f, UpstreamConfig, exc)
    return model, redact_secrets(problems, used)


def check_group(config: LoadedConfig, catalog: Catalog, group_id: str, body: JSON, env: Mapping[str, str]) -> Checked:
    f, problems = _start(Kind.GROUP, group_id)
    try:
        group = GroupBody.model_validate(body)
    except ValidationError as exc:
        report_validation(f, GroupBody, exc)
        return None, problems
    known = list(catalog.upstreams)
    seen: set[str] = set()
    for i, upstream_id in enumerate(group.upstreams):
        if upstream_id not in catalog.upstreams:
            f.add(("upstreams", i), unknown_upstream_reason(upstream_id, known))
        elif upstream_id in seen:
            f.add(("upstreams", i), f"upstream '{upstream_id}' is listed twice")
        seen.add(upstream_id)
    return group, problems


def check_vserver(
    config: LoadedConfig, catalog: Catalog, server_id: str, body: JSON, env: Mapping[str, str]
) -> Checked:
    f, problems = _start(Kind.VSERVER, server_id)
    upstream = catalog.entry(Kind.UPSTREAM, server_id)
    if upstream is not None:
        f.add(
            ("id",),
            f"virtual server id '{server_id}' is also an upstream id ({upstream.source}); every upstream is served "
            "alone under its own id, so choose another name",
        )
    used: dict[str, str] = {}
    resolved = resolve_env(f, body, (), env, used)
    known = list(catalog.upstreams)
    try:
        server = VirtualServerConfig.model_validate(resolved)
    except ValidationError as exc:
        report_validation(f, VirtualServerConfig, exc)
        check_raw_upstream_refs(f, resolved.get("members") if isinstance(resolved, dict) else None, known)
        return None, redact_secrets(problems, used)
    if server.id is not None and server.id != server_id:
        f.add(("id",), f"id '{server.id}' differs from '{server_id}'")
    server = server.model_copy(update={"id": server_id})
    check_members(f, server, known, config.separator_for(server))
    return server, redact_secrets(problems, used)


CHECKS: dict[Kind, Callable[[LoadedConfig, Catalog, str, JSON, Mapping[str, str]], Checked]] = {
    Kind.UPSTREAM: check_upstream,
    Kind.GROUP: check_group,
    Kind.VSERVER: check_vserver,
}


# ---- showing bodies without secrets -----------------------------------------------------------------


def _hide(value: Any, *, secret: bool = False) -> Any:
    """`value` with every credential replaced by HIDDEN unless it is a reference."""
    if isinstance(value, dict):
        return {k: _hide(v, secret=secret or k in SECRET_FIELDS) for k, v in value.items()}
    if isinstance(value, list):
        return [_hide(v, secret=secret) for v in value]
    if secret and not (isinstance(value, str) and _SHOWABLE.fullmatch(value)):
        return HIDDEN
    return value


def keep_hidden(new: Any, stored: Any, *, secret: bool = False) -> Any:
    """`new` with every credential given as HIDDEN replaced by the stored value at the same place (left
    out when there is none): an update that sends back what GET showed keeps the secrets."""
    if isinstance(new, dict):
        old = stored if isinstance(stored, dict) else {}
        out: JSON = {}
        for k, v in new.items():
            kept = keep_hidden(v, old.get(k), secret=secret or k in SECRET_FIELDS)
            if kept is not _DROP:
                out[k] = kept
        return out
    if isinstance(new, list):
        old_list = stored if isinstance(stored, list) else []
        kept = [keep_hidden(v, old_list[i] if i < len(old_list) else None, secret=secret) for i, v in enumerate(new)]
        return [v for v in kept if v is not _DROP]
    if secret and new == HIDDEN:
        return stored if stored is not None and not isinstance(stored, (dict, list)) else _DROP
    return new


_DROP = object()


def _shown_api_body(kind: Kind, body: JSON) -> JSON:
    return _hide(body) if kind is Kind.UPSTREAM else dict(body)


def _shown_file_upstream(config: LoadedConfig, upstream_id: str, u: UpstreamConfig) -> JSON:
    """A file upstream's `${...}` values are already resolved: credentials are hidden, and so is any other
    top-level field whose value came from the environment."""
    shown = _hide(u.model_dump(mode="json", exclude_none=True, exclude_defaults=True))
    shown["transport"] = u.transport.value
    for key in list(shown):
        if config.is_env_sourced(config.path.name, f"upstreams.{upstream_id}.{key}"):
            shown[key] = HIDDEN
    return shown


def _relative(base: Path, path: Path) -> str:
    try:
        return path.relative_to(base).as_posix()
    except ValueError:
        return str(path)


# ---- the database -------------------------------------------------------------------------------


async def read_rows(conn: AsyncConnection) -> list[tuple[Kind, str, JSON]]:
    result = await conn.execute(
        select(catalog_objects.c.kind, catalog_objects.c.id, catalog_objects.c.body).order_by(
            catalog_objects.c.created_at, catalog_objects.c.id
        )
    )
    rows = []
    for kind, object_id, body in result:
        try:
            rows.append((Kind(kind), object_id, body if isinstance(body, dict) else {}))
        except ValueError:
            log.error("catalog object '%s' has an unknown kind '%s'; ignored", object_id, kind)
    return rows


class CatalogOperations:
    """List, show, create and delete catalog objects: what the admin API and the CLI run. Writes only the
    database (and the revision); applying is runtime/catalog_swap.py's job."""

    def __init__(
        self,
        engine: AsyncEngine,
        config: LoadedConfig,
        env: Mapping[str, str] | None = None,
        secrets: CatalogSecrets | None = None,
    ) -> None:
        self.engine = engine
        self.config = config
        self.env = os.environ if env is None else env
        # Where an upstream's typed credentials go instead of the table (admin/catalog_secrets.py); None
        # keeps them as given (tests of the catalog alone).
        self.secrets = secrets

    async def _seal(self, kind: Kind, object_id: str, body: JSON) -> tuple[JSON, list[str]]:
        if kind is not Kind.UPSTREAM or self.secrets is None:
            return body, []
        return await self.secrets.seal(body, object_id)

    async def _forget(self, names: Iterable[str]) -> None:
        if self.secrets is not None:
            await self.secrets.forget(names)

    async def current(self) -> Catalog:
        async with self.engine.connect() as conn:
            return merge(self.config, await read_rows(conn), self.env)

    async def list(self, kind: Kind) -> list[JSON]:
        return [e.public() for e in (await self.current()).listed(kind)]

    async def get(self, kind: Kind, object_id: str) -> JSON:
        entry = (await self.current()).entry(kind, object_id)
        if entry is None:
            raise NotFound(f"no {kind.label} '{object_id}'")
        return entry.public()

    async def create(self, kind: Kind, body: JSON) -> JSON:
        """`body`: `id` plus the object's fields in the file format (a group: `upstreams`)."""
        body = dict(body)
        object_id = body.get("id")
        if not isinstance(object_id, str) or not object_id:
            missing = Problem("request body", "id", "field required" if object_id is None else "must be a string")
            raise InvalidBody(kind, str(object_id or ""), [missing])
        if kind is not Kind.VSERVER:  # a virtual server's id is a field of its model; the others' is a key
            del body["id"]
        body, sealed = await self._seal(kind, object_id, body)  # stored before the body that names them
        try:
            async with write_transaction(self.engine) as conn:  # check and write as one
                catalog = merge(self.config, await read_rows(conn), self.env)
                existing = catalog.entry(kind, object_id)
                if existing is not None:
                    where = (
                        "created through the API" if existing.source == API_SOURCE else f"declared in {existing.source}"
                    )
                    raise Conflict(f"{kind.label} '{object_id}' already exists ({where})")
                model, problems = CHECKS[kind](self.config, catalog, object_id, body, self.env)
                if problems or model is None:
                    raise InvalidBody(kind, object_id, problems)
                await conn.execute(insert(catalog_objects).values(kind=kind.value, id=object_id, body=body))
                await revisions.bump(conn, revisions.CATALOG)
        except BaseException:
            await self._forget(sealed)
            raise
        log.info("%s '%s' created", kind.label, object_id)
        return Entry(kind, object_id, API_SOURCE, _shown_api_body(kind, body)).public()

    async def update(self, kind: Kind, object_id: str, body: JSON) -> JSON:
        """Replace an API object's body (`PUT`): checked like `create`, against the catalog without the old
        one. A credential field given as "(hidden)" (what GET shows) keeps the stored value, so a body read,
        edited and sent back does not lose its secrets. Objects from files are refused (409)."""
        body = dict(body)
        given = body.pop("id", None) if kind is not Kind.VSERVER else body.get("id")
        if given is not None and given != object_id:
            problem = Problem("request body", "id", f"id '{given}' differs from '{object_id}' in the path")
            raise InvalidBody(kind, object_id, [problem])
        if kind is Kind.VSERVER:
            body["id"] = object_id
        # The stored body's credentials come back for "(hidden)" first (they are `secret:` names by then),
        # so only what was typed anew is sealed.
        async with self.engine.connect() as conn:
            stored = next((b for k, i, b in await read_rows(conn) if k is kind and i == object_id), {})
        if kind is Kind.UPSTREAM:
            body = keep_hidden(body, stored)
        body, sealed = await self._seal(kind, object_id, body)
        try:
            async with write_transaction(self.engine) as conn:  # check and write as one
                rows = await read_rows(conn)
                catalog = merge(self.config, rows, self.env)
                entry = catalog.api_entry(kind, object_id)
                if entry is None:
                    declared = catalog.entry(kind, object_id)
                    if declared is None:
                        raise NotFound(f"no {kind.label} '{object_id}'")
                    raise Conflict(f"{kind.label} '{object_id}' is declared in {declared.source}; change it there")
                current = next((b for k, i, b in rows if k is kind and i == object_id), {})
                if current != stored:
                    raise Conflict(f"{kind.label} '{object_id}' was changed meanwhile; load it again")
                others = merge(self.config, [r for r in rows if (r[0], r[1]) != (kind, object_id)], self.env)
                model, problems = CHECKS[kind](self.config, others, object_id, body, self.env)
                if problems or model is None:
                    raise InvalidBody(kind, object_id, problems)
                await conn.execute(
                    catalog_objects.update()
                    .where(catalog_objects.c.kind == kind.value, catalog_objects.c.id == object_id)
                    .values(body=body)
                )
                await revisions.bump(conn, revisions.CATALOG)
        except BaseException:
            await self._forget(sealed)
            raise
        if kind is Kind.UPSTREAM:
            await self._forget(owned(stored, object_id) - owned(body, object_id))  # replaced values
        log.info("%s '%s' updated", kind.label, object_id)
        return Entry(kind, object_id, API_SOURCE, _shown_api_body(kind, body)).public()

    async def delete(self, kind: Kind, object_id: str) -> JSON:
        async with write_transaction(self.engine) as conn:  # check and write as one
            rows = await read_rows(conn)
            catalog = merge(self.config, rows, self.env)
            entry = catalog.api_entry(kind, object_id)
            if entry is None:
                declared = catalog.entry(kind, object_id)
                if declared is None:
                    raise NotFound(f"no {kind.label} '{object_id}'")
                raise Conflict(f"{kind.label} '{object_id}' is declared in {declared.source}; change it there")
            stored = next((b for k, i, b in rows if k is kind and i == object_id), {})
            if kind is Kind.UPSTREAM and entry.problem is None:  # one left out serves no one
                users = catalog.users_of(object_id)
                if users:
                    raise Conflict(
                        f"upstream '{object_id}' is still used by {', '.join(users)}; remove it from them first"
                    )
            await conn.execute(
                delete(catalog_objects).where(catalog_objects.c.kind == kind.value, catalog_objects.c.id == object_id)
            )
            await revisions.bump(conn, revisions.CATALOG)
        if kind is Kind.UPSTREAM:
            await self._forget(owned(stored, object_id))  # its typed credentials go with it
        log.info("%s '%s' deleted", kind.label, object_id)
        return {"id": object_id, "deleted": True}
