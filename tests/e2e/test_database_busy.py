"""When the database cannot take a write — SQLite busy past its timeout, under a burst of writers — nothing
is half done and there is never a 500 or a traceback: ending a 2025-11-25 session (DELETE, recorded so that
no replica adopts it again, relay/sessions.py) still ends it at once, and the record is written as soon as
the database takes it; any other request that needed the database (app.py) gets a clear 503 to try again.

Real gateway on a SQLite file; the test holds the database's write lock with Python's sqlite3 module, as
another busy writer would."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio
import httpx2
import pytest

from tests.e2e.harness import run_gateway
from tests.e2e.test_replica_state import handshake_headers, initialize, list_tools
from tests.upstreams.launch import KITCHEN, run_http_upstream
from tests.waiting import wait_for

pytestmark = pytest.mark.anyio


# SQLite's own write lock is what these tests hold: on SQLite in both of `make test`'s passes (the harness
# leaves an explicit database_url alone; None is the default file under the state dir).
ON_SQLITE = {"database_url": None}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@contextmanager
def write_lock_held(database: Path) -> Iterator[None]:
    """Another writer holds the database's write lock (longer than the gateway's busy timeout)."""
    holder = sqlite3.connect(database, timeout=1, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def ended_rows(database: Path) -> list[str]:
    """The ended-session records in the database (relay/sessions.py EndedSessions: "s-" + handle)."""
    with sqlite3.connect(database, timeout=10) as reader:
        return [row[0] for row in reader.execute("SELECT digest FROM spent_links WHERE digest LIKE 's-%'")]


async def test_a_delete_the_database_cannot_record_at_once_still_ends_the_session_and_is_recorded_later() -> None:
    async with (
        run_http_upstream(KITCHEN, "--name", "web") as web,
        run_gateway({"web": {"transport": "http", "url": web}}, gateway=ON_SQLITE) as gw,
    ):
        async with httpx2.AsyncClient(timeout=30) as http:
            sid = await initialize(http, gw, "web")
            database = gw.config_dir / "state" / "manifold.db"
            assert database.exists()
            with write_lock_held(database):
                ended = await http.delete(gw.url("web"), headers=handshake_headers(gw, sid))
                assert ended.status_code == 200, ended.text
                # Ended here at once, although not yet recorded: its sealed id is not taken up again.
                assert (await list_tools(http, gw, "web", sid)).status_code == 404
                assert ended_rows(database) == []
            # Once the database takes writes again, the end is recorded for the other replicas.
            await wait_for(lambda: ended_rows(database) == ["s-" + sid.split(".")[0]], timeout=15)
            assert (await list_tools(http, gw, "web", sid)).status_code == 404
            again = await http.delete(gw.url("web"), headers=handshake_headers(gw, sid))
            assert again.status_code == 404
        await anyio.lowlevel.checkpoint()
        log = gw.log()
        assert "Traceback" not in log
        assert "could not be recorded now" in log and "recorded 1 session end(s)" in log


async def test_a_request_whose_write_the_database_cannot_take_is_a_503() -> None:
    async with run_gateway({}, gateway=ON_SQLITE) as gw, gw.http() as http:
        with write_lock_held(gw.config_dir / "state" / "manifold.db"):
            made = await http.post(f"{gw.base}/admin/api/keys", json={"user": "bob@corp.com", "name": "ci"})
        assert made.status_code == 503, made.text
        assert "try again" in made.json()["error"]
        again = await http.post(f"{gw.base}/admin/api/keys", json={"user": "bob@corp.com", "name": "ci"})
        assert again.status_code == 201
        assert "Traceback" not in gw.log() and "database could not answer" in gw.log()
