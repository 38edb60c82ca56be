"""Rate limits (docs/rate-limits.md): the rules made through the admin API, and the token buckets replicas
share on PostgreSQL.

The tables are copied here, not imported from policy/rate_limit_store.py: a migration is history and must not
change when the code's tables do.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import JSON, Column, Float, String

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rate_limit_rules",
        Column("id", String(64), primary_key=True),
        Column("body", JSON, nullable=False),
        Column("created_at", Float, nullable=False),
    )
    op.create_table(
        "rate_limit_buckets",
        Column("key", String(64), primary_key=True),
        Column("tokens", Float, nullable=False),
        Column("updated_at", Float, nullable=False),
        Column("full_at", Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("rate_limit_buckets")
    op.drop_table("rate_limit_rules")
