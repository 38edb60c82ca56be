"""When the database cannot take a write — SQLite busy past its timeout, under a burst of writers — the
caller gets a clear 503 to try again, never a 500 and no traceback: ending a 2025-11-25 session (DELETE,
recorded so that no replica adopts it again, relay/sessions.py) leaves the session usable and the retry ends
it; any other request that needed the database (app.py) says so the same way.

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


async def test_a_delete_the_database_cannot_record_is_a_503_and_the_retry_ends_the_session() -> None:
    async with (
        run_http_upstream(KITCHEN, "--name", "web") as web,
        run_gateway({"web": {"transport": "http", "url": web}}, gateway=ON_SQLITE) as gw,
    ):
        async with httpx2.AsyncClient(timeout=30) as http:
            sid = await initialize(http, gw, "web")
            database = gw.config_dir / "state" / "manifold.db"
            assert database.exists()
            with write_lock_held(database):
                refused = await http.delete(gw.url("web"), headers=handshake_headers(gw, sid))
            assert refused.status_code == 503, refused.text
            assert "try again" in refused.json()["error"]
            assert (await list_tools(http, gw, "web", sid)).status_code == 200  # still open: nothing half done
            ended = await http.delete(gw.url("web"), headers=handshake_headers(gw, sid))
            assert ended.status_code == 200
            assert (await list_tools(http, gw, "web", sid)).status_code == 404
        await anyio.lowlevel.checkpoint()
        assert "Traceback" not in gw.log()


async def test_a_request_whose_write_the_database_cannot_take_is_a_503() -> None:
    async with run_gateway({}, gateway=ON_SQLITE) as gw, gw.http() as http:
        with write_lock_held(gw.config_dir / "state" / "manifold.db"):
            made = await http.post(f"{gw.base}/admin/api/keys", json={"user": "bob@corp.com", "name": "ci"})
        assert made.status_code == 503, made.text
        assert "try again" in made.json()["error"]
        again = await http.post(f"{gw.base}/admin/api/keys", json={"user": "bob@corp.com", "name": "ci"})
        assert again.status_code == 201
        assert "Traceback" not in gw.log() and "database could not answer" in gw.log()
