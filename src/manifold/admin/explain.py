"""`manifold explain --as alice@corp.com --server eng --tool server-1__create_issue`.

Builds the principal from the directory (the teams a user or service account has on the gateway, plus
`--team` for teams an IdP token would bring), resolves the exposed tool name to its member and upstream tool
the way the relay does, and prints one decision with the grant that made it (policy/explain.py).

Resolution: by default explain lists the server's upstreams' tools as the gateway does (connecting to them,
stdio ones started for the moment) and resolves through the relay's own `VirtualServerView`: hidden tools,
`tools` globs, aliases and collisions count. An upstream whose list needs a caller's credential (any auth
mode but `none`), or cannot be fetched, is resolved by the configuration's rules instead, and the output
says so. `--offline` uses only the rules (no upstream is contacted): a tool the upstream lacks, or a
collision, is then not seen. Exit status: 0 allow, 1 deny (for a server and for a tool), 2 when the name is
not served by the server (hidden, not selected, colliding, unknown) or the question is malformed.

`live_tool_names` is also what `manifold check --live` lists with.
"""

from __future__ import annotations

import argparse
import asyncio
import fnmatch
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from manifold.admin.catalog import CatalogOperations
from manifold.catalog.lists import UpstreamLists, describe_failure
from manifold.catalog.view import VirtualServerView
from manifold.config.check import ToolNames
from manifold.config.loaded import LoadedConfig
from manifold.config.models import AuthMode, MemberConfig, Transport, UpstreamConfig, VirtualServerConfig
from manifold.config.state import unusable_state
from manifold.identity.directory import Directory
from manifold.naming import expose_name
from manifold.outbound.resolver import OutboundRefused
from manifold.policy.access import PolicyAccess
from manifold.policy.explain import Item, explain
from manifold.policy.store import GrantRepository, file_grants
from manifold.principal import Credential, CredentialKind, Principal, PrincipalKind
from manifold.store.db import open_database
from manifold.upstream.credential import SHARED, Outbound
from manifold.upstream.pool import UpstreamPool

RULES_ONLY = "resolved by the configuration's rules, without the upstreams' lists"


@dataclass
class Resolution:
    """What an exposed name stands for: at most one item, else why it is not served."""

    item: Item | None = None
    not_served: str | None = None
    notes: list[str] = field(default_factory=list)


# ---- by the configuration's rules --------------------------------------------------------------------


def _rule_candidates(config: LoadedConfig, server: VirtualServerConfig, m: MemberConfig, exposed: str) -> list[str]:
    """The upstream names of member `m` that would be exposed as `exposed`, if the upstream had them."""
    sep = config.separator_for(server)
    found = [
        original
        for original, alias in m.aliases.items()
        if expose_name(m.member_id, original, sep=sep, namespace=server.namespace, alias=alias) == exposed
    ]
    if found:
        return found  # an alias is what the name is; the same upstream name too would collide with it
    plain = exposed if not server.namespace else exposed.removeprefix(m.member_id + sep)
    if plain == exposed and server.namespace:
        return []
    if plain in m.aliases:  # shown under its alias only
        return []
    if expose_name(m.member_id, plain, sep=sep, namespace=server.namespace) != exposed:
        return []
    return [plain]


def _left_out(m: MemberConfig, name: str) -> str | None:
    """Why member `m` does not show upstream tool `name` (None when it does)."""
    if not any(fnmatch.fnmatchcase(name, p) for p in m.tools):
        return f"{name} matches none of member {m.member_id}'s tools: {list(m.tools)}"
    hidden = [p for p in m.hide if fnmatch.fnmatchcase(name, p)]
    if hidden:
        return f"member {m.member_id} hides {name} (hide: {hidden})"
    return None


def resolve_by_rules(
    config: LoadedConfig, server_id: str, server: VirtualServerConfig, exposed: str, members: Sequence[MemberConfig]
) -> Resolution:
    shown: list[Item] = []
    reasons: list[str] = []
    for m in members:
        for name in _rule_candidates(config, server, m, exposed):
            reason = _left_out(m, name)
            if reason is None:
                shown.append(Item(exposed, m.member_id, m.upstream, name))
            else:
                reasons.append(reason)
    if len(shown) == 1:
        return Resolution(item=shown[0], notes=[RULES_ONLY])
    if len(shown) > 1:
        which = " or ".join(f"tool {i.name} of member {i.member}" for i in shown)
        return Resolution(
            not_served=f"'{exposed}' could be {which}; if both upstreams have it the two collide and neither is "
            f"served ({RULES_ONLY})"
        )
    why = "; ".join(reasons) or f"'{exposed}' names no tool of server '{server_id}' under its naming rules"
    return Resolution(not_served=why)


# ---- from the upstreams' lists, as the relay resolves ------------------------------------------------


def _pool_config(config: LoadedConfig, upstream_id: str, u: UpstreamConfig) -> UpstreamConfig:
    # As the gateway runs it: a stdio upstream in its cwd relative to the config file's folder.
    if u.transport is Transport.STDIO:
        return u.model_copy(update={"cwd": config.stdio_cwd(upstream_id)})
    if u.transport is Transport.OPENAPI and u.spec is not None:
        return u.model_copy(update={"spec": config.openapi_spec(u.spec)})
    return u


@asynccontextmanager
async def live_lists(config: LoadedConfig, upstream_ids: Sequence[str]) -> AsyncIterator[UpstreamLists]:
    """The gateway's list cache over a pool of our own, closed (stdio children ended) on the way out."""
    pool = UpstreamPool({uid: _pool_config(config, uid, config.upstreams[uid]) for uid in upstream_ids})
    try:
        yield UpstreamLists(pool, 0)
    finally:
        await pool.aclose()


def _shared_only(config: LoadedConfig, upstream_id: str) -> Outbound:
    mode = config.upstreams[upstream_id].auth.mode
    if mode is AuthMode.NONE:
        return SHARED
    raise OutboundRefused(upstream_id, f"its list needs a caller's credential (auth mode {mode.value})")


async def resolve_live(
    config: LoadedConfig, server_id: str, server: VirtualServerConfig, exposed: str, lists: UpstreamLists
) -> Resolution:
    view = VirtualServerView(server_id, server, lists, config.separator_for(server))

    async def credential(m: MemberConfig) -> Outbound:
        return _shared_only(config, m.upstream)

    built = await view.get("tools", credential=credential)
    target = built.targets.get(exposed)
    if target is not None:
        return Resolution(item=Item(exposed, target.member_id, target.upstream_id, target.name))
    collided = [c for c in built.collisions if c.startswith(f"tools '{exposed}' ")]
    if collided:
        return Resolution(not_served=collided[0])
    if built.failures:
        failed = [m for m in server.members if m.member_id in built.failures]
        found = resolve_by_rules(config, server_id, server, exposed, failed)
        if found.item is not None:
            reason = built.failures[found.item.member]
            found.notes = [f"the list of member {found.item.member} was not fetched ({reason}): {RULES_ONLY}"]
            return found
    found = resolve_by_rules(config, server_id, server, exposed, server.members)
    if found.item is not None:
        return Resolution(
            not_served=f"upstream {found.item.upstream} lists no tool {found.item.name}, so '{exposed}' is not served"
        )
    return found


async def live_tool_names_async(config: LoadedConfig, upstream_ids: Sequence[str]) -> dict[str, list[str] | str]:
    async with live_lists(config, upstream_ids) as lists:

        async def one(uid: str) -> list[str] | str:
            try:
                entry = await lists.get(uid, "tools", outbound=_shared_only(config, uid))
            except Exception as exc:  # any failure is reported by name, never raised  # noqa: BLE001
                return describe_failure(exc)
            return [t["name"] for t in entry.items if isinstance(t.get("name"), str)]

        results = await asyncio.gather(*(one(uid) for uid in upstream_ids))
    return dict(zip(upstream_ids, results, strict=True))


def live_tool_names(config: LoadedConfig) -> ToolNames:
    """For `manifold check --live`: the tools of every upstream a virtual server file names."""
    used = sorted({m.upstream for s in config.virtual_servers.values() for m in s.members})
    return asyncio.run(live_tool_names_async(config, used))


def principal_from(text: str, directory: Directory, extra_teams: list[str]) -> Principal:
    snap = directory.snapshot
    kind, _, value = text.partition(":") if ":" in text else ("user", "", text)
    teams = frozenset(extra_teams)
    if kind == "sa":
        sa = snap.service_accounts.get(value)
        return Principal(
            kind=PrincipalKind.SERVICE_ACCOUNT,
            name=value,
            credential=Credential(CredentialKind.SA_TOKEN),
            teams=teams | frozenset(sa.teams if sa else ()),
        )
    if kind != "user":
        raise ValueError(f"--as takes an email, a subject, user:<id> or sa:<id>, not '{text}'")
    user = snap.users.get(value)
    return Principal(
        kind=PrincipalKind.USER,
        name=value,
        credential=Credential(CredentialKind.API_KEY),
        email=(user.email if user else None) or (value if "@" in value else None),
        teams=teams | frozenset(user.teams if user else ()),
    )


async def _explain(args: argparse.Namespace, config: LoadedConfig) -> int:
    # As every admin command: an unusable state folder or database is one line (status 2, not 1: no deny).
    if (unusable := unusable_state(config)) is not None:
        print(f"manifold: {unusable}", file=sys.stderr)
        return 2
    try:
        engine = await open_database(config.database_url)
    except Exception as exc:  # noqa: BLE001 — a clear line, not a driver traceback (which may hold a URL)
        print(f"manifold: cannot open the gateway database: {type(exc).__name__}", file=sys.stderr)
        return 2
    try:
        # Upstreams, groups and virtual servers created through the API count as much as the files.
        config = (await CatalogOperations(engine, config).current()).effective_config(config)
        servers = config.served_servers()
        server = servers.get(args.server)
        if server is None:
            print(f"manifold: no server '{args.server}' (servers: {', '.join(sorted(servers))})", file=sys.stderr)
            return 2
        directory = Directory(engine, config.gateway)
        await directory.load()
        access = PolicyAccess(config)
        access.load(file_grants(config.gateway.grants) + await GrantRepository(engine).list())
    finally:
        await engine.dispose()
    try:
        principal = principal_from(args.principal, directory, args.team or [])
    except ValueError as exc:
        print(f"manifold: {exc}", file=sys.stderr)
        return 2
    members = [(m.member_id, m.upstream) for m in server.members]
    if not args.tool:
        lines = explain(access.policy, principal, args.server, members)
        print("\n".join(lines))
        return 0 if lines[0].startswith("ALLOW") else 1
    if args.offline:
        found = resolve_by_rules(config, args.server, server, args.tool, server.members)
    else:
        async with live_lists(config, sorted({m.upstream for m in server.members})) as lists:
            found = await resolve_live(config, args.server, server, args.tool, lists)
    if found.item is None:
        print(f"manifold: '{args.tool}' is not served by '{args.server}': {found.not_served}", file=sys.stderr)
        return 2
    lines = explain(access.policy, principal, args.server, members, found.item)
    print("\n".join([*lines, *(f"  note: {n}" for n in found.notes)]))
    return 0 if lines[0].startswith("ALLOW") else 1


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    explain = subparsers.add_parser(
        "explain",
        help="may this principal use this tool? and which grant decides",
        description="Resolves --tool as the gateway does, from the upstreams' live tool lists (hidden tools, "
        "globs, aliases, collisions); an upstream that needs a caller's credential, or cannot be reached, is "
        "resolved by the configuration's rules and the output says so. Exit status: 0 allow, 1 deny, 2 the "
        "name is not served by the server (or the question is malformed, or the state cannot be used).",
    )
    explain.add_argument(
        "--as",
        dest="principal",
        required=True,
        help="a user (alice@corp.com, user:<id>) or a service account (sa:<id>); a team is not a principal: "
        "name one of its members, or any user with --team <id>",
    )
    explain.add_argument("--server", required=True, help="virtual server or upstream id")
    explain.add_argument("--tool", help="exposed tool name (default: explain access to the server)")
    explain.add_argument("--team", action="append", help="extra teams, e.g. from an IdP's groups claim")
    explain.add_argument(
        "--offline",
        action="store_true",
        help="contact no upstream: resolve --tool by the configuration's rules only "
        "(a tool the upstream lacks, or a collision, is then not seen)",
    )
    explain.set_defaults(func=run)


def run(args: argparse.Namespace, load_config: Callable[[], LoadedConfig]) -> int:
    return asyncio.run(_explain(args, load_config()))
