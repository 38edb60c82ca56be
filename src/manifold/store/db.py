"""The gateway's database: SQLite (WAL) under the state dir by default, PostgreSQL (asyncpg) or any SQLAlchemy
async URL otherwise.

Tables are SQLAlchemy Core, declared here and in the modules that own them (identity/gateway_tables.py,
security/tables.py, outbound/oauth/tables.py). The schema itself belongs to the Alembic migrations
(store/migrations/, run by store/schema.py at start-up and by `manifold db upgrade`): a change to a table
here needs a new migration, and tests/unit/test_schema.py fails until the two agree.

Objects declared in `manifold.yaml` are not copied here; these tables hold what was created at run time
(CLI or admin API) plus what only ever lives here: keys, audit events, revisions.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    event,
    func,
    text,
)
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry

from manifold.store import schema

# write_transaction's PostgreSQL advisory lock (any fixed 64-bit number other than schema.ADVISORY_LOCK_KEY).
WRITE_LOCK_KEY = schema.ADVISORY_LOCK_KEY + 1

metadata = MetaData()

meta = Table(
    "meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", String(200), nullable=False),
)

# One counter per kind of change ("auth": keys, principals, grants; "catalog": upstreams, groups, virtual
# servers). Every write that changes what the gateway decides bumps its counter in the same transaction,
# so a running gateway sees a change made by another process (the CLI) on the very next request.
revisions = Table(
    "revisions",
    metadata,
    Column("scope", String(32), primary_key=True),
    Column("n", Integer, nullable=False, default=0),
)

users = Table(
    "users",
    metadata,
    Column("id", String(320), primary_key=True),  # email, or the IdP subject when there is no email
    Column("email", String(320)),
    Column("teams", JSON, nullable=False, default=list),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

teams = Table(
    "teams",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("description", Text),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

service_accounts = Table(
    "service_accounts",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("description", Text),
    Column("teams", JSON, nullable=False, default=list),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

# Gateway API keys and service-account tokens. The secret is never stored: `key_hash` is SHA-256 of the
# whole token (tokens carry 256 random bits, so a slow hash adds nothing). Looked up by `id` (part of the
# token), then compared in constant time.
api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("owner_kind", String(8), nullable=False),  # "user" | "sa"
    Column("owner_id", String(320), nullable=False),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("servers", JSON),  # null: every server the owner may use; else only these server ids
    # Unix times: compared on every request, so no timezone conversions.
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float),
    Column("last_used_at", Float),
    Column("revoked_at", Float),
)

grants = Table(
    "grants",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("who", String(400), nullable=False),
    Column("claims", JSON, nullable=False, default=dict),
    Column("what", JSON, nullable=False),  # list of resource selectors
    Column("description", Text),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    # The approval gate (docs/approvals.md; migration 0005). Null: the default (no gate; 900 s; 0 s; false).
    Column("require_approval", JSON(none_as_null=True)),  # list of resource selectors
    Column("approvers", String(400)),  # a `who` selector
    Column("approval_timeout_seconds", Float),
    Column("approval_valid_seconds", Float),
    Column("self_approval", Boolean),
)

# Upstreams, groups and virtual servers created at run time: the same pydantic models as the files, as JSON.
catalog_objects = Table(
    "catalog_objects",
    metadata,
    Column("kind", String(16), primary_key=True),  # "upstream" | "group" | "vserver"
    Column("id", String(64), primary_key=True),
    Column("body", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

audit_events = Table(
    "audit_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", Float, nullable=False),  # unix time
    Column("request_id", String(100)),
    Column("principal", String(400), nullable=False),
    Column("credential", String(100), nullable=False),  # api_key:<id> | sa_token:<id> | idp:<id> | dev | none
    Column("server", String(64), nullable=False),
    Column("member", String(64)),
    Column("upstream", String(64)),
    Column("method", String(40), nullable=False),
    Column("target", String(400)),  # tool / prompt name or resource URI, as the client named it
    Column("outcome", String(20), nullable=False),  # audit.model.Outcome values
    Column("detail", Text),
    Column("latency_ms", Float),
    Column("arguments", JSON),  # only with audit.include_arguments
    Index("ix_audit_at", "at"),
    Index("ix_audit_principal_at", "principal", "at"),
)


def too_long(table: Table, values: Mapping[str, object]) -> str | None:
    """Which of `values` is longer than its VARCHAR column allows, as a sentence (None: every one fits).
    PostgreSQL refuses such a value where SQLite stores it: check what a person typed before writing it."""
    for name, value in values.items():
        column = table.c[name]
        limit = column.type.length if isinstance(column.type, String) else None
        if limit is not None and isinstance(value, str) and len(value) > limit:
            return f"'{name}' is longer than {limit} characters"
    return None


def default_url(state_dir: Path) -> str:
    return f"sqlite+aiosqlite:///{(state_dir / 'manifold.db').resolve()}"


def engine_url(url: str) -> str:
    """`url` with the async driver filled in: `postgresql://` (and `postgres://`, as many providers write it)
    means asyncpg, `sqlite://` aiosqlite. Anything else is passed on as written."""
    for plain, full in (("postgres://", "postgresql+asyncpg://"), ("postgresql://", "postgresql+asyncpg://")):
        if url.startswith(plain):
            return full + url[len(plain) :]
    if url.startswith("sqlite://"):
        return "sqlite+aiosqlite://" + url[len("sqlite://") :]
    return url


def connect(url: str) -> AsyncEngine:
    """The engine for `url`; no connection is made until the first use (so it can be built before the
    event loop runs). SQLite gets WAL, foreign keys and a busy timeout on every connection; PostgreSQL
    connections are checked before use (a database restarted under a running gateway costs no request)."""
    url = engine_url(url)
    if not url.startswith("sqlite"):
        return create_async_engine(url, pool_pre_ping=True)
    engine = create_async_engine(url)

    @event.listens_for(engine.sync_engine, "connect")
    def _pragmas(dbapi_conn: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
        cur = dbapi_conn.cursor()
        # WAL is a property of the file, set by whichever connection comes first. Switching a new file to it
        # takes a lock, which another process's long write (a schema upgrade at start-up, two replicas or the
        # gateway and a CLI command starting together) can hold past any busy timeout: that process set WAL
        # before it began, so a connection that cannot take the lock right away goes on without setting it.
        cur.execute("PRAGMA journal_mode")
        mode = cur.fetchone()
        if mode is None or str(mode[0]).lower() != "wal":
            cur.execute("PRAGMA busy_timeout=0")
            try:
                cur.execute("PRAGMA journal_mode=WAL")
            except Exception as exc:
                if "locked" not in str(exc):
                    raise
        cur.execute("PRAGMA busy_timeout=5000")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    return engine


async def create_schema(engine: AsyncEngine) -> None:
    """Bring the schema to the newest migration (store/schema.py: safe with other processes starting too)."""
    await schema.upgrade(engine)


@contextlib.asynccontextmanager
async def write_transaction(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A transaction that reads and then writes, safe against a writer in another process.

    SQLite starts a transaction as a reader and upgrades it at the first write; two such transactions that
    both read first cannot both upgrade, and the loser fails at once with "database is locked" (the busy
    timeout does not apply to an upgrade). `BEGIN IMMEDIATE` takes the write lock up front, so the second
    writer waits (busy_timeout) instead. PostgreSQL gets the same turn-taking from a transaction-scoped
    advisory lock (its default isolation would let two such transactions both read, then both write)."""
    async with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            await conn.exec_driver_sql("BEGIN IMMEDIATE")
        elif engine.dialect.name == "postgresql":
            await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": WRITE_LOCK_KEY})
        try:
            yield conn
        except BaseException:
            await conn.rollback()
            raise
        await conn.commit()


async def open_database(url: str) -> AsyncEngine:
    """`connect` and `create_schema` in one, for the command-line tools."""
    engine = connect(url)
    await create_schema(engine)
    return engine
