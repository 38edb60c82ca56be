"""`manifold audit [--user U] [--since T] [--until T] [--server S] [--outcome O] [--limit N] [--json]`: the
audit table, newest first, read straight from the gateway's database."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy.engine import make_url

from manifold.audit.errors import describe_error
from manifold.audit.model import AuditEvent, Outcome
from manifold.audit.query import parse_since, query
from manifold.audit.table import format_events
from manifold.config.loaded import LoadedConfig
from manifold.store.db import open_database


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `manifold audit`; it runs `run(args, load_config)`."""
    p = subparsers.add_parser(
        "audit",
        help="show audit events: who called which tool, resource or prompt, and the outcome",
        description="Show audit events, newest first.",
    )
    p.add_argument("--user", help="an email (alice@corp.com) or a principal id (user:…, sa:ci-bot, ext:…)")
    p.add_argument("--since", help="how far back: 15m, 2h, 7d, or an ISO-8601 date/time")
    p.add_argument("--until", help="up to (not including): 15m, 2h, 7d, or an ISO-8601 date/time")
    p.add_argument("--server", help="only requests to this server id")
    p.add_argument("--outcome", choices=[o.value for o in Outcome], help="only this outcome")
    p.add_argument("--limit", type=_positive_int, default=100, help="at most this many events (default 100)")
    p.add_argument("--json", dest="as_json", action="store_true", help="one JSON object per line")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, load_config: Callable[[], LoadedConfig]) -> int:
    config = load_config()
    now = time.time()
    try:
        since = parse_since(args.since, now) if args.since else None
    except ValueError as exc:
        print(f"manifold audit: --since: {exc}", file=sys.stderr)
        return 2
    try:
        until = parse_since(args.until, now) if args.until else None
    except ValueError as exc:
        print(f"manifold audit: --until: {exc}", file=sys.stderr)
        return 2
    url = config.database_url
    db_file = _sqlite_file(url)
    if db_file is not None and not db_file.exists():
        # open_database would create an empty one; say instead where we looked.
        print(f"manifold audit: no database at {db_file} (has the gateway run with this state_dir?)", file=sys.stderr)
        return 1
    try:
        events = asyncio.run(
            _query_once(
                url,
                user=args.user,
                since=since,
                until=until,
                server=args.server,
                outcome=Outcome(args.outcome) if args.outcome else None,
                limit=args.limit,
            )
        )
    except Exception as exc:  # the URL may hold a password: name the error, not the URL
        print(f"manifold audit: cannot read the audit events ({describe_error(exc)})", file=sys.stderr)
        return 1
    if not events:
        print("manifold audit: no events match", file=sys.stderr)
        return 0
    print(format_events(events, as_json=args.as_json))
    return 0


def _positive_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {n}")
    return n


async def _query_once(
    url: str,
    *,
    user: str | None,
    since: float | None,
    until: float | None,
    server: str | None,
    outcome: Outcome | None,
    limit: int,
) -> list[AuditEvent]:
    engine = await open_database(url)
    try:
        return await query(engine, user=user, since=since, until=until, server=server, outcome=outcome, limit=limit)
    finally:
        await engine.dispose()


def _sqlite_file(url: str) -> Path | None:
    parsed = make_url(url)
    if not parsed.drivername.startswith("sqlite") or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)
