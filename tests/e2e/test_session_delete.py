"""Ending a 2025-11-25 session (DELETE) records it in the database, so that no replica adopts it again
(relay/sessions.py). When the database cannot take the write — SQLite busy past its timeout, under a burst
of writers — the client gets a clear 503 and the session stays usable, never a 500; the retry ends it.

Real gateway on a SQLite file; the test holds the database's write lock with Python's sqlite3 module, as
another busy writer would."""

from __future__ import annotations

import sqlite3

import anyio
import httpx2
import pytest

from tests.e2e.harness import run_gateway
from tests.e2e.test_replica_state import handshake_headers, initialize, list_tools
from tests.upstreams.launch import KITCHEN, run_http_upstream

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_a_delete_the_database_cannot_record_is_a_503_and_the_retry_ends_the_session() -> None:
    async with (
        run_http_upstream(KITCHEN, "--name", "web") as web,
        run_gateway({"web": {"transport": "http", "url": web}}) as gw,
    ):
        async with httpx2.AsyncClient(timeout=30) as http:
            sid = await initialize(http, gw, "web")
            database = gw.config_dir / "state" / "manifold.db"
            assert database.exists()
            holder = sqlite3.connect(database, timeout=1, isolation_level=None)
            holder.execute("BEGIN IMMEDIATE")  # another writer holds the lock past the gateway's busy timeout
            try:
                refused = await http.delete(gw.url("web"), headers=handshake_headers(gw, sid))
            finally:
                holder.execute("ROLLBACK")
                holder.close()
            assert refused.status_code == 503, refused.text
            assert "try again" in refused.json()["error"]
            assert (await list_tools(http, gw, "web", sid)).status_code == 200  # still open: nothing half done
            ended = await http.delete(gw.url("web"), headers=handshake_headers(gw, sid))
            assert ended.status_code == 200
            assert (await list_tools(http, gw, "web", sid)).status_code == 404
        await anyio.lowlevel.checkpoint()
        assert "Traceback" not in gw.log()
