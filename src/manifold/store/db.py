"""The gateway's database: SQLite (WAL) under the state dir by default, any SQLAlchemy async URL otherwise.

Tables are SQLAlchemy Core; `create_all` is the migration for now (the schema only grows).
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Column, DateTime, MetaData, String, Table, event, func
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

metadata = MetaData()

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("principal", String(320), nullable=False),
    Column("key_hash", String(64), nullable=False, unique=True),  # sha256 hex; the key itself is never stored
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)


def default_url(state_dir: Path) -> str:
    return f"sqlite+aiosqlite:///{(state_dir / 'manifold.db').resolve()}"


async def open_database(url: str) -> AsyncEngine:
    engine = create_async_engine(url)
    if url.startswith("sqlite"):

        @event.listens_for(engine.sync_engine, "connect")
        def _pragmas(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    return engine
