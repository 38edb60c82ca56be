"""`manifold connections list|revoke`: the users' OAuth connections, from the gateway's database.

    manifold connections list [--user alice@corp.com] [--json]
    manifold connections revoke --user alice@corp.com --upstream github

A listing never shows a token. Revoking deletes the connection (and bumps the `connections` revision, so a
running gateway drops whatever it holds in memory before its next call: that user gets "connect your
account" again) and, where the authorization server has a revocation endpoint, asks it to revoke the tokens
too (RFC 7009). `register(subparsers)` adds the command to the CLI (cli.py); it runs `run(args, load_config)`.

The crypto and database imports are inside the commands: `manifold` imports every command module to
register it, and `manifold --help` or `manifold keys list` should not pay for them.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from manifold.config.loaded import LoadedConfig
from manifold.config.state import unusable_state

if TYPE_CHECKING:
    from manifold.outbound.oauth.vault import Connection

PRINCIPAL_PREFIXES = ("user:", "sa:", "ext:")


class CliError(Exception):
    pass


def principal_id(user: str) -> str:
    """`alice@corp.com` → `user:alice@corp.com`; ids that already name their kind are kept."""
    user = user.strip()
    if not user:
        raise CliError("--user must not be empty")
    return user if user.startswith(PRINCIPAL_PREFIXES) or user == "anonymous" else f"user:{user}"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("connections", help="users' OAuth connections to upstreams (list, revoke)")
    actions = parser.add_subparsers(dest="action", required=True)
    lst = actions.add_parser("list", help="connections (never the tokens)")
    lst.add_argument("--user", help="only this user (email/subject, or a principal id such as sa:<id>)")
    lst.add_argument("--json", action="store_true", help="print JSON")
    revoke = actions.add_parser("revoke", help="disconnect a user from an upstream (they must connect again)")
    revoke.add_argument("--user", required=True, help="the user (email/subject, or a principal id)")
    revoke.add_argument("--upstream", required=True, help="the upstream id")
    revoke.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, load_config: Callable[[], LoadedConfig]) -> int:
    config = load_config()
    try:
        return asyncio.run(_main(args, config))
    except CliError as exc:
        print(f"manifold: {exc}", file=sys.stderr)
        return 1


async def _main(args: argparse.Namespace, config: LoadedConfig) -> int:
    from manifold.outbound.oauth import OAuthFlows, Vault
    from manifold.security.crypto import Cipher, DecryptError, KeyProblem, WrongKey
    from manifold.store.db import open_database

    if (unusable := unusable_state(config)) is not None:
        raise CliError(unusable)
    try:
        engine = await open_database(config.database_url)
    except Exception as exc:  # noqa: BLE001 — a clear line, not a driver traceback (which may hold a URL)
        raise CliError(f"cannot open the gateway database: {type(exc).__name__}") from None
    try:
        try:
            cipher = Cipher.load(config.state_dir)
            await cipher.check(engine)
        except (WrongKey, KeyProblem, DecryptError) as exc:
            raise CliError(str(exc)) from None
        vault = Vault(engine, cipher)
        match args.action:
            case "list":
                user = principal_id(args.user) if args.user else None
                rows = [_row(c) for c in await vault.list(user)]
                _print(rows, args.json)
            case "revoke":
                user, upstream = principal_id(args.user), args.upstream.strip()
                existing = await vault.get(user, upstream)
                if existing is None:
                    raise CliError(f"{user} has no connection to upstream '{upstream}'")
                flows = OAuthFlows(engine, cipher)
                try:
                    # RFC 7009 at the authorization server where it offers revocation, then the row goes
                    # (which bumps the `connections` revision: a running gateway forgets the token).
                    await flows.revoke(user, upstream)
                finally:
                    await flows.aclose()
                at_server = existing.revocation_endpoint is not None
                result = {"user": user, "upstream": upstream, "revoked": True, "asked_authorization_server": at_server}
                if args.json:
                    print(json.dumps(result, indent=2))
                else:
                    note = (
                        "the authorization server was asked to revoke the tokens too"
                        if at_server
                        else "the authorization server offers no revocation endpoint"
                    )
                    print(f"Revoked the connection of {user} to {upstream} ({note}).")
            case _:
                raise CliError(f"unknown command connections {args.action}")
    finally:
        await engine.dispose()
    return 0


def _row(c: Connection) -> dict[str, Any]:
    return {
        "user": c.user,
        "upstream": c.upstream,
        "status": c.status.value,
        "scopes": list(c.scopes),
        "issuer": c.issuer,
        "expires_at": c.expires_at,
        "created_at": c.created_at,
        "updated_at": c.updated_at,
    }


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return datetime.datetime.fromtimestamp(v, datetime.UTC).strftime("%Y-%m-%d %H:%M")
    if isinstance(v, list):
        return " ".join(map(str, v)) or "-"
    return str(v)


def _print(rows: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    columns = ["user", "upstream", "status", "scopes", "expires_at", "updated_at"]
    table = [[_cell(r[c]) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(line[i]) for line in table]) for i, c in enumerate(columns)]
    print("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)))
    for line in table:
        print("  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)))
    if not table:
        print("(none)")
