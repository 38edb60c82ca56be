"""`manifold explain --as alice@corp.com --server eng --tool server-1__create_issue`.

Builds the principal from the directory (the teams a user or service account has on the gateway, plus
`--team` for teams an IdP token would bring), resolves the exposed tool name back to its member and
upstream tool by the naming rules (no upstream is contacted), and prints the decision with the grant that
made it (policy/explain.py).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable

from manifold.admin.catalog import CatalogOperations
from manifold.config.loaded import LoadedConfig
from manifold.config.models import VirtualServerConfig
from manifold.identity.directory import Directory
from manifold.naming import expose_name
from manifold.policy.access import PolicyAccess
from manifold.policy.explain import Item, explain
from manifold.policy.store import GrantRepository, file_grants
from manifold.principal import Credential, CredentialKind, Principal, PrincipalKind
from manifold.store.db import open_database


def resolve_tool(config: LoadedConfig, server: VirtualServerConfig, exposed: str) -> list[Item]:
    """Every (member, tool) the exposed name can stand for under the naming rules."""
    sep = config.separator_for(server)
    found: list[Item] = []
    for m in server.members:
        originals = {alias: original for original, alias in m.aliases.items()}
        candidates = set()
        for alias, original in originals.items():
            if expose_name(m.member_id, original, sep=sep, namespace=server.namespace, alias=alias) == exposed:
                candidates.add(original)
        if server.namespace and exposed.startswith(m.member_id + sep):
            candidates.add(exposed[len(m.member_id) + len(sep) :])
        elif not server.namespace:
            candidates.add(exposed)
        found.extend(Item(exposed, m.member_id, m.upstream, name) for name in sorted(candidates))
    return found


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
    engine = await open_database(config.database_url)
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
        print("\n".join(explain(access.policy, principal, args.server, members)))
        return 0
    items = resolve_tool(config, server, args.tool)
    if not items:
        print(
            f"manifold: '{args.tool}' names no tool of server '{args.server}' under its naming rules", file=sys.stderr
        )
        return 2
    allowed = False
    for item in items:
        lines = explain(access.policy, principal, args.server, members, item)
        allowed = allowed or lines[0].startswith("ALLOW")
        print("\n".join(lines))
    return 0 if allowed else 1


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    explain = subparsers.add_parser("explain", help="may this principal use this tool? and which grant decides")
    explain.add_argument("--as", dest="principal", required=True, help="alice@corp.com, sa:<id>, team:<id>")
    explain.add_argument("--server", required=True, help="virtual server or upstream id")
    explain.add_argument("--tool", help="exposed tool name (default: explain access to the server)")
    explain.add_argument("--team", action="append", help="extra teams, e.g. from an IdP's groups claim")
    explain.set_defaults(func=run)


def run(args: argparse.Namespace, load_config: Callable[[], LoadedConfig]) -> int:
    return asyncio.run(_explain(args, load_config()))
