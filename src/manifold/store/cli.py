"""`manifold db upgrade` and `manifold db current`: the database schema's migrations (store/schema.py).

The gateway upgrades the schema itself at start-up; `db upgrade` is for doing it ahead of a deployment (or
from one place when many replicas start), `db current` says where a database stands without changing it.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from pathlib import Path

from sqlalchemy.exc import SQLAlchemyError

from manifold.config.loaded import LoadedConfig
from manifold.config.state import unusable_state
from manifold.store import schema
from manifold.store.db import connect


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `manifold db`; each subcommand runs `run(args, load_config)`."""
    p = subparsers.add_parser("db", help="the database schema: upgrade it, or show its migration revision")
    sub = p.add_subparsers(dest="db_command", required=True, metavar="{upgrade,current}")
    up = sub.add_parser("upgrade", help="apply the schema migrations this version ships (also done at start-up)")
    up.set_defaults(func=run)
    current = sub.add_parser("current", help="show the database's migration revision and the newest one known")
    current.set_defaults(func=run)


def run(args: argparse.Namespace, load_config: Callable[[], LoadedConfig]) -> int:
    config = load_config()
    # `upgrade` makes the state folder (and an SQLite file) as `serve` and every admin command do, or names the
    # file, field and line it cannot use (it said only "FileExistsError", and made a missing database folder).
    if args.db_command == "upgrade" and (unusable := unusable_state(config)) is not None:
        print(f"manifold db upgrade: {unusable}", file=sys.stderr)
        return 1
    if args.db_command == "current" and (unusable := unusable_state(config, make=False)) is not None:
        # Only looks, makes nothing: a state_dir that is a file was "no database ... yet", status 0.
        print(f"manifold db current: {unusable}", file=sys.stderr)
        return 1
    try:
        return asyncio.run(_run(args.db_command, config.database_url))
    except schema.SchemaError as exc:
        print(f"manifold db {args.db_command}: {exc}", file=sys.stderr)
        return 1
    except (SQLAlchemyError, OSError) as exc:
        reason = getattr(exc, "orig", None) or exc
        print(f"manifold db {args.db_command}: cannot use the database: {type(reason).__name__}", file=sys.stderr)
        return 1


async def _run(command: str, url: str) -> int:
    engine = connect(url)
    try:
        if command == "current" and engine.dialect.name == "sqlite":
            path = engine.url.database
            if path not in (None, "", ":memory:") and not Path(path).exists():
                print(f"no database at {path} yet; the gateway (or `manifold db upgrade`) creates it")
                return 0
        if command == "upgrade":
            before = await schema.upgrade(engine)
            if before.up_to_date:
                print(f"schema already at {before.head} (the newest)")
            else:
                print(f"schema upgraded from {before.current or 'nothing'} to {before.head}")
            return 0
        state = await schema.state(engine)
        if state.up_to_date:
            print(f"{state.current} (the newest)")
        elif state.current is None:
            print(f"no revision (an empty database, or one from before migrations); the newest is {state.head}")
            print("`manifold db upgrade` (or starting the gateway) brings it there")
        else:
            print(f"{state.current}; the newest is {state.head}: `manifold db upgrade` brings it there")
        return 0
    finally:
        await engine.dispose()
