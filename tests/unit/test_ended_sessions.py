"""Session ends shared between replicas (relay/sessions.py `EndedSessions`), on a real SQLite database."""

from __future__ import annotations

from pathlib import Path

import pytest

from manifold.relay.sessions import EndedSessions
from manifold.store.db import default_url, open_database

pytestmark = pytest.mark.anyio
HANDLE = "ab" * 16


async def test_an_end_written_late_is_still_seen_by_a_replica_that_looked_meanwhile(tmp_path: Path) -> None:
    """A DELETE during a database outage ends the session on its replica at once and is written when the
    database is back, minutes later. Another replica looks for ends since its last look (less a margin): the
    late row must fall after that, or that replica keeps serving the ended session (replica probe)."""
    engine = await open_database(default_url(tmp_path))
    now = [10_000.0]
    ended = EndedSessions(engine, keep_seconds=3600, clock=lambda: now[0])
    try:
        deleted_at = now[0] - 600  # the DELETE, ten minutes before the database took the write
        await ended._write({HANDLE: deleted_at})  # what the background writer does once it can
        other_replica_last_looked = now[0] - 5
        assert HANDLE in await ended.ended_since(other_replica_last_looked - 120)
    finally:
        await engine.dispose()
