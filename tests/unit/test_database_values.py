"""Values the gateway stores without a person choosing their length fit their columns on PostgreSQL too
(it refuses an over-long VARCHAR where SQLite stores it): run on both."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from manifold.authserver.store import AuthStore
from manifold.store.db import open_database

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["sqlite", "postgresql"])
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    url = (
        f"sqlite+aiosqlite:///{tmp_path / 'manifold.db'}"
        if request.param == "sqlite"
        else request.getfixturevalue("postgres_url")
    )
    engine = await open_database(url)
    yield engine
    await engine.dispose()


async def test_a_consent_keeps_a_clients_over_long_name_clipped(engine: AsyncEngine) -> None:
    """`client_name` is whatever the client registered (RFC 7591 sets no limit); the consent row keeps 200."""
    store = AuthStore(engine)
    name = "Very Long IDE " * 40
    await store.give_consent("user:alice", "client-1", name, "https://gw.example/mcp/git")
    await store.give_consent("user:alice", "client-1", name + "again", "https://gw.example/mcp/jira")
    [consent] = await store.consents("user:alice")
    assert consent.client_name == name[:200]
    assert sorted(consent.resources) == ["https://gw.example/mcp/git", "https://gw.example/mcp/jira"]
