"""Noticing, on the very next request, that another process changed what the gateway decides.

The CLI writes keys, grants and catalog objects straight into the database while the gateway runs. Every
such write bumps a counter in `revisions` (scope "auth" or "catalog") in the same transaction. The gateway
could read those counters on every request, but an async query costs more than the rest of the request.
For SQLite there is a much cheaper signal: `PRAGMA data_version` on a private connection changes whenever
any *other* connection commits. It is a few microseconds, so it runs on every request; only when it moved
are the counters read (one indexed SELECT), and only when a counter moved are caches rebuilt.

Other databases (PostgreSQL) have no such pragma: the counters are read at most every `poll_seconds`.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from sqlalchemy import select, update
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from manifold.store.db import revisions

AUTH = "auth"
CATALOG = "catalog"


async def bump(conn: AsyncConnection, scope: str) -> None:
    """Record a change of `scope`; call inside the transaction that makes the change."""
    result = await conn.execute(update(revisions).where(revisions.c.scope == scope).values(n=revisions.c.n + 1))
    if result.rowcount == 0:
        if conn.dialect.name == "sqlite":
            await conn.execute(sqlite_insert(revisions).values(scope=scope, n=1).on_conflict_do_nothing())
        else:
            await conn.execute(revisions.insert().values(scope=scope, n=1))


def sqlite_path(url: str) -> Path | None:
    prefix = "sqlite+aiosqlite:///"
    if not url.startswith(prefix) or ":memory:" in url:
        return None
    return Path(url[len(prefix) :])


class RevisionWatcher:
    def __init__(self, engine: AsyncEngine, url: str, *, poll_seconds: float = 1.0) -> None:
        self._engine = engine
        path = sqlite_path(url)
        self._conn = sqlite3.connect(str(path), check_same_thread=False) if path else None
        self._data_version = -1
        self._poll = poll_seconds
        self._next_poll = 0.0
        self.seen: dict[str, int] = {}

    def maybe_changed(self) -> bool:
        """Cheap: has anything possibly changed since the last call? (Never a false "no".)"""
        if self._conn is not None:
            version = self._conn.execute("PRAGMA data_version").fetchone()[0]
            if version == self._data_version:
                return False
            self._data_version = version
            return True
        now = time.monotonic()
        if now < self._next_poll:
            return False
        self._next_poll = now + self._poll
        return True

    def read_sync(self) -> dict[str, int]:
        assert self._conn is not None
        return dict(self._conn.execute("SELECT scope, n FROM revisions").fetchall())

    async def read(self) -> dict[str, int]:
        if self._conn is not None:
            return self.read_sync()
        async with self._engine.connect() as conn:
            return {row.scope: row.n for row in await conn.execute(select(revisions))}

    async def changed_scopes(self) -> set[str]:
        """The scopes whose counter moved since last asked (empty almost always)."""
        if not self.maybe_changed():
            return set()
        current = await self.read()
        moved = {s for s, n in current.items() if self.seen.get(s) != n}
        self.seen = current
        return moved

    async def prime(self) -> None:
        self.maybe_changed()
        self.seen = await self.read()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
