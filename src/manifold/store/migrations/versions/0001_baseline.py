"""The schema as it was when migrations began (every table the code created with `metadata.create_all`).

Also adopts a database made before migrations existed: tables already there are kept with their rows (the
code before Alembic only ever added whole tables, never columns, so an existing table already has this
shape), missing ones are created, and Alembic's version table is stamped. The one older layout, schema 1's
`api_keys` (the development key's hash only), is dropped first: the dev key is registered again at start-up.

The tables are copied here, not imported from the modules that declare them: a migration is history and
must not change when the code's tables do.

Revision ID: 0001
Revises:
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy import JSON, Column, DateTime, Float, Index, Integer, MetaData, String, Table, Text, func

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

SCHEMA_VERSION = "2"  # the `meta` row the code before Alembic wrote; kept for anything that reads it

schema = MetaData()

Table(
    "meta",
    schema,
    Column("key", String(64), primary_key=True),
    Column("value", String(200), nullable=False),
)
Table(
    "revisions",
    schema,
    Column("scope", String(32), primary_key=True),
    Column("n", Integer, nullable=False),
)
Table(
    "users",
    schema,
    Column("id", String(320), primary_key=True),
    Column("email", String(320)),
    Column("teams", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)
Table(
    "teams",
    schema,
    Column("id", String(64), primary_key=True),
    Column("description", Text),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)
Table(
    "service_accounts",
    schema,
    Column("id", String(64), primary_key=True),
    Column("description", Text),
    Column("teams", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)
Table(
    "api_keys",
    schema,
    Column("id", String(32), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("owner_kind", String(8), nullable=False),
    Column("owner_id", String(320), nullable=False),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("servers", JSON),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float),
    Column("last_used_at", Float),
    Column("revoked_at", Float),
)
Table(
    "grants",
    schema,
    Column("id", String(32), primary_key=True),
    Column("who", String(400), nullable=False),
    Column("claims", JSON, nullable=False),
    Column("what", JSON, nullable=False),
    Column("description", Text),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)
Table(
    "catalog_objects",
    schema,
    Column("kind", String(16), primary_key=True),
    Column("id", String(64), primary_key=True),
    Column("body", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)
Table(
    "audit_events",
    schema,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", Float, nullable=False),
    Column("request_id", String(100)),
    Column("principal", String(400), nullable=False),
    Column("credential", String(100), nullable=False),
    Column("server", String(64), nullable=False),
    Column("member", String(64)),
    Column("upstream", String(64)),
    Column("method", String(40), nullable=False),
    Column("target", String(400)),
    Column("outcome", String(20), nullable=False),
    Column("detail", Text),
    Column("latency_ms", Float),
    Column("arguments", JSON),
    Index("ix_audit_at", "at"),
    Index("ix_audit_principal_at", "principal", "at"),
)
# security/tables.py
Table(
    "crypto_canary",
    schema,
    Column("id", String(16), primary_key=True),
    Column("token", Text, nullable=False),
    Column("created_at", Float, nullable=False),
)
Table(
    "stored_secrets",
    schema,
    Column("name", String(128), primary_key=True),
    Column("value", Text, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)
# outbound/oauth/tables.py
Table(
    "oauth_connections",
    schema,
    Column("user", String(400), primary_key=True),
    Column("upstream", String(64), primary_key=True),
    Column("tokens", Text, nullable=False),
    Column("token_type", String(32), nullable=False),
    Column("expires_at", Float),
    Column("scopes", JSON, nullable=False),
    Column("issuer", String(2000)),
    Column("client_id", String(2000)),
    Column("token_endpoint", String(2000)),
    Column("revocation_endpoint", String(2000)),
    Column("resource", String(2000)),
    Column("endpoint_policy", String(16), nullable=False),
    Column("status", String(16), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Index("ix_oauth_connections_upstream", "upstream"),
)
Table(
    "oauth_clients",
    schema,
    Column("issuer", String(2000), primary_key=True),
    Column("client_id", String(2000), primary_key=True),
    Column("redirect_uri", String(2000), nullable=False),
    Column("secret", Text),
    Column("auth_method", String(40), nullable=False),
    Column("source", String(16), nullable=False),
    Column("created_at", Float, nullable=False),
)
Table(
    "oauth_pending",
    schema,
    Column("state_hash", String(64), primary_key=True),
    Column("user", String(400), nullable=False),
    Column("upstream", String(64), nullable=False),
    Column("payload", Text, nullable=False),
    Column("expires_at", Float, nullable=False),
    Column("created_at", Float, nullable=False),
    Index("ix_oauth_pending_expires", "expires_at"),
)
Table(
    "spent_links",
    schema,
    Column("digest", String(64), primary_key=True),
    Column("expires_at", Float, nullable=False),
)
# identity/gateway_tables.py
Table(
    "gw_oauth_clients",
    schema,
    Column("client_id", String(64), primary_key=True),
    Column("metadata", JSON, nullable=False),
    Column("secret_hash", String(64)),
    Column("created_at", Float, nullable=False),
)
Table(
    "gw_oauth_codes",
    schema,
    Column("code_hash", String(64), primary_key=True),
    Column("client_id", String(2000), nullable=False),
    Column("principal", String(400), nullable=False),
    Column("redirect_uri", String(2000), nullable=False),
    Column("scope", Text, nullable=False),
    Column("resource", String(2000), nullable=False),
    Column("code_challenge", String(128), nullable=False),
    Column("code_challenge_method", String(8), nullable=False),
    Column("expires_at", Float, nullable=False),
    Column("grant_id", String(64)),
    Index("ix_gw_oauth_codes_expires", "expires_at"),
)
Table(
    "gw_oauth_grants",
    schema,
    Column("id", String(64), primary_key=True),
    Column("client_id", String(2000), nullable=False),
    Column("principal", String(400), nullable=False),
    Column("resource", String(2000), nullable=False),
    Column("scope", Text, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("revoked_at", Float),
    Column("revoked_why", String(64)),
    Index("ix_gw_oauth_grants_principal", "principal", "client_id"),
)
Table(
    "gw_oauth_refresh_tokens",
    schema,
    Column("token_hash", String(64), primary_key=True),
    Column("grant_id", String(64), nullable=False),
    Column("expires_at", Float, nullable=False),
    Column("used_at", Float),
    Index("ix_gw_oauth_refresh_grant", "grant_id"),
)
Table(
    "gw_oauth_consents",
    schema,
    Column("principal", String(400), primary_key=True),
    Column("client_id", String(2000), primary_key=True),
    Column("client_name", String(200)),
    Column("resources", JSON, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)


def upgrade() -> None:
    bind = op.get_bind()
    insp = sa.inspect(bind)
    if insp.has_table("api_keys") and "owner_kind" not in {c["name"] for c in insp.get_columns("api_keys")}:
        op.drop_table("api_keys")
    schema.create_all(bind, checkfirst=True)
    meta = schema.tables["meta"]
    if bind.execute(sa.select(meta.c.key).where(meta.c.key == "schema_version")).first() is None:
        bind.execute(meta.insert().values(key="schema_version", value=SCHEMA_VERSION))


def downgrade() -> None:
    raise NotImplementedError("the baseline is not undone: restore a backup of the database instead")
