"""The tables of per-user OAuth to upstreams. Declared on `manifold.store.db.metadata`, so `open_database`
creates them with every other table (importing this module is what registers them: `manifold.outbound.oauth`
does; it also registers the gateway's own secret tables, security/tables.py, which ENCRYPTED_COLUMNS lists).

Every secret value is a Fernet token (`security.crypto.Cipher`), stored as ASCII text; everything a listing or a
decision needs without the key (who, which upstream, expiry, status) is a plain column. Times are Unix
seconds (floats), compared on the hot path without timezone work.
"""

from __future__ import annotations

from sqlalchemy import JSON, Column, Float, Index, String, Table, Text

from manifold.security.tables import crypto_canary, stored_secrets
from manifold.store.db import metadata

# A user's tokens for one OAuth upstream: the vault.
oauth_connections = Table(
    "oauth_connections",
    metadata,
    Column("user", String(400), primary_key=True),  # the principal id
    Column("upstream", String(64), primary_key=True),
    Column("tokens", Text, nullable=False),  # encrypted JSON: access_token, refresh_token
    Column("token_type", String(32), nullable=False),
    Column("expires_at", Float),  # null: the authorization server gave no lifetime
    Column("scopes", JSON, nullable=False, default=list),
    Column("issuer", String(2000)),
    Column("client_id", String(2000)),
    Column("token_endpoint", String(2000)),
    Column("revocation_endpoint", String(2000)),
    Column("resource", String(2000)),
    # trusted (configured) | insecure (discovered, allow_insecure_discovery) | checked (discovered): only
    # discovered ones are held to the SSRF rules when the gateway calls them again (vault.EndpointPolicy).
    Column("endpoint_policy", String(16), nullable=False),
    Column("status", String(16), nullable=False),  # ok | broken
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Index("ix_oauth_connections_upstream", "upstream"),
)

# OAuth clients the gateway uses at an authorization server: registered dynamically (RFC 7591), or
# configured (their secret kept here too, so a callback or a revocation needs no configuration lookup).
# Keyed by issuer, as the MCP spec asks: a client_id means nothing at another server.
oauth_clients = Table(
    "oauth_clients",
    metadata,
    Column("issuer", String(2000), primary_key=True),
    Column("client_id", String(2000), primary_key=True),
    Column("redirect_uri", String(2000), nullable=False),
    Column("secret", Text),  # encrypted client_secret; null for public clients
    Column("auth_method", String(40), nullable=False),  # client_secret_basic | client_secret_post | none
    Column("source", String(16), nullable=False),  # registered | configured
    Column("created_at", Float, nullable=False),
)

# Authorization requests in flight: one row per `state`, deleted when the browser comes back (or expired).
oauth_pending = Table(
    "oauth_pending",
    metadata,
    Column("state_hash", String(64), primary_key=True),  # SHA-256 of the state; the state itself is not kept
    Column("user", String(400), nullable=False),
    Column("upstream", String(64), nullable=False),
    Column("payload", Text, nullable=False),  # encrypted JSON: PKCE verifier, endpoints, client, resource…
    Column("expires_at", Float, nullable=False),
    Column("created_at", Float, nullable=False),
    Index("ix_oauth_pending_expires", "expires_at"),
)

# Every encrypted column in the database, for `manifold secrets rotate-key`: (table, primary-key columns, column).
ENCRYPTED_COLUMNS: tuple[tuple[Table, tuple[str, ...], str], ...] = (
    (crypto_canary, ("id",), "token"),
    (stored_secrets, ("name",), "value"),
    (oauth_connections, ("user", "upstream"), "tokens"),
    (oauth_clients, ("issuer", "client_id"), "secret"),
    (oauth_pending, ("state_hash",), "payload"),
)

# The revision scope (store/revisions.py) bumped when a connection is removed, so a running gateway
# (another process, another replica) drops what it holds in memory.
CONNECTIONS_SCOPE = "connections"

# Connect links already used to start a connection (the SHA-256 of the link's token): a link is one-time.
# Rows outlive the link's own lifetime only until the next spend prunes them.
spent_links = Table(
    "spent_links",
    metadata,
    Column("digest", String(64), primary_key=True),
    Column("expires_at", Float, nullable=False),
)
