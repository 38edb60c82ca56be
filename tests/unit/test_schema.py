"""The database schema belongs to the Alembic migrations (store/schema.py, store/migrations/): they make
exactly the tables the code declares, on SQLite and PostgreSQL; a database made before migrations existed
is adopted with its rows; replicas starting together take turns; a database from a newer version is
refused with a message, not damaged."""

from __future__ import annotations

import importlib.util
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import func, insert, inspect, select, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

# Every module that declares tables: the code's whole schema is `metadata` once these are imported.
import manifold.catalog.pin_store
import manifold.identity.gateway_tables
import manifold.outbound.oauth.tables
import manifold.policy.approval_store  # noqa: F401
import manifold.policy.rate_limit_store  # noqa: F401
import manifold.security.tables  # noqa: F401
from manifold.store import schema
from manifold.store.db import api_keys, audit_events, catalog_objects, connect, metadata, open_database, users

pytestmark = pytest.mark.anyio
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'state' / 'manifold.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
async def engine(url: str) -> AsyncIterator[AsyncEngine]:
    engine = connect(url)
    if engine.dialect.name == "sqlite":
        Path(str(engine.url.database)).parent.mkdir(parents=True, exist_ok=True)
    yield engine
    await engine.dispose()


def _differences(conn: Connection) -> list[Any]:
    context = MigrationContext.configure(conn, opts={"compare_type": True})
    return list(compare_metadata(context, metadata))


def _baseline_tables() -> set[str]:
    """The tables migration 0001 (the schema when migrations began) declares."""
    path = REPO / "src" / "manifold" / "store" / "migrations" / "versions" / "0001_baseline.py"
    spec = importlib.util.spec_from_file_location("manifold_baseline_migration", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return set(module.schema.tables)


async def _old_code_schema(engine: AsyncEngine) -> None:
    """What `create_schema` did before Alembic: `metadata.create_all` (of the tables that code had: those of
    the baseline migration, not the ones later migrations add) and the schema_version row."""
    baseline = _baseline_tables()
    old_tables = [table for table in metadata.sorted_tables if table.name in baseline]
    async with engine.begin() as conn:
        await conn.run_sync(lambda c: metadata.create_all(c, tables=old_tables))
        await conn.execute(text("INSERT INTO meta(key, value) VALUES ('schema_version', '2')"))


async def _tables(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as conn:
        return set(await conn.run_sync(lambda c: inspect(c).get_table_names()))


async def test_the_migrations_make_exactly_the_tables_the_code_declares(engine: AsyncEngine) -> None:
    before = await schema.upgrade(engine)
    assert before.current is None
    async with engine.connect() as conn:
        assert await conn.run_sync(_differences) == []
    assert (await schema.state(engine)).up_to_date
    assert await _tables(engine) == set(metadata.tables) | {"alembic_version"}


async def test_a_database_made_before_migrations_keeps_its_rows_and_is_stamped(engine: AsyncEngine) -> None:
    await _old_code_schema(engine)
    async with engine.begin() as conn:
        await conn.execute(insert(users).values(id="alice@corp.com", email="alice@corp.com", teams=["eng"]))
        await conn.execute(
            insert(api_keys).values(
                id="k1", name="laptop", owner_kind="user", owner_id="alice@corp.com", key_hash="a" * 64,
                created_at=1.0,
            )
        )  # fmt: skip
        await conn.execute(insert(catalog_objects).values(kind="upstream", id="git", body={"url": "http://x"}))
        await conn.execute(
            insert(audit_events).values(
                at=2.0, principal="user:alice", credential="api_key:k1", server="git", method="tools/call",
                outcome="ok",
            )
        )  # fmt: skip
    assert (await schema.state(engine)).current is None

    before = await schema.upgrade(engine)

    assert before.current is None
    assert (await schema.state(engine)).up_to_date
    async with engine.connect() as conn:
        assert (await conn.execute(select(users.c.id, users.c.teams))).all() == [("alice@corp.com", ["eng"])]
        assert (await conn.execute(select(api_keys.c.name))).scalars().all() == ["laptop"]
        assert (await conn.execute(select(catalog_objects.c.body))).scalars().all() == [{"url": "http://x"}]
        assert (await conn.execute(select(func.count()).select_from(audit_events))).scalar() == 1
        assert await conn.run_sync(_differences) == []


async def test_an_old_database_missing_newer_tables_gets_them(engine: AsyncEngine) -> None:
    """A database from an earlier version that had fewer tables (the gateway's OAuth server came later)."""
    await _old_code_schema(engine)
    async with engine.begin() as conn:
        await conn.execute(text("DROP TABLE gw_oauth_consents"))
        await conn.execute(text("DROP TABLE gw_oauth_codes"))
        await conn.execute(insert(users).values(id="bob@corp.com", teams=[]))
    await schema.upgrade(engine)
    assert {"gw_oauth_consents", "gw_oauth_codes"} <= await _tables(engine)
    async with engine.connect() as conn:
        assert (await conn.execute(select(users.c.id))).scalars().all() == ["bob@corp.com"]
        assert await conn.run_sync(_differences) == []


async def test_the_schema_1_api_keys_table_is_replaced(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.execute(text("CREATE TABLE api_keys (id VARCHAR(32) PRIMARY KEY, key_hash VARCHAR(64))"))
        await conn.execute(text("INSERT INTO api_keys VALUES ('dev', 'x')"))
    await schema.upgrade(engine)
    async with engine.connect() as conn:
        assert (await conn.execute(select(func.count()).select_from(api_keys))).scalar() == 0
        assert await conn.run_sync(_differences) == []


async def test_processes_upgrading_together_take_turns(url: str) -> None:
    """Replicas (or the gateway and a CLI command) starting at once on a new database: one creates the
    tables, the other waits and finds them there; neither fails."""
    engines = [connect(url) for _ in range(3)]
    results: list[schema.SchemaState] = []

    async def one(engine: AsyncEngine) -> None:
        results.append(await schema.upgrade(engine))

    try:
        async with anyio.create_task_group() as tg:
            for engine in engines:
                tg.start_soon(one, engine)
        assert sorted(r.current is None for r in results) == [False, False, True]
        async with engines[0].connect() as conn:
            assert await conn.run_sync(_differences) == []
    finally:
        for engine in engines:
            await engine.dispose()


async def test_a_database_from_a_newer_version_is_refused_and_left_alone(engine: AsyncEngine) -> None:
    await schema.upgrade(engine)
    async with engine.begin() as conn:
        await conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    with pytest.raises(schema.SchemaError, match="at revision 9999, which this version of Manifold does not know"):
        await schema.upgrade(engine)
    async with engine.connect() as conn:
        assert (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar() == "9999"


async def test_open_database_is_the_upgrade(url: str) -> None:
    engine = await open_database(url)
    try:
        assert (await schema.state(engine)).up_to_date
    finally:
        await engine.dispose()


def _cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "manifold.cli", "--config", str(config), "db", *args],
        capture_output=True, text=True, cwd=REPO, check=False,
    )  # fmt: skip


def test_manifold_db_current_and_upgrade(url: str, tmp_path: Path) -> None:
    config = tmp_path / "manifold.yaml"
    gateway: dict[str, Any] = {"state_dir": str(tmp_path / "state")}
    if url.startswith("postgresql"):
        gateway["database_url"] = url.replace("postgresql+asyncpg://", "postgresql://")  # as an operator writes it
    config.write_text(yaml.safe_dump({"gateway": gateway, "upstreams": {}}))
    head = schema.head()

    first = _cli(config, "current")
    assert first.returncode == 0, first.stderr
    assert ("no database at" in first.stdout) if url.startswith("sqlite") else ("no revision" in first.stdout)

    up = _cli(config, "upgrade")
    assert up.returncode == 0, up.stderr
    assert f"schema upgraded from nothing to {head}" in up.stdout
    assert "Traceback" not in up.stderr

    again = _cli(config, "upgrade")
    assert again.returncode == 0 and f"schema already at {head}" in again.stdout
    now = _cli(config, "current")
    assert now.returncode == 0 and now.stdout.strip() == f"{head} (the newest)"


def test_manifold_db_upgrade_says_what_is_wrong_with_an_unreachable_database(tmp_path: Path) -> None:
    from tests.upstreams.launch import free_port

    config = tmp_path / "manifold.yaml"
    url = f"postgresql://nobody:s3cret-pw@127.0.0.1:{free_port()}/nothing"
    config.write_text(yaml.safe_dump({"gateway": {"database_url": url}, "upstreams": {}}))
    done = _cli(config, "upgrade")
    assert done.returncode == 1
    assert "manifold db upgrade: cannot use the database" in done.stderr
    assert "Traceback" not in done.stderr and "s3cret-pw" not in done.stderr


def test_an_sqlite_database_made_by_the_old_code_with_sqlite3_is_recognised(tmp_path: Path) -> None:
    """The same adoption seen from outside: a file the old gateway left, then `manifold db upgrade`."""
    state = tmp_path / "state"
    state.mkdir()
    url = f"sqlite+aiosqlite:///{state / 'manifold.db'}"

    async def make_old() -> None:
        engine = connect(url)
        await _old_code_schema(engine)
        async with engine.begin() as conn:
            await conn.execute(insert(users).values(id="carol@corp.com", teams=["ops"]))
        await engine.dispose()

    anyio.run(make_old)
    config = tmp_path / "manifold.yaml"
    config.write_text(yaml.safe_dump({"gateway": {"state_dir": str(state)}, "upstreams": {}}))
    assert "no revision" in _cli(config, "current").stdout
    assert _cli(config, "upgrade").returncode == 0
    with sqlite3.connect(state / "manifold.db") as db:
        assert db.execute("SELECT id, teams FROM users").fetchall() == [("carol@corp.com", '["ops"]')]
        assert db.execute("SELECT version_num FROM alembic_version").fetchall() == [(schema.head(),)]


async def test_a_process_starting_while_another_holds_the_write_lock_is_not_refused(tmp_path: Path) -> None:
    """Two processes starting together on a new SQLite file: the first one's long write (its schema upgrade)
    holds the lock. The second connects at once and waits for its own write; it is not refused with
    "database is locked" for trying to switch the file to WAL (which needs that lock) while it was held."""
    path = tmp_path / "manifold.db"
    writer = sqlite3.connect(path, isolation_level=None)  # a new file, still in rollback-journal mode
    try:
        writer.execute("CREATE TABLE early (x INTEGER)")
        writer.execute("BEGIN IMMEDIATE")  # the other process's long write
        engine = connect(f"sqlite+aiosqlite:///{path}")
        try:
            with anyio.fail_after(3):  # less than the busy timeout: connecting did not wait for the lock
                async with engine.connect() as conn:
                    assert (await conn.execute(text("SELECT count(*) FROM early"))).scalar() == 0
        finally:
            await engine.dispose()
    finally:
        writer.execute("ROLLBACK")
        writer.close()
