"""`manifold apps list|revoke`: the applications (IDEs, agents) people signed in to the gateway's own
authorization server, from the gateway's database, through the admin API's own operations (admin/ops.py
`list_apps`, `revoke_app`).

    manifold apps list [--user alice@corp.com] [--json]
    manifold apps revoke --user alice@corp.com --client <client id>

Revoking forgets the person's consent for that client and revokes every sign-in of it at once: its refresh
tokens stop working, and its access tokens are refused on the very next request (the "auth" revision is
bumped, so a running gateway re-checks them). The person can sign the application in again, and is asked
to consent again. `register(subparsers)` adds the command to the CLI (cli.py).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import sys
from collections.abc import Callable

from manifold.admin.ops import Operations, OpError
from manifold.config.loaded import LoadedConfig
from manifold.config.state import unusable_state
from manifold.outbound.connections_cli import CliError


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("apps", help="applications signed in with the gateway's own OAuth (list, revoke)")
    actions = parser.add_subparsers(dest="action", required=True)
    lst = actions.add_parser("list", help="who allowed which application, for which servers")
    lst.add_argument("--user", help="only this user (email/subject, or a principal id such as sa:<id>)")
    lst.add_argument("--json", action="store_true", help="print JSON")
    revoke = actions.add_parser("revoke", help="revoke an application's access for a user, at once")
    revoke.add_argument("--user", required=True, help="the user (email/subject, or a principal id)")
    revoke.add_argument("--client", required=True, help="the application's client id")
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
    from manifold.authserver.store import AuthStore
    from manifold.store.db import open_database

    if (unusable := unusable_state(config)) is not None:
        raise CliError(unusable)
    try:
        engine = await open_database(config.database_url)
    except Exception as exc:  # noqa: BLE001 — a clear line, not a driver traceback (which may hold a URL)
        raise CliError(f"cannot open the gateway database: {type(exc).__name__}") from None
    ops = Operations(engine, config, apps=AuthStore(engine))  # the admin API's operations: one code path
    try:
        match args.action:
            case "list":
                rows = await ops.list_apps(args.user)
                if args.json:
                    print(json.dumps(rows, indent=2))
                elif not rows:
                    print("No application has been allowed.")
                else:
                    for row in rows:
                        when = datetime.datetime.fromtimestamp(row["updated_at"], datetime.UTC)
                        print(
                            f"{row['user']}  {row['name'] or '-'}  {row['client']}  "
                            f"{' '.join(row['servers'])}  {when:%Y-%m-%d %H:%M}"
                        )
            case "revoke":
                done = await ops.revoke_app(args.user, args.client)
                if args.json:
                    print(json.dumps(done, indent=2))
                else:
                    print(f"Revoked {done['client']} for {done['user']}: its tokens no longer work.")
            case _:
                raise CliError(f"unknown command apps {args.action}")
    except OpError as exc:
        raise CliError(exc.message) from None
    finally:
        await engine.dispose()
    return 0
