"""Noticing, on the very next request, that another process changed what the gateway decides.

The CLI, the admin API of this process and the other replicas write keys, grants and catalog objects into the
database while the gateway runs. Every such write bumps a counter in `revisions` (scope "auth", "catalog",
...) in the same transaction. The gateway could read those counters on every request, but an async query
costs more than the rest of the request, so each database gives a cheaper signal that something moved:

- SQLite: `PRAGMA data_version` on a private connection changes whenever any *other* connection commits
  (another process, or this process's own async connection). A few microseconds, so it runs on every request;
  two gateways on one SQLite file see each other's writes on their very next request.
- PostgreSQL: the bump also sends `NOTIFY manifold_changes, '<scope>:<new counter>'` in the same
  transaction: delivered exactly when the change commits, it says what moved without a read. Each gateway
  holds one LISTEN connection (asyncpg, its own, outside the pool); a notification records the counter and
  wakes the background sync (`on_change`). While that connection is down (the database restarted, a network
  blip) the counters are polled every `fallback_poll_seconds` (25 ms) instead, by the background sync and by
  a request that finds them unread for that long, and the connection is retried with a growing backoff.
  While it is up the counters are still read at most every `poll_seconds` (1 s) as a safety net for a
  writer that does not notify (an older gateway during a rolling upgrade). A change this process commits is
  not left to its notification's round trip: the commit itself tells the watcher, and the counters are read
  on the next request until they show it.

Only when the signal says "maybe" are the counters read (one indexed SELECT), and only when a counter moved
are caches rebuilt (runtime/changes.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import event, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import URL, Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from manifold.store.db import revisions

log = logging.getLogger(__name__)

AUTH = "auth"
CATALOG = "catalog"

CHANNEL = "manifold_changes"  # the PostgreSQL notification channel every bump notifies
_BUMPED = "manifold.bumped"  # Connection.info: scope -> counter this transaction bumped to (PostgreSQL)
LISTENER_APPLICATION_NAME = "manifold-changes"  # pg_stat_activity.application_name of the LISTEN connection
POLL_SECONDS = 1.0  # counters read at most this often when no cheaper signal says they moved
FALLBACK_POLL_SECONDS = 0.025  # PostgreSQL while the LISTEN connection is down
READY_READ_SECONDS = 2.0  # /readyz: a database slower than this to answer a read makes the replica not ready
PING_SECONDS = 5.0  # how often an idle LISTEN connection is checked to be alive
CONNECT_TIMEOUT_SECONDS = 5
OWN_SECONDS = 5.0  # how long a change this process committed is looked for before its notification is left to tell
BACKOFF_FIRST_SECONDS = 0.1
BACKOFF_MAX_SECONDS = 5.0


async def bump(conn: AsyncConnection, scope: str) -> None:
    """Record a change of `scope`; call inside the transaction that makes the change."""
    if conn.dialect.name == "postgresql":
        upsert = (
            pg_insert(revisions)
            .values(scope=scope, n=1)
            .on_conflict_do_update(index_elements=[revisions.c.scope], set_={"n": revisions.c.n + 1})
            .returning(revisions.c.n)
        )
        n = (await conn.execute(upsert)).scalar_one()
        # Delivered to the listeners when (and only if) this transaction commits; it carries the new counter,
        # so a listener knows what moved without reading the table.
        await conn.execute(select(func.pg_notify(CHANNEL, f"{scope}:{n}")))
        # This process's own watcher is told at the commit, not when the notification comes back round.
        conn.info.setdefault(_BUMPED, {})[scope] = n
        return
    result = await conn.execute(update(revisions).where(revisions.c.scope == scope).values(n=revisions.c.n + 1))
    if result.rowcount == 0:
        if conn.dialect.name == "sqlite":
            await conn.execute(sqlite_insert(revisions).values(scope=scope, n=1).on_conflict_do_nothing())
        else:
            await conn.execute(revisions.insert().values(scope=scope, n=1))


def _forget_bumps(conn: Connection) -> None:
    conn.info.pop(_BUMPED, None)  # info outlives the transaction (it belongs to the pooled connection)


def parse_notification(payload: str) -> tuple[str, int] | None:
    """`scope:n` as `bump` sends it; None for anything else (then the counters are read)."""
    scope, _, n = payload.rpartition(":")
    return (scope, int(n)) if scope and n.isdigit() else None


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL, in either spelling the configuration accepts (store/db.py `engine_url`): a plain
    `sqlite:///` one (docs/replicas.md) was not recognised, and its gateways polled for changes made elsewhere
    instead of reading SQLite's data_version on every request (ops probe review)."""
    for prefix in ("sqlite+aiosqlite:///", "sqlite:///"):
        if url.startswith(prefix):
            return None if ":memory:" in url else Path(url[len(prefix) :])
    return None


def _file_identity(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino


class RevisionWatcher:
    def __init__(
        self,
        engine: AsyncEngine,
        url: str,
        *,
        poll_seconds: float = POLL_SECONDS,
        fallback_poll_seconds: float = FALLBACK_POLL_SECONDS,
    ) -> None:
        self._engine = engine
        path = sqlite_path(url)
        self._conn = sqlite3.connect(str(path), check_same_thread=False) if path else None
        self._path = path
        self._identity = _file_identity(path) if path else None  # the database file this process opened
        self.file_problem: str | None = None  # set by `check_file` once the file is gone or replaced
        self._data_version = -1
        self._poll = poll_seconds
        self._fallback_poll = fallback_poll_seconds
        self._next_poll = 0.0
        self._notified = False  # the counters must be read: (re)connected, or a notification not from `bump`
        self._heard: dict[str, int] = {}  # scope -> newest counter notified since last asked (a few scopes)
        self._listening = False  # the LISTEN connection is up (PostgreSQL)
        self._established = False  # the last LISTEN connection got as far as listening
        self.seen: dict[str, int] = {}
        # PostgreSQL: counters this process committed, until a read shows them. Its own notifications come
        # back through the LISTEN connection some milliseconds after the commit; a request in between (the
        # next one of the client whose refresh token was just found reused) was decided on the old state.
        self._own: dict[str, tuple[int, float]] = {}  # scope -> (counter, until when it is looked for)
        if engine.dialect.name == "postgresql":
            event.listen(engine.sync_engine, "commit", self._committing)
            event.listen(engine.sync_engine, "rollback", _forget_bumps)

    def _committing(self, conn: Connection) -> None:
        # Called as the commit starts: a read may still miss it, so an entry stays until a read shows it.
        bumped = conn.info.pop(_BUMPED, None)
        if bumped:
            for scope, n in bumped.items():
                # Looked for a few seconds at most: a commit that failed after this event never shows.
                self._own[scope] = (max(n, self._own.get(scope, (0, 0.0))[0]), time.monotonic() + OWN_SECONDS)

    def check_file(self) -> str | None:
        """SQLite: is the database file this process opened still the one at its path? Deleted (or replaced)
        while the gateway runs, its connections go on writing to the unlinked file, and everything written from
        then on is lost at the next start with nothing said (resilience review). The problem, once found, stays."""
        if self._path is None or self.file_problem is not None or self._identity is None:
            return self.file_problem
        now = _file_identity(self._path)
        if now is None:
            self.file_problem = f"the database file {self._path} was removed while the gateway runs"
        elif now != self._identity:
            self.file_problem = f"the database file {self._path} was replaced while the gateway runs"
        return self.file_problem

    async def unreachable(self) -> str | None:
        """Whether the database answers a read now (what every request needs), within READY_READ_SECONDS:
        None, or what went wrong. For /readyz: a replica that lost its database was left in rotation while
        its requests failed (replica probe)."""
        try:
            async with asyncio.timeout(READY_READ_SECONDS):
                await self.read()
        except TimeoutError:
            return f"the database did not answer a read within {READY_READ_SECONDS:g} s"
        except Exception as exc:  # noqa: BLE001 — any driver error: not ready; its words may name the host
            return f"the database refused a read ({type(exc).__name__})"
        return None

    @property
    def listening(self) -> bool:
        return self._listening

    def tick_seconds(self, idle: float) -> float:
        """How long the background sync may wait for a notification before it looks itself: `idle`, or
        the fallback poll interval while a PostgreSQL gateway has no LISTEN connection."""
        if self._conn is None and self._engine.dialect.name == "postgresql" and not self._listening:
            return self._fallback_poll
        return idle

    def maybe_changed(self) -> bool:
        """Cheap: has anything possibly changed since the last call? (Never a false "no".)"""
        if self._conn is not None:
            version = self._conn.execute("PRAGMA data_version").fetchone()[0]
            if version == self._data_version:
                return False
            self._data_version = version
            return True
        now = time.monotonic()
        if self._notified:
            self._notified = False
        elif now < self._next_poll:
            return False
        self._next_poll = now + (self._poll if self._listening else self._fallback_poll)
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
        """The scopes whose counter moved since last asked (empty almost always). On PostgreSQL the
        notifications name the scope and its new counter: applied as heard, without reading the table."""
        if self.maybe_changed() or self._own:
            if self._heard:
                self._heard.clear()  # committed before this read: it sees them
            current = await self.read()
            moved = {s for s, n in current.items() if self.seen.get(s) != n}
            self.seen = current
            if self._own:
                now = time.monotonic()
                self._own = {
                    s: (n, until) for s, (n, until) in self._own.items() if current.get(s, 0) < n and now < until
                }
            return moved
        if not self._heard:
            return set()
        heard, self._heard = self._heard, {}
        moved = {s for s, n in heard.items() if n > self.seen.get(s, 0)}
        for scope in moved:
            self.seen[scope] = heard[scope]
        return moved

    async def prime(self) -> None:
        self.maybe_changed()
        self.seen = await self.read()

    async def listen(self, on_change: Callable[[], None]) -> None:
        """Hold the LISTEN connection (PostgreSQL; returns at once on other databases) until cancelled:
        `on_change()` is called on every notification and whenever the connection is (re)established (what
        committed while it was down is then read). Reconnects with a growing backoff; polling covers the gap."""
        if self._engine.dialect.name != "postgresql":
            return
        url = self._engine.url  # the driver filled in, the password kept
        backoff = BACKOFF_FIRST_SECONDS
        lost_logged = False
        while True:
            try:
                await self._hold_listen_connection(url, on_change, back=lost_logged)
            except Exception as exc:  # noqa: BLE001 — any failure: poll, then try again
                if self._established:
                    backoff = BACKOFF_FIRST_SECONDS
                    lost_logged = False
                if not lost_logged:
                    log.warning(
                        "no LISTEN connection to the database (%s): polling for changes every %g ms until it is back",
                        type(exc).__name__,
                        self._fallback_poll * 1000,
                    )
                    lost_logged = True
            on_change()  # the background sync polls now instead of waiting for its next tick
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX_SECONDS)

    async def _hold_listen_connection(self, url: URL, on_change: Callable[[], None], *, back: bool) -> None:
        """Connect, LISTEN, and return (by raising) only when the connection is lost."""
        import asyncpg  # only a PostgreSQL gateway needs the driver at all

        self._established = False
        ssl = url.query.get("ssl")  # the TLS mode the pool's connections use (asyncpg's ?ssl=require, ...)
        conn = await asyncpg.connect(
            host=url.host,
            port=url.port,
            user=url.username,
            password=url.password,
            database=url.database,
            ssl=ssl if isinstance(ssl, str) else None,
            server_settings={"application_name": LISTENER_APPLICATION_NAME},
            timeout=CONNECT_TIMEOUT_SECONDS,
        )
        try:
            closed = asyncio.Event()

            def notified(_conn: object, _pid: object, _channel: object, payload: object) -> None:
                parsed = parse_notification(payload) if isinstance(payload, str) else None
                if parsed is None:
                    self._notified = True
                else:
                    scope, n = parsed
                    self._heard[scope] = max(n, self._heard.get(scope, 0))
                on_change()

            conn.add_termination_listener(lambda _conn: closed.set())
            await conn.add_listener(CHANNEL, notified)
            self._established = self._listening = True
            self._notified = True  # whatever committed before LISTEN took effect is read now
            on_change()
            if back:
                log.info("listening for database changes again")
            while not closed.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(PING_SECONDS):
                        await closed.wait()
                if not closed.is_set():
                    async with asyncio.timeout(PING_SECONDS):
                        await conn.fetchval("SELECT 1")
            raise ConnectionError("the LISTEN connection was closed")
        finally:
            self._listening = False
            self._next_poll = 0.0  # poll from now on, not a safety-net second from the last poll
            with contextlib.suppress(Exception):
                conn.terminate()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
