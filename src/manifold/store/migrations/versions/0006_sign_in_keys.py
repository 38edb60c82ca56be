"""The API key a gateway OAuth sign-in was made with: a nullable `key_id` on `gw_oauth_codes` and
`gw_oauth_grants`. A grant's tokens are refused once that key is revoked or expired (identity/gateway_tokens.py).
Existing rows get nulls: sign-ins made before the upgrade are not tied to a key (they end with their refresh
tokens, or `manifold apps revoke`).

A column already there is left alone: a database adopted by the baseline may have been made by code that
already declared it.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy import Column, String

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

TABLES = ("gw_oauth_codes", "gw_oauth_grants")


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    for table in TABLES:
        if "key_id" not in {c["name"] for c in inspector.get_columns(table)}:
            op.add_column(table, Column("key_id", String(64)))


def downgrade() -> None:
    for table in reversed(TABLES):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("key_id")
