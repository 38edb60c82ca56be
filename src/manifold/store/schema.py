"""The database schema's migrations (Alembic, `manifold/store/migrations/`), run from code, not from an
alembic.ini: at start-up (`upgrade`) and by `manifold db upgrade` / `manifold db current`.

SQLite: the upgrade runs inside `BEGIN IMMEDIATE`, so two processes starting together (the gateway and a
CLI command) take turns; the second finds the schema current and does nothing. PostgreSQL: inside one
transaction that first takes a transaction-scoped advisory lock, so replicas starting together take turns
the same way (PostgreSQL's DDL is transactional: an upgrade that fails leaves nothing behind).

A database made before migrations existed has no version table; the first migration (0001) keeps its
tables and rows, creates what is missing and stamps it (see its docstring).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

SCRIPT_LOCATION = "manifold.store:migrations"
# pg_advisory_xact_lock's key for "the schema is being upgraded" (any fixed 64-bit number; this is
# int.from_bytes(b"manifold", "big") >> 1, so it is unlikely to collide with another application's lock).
ADVISORY_LOCK_KEY = 0x6D616E69666F6C64 >> 1


log = logging.getLogger(__name__)
# Alembic narrates every run at INFO ("Context impl SQLiteImpl." ...); `upgrade` logs the one line that matters.
logging.getLogger("alembic").setLevel(logging.WARNING)


class SchemaError(Exception):
    """The database's schema cannot be used by this version of the gateway (said in the message)."""


@dataclass(frozen=True, slots=True)
class SchemaState:
    current: str | None  # None: no version table (an empty database, or one made before migrations)
    head: str

    @property
    def up_to_date(self) -> bool:
        return self.current == self.head


def _config(conn: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", SCRIPT_LOCATION)
    if conn is not None:
        cfg.attributes["connection"] = conn
    return cfg


def head() -> str:
    found = ScriptDirectory.from_config(_config()).get_current_head()
    assert found is not None, "the package ships no migration"
    return found


def _state(conn: Connection) -> SchemaState:
    current = MigrationContext.configure(conn).get_current_revision()
    return SchemaState(current=current, head=head())


def _upgrade(conn: Connection) -> SchemaState:
    before = _state(conn)
    if before.current is not None:
        known = {script.revision for script in ScriptDirectory.from_config(_config()).walk_revisions()}
        if before.current not in known:
            raise SchemaError(
                f"the database's schema is at revision {before.current}, which this version of Manifold does "
                f"not know (its newest is {before.head}): a newer Manifold upgraded it. Run that version, or "
                f"restore a backup made before the upgrade."
            )
    if not before.up_to_date:
        command.upgrade(_config(conn), "head")
        log.info("database schema upgraded from %s to %s", before.current or "nothing", before.head)
    return before


# How long a process waits for another one's schema upgrade on SQLite (an upgrade of a large database can
# take longer than the 5 s busy timeout every other statement waits).
SQLITE_UPGRADE_WAIT_MS = 120_000
SQLITE_BUSY_TIMEOUT_MS = 5_000  # store/db.py's, set again on the connection once the upgrade is done


async def _in_write_lock(conn: AsyncConnection) -> None:
    if conn.dialect.name == "sqlite":
        await conn.exec_driver_sql(f"PRAGMA busy_timeout={SQLITE_UPGRADE_WAIT_MS}")
        await conn.exec_driver_sql("BEGIN IMMEDIATE")
    elif conn.dialect.name == "postgresql":
        await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": ADVISORY_LOCK_KEY})


async def upgrade(engine: AsyncEngine) -> SchemaState:
    """Bring the database's schema to the newest migration; returns the state found before. Safe to run by
    several processes at once (module docstring)."""
    if engine.dialect.name == "sqlite" and engine.url.database not in (None, "", ":memory:"):
        # A command run before the gateway ever started (`manifold explain`, `keys list`) finds no state dir.
        Path(engine.url.database).parent.mkdir(parents=True, exist_ok=True)
    async with engine.connect() as conn:
        await _in_write_lock(conn)
        try:
            before = await conn.run_sync(_upgrade)
        except BaseException:
            await conn.rollback()
            raise
        finally:
            if conn.dialect.name == "sqlite":
                await conn.exec_driver_sql(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        await conn.commit()
    return before


async def state(engine: AsyncEngine) -> SchemaState:
    """Where the database's schema is, without changing anything."""
    async with engine.connect() as conn:
        return await conn.run_sync(_state)
