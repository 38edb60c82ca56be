"""The tables of the gateway's own authorization server (authserver/): the clients that registered, the
codes in flight, each signed-in client's grant (a refresh-token family) and its refresh tokens, and the
consents people gave. Declared on `manifold.store.db.metadata`, so `create_schema` makes them with every
other table (importing this module registers them; identity/gateway_tokens.py does).

No secret is stored: codes, refresh tokens and client secrets are kept as their SHA-256 (each carries at
least 256 random bits, so a slow hash adds nothing). Times are Unix seconds.
"""

from __future__ import annotations

from sqlalchemy import JSON, Column, Float, Index, String, Table, Text

from manifold.store.db import metadata

# Clients registered dynamically (RFC 7591). Configured clients live in the config; CIMD clients (a URL as
# client_id) are fetched when used and only cached in memory.
gw_clients = Table(
    "gw_oauth_clients",
    metadata,
    Column("client_id", String(64), primary_key=True),
    Column("metadata", JSON, nullable=False),  # the RFC 7591 metadata as registered
    Column("secret_hash", String(64)),  # null: a public client
    Column("created_at", Float, nullable=False),
)

# Authorization codes: one row per code, kept after it is exchanged (`grant_id` set) until it expires, so a
# code presented twice revokes what the first exchange issued (RFC 6749 §4.1.2).
gw_codes = Table(
    "gw_oauth_codes",
    metadata,
    Column("code_hash", String(64), primary_key=True),
    Column("client_id", String(2000), nullable=False),
    Column("principal", String(400), nullable=False),
    Column("redirect_uri", String(2000), nullable=False),
    Column("scope", Text, nullable=False),
    Column("resource", String(2000), nullable=False),
    Column("code_challenge", String(128), nullable=False),
    Column("code_challenge_method", String(8), nullable=False),
    Column("expires_at", Float, nullable=False),
    Column("grant_id", String(64)),  # set when exchanged
    Column("key_id", String(64)),  # the API key the person signed in with (null: an IdP sign-in)
    Index("ix_gw_oauth_codes_expires", "expires_at"),
)

# One row per exchanged code: the family of refresh tokens (and access tokens, by their `fam` claim) of one
# sign-in of one client for one server. Revoked as a whole: by the client (RFC 7009), by the person
# revoking the client, or when a rotated refresh token is presented again. A sign-in made with an API key
# (`key_id`) lives no longer than that key: its tokens are refused once the key is revoked or expired, as
# the web session it was made in is (attack probe: a stolen key turned into tokens that outlived it).
gw_grants = Table(
    "gw_oauth_grants",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("client_id", String(2000), nullable=False),
    Column("principal", String(400), nullable=False),
    Column("resource", String(2000), nullable=False),
    Column("scope", Text, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("revoked_at", Float),
    Column("revoked_why", String(64)),
    Column("key_id", String(64)),  # the API key the person signed in with (null: an IdP sign-in)
    Index("ix_gw_oauth_grants_principal", "principal", "client_id"),
)

gw_refresh_tokens = Table(
    "gw_oauth_refresh_tokens",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("grant_id", String(64), nullable=False),
    Column("expires_at", Float, nullable=False),
    Column("used_at", Float),  # set when rotated: presenting it again revokes the family
    Index("ix_gw_oauth_refresh_grant", "grant_id"),
)

# What a person allowed a client: the servers (resource URLs) it may ask for without asking again.
gw_consents = Table(
    "gw_oauth_consents",
    metadata,
    Column("principal", String(400), primary_key=True),
    Column("client_id", String(2000), primary_key=True),
    Column("client_name", String(200)),
    Column("resources", JSON, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)
