"""The tables of the gateway's own secrets: the key canary and the `secret:NAME` store. Declared on
`manifold.store.db.metadata`, so `open_database` creates them with every other table (importing
`manifold.security.crypto` or `manifold.security.secret_store` is what registers them).

Every secret value is a Fernet token (`crypto.Cipher`), stored as ASCII text. Times are Unix seconds.
"""

from __future__ import annotations

from sqlalchemy import Column, Float, String, Table, Text

from manifold.store.db import metadata

# One row proving which key wrote this database: `Cipher.check` decrypts it at startup, so a wrong key is
# reported before anything is read or written with it.
crypto_canary = Table(
    "crypto_canary",
    metadata,
    Column("id", String(16), primary_key=True),
    Column("token", Text, nullable=False),
    Column("created_at", Float, nullable=False),
)

# `secret:NAME` values for static headers and OAuth client secrets (`manifold secrets set NAME`).
stored_secrets = Table(
    "stored_secrets",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("value", Text, nullable=False),  # encrypted
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)

# The revision scope (store/revisions.py) bumped when a stored secret changes, so a running gateway (another
# process, another replica) loads the secrets again.
SECRETS_SCOPE = "secrets"
