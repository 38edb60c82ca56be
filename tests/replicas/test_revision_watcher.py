"""store/revisions.py on a real PostgreSQL database, in process: a committed bump is heard on the LISTEN
connection with its scope and counter (no read of the table needed), a rolled-back one is not, and SQLite's
watcher holds no connection at all."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from manifold.store import revisions
from manifold.store.db import connect, create_schema
from manifold.store.revisions import RevisionWatcher, parse_notification
from tests.postgres import Cluster
from tests.waiting import within

pytestmark = pytest.mark.anyio


@pytest.fixture
async def pg_engine(pg_cluster: Cluster) -> AsyncIterator[AsyncEngine]:
    url = pg_cluster.new_database()
    engine = connect(url)
    await create_schema(engine)
    yield engine
    await engine.dispose()
    pg_cluster.drop_database(url)


@contextlib.asynccontextmanager
async def listening(watcher: RevisionWatcher) -> AsyncIterator[asyncio.Event]:
    woken = asyncio.Event()
    task = asyncio.create_task(watcher.listen(woken.set))
    try:
        await within(woken.wait(), 10, what="the LISTEN connection")  # woken once when it is up
        woken.clear()
        yield woken
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def test_notification_payloads() -> None:
    assert parse_notification("auth:12") == ("auth", 12)
    assert parse_notification("oauth:connections:3") == ("oauth:connections", 3)
    assert parse_notification("auth") is None
    assert parse_notification("auth:x") is None
    assert parse_notification(":4") is None


async def test_a_committed_bump_is_heard_with_its_counter_and_a_rolled_back_one_is_not(
    pg_engine: AsyncEngine,
) -> None:
    watcher = RevisionWatcher(pg_engine, str(pg_engine.url), poll_seconds=3600)
    await watcher.prime()
    async with listening(watcher) as woken:
        assert watcher.listening
        assert await watcher.changed_scopes() == set()  # the read after (re)connecting: nothing moved

        with contextlib.suppress(RuntimeError):
            async with pg_engine.begin() as conn:
                await revisions.bump(conn, revisions.CATALOG)
                raise RuntimeError("rolled back")
        async with pg_engine.begin() as conn:
            await revisions.bump(conn, revisions.AUTH)
        await within(woken.wait(), 5, what="the notification")

        assert await watcher.changed_scopes() == {revisions.AUTH}
        assert watcher.seen[revisions.AUTH] == 1 and revisions.CATALOG not in watcher.seen
        assert await watcher.changed_scopes() == set()
    assert not watcher.listening
    watcher.close()


async def test_a_change_this_process_commits_is_seen_on_its_next_request_without_its_notification(
    pg_engine: AsyncEngine,
) -> None:
    """Was: applied only once its own notification came back through the LISTEN connection (or at the next
    poll), so the request right after a change — a client's next call after its reused refresh token revoked
    the sign-in — could be decided on the old state when the notification was late (seen in CI under load).
    Here no notification comes at all (no LISTEN connection, no poll due): the commit alone tells."""
    watcher = RevisionWatcher(pg_engine, str(pg_engine.url), poll_seconds=3600, fallback_poll_seconds=3600)
    await watcher.prime()
    assert await watcher.changed_scopes() == set()
    async with pg_engine.begin() as conn:
        await revisions.bump(conn, revisions.AUTH)
    assert await watcher.changed_scopes() == {revisions.AUTH}
    assert await watcher.changed_scopes() == set()
    with contextlib.suppress(RuntimeError):
        async with pg_engine.begin() as conn:
            await revisions.bump(conn, revisions.CATALOG)
            raise RuntimeError("rolled back")
    assert await watcher.changed_scopes() == set()
    async with pg_engine.begin() as conn:  # the rolled-back bump left nothing behind on the pooled connection
        await conn.execute(text("SELECT 1"))
    assert await watcher.changed_scopes() == set()
    watcher.close()


async def test_a_sqlite_watcher_does_not_listen(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'm.db'}"
    engine = connect(url)
    await create_schema(engine)
    watcher = RevisionWatcher(engine, url)
    woken: list[bool] = []
    await within(watcher.listen(lambda: woken.append(True)), 1, what="listen() returning at once")
    assert woken == [] and not watcher.listening
    watcher.close()
    await engine.dispose()
